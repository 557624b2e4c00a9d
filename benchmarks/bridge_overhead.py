"""The search's own cost per trial as a study grows: ask + fit + tell through the bridge, at 100 and at 5,000 stored trials.

A study is filled with N finished trials (real fitted proposals of the space, told COMPLETE with a stand-in accuracy,
as a long search would leave them), then the bridge hands out and tells `--measure` more trials, timed per trial
(no training, no Ray). The random sampler isolates the bridge's own bookkeeping (storage reads and writes, the
duplicate check, the trial count, the hypervolume); NSGA-II adds its own per-ask cost on top. The goal (issue 22):
the bridge's time at 5,000 trials within 1.5x of its time at 100.

Usage: python benchmarks/bridge_overhead.py [--sizes 100,5000] [--measure 20] [--samplers random,nsga2]
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

warnings.filterwarnings("ignore")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def fill(study, settings, n: int, seed: int = 0) -> None:
    """n finished trials of fitted random proposals, stored as the bridge stores trained ones."""
    from nas.engine.record import FLOPS, PROPOSED_BY, STATUS, network_attrs, new_trial
    from space.choices import SeededSuggester
    from space.fitting import propose

    rng, trials = random.Random(seed), []
    while len(trials) < n:
        draw = _Keep(SeededSuggester(rng))
        proposal = propose(settings.space, draw, settings.band)
        if proposal.refusal:
            continue
        attrs = {**network_attrs(proposal.config, proposal.cost), **proposal.attrs(), PROPOSED_BY: "sampler", STATUS: "trained",
                 "proxy_accuracy": rng.random(), "epochs": 1}
        trials.append(new_trial(attrs, params=draw.params, distributions=draw.distributions, values=[attrs["proxy_accuracy"], float(attrs[FLOPS])]))
    study.add_trials(trials)


class _Keep:
    """A seeded draw that keeps each param with the Optuna distribution it was drawn from (to store trials directly)."""

    def __init__(self, inner) -> None:
        self.inner, self.params, self.distributions = inner, {}, {}

    def suggest_categorical(self, name, choices):
        from optuna.distributions import CategoricalDistribution

        self.distributions[name] = CategoricalDistribution(list(choices))
        self.params[name] = v = self.inner.suggest_categorical(name, choices)
        return v

    def suggest_int(self, name, low, high, step=1, log=False):
        from optuna.distributions import IntDistribution

        self.distributions[name] = IntDistribution(low, high, step=step, log=log)
        self.params[name] = v = self.inner.suggest_int(name, low, high, step, log)
        return v

    def suggest_float(self, name, low, high, step=None, log=False):
        from optuna.distributions import FloatDistribution

        self.distributions[name] = FloatDistribution(low, high, step=step, log=log)
        self.params[name] = v = self.inner.suggest_float(name, low, high, step, log)
        return v


def measure(size: int, sampler: str, count: int, folder: str) -> list[float]:
    """Seconds per trial (suggest + tell) for `count` trials on a study already holding `size` trained trials."""
    from nas.engine.bridge import BudgetedOptunaSearcher
    from nas.engine.search import open_search_study
    from nas.engine.settings import SearchSettings
    from space.choices import Space
    from trainers.settings import ProxySettings

    settings = SearchSettings(study=f"s{size}_{sampler}", budget=4_500_000_000, space=Space.from_yaml("default"),
                              storage=f"sqlite:///{folder}/s{size}_{sampler}.db", trials=size + count + 1, sampler=sampler,
                              proxy=ProxySettings(epochs=1), warm_start=False)
    study, storage = open_search_study(settings)
    fill(study, settings, size)
    bridge = BudgetedOptunaSearcher(study, storage, settings)
    seconds = []
    with bridge:
        for i in range(count):
            started = time.perf_counter()
            suggestion = bridge.suggest(f"t{i}")
            bridge.on_trial_complete(f"t{i}", {"acc": 0.5, "epoch": 1, "flops": suggestion["flops"]}, False)
            seconds.append(time.perf_counter() - started)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="100,5000")
    parser.add_argument("--measure", type=int, default=20)
    parser.add_argument("--samplers", default="random,nsga2")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    print(f"machine: {platform.machine()}, {os.cpu_count()} cpus; SQLite study, default space at 4.5 GFLOPs")
    with tempfile.TemporaryDirectory() as folder:
        for sampler in args.samplers.split(","):
            medians = {}
            for size in sizes:
                seconds = measure(size, sampler, args.measure, folder)
                medians[size] = statistics.median(seconds)
                print(f"{sampler:7s} {size:>6} stored trials: ask + fit + tell {medians[size] * 1000:.0f} ms per trial (median of "
                      f"{len(seconds)}; min {min(seconds) * 1000:.0f}, max {max(seconds) * 1000:.0f})", flush=True)
            print(f"{sampler:7s} ratio {sizes[-1]} / {sizes[0]}: {medians[sizes[-1]] / medians[sizes[0]]:.2f}x", flush=True)


if __name__ == "__main__":
    main()
