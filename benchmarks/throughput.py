"""Our builder's convnext_tiny and resnet50 vs timm's, train-step images/s on the same input, one process.

Usage: python benchmarks/throughput.py [--resolution 64] [--batch 32] [--steps 10] [--device cpu|cuda]
On CUDA it uses AMP and channels_last (as the trainers do).
"""

from __future__ import annotations

import argparse
import platform
import time
import warnings

warnings.filterwarnings("ignore")


def images_per_second(model, x, y, steps: int, cuda: bool) -> float:
    import torch

    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    loss_fn = torch.nn.CrossEntropyLoss()

    def step() -> None:
        with torch.autocast("cuda", enabled=cuda):
            loss = loss_fn(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for _ in range(3):  # warm-up (cudnn autotune, allocator)
        step()
    if cuda:
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if cuda:
        torch.cuda.synchronize()
    return steps * len(x) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--device", default="cuda" if __import__("torch").cuda.is_available() else "cpu")
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
    for arch in ("convnext_tiny", "resnet50"):
        ours = build_network(PRESETS[arch]).to(args.device)
        theirs = timm.create_model(arch).to(args.device)
        if cuda:
            ours, theirs = ours.to(memory_format=torch.channels_last), theirs.to(memory_format=torch.channels_last)
        # alternate rounds so drifts of a shared machine hit both alike; report the best round of each
        ours_best = theirs_best = 0.0
        for _ in range(args.rounds):
            theirs_best = max(theirs_best, images_per_second(theirs.train(), x, y, args.steps, cuda))
            ours_best = max(ours_best, images_per_second(ours.train(), x, y, args.steps, cuda))
        print(f"{arch:14s} ours {ours_best:8.1f} img/s   timm {theirs_best:8.1f} img/s   ratio {ours_best / theirs_best:.3f}x")


if __name__ == "__main__":
    main()
