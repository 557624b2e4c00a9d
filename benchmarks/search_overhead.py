"""Share of trial wall time not spent training (sampling, cost, storage, Ray dispatch, process start, model build).

Runs a real search (Optuna + Ray Tune + proxy trainings) into a throwaway SQLite study, then compares, per
trained trial, the wall time the study recorded (ask -> tell) with the seconds the proxy spent in its
training steps and evaluations.

Usage: python benchmarks/search_overhead.py [--trials 8] [--budget 1G] [--epochs 2] [--space default]
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
import warnings

warnings.filterwarnings("ignore")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--budget", default="1G")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--space", default="default")
    parser.add_argument("--data", default="digits")
    args = parser.parse_args()

    from nas.search import SearchSettings, run_search
    from space.choices import Space
    from space.cost import parse_flops
    from trainers.proxy import ProxySettings

    with tempfile.TemporaryDirectory() as tmp:
        settings = SearchSettings(
            study="overhead", budget=parse_flops(args.budget), space=Space.from_yaml(args.space),
            storage=f"sqlite:///{tmp}/overhead.db", proxy=ProxySettings(epochs=args.epochs, data=args.data),
            trials=args.trials, grace_period=args.epochs, results_dir=os.path.join(tmp, "ray"),
        )  # fmt: skip
        started = time.perf_counter()
        outcome = run_search(settings)
        wall = time.perf_counter() - started
        trained = [t for t in outcome.study.trials if t.user_attrs.get("status") == "trained"]
        trial_wall = sum(t.user_attrs["wall_seconds"] for t in trained)
        training = sum(t.user_attrs["train_seconds"] for t in trained)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cpus")
    print(f"{len(trained)} trials trained ({args.epochs} epochs of {args.data}, budget {args.budget}), search wall {wall:.1f} s")
    print(f"per trial: wall {trial_wall / len(trained):.1f} s, in training steps + eval {training / len(trained):.1f} s")
    print(f"overhead share of trial wall time: {1 - training / trial_wall:.1%}")


if __name__ == "__main__":
    main()
