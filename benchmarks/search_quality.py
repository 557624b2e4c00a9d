"""Which sampler finds the better front on equal budgets: NSGA-II, TPE and random search, with and without warm start.

Two tiers, both through the search's own code (`nas.engine.bridge.BudgetedOptunaSearcher`: fitting to the budget, refusals,
duplicates, the warm start, the hypervolume each tell records):

- cheap: the bridge driven directly (ask/tell, no Ray), each trained trial scored by a zero-cost proxy at
  initialisation instead of training: NASWOT (Mellor et al., "Neural Architecture Search without Training", ICML 2021),
  the log-determinant of the kernel of binary activation codes of 16 digits at 32 px (every network He-initialised
  alike, see `Naswot`), which depends on the architecture
  through the same choices training does (block, conv, kernel, width, depth, norms, activations). The score is mapped to
  [0, 1] by the 1st and 99th percentiles of 100 random networks of the space (computed once per run, on seed 0's batch;
  the same fixed scale for every seed and sampler), so the hypervolume is the search's own (`nas.front.pareto`: area
  dominated in (FLOPs / budget, score), reference (1, 0)). Seeds x trials per (sampler, warm start); the hypervolume's
  mean with a 95% bootstrap interval over seeds,
  the fraction of trained networks the sampler itself proposed, the stored never-trained trials per trained one, and
  how many trials each needs to reach random search's mean hypervolume after all its trials; a PNG of hypervolume
  against trials.
- real: `nas.engine.search.run_search` (Optuna + Ray Tune + proxy trainings), the default sampler against random search.

Usage: python benchmarks/search_quality.py [--quick] [--json] [--tier cheap|real|both] [--seeds 5] [--trials 100]
    [--samplers nsga2,tpe,random] [--budget 4.5G] [--space default] [--plot docs/search_quality.png]
    [--real-seeds 3] [--real-trials 32] [--epochs 1] [--train-images 256]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

warnings.filterwarnings("ignore")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def bootstrap_interval(values: list[float], rounds: int = 10_000, seed: int = 0) -> tuple[float, float]:
    """95% percentile-bootstrap interval of the mean over seeds."""
    if len(values) < 2:
        return (values[0], values[0]) if values else (float("nan"), float("nan"))
    rng = random.Random(seed)
    means = sorted(statistics.fmean(rng.choices(values, k=len(values))) for _ in range(rounds))
    return means[int(0.025 * rounds)], means[int(0.975 * rounds) - 1]


class Naswot:
    """The NASWOT score of a network at initialisation on a fixed batch (hand-written: no library of our stack has it)."""

    def __init__(self, seed: int, batch: int = 16) -> None:
        import torch

        from trainers.data import small_tensors

        # One intra-op thread: on a shared 2-core box torch's second thread waits on the first more than it helps
        # (measured 7.3 s -> 1.6 s per network at load 13; a 16-image forward at 32 px has little to split).
        torch.set_num_threads(1)
        data = small_tensors("digits", 32, seed)
        generator = torch.Generator().manual_seed(seed)
        index = torch.randperm(len(data.train), generator=generator)[:batch]
        self.images = torch.stack([data.train[int(i)][0] for i in index])
        self.seed, self.cache = seed, {}

    def __call__(self, config: Any) -> float:
        import torch
        from torch import nn

        from space.network import build_network

        if config.hash in self.cache:
            return self.cache[config.hash]
        torch.manual_seed(self.seed)
        # Built on the meta device and initialised here, alike for every network: He-normal conv and linear weights (fan
        # in), norms at identity, layer scale at its init. 3-10x faster than each family's own init on this box (the
        # build, not the forward, is what a score costs), and NASWOT's codes need only a standard init.
        model = build_network(config, num_classes=10, device="meta").to_empty(device="cpu").eval()
        with torch.no_grad():
            for name, param in model.named_parameters():
                if param.dim() > 1:
                    param.normal_(0.0, (2.0 / param[0].numel()) ** 0.5)
                elif name.endswith("gamma"):
                    param.fill_(config.layer_scale_init)
                else:
                    param.fill_(0.0 if name.endswith("bias") else 1.0)
            for name, buffer in model.named_buffers():
                buffer.fill_(1 if name.endswith("running_var") else 0)
        batch = len(self.images)
        # K_ij = units on which images i and j agree = n - a_i - a_j + 2 (c c^T)_ij for binary codes c (a: ones per image),
        # accumulated layer by layer (float32 counts are exact below 2^24) rather than over one huge concatenated code.
        gram, ones, units = torch.zeros(batch, batch), torch.zeros(batch), 0

        def keep(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
            nonlocal gram, ones, units
            c = (inputs[0].detach() > 0).flatten(1).float()
            gram += c @ c.T
            ones += c.sum(1)
            units += c.shape[1]

        from timm.layers import activations as timm_acts

        acts = (nn.ReLU, nn.GELU, nn.SiLU, timm_acts.GELU, timm_acts.Swish)  # what timm's create_act_layer gives
        hooks = [m.register_forward_hook(keep) for m in model.modules() if isinstance(m, acts)]
        with torch.no_grad():
            model(self.images)
        for hook in hooks:
            hook.remove()
        kernel = (units - ones[:, None] - ones[None, :] + 2 * gram).double()
        sign, logdet = torch.linalg.slogdet(kernel)
        score = float(logdet) if sign > 0 else 0.0
        self.cache[config.hash] = score
        return score


def calibrate(space: Any, band: Any, score: Naswot, n: int = 200) -> tuple[float, float]:
    """The 1st and 99th percentiles of the score over n random networks of the space fitted into the band."""
    from space.choices import SeededSuggester
    from space.fitting import propose

    rng, scores = random.Random(12345), []
    while len(scores) < n:
        proposal = propose(space, SeededSuggester(rng), band)
        if proposal.refusal is None:
            scores.append(score(proposal.config))
    scores.sort()
    return scores[int(0.01 * n)], scores[int(0.99 * n) - 1]


def cheap_run(space: Any, budget: int, sampler: str, seed: int, warm: bool, trials: int, score: Naswot,
              scale: tuple[float, float], folder: str) -> dict[str, Any]:
    """One study driven through the bridge with the NASWOT score as its accuracy; its hypervolume trial by trial."""
    from nas.engine.bridge import BudgetedOptunaSearcher
    from nas.engine.record import NEVER_TRAINED, StudyRecord, TrialRecord
    from nas.engine.search import open_search_study
    from nas.engine.settings import SearchSettings
    from nas.engine.warm_start import enqueue_warm_start
    from space.config import ArchConfig
    from trainers.settings import ProxySettings

    name = f"{sampler}_{'warm' if warm else 'cold'}_{seed}"
    settings = SearchSettings(study=name, budget=budget, space=space, storage=f"sqlite:///{folder}/{name}.db", trials=trials,
                              sampler=sampler, seed=seed, proxy=ProxySettings(epochs=1, seed=seed), warm_start=warm)
    study, storage = open_search_study(settings)
    if warm:
        enqueue_warm_start(study, space, settings.band)
    bridge = BudgetedOptunaSearcher(study, storage, settings)
    curve, own, started = [], 0, time.perf_counter()
    lo, hi = scale
    with bridge:
        for i in range(trials):
            suggestion = bridge.suggest(f"t{i}")
            if suggestion is None:
                break
            trial = bridge.live[f"t{i}"]
            own += TrialRecord(trial).proposed_by in ("sampler", "random")
            value = min(1.0, max(0.0, (score(ArchConfig.from_json(suggestion["config"])) - lo) / (hi - lo)))
            bridge.on_trial_complete(f"t{i}", {"acc": value, "epoch": 1}, False)
            curve.append(float(StudyRecord(study).hypervolume or 0.0))
    never = sum(1 for t in study.get_trials(deepcopy=False) if TrialRecord(t).status in NEVER_TRAINED)
    return {"curve": curve, "own_fraction": own / max(1, len(curve)), "never_per_trained": never / max(1, len(curve)),
            "seconds": time.perf_counter() - started}


def trials_to_reach(curve: list[float], target: float) -> int | None:
    """The first trial (1-based) whose hypervolume reaches `target`, or None."""
    return next((i + 1 for i, hv in enumerate(curve) if hv >= target * (1 - 1e-12)), None)


def cheap_tier(args: argparse.Namespace, space: Any, budget: int) -> dict[str, list[dict[str, Any]]]:
    from nas.engine.settings import SearchSettings

    band = SearchSettings(study="x", budget=budget, space=space, storage="sqlite://").band
    runs: dict[str, list[dict[str, Any]]] = json.loads(Path(args.save).read_text()) if args.save and Path(args.save).exists() else {}
    variants = [(s, w) for s in args.samplers.split(",") for w in (False, True)]
    scale = calibrate(space, band, Naswot(0), n=args.calibration)  # once: one fixed [0, 1] scale for every seed and sampler
    if not args.json:
        print(f"score scale (1st..99th percentile of {args.calibration} random networks): {scale[0]:.1f} .. {scale[1]:.1f}", flush=True)
    # The throwaway studies on a RAM disk where there is one: SQLite's commit per attribute (fsync) would otherwise cost
    # more than the bridge itself, which is not what this tier compares.
    with tempfile.TemporaryDirectory(dir="/dev/shm" if os.path.isdir("/dev/shm") else None) as folder:
        for seed in range(args.seeds):
            score = Naswot(seed)
            for sampler, warm in variants:
                key = f"{sampler}+warm_start" if warm else sampler
                if len(runs.get(key, [])) > seed:
                    continue  # kept in --save by an earlier, interrupted run of this script
                run = cheap_run(space, budget, sampler, seed, warm, args.trials, score, scale, folder)
                runs.setdefault(key, []).append(run)
                if args.save:  # after every study, so that a run cut short keeps what it measured
                    Path(args.save).write_text(json.dumps(runs))
                if not args.json:
                    print(f"{key:18s} seed {seed}: hypervolume {run['curve'][-1]:.4f} after {len(run['curve'])} trials; own "
                          f"{run['own_fraction']:.0%}; never trained {run['never_per_trained']:.2f} per trained; {run['seconds']:.0f} s", flush=True)
    return runs


def cheap_table(runs: dict[str, list[dict[str, Any]]], trials: int) -> str:
    reference = statistics.fmean(r["curve"][-1] for r in runs.get("random", [])) if "random" in runs else None
    lines = [f"| sampler | hypervolume after {trials} (mean, 95% CI) | minus random's, paired by seed (mean, 95% CI) | after {trials // 2} "
             f"| own proposals | never trained per trained | trials to reach random's {trials}-trial mean (median over seeds) |",
             "|---|---|---|---|---|---|---|"]
    baseline = [r["curve"][-1] for r in runs.get("random", [])]
    for key, rows in runs.items():
        final = [r["curve"][-1] for r in rows]
        half = [r["curve"][min(len(r["curve"]), trials // 2) - 1] for r in rows]
        lo, hi = bootstrap_interval(final)
        reach = [trials_to_reach(r["curve"], reference) for r in rows] if reference else []
        reached = sorted(x if x is not None else trials + 1 for x in reach)
        median = statistics.median(reached) if reached else None
        reach_text = "-" if median is None else (f"> {trials}" if median > trials else f"{median:g}")
        # The same seed gives both studies the same scoring batch and the same seed to their samplers: the difference per
        # seed removes what the seeds share, so its interval is the sharper test of "ahead of random".
        paired = [a - b for a, b in zip(final, baseline)]
        dlo, dhi = bootstrap_interval(paired) if paired else (float("nan"), float("nan"))
        delta = f"{statistics.fmean(paired):+.3f} [{dlo:+.3f}, {dhi:+.3f}]" if paired and key != "random" else "-"
        lines.append(f"| {key} | {statistics.fmean(final):.3f} [{lo:.3f}, {hi:.3f}] | {delta} | {statistics.fmean(half):.3f} "
                     f"| {statistics.fmean(r['own_fraction'] for r in rows):.0%} | {statistics.fmean(r['never_per_trained'] for r in rows):.2f} "
                     f"| {reach_text} |")
    return "\n".join(lines)


def plot(runs: dict[str, list[dict[str, Any]]], path: str, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(8, 5))
    for key, rows in runs.items():
        length = min(len(r["curve"]) for r in rows)
        curves = np.array([r["curve"][:length] for r in rows])
        x = np.arange(1, length + 1)
        mean = curves.mean(axis=0)
        line = ax.plot(x, mean, label=key, linestyle="--" if "warm" in key else "-")[0]
        ax.fill_between(x, curves.min(axis=0), curves.max(axis=0), color=line.get_color(), alpha=0.12)
    ax.set_xlabel("trained trials")
    ax.set_ylabel("hypervolume (FLOPs / budget, score)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def real_tier(args: argparse.Namespace, space: Any, budget: int) -> dict[str, list[dict[str, Any]]]:
    """Real searches (Ray Tune, proxy trainings), the default sampler against random search."""
    from nas.engine.record import NEVER_TRAINED, TrialRecord, counts_toward_total
    from nas.engine.search import run_search
    from nas.engine.settings import SearchSettings
    from nas.front.pareto import study_hypervolume
    from trainers.settings import ProxySettings

    default = SearchSettings.__dataclass_fields__["sampler"].default
    samplers = args.real_samplers.split(",") if args.real_samplers else [default, "random"]
    saved = Path(args.save_real) if args.save_real else None
    runs: dict[str, list[dict[str, Any]]] = json.loads(saved.read_text()) if saved and saved.exists() else {}
    with tempfile.TemporaryDirectory() as folder:
        for seed in range(args.real_seeds):
            for sampler in dict.fromkeys(samplers):
                if len(runs.get(sampler, [])) > seed:
                    continue  # kept in --save-real by an earlier, interrupted run of this script
                settings = SearchSettings(
                    study=f"{sampler}_{seed}", budget=budget, space=space, storage=f"sqlite:///{folder}/{sampler}_{seed}.db",
                    trials=args.real_trials, sampler=sampler, seed=seed, scheduler="none", trial_time_limit=args.trial_time_limit,
                    proxy=ProxySettings(epochs=args.epochs, train_images=args.train_images, seed=seed), results_dir=os.path.join(folder, "ray"))
                started = time.perf_counter()
                study = run_search(settings).study
                told = sorted((t for t in study.get_trials(deepcopy=False) if counts_toward_total(t) and t.datetime_complete),
                              key=lambda t: t.datetime_complete)
                records = [TrialRecord(t) for t in told]
                curve = [float(r.hypervolume or 0.0) for r in records]
                own = sum(r.proposed_by in ("sampler", "random") for r in records) / max(1, len(told))
                chosen = sum(r.proposed_by in ("sampler", "random", "warm_start") for r in records) / max(1, len(told))
                never = sum(TrialRecord(t).status in NEVER_TRAINED for t in study.get_trials(deepcopy=False))
                spread = sorted(r.flops / budget for r in records)
                run = {"curve": curve or [study_hypervolume(study) or 0.0], "own_fraction": own, "never_per_trained": never / max(1, len(told)),
                       "chosen_fraction": chosen, "flops_spread": [spread[0], spread[-1]] if spread else None,
                       "seconds": time.perf_counter() - started}
                runs.setdefault(sampler, []).append(run)
                if saved:
                    saved.write_text(json.dumps(runs))
                if not args.json:
                    print(f"real {sampler:7s} seed {seed}: hypervolume {run['curve'][-1]:.4f} after {len(told)} trials; own {own:.0%}, "
                          f"sampler or warm start {chosen:.0%}; never trained {run['never_per_trained']:.2f} per trained; FLOPs / budget "
                          f"{run['flops_spread']}; {run['seconds'] / 60:.1f} min", flush=True)
    return runs


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="a reduced cheap tier (2 seeds x 40 trials, no warm-start variants' "
                        "duplicates): at most ~10 minutes on 2 cores")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--tier", choices=("cheap", "real", "both"), default="cheap")
    parser.add_argument("--samplers", default="nsga2,tpe,random")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--trials", type=int, default=100)
    parser.add_argument("--calibration", type=int, default=100, help="random networks that set the score's [0, 1] scale")
    parser.add_argument("--budget", default="4.5G")
    parser.add_argument("--space", default="default")
    parser.add_argument("--plot", default=None, help="PNG of hypervolume against trials (cheap tier)")
    parser.add_argument("--save", default=None, help="JSON of the cheap tier's runs, written after each study; a rerun with the same "
                        "file goes on where it stopped")
    parser.add_argument("--real-seeds", type=int, default=3)
    parser.add_argument("--real-trials", type=int, default=32)
    parser.add_argument("--real-samplers", default=None, help="the real tier's samplers (default: the search's default and random)")
    parser.add_argument("--save-real", default=None, help="JSON of the real tier's runs, written after each search; resumable")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--train-images", type=int, default=256)
    parser.add_argument("--trial-time-limit", type=float, default=60.0)
    args = parser.parse_args()
    if args.quick:
        args.seeds, args.trials, args.calibration, args.tier = 2, 40, 40, "cheap"

    from space.choices import Space
    from space.cost import parse_flops

    space, budget = Space.from_yaml(args.space), parse_flops(args.budget)
    if not args.json:
        print(f"machine: {platform.machine()}, {os.cpu_count()} cpus; space {space.name} ({space.scale}), budget {budget / 1e9:g} GFLOPs")
    started = time.perf_counter()
    result: dict[str, Any] = {"space": space.name, "budget": budget, "objective": None, "samplers": {}}
    if args.tier in ("cheap", "both"):
        runs = cheap_tier(args, space, budget)
        result["objective"] = "naswot (log-det of activation codes at init, 16 digits at 32 px), scaled to [0, 1]"
        result["samplers"] = {k: {"hypervolume": [r["curve"][-1] for r in rows], "own_fraction": [r["own_fraction"] for r in rows],
                                  "never_trained_per_trained": [r["never_per_trained"] for r in rows]} for k, rows in runs.items()}
        if args.plot:
            plot(runs, args.plot, f"{space.name} space at {budget / 1e9:g} GFLOPs, NASWOT score, {args.seeds} seeds (band: min..max)")
        if not args.json:
            print(f"\ncheap tier ({args.seeds} seeds x {args.trials} trials, {(time.perf_counter() - started) / 60:.1f} min):")
            print(cheap_table(runs, args.trials))
    if args.tier in ("real", "both"):
        real = real_tier(args, space, budget)
        result["real"] = {k: {"hypervolume": [r["curve"][-1] for r in rows], "own_fraction": [r["own_fraction"] for r in rows]}
                          for k, rows in real.items()}
        if not args.json:
            print(f"\nreal tier ({args.real_seeds} seeds x {args.real_trials} trials):")
            print(cheap_table(real, args.real_trials))
    if args.json:
        print(json.dumps(result))
    else:
        print(f"\nall: {(time.perf_counter() - started) / 60:.1f} min")


if __name__ == "__main__":
    main()
