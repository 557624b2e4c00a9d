"""Our builder's convnext_tiny, resnet50 and resnest50d vs timm's, train-step images/s on the same input, one process.

Usage: python benchmarks/throughput.py [--resolution 64] [--batch 32] [--steps 10] [--rounds 3] [--device cpu|cuda]
    [--arch convnext_tiny resnet50 resnest50d]
Steps of ours and timm's alternate, rounds x steps of each; it prints the fastest step's and the median step's
images/s. On CUDA it uses AMP and channels_last (as the trainers do).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
import warnings
from collections.abc import Callable

warnings.filterwarnings("ignore")


def train_step(model, x, y, cuda: bool) -> Callable[[], float]:
    """One AdamW train step on (x, y) as a function that returns its seconds; warmed up (cudnn autotune, allocator)."""
    import torch

    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    loss_fn = torch.nn.CrossEntropyLoss()

    def step() -> float:
        start = time.perf_counter()
        with torch.autocast("cuda", enabled=cuda):
            loss = loss_fn(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if cuda:
            torch.cuda.synchronize()
        return time.perf_counter() - start

    for _ in range(3):
        step()
    return step


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--device", default="cuda" if __import__("torch").cuda.is_available() else "cpu")
    parser.add_argument("--arch", nargs="+", default=["convnext_tiny", "resnet50", "resnest50d"], help="presets that timm also builds")
    args = parser.parse_args()

    import timm
    import torch

    from space.network import build_network
    from space.presets import PRESETS

    cuda = args.device == "cuda"
    torch.manual_seed(0)
    x = torch.randn(args.batch, 3, args.resolution, args.resolution, device=args.device)
    y = torch.randint(0, 1000, (args.batch,), device=args.device)
    if cuda:
        torch.backends.cudnn.benchmark = True
        x = x.contiguous(memory_format=torch.channels_last)
    name = torch.cuda.get_device_name() if cuda else f"{platform.processor() or platform.machine()} x{__import__('os').cpu_count()}"
    print(f"device: {name}; torch {torch.__version__}, timm {timm.__version__}; batch {args.batch} at {args.resolution}px")
    for arch in args.arch:
        ours = build_network(PRESETS[arch]).to(args.device)
        theirs = timm.create_model(arch).to(args.device)
        if cuda:
            ours, theirs = ours.to(memory_format=torch.channels_last), theirs.to(memory_format=torch.channels_last)
        # alternate single steps so that the load of a shared machine hits both alike; the fastest step of each is the
        # one least disturbed by others, the median says what a run sees
        steps = {"ours": train_step(ours.train(), x, y, cuda), "timm": train_step(theirs.train(), x, y, cuda)}
        times: dict[str, list[float]] = {"ours": [], "timm": []}
        for _ in range(args.rounds * args.steps):
            for who in ("timm", "ours"):
                times[who].append(steps[who]())
        best = {who: len(x) / min(t) for who, t in times.items()}
        median = {who: len(x) / statistics.median(t) for who, t in times.items()}
        print(f"{arch:14s} best step: ours {best['ours']:7.1f} img/s, timm {best['timm']:7.1f} img/s, ratio {best['ours'] / best['timm']:.3f}x;"
              f"  median: ours {median['ours']:7.1f}, timm {median['timm']:7.1f}, ratio {median['ours'] / median['timm']:.3f}x")

if __name__ == "__main__":
    main()
