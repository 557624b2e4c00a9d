"""Share of trial wall time not spent training (sampling, cost, storage, Ray dispatch, worker start, model build).

Runs a real search (Optuna + Ray Tune + proxy trainings) into a throwaway SQLite study, then splits, per
trained trial, the wall time the study recorded (ask -> tell) into: training steps + evaluation (what the
proxy timed), set-up inside the trainable (model build, data: the trainable's clock from its entry, stored as
`trainable_seconds`, minus the former), and the rest outside it (Ray dispatch and worker start, result round
trips, the study's SQL). The first trial on each Ray worker also pays that worker's start (a process
importing torch); it is paid once per concurrent slot per search, so the share is given with and without
those trials.

Usage: python benchmarks/search_overhead.py [--trials 12] [--budget 1G] [--epochs 2] [--space default]
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
import warnings

warnings.filterwarnings("ignore")


def share(rows: list[dict[str, float]]) -> str:
    wall = sum(r["wall"] for r in rows)
    train = sum(r["train"] for r in rows)
    inside = sum(r["inside"] for r in rows)
    return (f"{len(rows)} trials, wall {wall / len(rows):.1f} s/trial: training {train / wall:.1%}, "
            f"set-up in the trainable {(inside - train) / wall:.1%}, outside it {(wall - inside) / wall:.1%}; "
            f"overhead {1 - train / wall:.1%}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--budget", default="1G")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--space", default="default")
    parser.add_argument("--data", default="digits")
    args = parser.parse_args()

    from nas.engine.record import Status, TrialRecord
    from nas.engine.search import run_search
    from nas.engine.settings import SearchSettings
    from space.choices import Space
    from space.cost import parse_flops
    from trainers.proxy import ProxySettings

    with tempfile.TemporaryDirectory() as tmp:
        settings = SearchSettings(
            study="overhead", budget=parse_flops(args.budget), space=Space.from_yaml(args.space),
            storage=f"sqlite:///{tmp}/overhead.db", proxy=ProxySettings(epochs=args.epochs, data=args.data),
            trials=args.trials, grace_period=args.epochs, results_dir=os.path.join(tmp, "ray"),
        )
        started = time.perf_counter()
        outcome = run_search(settings)
        wall = time.perf_counter() - started
        trained = sorted((t for t in outcome.study.trials if TrialRecord(t).status == Status.TRAINED), key=lambda t: t.datetime_start)
        records = [TrialRecord(t) for t in trained]
        rows = [dict(wall=r.wall_seconds, train=r.train_seconds, inside=r.trainable_seconds) for r in records]
    slots = max(1, int((os.cpu_count() or 1) // settings.cpus_per_trial))
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cpus; {slots} trials at a time")
    print(f"{len(trained)} trials trained ({args.epochs} epochs of {args.data}, budget {args.budget}), search wall {wall:.1f} s")
    print(f"all trials:             {share(rows)}")
    if len(rows) > slots:
        print(f"on a started worker:    {share(rows[slots:])}")


if __name__ == "__main__":
    main()
