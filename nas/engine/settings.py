"""A search's settings and every check that needs no torch, Ray or study: run before any of them starts.

Settings are composed from parts, each declared once with its defaults, its checks and its `identity()` (what a
study keeps of it): the budget band, where the cost is counted, and what each trial may use. The parts are
keyword-only dataclasses mixed into the commands' settings (SearchSettings, nas.evaluate.fidelity's FidelitySettings), so a
composite keeps flat field names (`s.cost_resolution`: the names stored studies' identities use). A field's
`metadata` carries its command-line help: console/options.py makes the options from it, so neither a default nor a
help text is written twice.

A mistake on the command line (a bad value, an unreachable budget, a Ray address where nothing answers)
is reported here in a fraction of a second, and leaves no study file and no Ray processes behind.
"""

from __future__ import annotations

import dataclasses
import math
import os
import random
import shutil
import socket
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from space.choices import SeededSuggester, Space
from space.cost import check_resolution
from space.errors import ConvspaceError, require
from space.fitting import Band, propose
from trainers.settings import ProxySettings, check_seed, option

SAMPLERS = ("nsga2", "tpe", "random")
MIN_CPUS = 0.1  # less is no share of a core a trial could train on
# Early stopping: Pareto-aware ASHA (nas.engine.schedulers), Ray's accuracy-only ASHA, or none (every trial trains every epoch).
SCHEDULERS = ("pareto-asha", "asha", "none")


@dataclass(frozen=True, kw_only=True)
class BudgetBand:
    """Part: the FLOPs a study wants its networks at: at most `budget` and, with `flops_min`, at least that many."""

    budget: int = field(metadata=option("FLOPs budget of the target network, e.g. 4.5GFLOPs, 450M, 4.5e9.", flops=True))
    flops_min: int = field(default=0, metadata=option(  # 0: no floor
        "Refuse networks below this many FLOPs too, as over-budget ones are: a band from --flops-min to the budget for studies "
        "that want every network near the budget, e.g. 4GFLOPs.", flops=True))  # no [...]: the help is rich markup

    def __post_init__(self) -> None:
        """A bad value fails here in one line."""
        require(self.budget > 0, "budget", "must be > 0", self.budget)
        require(0 <= self.flops_min < self.budget, "flops-min", f"must be >= 0 and below the budget ({self.budget:,} FLOPs)", self.flops_min)

    def identity(self) -> dict[str, int]:
        """The band as a study keeps it; the floor only when set, so that studies made before the band still resume."""
        return {"budget": self.budget, **({"flops_min": self.flops_min} if self.flops_min else {})}


@dataclass(frozen=True, kw_only=True)
class CostSettings:
    """Part: where the FLOPs objective and the budget are counted: the target network's input size and classes (by
    default the papers' convention, space.fitting.Band's: 224 px, 1000 classes), not the proxy's."""

    cost_resolution: int = field(default=Band.resolution, metadata=option("Resolution at which FLOPs and the budget are counted."))
    cost_classes: int = field(default=Band.classes, metadata=option("Classes of the target network's head for the FLOPs count."))

    def __post_init__(self) -> None:
        """A bad value fails here in one line."""
        check_resolution("cost-resolution", self.cost_resolution)
        require(self.cost_classes >= 1, "cost-classes", "must be >= 1", self.cost_classes)

    def identity(self) -> dict[str, int]:
        """Both define a study: the same network costs differently at another resolution."""
        return {"cost_resolution": self.cost_resolution, "cost_classes": self.cost_classes}


@dataclass(frozen=True, kw_only=True)
class TrialResources:
    """Part: what each training may use, and where it runs (a local Ray, or a cluster's head)."""

    cpus_per_trial: float = field(default=1.0, metadata=option("CPUs each proxy training gets."))
    gpus_per_trial: float = field(default=0.0, metadata=option("GPUs each proxy training gets (fractions pack several per GPU)."))
    address: str | None = field(default=None, metadata=option("Address of an existing Ray cluster, HOST:PORT (default: start Ray locally)."))

    def __post_init__(self) -> None:
        """A bad value fails here in one line (whether the address answers is `check_address`'s, a network call)."""
        check_trial_resources(self.cpus_per_trial, self.gpus_per_trial, self.address)

    def identity(self) -> dict[str, Any]:
        """Nothing: where and with what a trial trains changes how fast, not what it scores."""
        return {}


