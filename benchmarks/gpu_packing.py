"""Trials per hour and GPU utilisation when proxy trainings share a GPU: 1, 0.5 and 0.25 GPU per trial.

One real search per setting (same seed, space and proxy, so the same sampled configs; every trial trains to
the end: ASHA's grace period is the whole proxy) into a throwaway SQLite study, with `nvidia-smi` sampling
the GPU meanwhile. Ray starts once before the first timed run. Throughput is printed as a ratio to the first
setting. Needs a GPU that Ray sees: this machine's (Ray detects it), or `--address` of a cluster with one.
Without `nvidia-smi` (a head that only declares `--num-gpus`, as the tests do) utilisation reads n/a.

Usage: python benchmarks/gpu_packing.py [--fractions 1,0.5,0.25] [--trials 8] [--epochs 3] [--resolution 64]
       [--train-images 0] [--cpus-per-trial 2] [--budget 4.5G] [--address HOST:PORT]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import tempfile
import time
import warnings

warnings.filterwarnings("ignore")


class GpuSampler:
    """`nvidia-smi` polling utilisation (%) and memory (MiB) of every GPU every 0.5 s while the block runs."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.process: subprocess.Popen | None = None

    def __enter__(self) -> GpuSampler:
        if shutil.which("nvidia-smi"):
            query = ["nvidia-smi", "--query-gpu=utilization.gpu,memory.used", "--format=csv,noheader,nounits", "-lms", "500"]
            self.process = subprocess.Popen(query, stdout=subprocess.PIPE, text=True)
        return self

    def __exit__(self, *_: object) -> None:
        if self.process:
            self.process.terminate()
            self.lines = self.process.communicate(timeout=10)[0].splitlines()

    def summary(self) -> str:
        samples = [[float(v) for v in line.split(",")] for line in self.lines if line.strip()]
        if not samples:
            return "n/a | n/a"
        return f"{statistics.mean(u for u, _ in samples):.0f}% | {max(m for _, m in samples):.0f} MiB"


def gpu_model() -> str:
    import torch

    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(0)} ({torch.cuda.get_device_properties(0).total_memory / 2**30:.0f} GiB)"
    return "no CUDA device in this process (GPUs as the Ray cluster declares them)"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--fractions", default="1,0.5,0.25")
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--train-images", type=int, default=0, help="images per epoch (0: all of the data)")
    parser.add_argument("--cpus-per-trial", type=float, default=2)
    parser.add_argument("--budget", default="4.5G")
    parser.add_argument("--space", default="default")
    parser.add_argument("--data", default="digits")
    parser.add_argument("--address", default=None)
    args = parser.parse_args()

    import ray

    from nas.engine.ray_cluster import init_ray
    from nas.engine.record import Status, status
    from nas.engine.search import run_search
    from nas.engine.settings import SearchSettings
    from space.choices import Space
    from space.cost import parse_flops
    from trainers.proxy import ProxySettings

    init_ray(args.address)
    gpus = ray.cluster_resources().get("GPU", 0)
    if not gpus:
        raise SystemExit("error: Ray sees no GPU here; run on a GPU machine or pass --address of a cluster with one")
    proxy = ProxySettings(epochs=args.epochs, resolution=args.resolution, train_images=args.train_images or None, data=args.data)
    print(f"GPU: {gpu_model()}; Ray: {gpus:g} GPU, {ray.cluster_resources().get('CPU', 0):g} CPUs")
    print(f"{args.trials} trials of {args.epochs} epochs, {args.data} at {args.resolution}px, "
          f"{args.train_images or 'all'} images/epoch, {args.cpus_per_trial:g} CPUs per trial, budget {args.budget}")
    print("| GPU per trial | at once | trained | wall | trials/hour | vs first | mean GPU util | peak GPU memory |")
    print("|---|---|---|---|---|---|---|---|")
    reference = None
    with tempfile.TemporaryDirectory() as tmp:
        for fraction in [float(f) for f in args.fractions.split(",")]:
            settings = SearchSettings(
                study=f"gpu{fraction:g}", budget=parse_flops(args.budget), space=Space.from_yaml(args.space),
                storage=f"sqlite:///{tmp}/gpu{fraction:g}.db", proxy=proxy, trials=args.trials, grace_period=args.epochs,
                cpus_per_trial=args.cpus_per_trial, gpus_per_trial=fraction, address=args.address,
                results_dir=os.path.join(tmp, "ray"),
            )
            with GpuSampler() as gpu:
                started = time.perf_counter()
                outcome = run_search(settings)
                wall = time.perf_counter() - started
            trained = sum(status(t) == Status.TRAINED for t in outcome.study.trials)
            per_hour = trained / wall * 3600
            reference = reference or per_hour
            at_once = min(int(gpus / fraction), int(ray.cluster_resources().get("CPU", 1) // args.cpus_per_trial))
            print(f"| {fraction:g} | {at_once} | {trained} | {wall:.0f} s | {per_hour:.0f} | {per_hour / reference:.2f}x | "
                  f"{gpu.summary()} |", flush=True)


if __name__ == "__main__":
    main()
