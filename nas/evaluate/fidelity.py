"""Does the proxy rank networks like longer training does? Measured on the user's own data.

N networks are drawn at random inside the budget (seeded: the same --seed gives the same networks, and a larger N
the same first ones), each is trained with the proxy settings and with a longer schedule (more epochs, optionally
more images; the same data, resolution, learning rate and seed), and the two accuracy columns are compared by rank
(nas.evaluate.ranking). Both kinds of training are trials of one study whose identity is the long schedule, so a rerun
trains only what is missing, and a rerun with other proxy settings trains only the new proxy runs against the same
long ones: proxy settings can be compared per minute spent.

Importing this module imports no torch, Ray or Optuna: the command checks its settings with it first.
"""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass
from typing import Any

from nas.engine.events import Progress
from nas.engine.record import TrialRecord
from nas.engine.settings import BudgetBand, CostSettings, FidelitySample, TrialResources, check_address, check_budget_reachable
from nas.evaluate.ranking import MIN_FOR_INTERVAL, Agreement, agreement
from space.choices import SeededSuggester, Space
from space.config import ArchConfig
from space.cost import arch_cost
from space.errors import ConvspaceError, require
from trainers.settings import RUN_ONLY, ProxySettings, check_data

PROXY, LONG = "proxy", "long"  # the `fidelity` attribute of each trial


@dataclass(frozen=True)
class FidelitySettings(BudgetBand, CostSettings, TrialResources, FidelitySample):
    """One fidelity command: which networks (space, the band and cost parts, n, seed), the proxy, what the long schedule
    changes, and each training's resources (the parts of nas.engine.settings)."""

    study: str
    storage: str
    space: Space
    proxy: ProxySettings
    long_epochs: int
    long_train_images: int | None  # None: all the training images
    results_dir: str | None = None

    def __post_init__(self) -> None:
        """A bad value fails here in one line, before any network is sampled or trained."""
        require(self.n >= MIN_FOR_INTERVAL, "n", f"must be >= {MIN_FOR_INTERVAL} (no ranking of fewer networks is significant at 5%)", self.n)
        require(1 <= self.top_k <= self.n, "top-k", f"must be between 1 and --n ({self.n})", self.top_k)
        BudgetBand.__post_init__(self)
        CostSettings.__post_init__(self)
        TrialResources.__post_init__(self)
        long = self.long  # its own checks (long-train-images >= 1)
        more_images = _images(long) >= _images(self.proxy)
        require(long.epochs >= self.proxy.epochs and more_images and (long.epochs, _images(long)) != (self.proxy.epochs, _images(self.proxy)),
                "long-epochs", f"the long schedule must train longer than the proxy ({self.proxy.epochs} epochs of "
                f"{self.proxy.train_images or 'all'} images): more epochs or more images, fewer of neither", long.epochs)

    @property
    def long(self) -> ProxySettings:
        """The long schedule: the proxy with more epochs (and images); same data, resolution, learning rate and seed."""
        try:
            return dataclasses.replace(self.proxy, epochs=self.long_epochs, train_images=self.long_train_images)
        except ConvspaceError as exc:
            raise ConvspaceError(f"long-{exc}") from None


def _images(settings: ProxySettings) -> float:
    return settings.train_images or float("inf")


def check_fidelity(s: FidelitySettings) -> list[ArchConfig]:
    """Everything knowable before a study is opened or Ray starts; returns the N networks the command will train."""
    check_data(s.proxy.data, s.proxy.data_dir)
    check_budget_reachable(s.space, s.budget, s.cost_resolution, s.cost_classes, s.proxy.seed, flops_min=s.flops_min)
    check_address(s.address)
    return sample_in_budget(s.space, s.n, s.budget, seed=s.proxy.seed, cost=s, flops_min=s.flops_min)


def sample_in_budget(space: Space, n: int, budget: int, *, seed: int, cost: CostSettings | None = None, flops_min: int = 0,
                     patience: int = 1000) -> list[ArchConfig]:
    """The first n distinct random networks of `space` within `budget` and above `flops_min`, their cost counted as
    `cost` says (default: the papers' convention) (seeded; a larger n keeps the first ones).

    Gives up after `patience` draws in a row bring no new one: the space (or the part of it inside the budget) is
    smaller than n, or nearly all of it is over the budget."""
    rng, networks, seen, misses, cost = random.Random(seed), [], set(), 0, cost or CostSettings()
    while len(networks) < n:
        if misses == patience:
            raise ConvspaceError(f"n: only {len(networks)} distinct networks of space {space.name!r} fit in {budget / 1e9:.4g} GFLOPs "
                                 f"(no new one in the last {patience} draws); lower --n or raise --budget")
        cfg = dataclasses.replace(space.sample(SeededSuggester(rng)), num_classes=cost.cost_classes)
        misses += 1
        if cfg.hash not in seen and flops_min <= arch_cost(cfg, cost.cost_resolution).flops <= budget:
            seen.add(cfg.hash)
            networks.append(cfg)
            misses = 0
    return networks