@dataclass(frozen=True, kw_only=True)
class FidelitySample:
    """Part: how many random networks `fidelity` trains both ways, and the k of its top-k overlap (nas.evaluate.fidelity checks
    them against the ranking's minimum). Neither defines the study: a larger n keeps the first networks."""

    n: int = field(default=8, metadata=option("How many random networks, >= 5 (seeded; a larger --n on a rerun keeps the first ones).",
                                              decls=("--n", "-n")))
    top_k: int = field(default=3, metadata=option("Report how many of the k best by the proxy are among the k best by the long schedule."))

    def identity(self) -> dict[str, Any]:
        """Nothing: the same study serves any n and k."""
        return {}


@dataclass(frozen=True)
class SearchSettings(BudgetBand, CostSettings, TrialResources):
    """One search command's settings: the parts (budget band, cost, resources) and the search's own. The study keeps
    the ones that define it (`identity`: space, band, cost, proxy)."""

    study: str
    space: Space
    storage: str
    proxy: ProxySettings = field(default_factory=ProxySettings)
    trials: int = field(default=12, metadata=option(
        "Trials to train in the study, counting those already there: trained to the end, stopped early (--scheduler or the "
        "time limit), or failed (points refused before training do not count)."))
    # TPE: the one sampler whose front beat random search with an interval clear of it on the cheap tier of
    # benchmarks/search_quality.py (5 seeds x 100 trials; docs/benchmarks.md "Search quality after fitting")
    sampler: str = field(default="tpe", metadata=option(f"{', '.join(SAMPLERS)}."))
    warm_start: bool = field(default=True, metadata=option(  # nas.engine.warm_start
        "Train the published networks that fit the band (or scale into it) first, in a new study: ConvNeXt-T, ResNet-50, "
        "Conv2Former-T, ...", decls="--warm-start/--no-warm-start"))
    time_budget: float | None = field(default=None, metadata=option(
        "Stop after this many seconds of wall clock (the trials still training are queued for the rerun)."))
    trial_time_limit: float | None = field(default=None, metadata=option(  # then it ends as stopped (stop_reason "time limit")
        "Seconds one trial may train; then it stops early (recorded as stopped, stop_reason 'time limit'), so one huge sampled "
        "network cannot hold up the search."))
    scheduler: str = field(default="pareto-asha", metadata=option(  # not part of the study's identity; recorded on each trial
        f"Early stopping, one of {', '.join(SCHEDULERS)}: pareto-asha keeps the non-dominated (accuracy, FLOPs) trials of each "
        "rung, asha the most accurate, none stops nothing."))
    grace_period: int = field(default=1, metadata=option("ASHA: epochs every trial trains before it may be stopped."))
    reduction_factor: int = field(default=3, metadata=option("ASHA: keep the best 1/factor at each rung."))
    seed: int = field(default=0, metadata=option("Seeds the sampler, the data split and the training."))
    results_dir: str | None = None  # Ray's trial folders; None: beside a SQLite study, else a temporary folder
    heartbeat_interval: int = field(default=5, metadata=option("Seconds between heartbeats of running trials."))
    heartbeat_grace: int = field(default=20, metadata=option("A running trial silent this long (its driver died) is retrained."))

    @property
    def band(self) -> Band:
        """Where the search wants its networks: the budget, --flops-min, the cost's resolution and classes, and the
        proxy's resolution (a dilated conv padding past its maps there would train a degenerate network)."""
        return Band(self.budget, self.flops_min, self.cost_resolution, self.cost_classes, self.proxy.resolution)

    def identity(self) -> dict[str, Any]:
        """What must not change when a study is resumed (else its trials would not be comparable): the space, the
        parts' identities and the proxy's."""
        return {
            "space": self.space.name, "space_dims": {k: dataclasses.asdict(d) for k, d in self.space.dims.items()},
            **BudgetBand.identity(self), **CostSettings.identity(self), **TrialResources.identity(self),
            "proxy": self.proxy.identity(),
            **({"space_scale": self.space.scale} if self.space.scale != "absolute" else {}),  # only when set: absolute spaces resume
        }

    def __post_init__(self) -> None:
        """A bad value fails here in one line, before the study is opened or Ray starts."""
        require(1 <= self.trials <= 100_000, "trials", "must be in 1..100000", self.trials)
        check_seed("seed", self.seed)
        require(self.sampler in SAMPLERS, "sampler", f"must be one of {', '.join(SAMPLERS)}", self.sampler)
        BudgetBand.__post_init__(self)
        CostSettings.__post_init__(self)
        TrialResources.__post_init__(self)
        require(self.time_budget is None or self.time_budget > 0, "time-budget", "must be > 0 seconds", self.time_budget)
        require(self.trial_time_limit is None or self.trial_time_limit > 0, "trial-time-limit", "must be > 0 seconds", self.trial_time_limit)
        require(self.scheduler in SCHEDULERS, "scheduler", f"must be one of {', '.join(SCHEDULERS)}", self.scheduler)
        require(self.grace_period >= 1, "grace-period", "must be >= 1", self.grace_period)
        require(self.reduction_factor >= 2, "reduction-factor", "must be >= 2", self.reduction_factor)
        require(self.heartbeat_interval >= 1, "heartbeat-interval", "must be >= 1", self.heartbeat_interval)
        require(self.heartbeat_grace > self.heartbeat_interval, "heartbeat-grace",
                f"must be longer than the heartbeat interval ({self.heartbeat_interval} s)", self.heartbeat_grace)


