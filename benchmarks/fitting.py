"""How many random shapes of a space the budget solver can fit, by block family: the measurement behind where the
default space's choices apply (its YAML comment) and tests/space/test_fitting.py's threshold.

Usage: python benchmarks/fitting.py [--space default] [--shapes 1000] [--budget 4.5G] [--resolution 224] [--proxy 32]
"""

from __future__ import annotations

import argparse
import collections
import random
import time


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--space", default="default")
    parser.add_argument("--shapes", type=int, default=1000)
    parser.add_argument("--budget", default="4.5G")
    parser.add_argument("--resolution", type=int, default=224, help="where FLOPs are counted (--cost-resolution)")
    parser.add_argument("--proxy", type=int, default=32, help="the proxy resolution (dilated convs must fit there)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    from space.choices import SeededSuggester, Space
    from space.cost import parse_flops
    from space.fitting import Band, propose

    space = Space.from_yaml(args.space)
    band = Band(parse_flops(args.budget), resolution=args.resolution, proxy_resolution=args.proxy)
    rng = random.Random(args.seed)
    counts: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    start = time.perf_counter()
    for _ in range(args.shapes):
        proposal = propose(space, SeededSuggester(rng), band)
        family = "+".join(sorted({s.block for s in proposal.config.stages}))
        counts[family][proposal.refusal or "fitted"] += 1
        counts["all"][proposal.refusal or "fitted"] += 1
    seconds = time.perf_counter() - start
    print(f"{args.space}: {args.shapes} shapes fitted to {args.budget} at {args.resolution} px (proxy {args.proxy} px), "
          f"{1000 * seconds / args.shapes:.1f} ms a proposal")
    for family, counter in sorted(counts.items(), key=lambda kv: kv[0] == "all"):
        total = sum(counter.values())
        refused = ", ".join(f"{k} {v} ({100 * v / total:.1f}%)" for k, v in sorted(counter.items()) if k != "fitted")
        print(f"  {family:<12} {total:>5} shapes: fitted {counter['fitted']} ({100 * counter['fitted'] / total:.1f}%)"
              + (f"; {refused}" if refused else ""))


if __name__ == "__main__":
    main()
