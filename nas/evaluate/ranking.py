"""How far two rankings of the same networks agree: Kendall's tau with a bootstrap 95% interval, Spearman's rho, and
the overlap of the k best. `ablation` (proxy vs the paper) and `fidelity` (proxy vs longer training) report these.

With a dozen networks a tau alone says little; its interval says whether it can be told apart from 0 (no agreement).

The interval is a seeded percentile bootstrap over the networks (each resample draws (first, second) pairs with
replacement), written with numpy rather than `scipy.stats.bootstrap(paired=True)`: scipy returns NaN for the whole
interval as soon as one resample has every value of a column tied (tau is undefined there), which happens with a
handful of networks or when several of them sit at chance accuracy. Such resamples are left out here and counted.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy.stats import kendalltau, spearmanr

RESAMPLES = 4000
# Below 5 networks no interval is given: the bootstrap still would, but no ranking of 4 is significant at 5% (the exact
# two-sided p of a perfect tau is 2/4! = 0.083), while every resample of a perfect ranking gives the interval [1, 1].
MIN_FOR_INTERVAL = 5


@dataclass(frozen=True)
class Agreement:
    """Rank agreement of two columns of accuracies over the same `n` networks."""

    n: int
    kendall_tau: float
    ci95: tuple[float, float]  # percentile bootstrap interval of tau (NaN with fewer than MIN_FOR_INTERVAL networks)
    # scipy's test of tau = 0 (exact without ties): a percentile bootstrap of a dozen networks is too narrow, so both are shown
    p_value: float
    spearman: float
    top_k: int
    top_k_overlap: int  # how many of the k best by the first column are among the k best by the second
    resamples: int  # bootstrap resamples the interval rests on (those where tau is defined)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ci95": list(self.ci95)}


def kendall_tau_b(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """Kendall's tau-b of each row pair of two (resamples, n) arrays at once (scipy's `kendalltau`, vectorised);
    NaN where a row is all ties."""
    dx = np.sign(first[:, :, None] - first[:, None, :])
    dy = np.sign(second[:, :, None] - second[:, None, :])
    # over all ordered pairs: each unordered pair counts twice in every sum, which cancels in the ratio
    with np.errstate(invalid="ignore", divide="ignore"):
        return (dx * dy).sum((1, 2)) / np.sqrt((dx * dx).sum((1, 2)) * (dy * dy).sum((1, 2)))


def bootstrap_ci(first: Sequence[float], second: Sequence[float], *, seed: int = 0, resamples: int = RESAMPLES) -> tuple[tuple[float, float], int]:
    """The 95% percentile interval of tau over paired resamples of the networks, and how many resamples defined it
    (NaN and 0 with fewer than MIN_FOR_INTERVAL networks)."""
    x, y = np.asarray(first, float), np.asarray(second, float)
    if len(x) < MIN_FOR_INTERVAL:
        return (float("nan"), float("nan")), 0
    rows = np.random.default_rng(seed).integers(0, len(x), size=(resamples, len(x)))
    # in chunks: each holds two (chunk, n, n) sign arrays
    taus = np.concatenate([kendall_tau_b(x[r], y[r]) for r in np.array_split(rows, max(1, resamples * len(x) ** 2 // 4_000_000))])
    taus = taus[~np.isnan(taus)]
    if not len(taus):
        return (float("nan"), float("nan")), 0
    lo, hi = np.percentile(taus, [2.5, 97.5])
    return (float(lo), float(hi)), int(len(taus))


def top_k_overlap(first: Sequence[float], second: Sequence[float], k: int) -> int:
    """How many of the k highest values of `first` are among the k highest of `second` (ties: the earlier one first)."""
    best = [set(np.argsort(-np.asarray(col, float), kind="stable")[:k].tolist()) for col in (first, second)]
    return len(best[0] & best[1])


def agreement(first: Sequence[float], second: Sequence[float], *, top_k: int = 3, seed: int = 0) -> Agreement:
    """Kendall's tau-b (with its bootstrap interval), Spearman's rho and the top-k overlap of two accuracy columns."""
    if len(first) != len(second):
        raise ValueError(f"agreement: the columns differ in length ({len(first)} and {len(second)})")
    ci, used = bootstrap_ci(first, second, seed=seed)
    defined = len(first) >= 2
    with warnings.catch_warnings():  # a constant column: both are NaN, which the report shows; scipy's warning adds nothing
        warnings.simplefilter("ignore")
        tau, p = (float(v) for v in kendalltau(first, second)) if defined else (float("nan"), float("nan"))
        rho = float(spearmanr(first, second).statistic) if defined else float("nan")
    return Agreement(
        n=len(first),
        kendall_tau=tau,
        ci95=ci,
        p_value=p,
        spearman=rho,
        top_k=min(top_k, len(first)),
        top_k_overlap=top_k_overlap(first, second, min(top_k, len(first))),
        resamples=used,
    )