CONFIRM_SEEDS = 3  # `confirm`'s seeds per network by default (the search's own training counts as the first)


def check_confirm(seeds: int, top: int | None, resources: TrialResources) -> None:
    """`confirm`'s settings, checked before a study is read or Ray starts (the resources checked themselves when made)."""
    require(seeds >= 2, "seeds", "must be >= 2 (the search's own training is the first)", seeds)
    require(top is None or top >= 1, "top", "must be >= 1", top)
    check_address(resources.address)


def check_trial_resources(cpus: float, gpus: float, address: str | None) -> None:
    """Resources Ray can give each trial; on a machine without a GPU, Ray would hold GPU trials pending forever."""
    require(math.isfinite(cpus) and cpus >= MIN_CPUS, "cpus-per-trial", f"must be a number >= {MIN_CPUS:g}", cpus)
    require(math.isfinite(gpus) and gpus >= 0 and (gpus < 1 or float(gpus).is_integer()), "gpus-per-trial",
            "must be 0, a fraction below 1 (trials share a GPU) or a whole number", gpus)
    if address is None:  # a local Ray has this machine's CPUs: a trial asking for more would wait forever
        have = os.cpu_count() or 1
        require(cpus <= have, "cpus-per-trial", f"must be <= {have}, the CPUs of this machine (a trial asking for more never starts)", cpus)
    if gpus and address is None:
        have = local_gpus()
        if have is not None:  # else a driver this cannot read (not NVIDIA's): Ray counts them, and the search checks after
            require(have > 0, "gpus-per-trial",
                    "this machine has no GPU: leave it out to train on CPUs, or join a cluster with GPUs (--address)", gpus)
            require(gpus <= have, "gpus-per-trial",
                    f"must be <= {have}, the GPUs of this machine (a trial asking for more never starts)", gpus)


NVIDIA_GPUS = Path("/proc/driver/nvidia/gpus")  # one folder per GPU while NVIDIA's driver is loaded
OTHER_GPU_DEVICES = (Path("/dev/kfd"), Path("/dev/dxg"))  # AMD's ROCm, WSL's GPU: their GPUs are Ray's to count


