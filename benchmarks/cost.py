"""Analytic cost vs build + fvcore, per point: how much faster the screening path is, and that it is exact.

Usage: python benchmarks/cost.py [--points 20] [--resolution 224]
"""

from __future__ import annotations

import argparse
import platform
import time
import warnings

warnings.filterwarnings("ignore")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--points", type=int, default=20)
    parser.add_argument("--resolution", type=int, default=224)
    args = parser.parse_args()

    from space.choices import Space
    from space.cost import arch_cost
    from space.network import build_network
    from space.presets import PRESETS
    from space.verify import fvcore_flops

    points = [PRESETS["convnext_tiny"], PRESETS["resnet50"]]
    points += [c for c in Space.from_yaml("default").sample_random(500, seed=0) if arch_cost(c).flops < 8e9]
    points = points[: args.points]
    analytic = fvcore = build = 0.0
    for cfg in points:
        t0 = time.perf_counter()
        for _ in range(100):
            cost = arch_cost(cfg, args.resolution)
        t1 = time.perf_counter()
        model = build_network(cfg)
        t2 = time.perf_counter()
        flops = fvcore_flops(model, args.resolution)
        t3 = time.perf_counter()
        assert flops == cost.flops and sum(p.numel() for p in model.parameters()) == cost.params, cfg.to_json()
        analytic += (t1 - t0) / 100
        build += t2 - t1
        fvcore += t3 - t2
    n = len(points)
    print(f"machine: {platform.processor() or platform.machine()}, {__import__('os').cpu_count()} cpus, python {platform.python_version()}")
    print(f"{n} points at {args.resolution}px, all exact (params and FLOPs equal)")
    print(f"analytic cost:      {analytic / n * 1e6:9.1f} us per point")
    print(f"fvcore count only:  {fvcore / n * 1e3:9.1f} ms per point  ({fvcore / analytic:,.0f}x the analytic time)")
    print(f"build + fvcore:     {(build + fvcore) / n * 1e3:9.1f} ms per point  ({(build + fvcore) / analytic:,.0f}x the analytic time)")


if __name__ == "__main__":
    main()
