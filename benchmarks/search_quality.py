"""Which sampler finds the better front on equal budgets: NSGA-II, TPE and random search, by hypervolume.

Runs real searches (`nas.search.run_search`: Optuna + Ray Tune + proxy trainings), one study per (sampler, seed)
in a throwaway SQLite file, each until it holds --trials trained trials, all on the same cheap proxy, budget and
space; Ray starts once for the whole script. The hypervolume is the one the search records (`nas.pareto`: the
area the front dominates in the unit square of (FLOPs / budget, accuracy), reference (1, 0)): on the study after
the last trial, and on each trial (user attribute `hypervolume`) as the study's value once that trial was told, so
the trials in the order they finished give the curve, read here at half the trials. Seed s (0 .. --seeds - 1) seeds
the sampler, the data split and the training, as `search --seed` does, so for one seed every sampler trains on the
same data. The runs go seed by seed, each sampler in turn, so that a change of load on the machine falls on every
sampler alike, and the table so far is printed after each seed.

Usage: python benchmarks/search_quality.py [--samplers nsga2,tpe,random] [--seeds 3] [--trials 20] [--epochs 1]
    [--train-images 256] [--budget 1G] [--space default] [--trial-time-limit 60]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
import warnings

warnings.filterwarnings("ignore")


def mean_std(values: list[float]) -> str:
    """`0.512 +- 0.034` over seeds (sample standard deviation; 0 for one seed)."""
    return f"{statistics.mean(values):.3f} +- {statistics.stdev(values) if len(values) > 1 else 0.0:.3f}"


def print_table(runs: dict[str, list[dict[str, float]]], trials: int) -> None:
    """The markdown table over the seeds run so far (printed after each seed, so a run cut short still leaves one)."""
    half = trials // 2
    print(f"\n| sampler | hypervolume after {trials} (mean +- std) | after {half} | per seed after {trials} "
          "| trained / stopped / failed | sampler's own proposals | over-budget samples | minutes per study |")
    print("|---|---|---|---|---|---|---|---|")
    for name, rows in runs.items():
        if not rows:
            continue
        total = {k: sum(r[k] for r in rows) for k in ("trained", "stopped", "failed", "over_budget", "own")}
        per_seed = ", ".join(f"{r['hv']:.3f}" for r in rows)
        counted = total["trained"] + total["stopped"] + total["failed"]
        print(f"| {name} | {mean_std([r['hv'] for r in rows])} | {mean_std([r['hv_half'] for r in rows])} "
              f"| {per_seed} | {total['trained']} / {total['stopped']} / {total['failed']} "
              f"| {total['own']} of {counted} | {total['over_budget']} | {statistics.mean(r['minutes'] for r in rows):.1f} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--samplers", default="nsga2,tpe,random")
    parser.add_argument("--seeds", type=int, default=3, help="seeds 0 .. N-1 for every sampler")
    parser.add_argument("--trials", type=int, default=20, help="trained trials per study")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--train-images", type=int, default=256)
    parser.add_argument("--budget", default="1G")
    parser.add_argument("--space", default="default")
    parser.add_argument("--data", default="digits")
    parser.add_argument("--trial-time-limit", type=float, default=60.0, help="seconds; a trial still training then ends as stopped")
    args = parser.parse_args()

    from nas.pareto import counts, study_hypervolume
    from nas.record import counts_toward_total
    from nas.search import run_search
    from nas.settings import SearchSettings
    from space.choices import Space
    from space.cost import parse_flops
    from trainers.settings import ProxySettings

    samplers = args.samplers.split(",")
    space = Space.from_yaml(args.space)
    half = args.trials // 2
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in samplers}
    slots = os.cpu_count() or 1
    print(f"machine: {platform.machine()} {platform.processor() or ''}, {slots} cpus, no GPU used; {slots} trials at a time")
    print(f"proxy: {args.epochs} epoch(s) of {args.data}, {args.train_images} images/epoch at 32px; space {args.space}, budget "
          f"{args.budget}FLOPs; {args.trials} trained trials per study (scheduler none, "
          f"trial time limit {args.trial_time_limit:g} s), seeds 0..{args.seeds - 1}", flush=True)
    started_all = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for seed in range(args.seeds):
            for name in samplers:
                settings = SearchSettings(
                    study=f"{name}_{seed}", budget=parse_flops(args.budget), space=space,
                    storage=f"sqlite:///{tmp}/{name}_{seed}.db", trials=args.trials, sampler=name, seed=seed, scheduler="none",
                    trial_time_limit=args.trial_time_limit,
                    proxy=ProxySettings(epochs=args.epochs, train_images=args.train_images, data=args.data, seed=seed),
                    results_dir=os.path.join(tmp, "ray"),
                )
                started = time.perf_counter()
                outcome = run_search(settings)
                minutes = (time.perf_counter() - started) / 60
                study = outcome.study
                # The trials that count toward --trials, in the order they were told: each holds the study's hypervolume then.
                told = sorted((t for t in study.get_trials(deepcopy=False) if counts_toward_total(t) and t.datetime_complete),
                              key=lambda t: t.datetime_complete)
                tally = counts(study)
                # After a proposal over the budget the next trial is a random in-budget draw (`screened`): the share of
                # the sampler's own proposals among the trained trials says how much the sampler itself chose.
                own = sum(1 for t in told if not t.user_attrs.get("screened"))
                run = {
                    "hv": study_hypervolume(study) or 0.0,
                    "hv_half": (told[half - 1].user_attrs.get("hypervolume") or 0.0) if len(told) >= half else float("nan"),
                    "trained": tally.get("trained", 0), "stopped": tally.get("stopped", 0), "failed": tally.get("failed", 0),
                    "over_budget": tally.get("over_budget", 0), "duplicate": tally.get("duplicate", 0), "minutes": minutes, "own": own,
                }
                runs[name].append(run)
                print(f"{name:7s} seed {seed}: hypervolume {run['hv']:.4f} after {len(told)} trials ({run['hv_half']:.4f} after {half}); "
                      f"{run['trained']} trained, {run['stopped']} stopped, {run['failed']} failed, {run['over_budget']} over budget, "
                      f"{run['duplicate']} duplicates; {own} of {len(told)} trials the sampler's own proposals; {minutes:.1f} min", flush=True)
            if seed < args.seeds - 1:
                print_table(runs, args.trials)

    print(f"\nall runs: {(time.perf_counter() - started_all) / 60:.1f} min")
    print_table(runs, args.trials)


if __name__ == "__main__":
    main()