def local_gpus() -> int | None:
    """The GPUs a local Ray finds on this machine, counted as Ray counts them but without importing torch (seconds) or
    Ray: $CUDA_VISIBLE_DEVICES when it is set, else NVIDIA's driver (its /proc folder, or `nvidia-smi -L`). None where
    another vendor's driver is present and the count is not known here."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        devices = [d.strip() for d in visible.split(",")]
        # CUDA stops at the first entry that names no device ("-1", a blank): the usual way to hide every GPU
        return next((i for i, d in enumerate(devices) if not d or d.startswith("-")), len(devices))
    if NVIDIA_GPUS.is_dir():
        return sum(1 for _ in NVIDIA_GPUS.iterdir())
    smi = shutil.which("nvidia-smi")
    if smi:
        try:
            listed = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=10).stdout
        except (OSError, subprocess.SubprocessError):
            return None
        return sum(line.startswith("GPU ") for line in listed.splitlines())
    return None if any(device.exists() for device in OTHER_GPU_DEVICES) else 0


def check_budget_reachable(space: Space, budget: int, cost_resolution: int, cost_classes: int, seed: int = 0,
                           probes: int = 1000, flops_min: int = 0) -> None:
    """Refuse a budget below every point of the space (or a band [flops_min, budget] no point falls in) before any
    study is touched.

    Otherwise the search would propose up to a thousand points, minutes of SQL, before giving up. Random points in
    memory, fitted to the band as the search fits them, stopping at the first that lands in it (usually the first few;
    a fitted space needs fewer draws, since each is scaled onto the band)."""
    rng, cheapest, costliest = random.Random(seed), None, 0
    band = Band(budget, flops_min, cost_resolution, cost_classes)
    drawn = (probes // 5 if space.scale == "fitted" else probes) * (10 if flops_min else 1)  # a narrow band: look further
    for _ in range(drawn):
        proposal = propose(space, SeededSuggester(rng), band)
        if proposal.refusal is None:
            return
        flops = proposal.cost.flops
        cheapest, costliest = min(flops, cheapest or flops), max(flops, costliest)
    if flops_min and cheapest <= budget:
        raise ConvspaceError(
            f"flops-min: no sampled point of space {space.name!r} falls between {flops_min / 1e9:.4g} and {budget / 1e9:.4g} GFLOPs "
            f"({drawn} drawn at {cost_resolution}px and {cost_classes} classes, from {cheapest / 1e9:.4g} to "
            f"{costliest / 1e9:.4g} GFLOPs); widen the band"
        )
    raise ConvspaceError(
        f"budget: {budget / 1e9:.4g} GFLOPs is below every sampled point of space {space.name!r} (the cheapest of "
        f"{drawn} costs {cheapest / 1e9:.4g} GFLOPs at {cost_resolution}px and {cost_classes} classes); raise it"
    )


def check_address(address: str | None, timeout: float = 10.0) -> None:
    """A Ray cluster address must answer before a study is created: Ray itself retries a dead one for minutes."""
    if address is None or address in ("auto", "local"):
        return
    hostport = address.removeprefix("ray://")
    host, _, port = hostport.rpartition(":")
    require(bool(host) and port.isdigit(), "address", "must be HOST:PORT (the Ray head's GCS port, 6379 by default)", address)
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as exc:
        reason = "no answer" if isinstance(exc, TimeoutError) else (exc.strerror or type(exc).__name__).lower()
        raise ConvspaceError(f"address: no Ray head answers at {hostport} ({reason}); start one with "
                             "`ray start --head --port 6379` or leave --address out to run locally") from None


def is_loopback(host: str) -> bool:
    """Whether `host` is only reachable from this machine: a loopback address, `localhost`, or a name that resolves
    to loopback addresses only (0.0.0.0 and ::, every interface, are not)."""
    import ipaddress

    if host.lower().rstrip(".") == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:  # a host name: what it resolves to decides
        try:
            resolved = {info[4][0] for info in socket.getaddrinfo(host, None)}
        except (OSError, UnicodeError):
            return False
        return bool(resolved) and all(is_loopback(a.split("%")[0]) for a in resolved)
    mapped = getattr(address, "ipv4_mapped", None)  # ::ffff:127.0.0.1 is IPv4's loopback
    return (mapped or address).is_loopback


DASHBOARD_HOST, DASHBOARD_PORT = "127.0.0.1", 8080  # `dashboard` serves on loopback by default


def tunnel(port: int) -> str:
    """The SSH tunnel that keeps a dashboard on `port` on loopback while another machine looks at it."""
    return f"ssh -L {port or DASHBOARD_PORT}:{DASHBOARD_HOST}:{port or DASHBOARD_PORT} HOST"


def check_host(host: str, allow_remote: bool, port: int = 0) -> bool:
    """Whether the dashboard would be reachable from other machines; without --allow-remote that is refused: its token
    (nas.front.dashboard) travels in plain HTTP, so anyone on the path could read it and then change or delete the study.
    The port is checked first (else a traceback from deep in the socket module)."""
    if not 0 <= port <= 65535:
        raise ConvspaceError(f"port: must be in 1..65535 (or 0: a free port the system picks), got {port}")
    if is_loopback(host):
        return False
    if not allow_remote:
        raise ConvspaceError(f"host: {host} is not a loopback address: other machines could reach the dashboard, and its token "
                             "travels in plain HTTP (whoever reads it on the way can change or delete the study); keep "
                             f"{DASHBOARD_HOST} and use an SSH tunnel ({tunnel(port)}), or pass --allow-remote")
    return True


def check_search(s: SearchSettings) -> None:
    """Everything about a search that can be known before the study is opened and Ray is started."""
    from trainers.settings import check_data

    check_data(s.proxy.data, s.proxy.data_dir)
    check_budget_reachable(s.space, s.budget, s.cost_resolution, s.cost_classes, s.seed, flops_min=s.flops_min)
    check_address(s.address)