def fidelity_identity(s: FidelitySettings) -> dict[str, Any]:
    """What must not change when a fidelity study is resumed: the networks (space, budget, seed) and the long schedule.
    The proxy settings may change: each proxy trial records its own, and is compared with the same long runs."""
    return {"kind": "fidelity", "space": s.space.name, "space_dims": {k: dataclasses.asdict(d) for k, d in s.space.dims.items()},
            **BudgetBand.identity(s), **CostSettings.identity(s), "long": _defining(s.long)}


def _defining(settings: ProxySettings | dict[str, Any]) -> dict[str, Any]:
    """The settings that decide a score (`ProxySettings.identity`), from the settings or from a trial's record of them."""
    return settings.identity() if isinstance(settings, ProxySettings) else {k: v for k, v in settings.items() if k not in RUN_ONLY}


@dataclass(frozen=True)
class FidelityReport:
    """The two columns side by side and how far their rankings agree; minutes are the trainings' own wall time."""

    study: str
    agreement: Agreement
    pairs: list[dict[str, Any]]
    proxy: ProxySettings
    long: ProxySettings
    proxy_minutes: float
    long_minutes: float

    def to_dict(self) -> dict[str, Any]:
        """The command's --json object."""
        return {"study": self.study, **self.agreement.to_dict(), "proxy_settings": _defining(self.proxy),
                "long_settings": _defining(self.long), "proxy_minutes": self.proxy_minutes, "long_minutes": self.long_minutes,
                "pairs": self.pairs}


def run_fidelity(s: FidelitySettings, progress: Progress | None = None) -> FidelityReport:
    """Train what the study is missing (the proxy runs first: they are quick), then compare the two columns."""
    networks = check_fidelity(s)
    # Only now the heavy parts: the checks above run in a fraction of a second and leave no file and no Ray behind.
    from nas.engine.study import open_study
    from nas.evaluate.fixed import Job, train_fixed
    from trainers.data import load_data

    load_data(s.proxy.data, s.proxy.resolution, s.proxy.seed, s.proxy.data_dir, s.proxy.cache_dir)  # builds the cache
    study, _ = open_study(s.study, s.storage, fidelity_identity(s), attrs={"budget": s.budget})
    for kind, settings in ((PROXY, s.proxy), (LONG, s.long)):
        jobs = [Job(f"network {i} ({kind})", cfg, {"fidelity": kind, "sample": i}) for i, cfg in missing(study, networks, kind, settings)]
        train_fixed(study, s.storage, f"{s.study}-{kind}", settings, jobs, resources=s, cost=s, results_dir=s.results_dir, progress=progress)
    proxy, long = ({TrialRecord(t).hash: t for t in _trials(study, kind, settings)} for kind, settings in ((PROXY, s.proxy), (LONG, s.long)))
    pairs = [{"sample": i, "config": cfg.hash, "gflops": arch_cost(cfg, s.cost_resolution).flops / 1e9,
              "proxy_trial": proxy[cfg.hash].number, "long_trial": long[cfg.hash].number,
              PROXY: proxy[cfg.hash].values[0], LONG: long[cfg.hash].values[0]} for i, cfg in enumerate(networks)]

    def minutes(trials: dict[str, Any]) -> float:
        return round(sum(TrialRecord(trials[cfg.hash]).trainable_seconds or 0.0 for cfg in networks) / 60, 2)

    return FidelityReport(s.study, agreement([p[PROXY] for p in pairs], [p[LONG] for p in pairs], top_k=s.top_k, seed=s.proxy.seed),
                          pairs, s.proxy, s.long, minutes(proxy), minutes(long))


def missing(study: Any, networks: list[ArchConfig], kind: str, settings: ProxySettings) -> list[tuple[int, ArchConfig]]:
    """The networks (with their sample number) the study holds no trained trial of, of this kind with these settings:
    what a run trains."""
    done = {TrialRecord(t).hash for t in _trials(study, kind, settings)}
    return [(i, cfg) for i, cfg in enumerate(networks) if cfg.hash not in done]


def _trials(study: Any, kind: str, settings: ProxySettings) -> list[Any]:
    """The study's trained trials of one kind made with exactly these settings."""
    from optuna.trial import TrialState

    records = ((t, TrialRecord(t)) for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
    return [t for t, r in records if r.fidelity == kind and _defining(r.proxy or {}) == _defining(settings)]

