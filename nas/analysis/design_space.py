"""Design-space analysis of a study, as the design-space papers do it (Radosavovic et al. 2019, 2020; pycls, nds).

From the trained trials of a study: the error EDF, the complexity-normalised EDF (each model weighted by 1 / the
models in its FLOPs bin, so a space is not judged better for holding more big models), per dimension the good range
by pycls's bootstrap (`sweep/analysis.py: get_filters`) and Optuna's PED-ANOVA importance, and two studies compared
by the Kolmogorov-Smirnov statistic. No torch: it reads the study only.
"""

from __future__ import annotations

import math
import warnings
from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np
import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution
from optuna.importance import PedAnovaImportanceEvaluator, get_param_importances
from optuna.trial import FrozenTrial, TrialState
from scipy import stats

from nas.engine.record import Status, StudyRecord, TrialRecord, status
from nas.front.seeds import seed_scores
from space.errors import ConvspaceError

MIN_TRIALS = 10  # fewer trained models say nothing about a distribution (NDS sizes its samples in hundreds)
DRAWS, SAMPLE, ALPHA = 2500, 0.25, 5.0  # pycls get_filters: 2,500 subsets of 25%, the 2.5-97.5 percentile band


@dataclass(frozen=True)
class Trained:
    """The trained models of one study: errors and FLOPs in trial order, the trials, and how they were chosen."""

    name: str
    trials: list[FrozenTrial]
    errors: np.ndarray
    flops: np.ndarray
    sampler: str | None
    stopped: int  # trials stopped early: left out, which biases the sample toward the models that train fast




def sampler_of(study: optuna.Study) -> str | None:
    """The sampler that chose the trials: recorded when the study was made (nas.engine.study), else what it left on them."""
    record = StudyRecord(study)
    if recorded := record.sampler:
        return str(recorded)
    if (record.identity or {}).get("kind") == "ablation":
        return "an ablation's fixed list"
    for trial in study.get_trials(deepcopy=False):
        for key in trial.system_attrs:  # Optuna's genetic samplers count generations as "<Sampler>:generation"
            if key.endswith(":generation"):
                return key.split(":")[0]
    return None


def more_trials(study: optuna.Study, needed: int) -> str:
    """`: train 6 more to the end with: convspace search ... --trials 18 --scheduler none`: the exact command that gets a
    search study there (its identity as options; no early stopping, so each new trial trains to the end), or ''."""
    from nas.engine.commands import command, search_args
    from nas.engine.storage import default_storage, display_url
    from nas.engine.study import trained_count, upgraded

    identity = upgraded(StudyRecord(study).identity)
    if not identity or not identity.get("budget") or identity.get("kind"):  # not a search's study (an ablation's list)
        return ""
    storage = getattr(study._storage, "_backend", study._storage)  # Optuna wraps an RDBStorage in a cache
    url = str(getattr(storage, "url", "") or "")
    named = display_url(url) if url and url != default_storage(study.study_name) else None  # the default needs no --storage
    args, unset = search_args(study.study_name, identity, storage=named, trials=trained_count(study) + needed, scheduler="none")
    records = (TrialRecord(t) for t in study.get_trials(deepcopy=False))
    seconds = [float(r.train_seconds) for r in records if r.status == Status.TRAINED and isinstance(r.train_seconds, int | float)]
    pace = f" (a trial trained to the end took {sum(seconds) / len(seconds):.0f} s here on average)" if seconds else ""
    return (f"; train {needed} more to the end with: {command(args)}" + (f" ({'; '.join(unset)})" if unset else "")
            + pace)


def load_trained(study: optuna.Study) -> Trained:
    """The study's fully trained trials (refused when fewer than MIN_TRIALS: an EDF of a handful means nothing)."""
    everything = study.get_trials(deepcopy=False)
    trials = [t for t in everything if t.state == TrialState.COMPLETE and status(t) == Status.TRAINED]
    if len(trials) < MIN_TRIALS:
        raise ConvspaceError(f"study: {study.study_name!r} holds {len(trials)} trained trials; the analysis needs at least {MIN_TRIALS} "
                             f"(a random sweep of a few hundred tells two spaces apart){more_trials(study, MIN_TRIALS - len(trials))}")
    scores = seed_scores(study)  # the mean over seeds where `confirm` added some
    errors = np.array([1.0 - scores[t.number].mean for t in trials])
    flops = np.array([float(t.values[1]) for t in trials])
    stopped = sum(status(t) == Status.STOPPED for t in everything)
    return Trained(study.study_name, trials, errors, flops, sampler_of(study), stopped)


def shared_range(*samples: Trained) -> tuple[float, float]:
    """The FLOPs range every compared study covers: models outside it weigh nothing in the normalised EDFs."""
    lo, hi = max(float(s.flops.min()) for s in samples), min(float(s.flops.max()) for s in samples)
    if not 0 < lo < hi:
        raise ConvspaceError(f"normalised EDF: refused, the trained models' FLOPs (of every study compared) share no range to bin "
                             f"({lo / 1e9:.3g}-{hi / 1e9:.3g} GFLOPs)")
    return lo, hi


def bin_weights(sample: Trained, lo: float, hi: float, bins: int) -> np.ndarray:
    """NDS's normalisation: weight 1 / (models in the bin) / bins over `bins` log-spaced FLOPs bins of [lo, hi].

    Log-spaced because sampled FLOPs span decades; over NDS's narrow FLOPs bands they equal its linear bins."""
    logs, edges = np.log10(sample.flops), np.linspace(math.log10(lo), math.log10(hi), bins + 1)
    inside = (sample.flops >= lo) & (sample.flops <= hi)
    counts, _ = np.histogram(logs[inside], bins=edges)
    empty = np.flatnonzero(counts == 0)
    if empty.size:
        i = int(empty[0])
        raise ConvspaceError(f"normalised EDF: refused, FLOPs bin {i + 1} of {bins} ({10 ** edges[i] / 1e9:.3g}-{10 ** edges[i + 1] / 1e9:.3g} "
                             f"GFLOPs) holds no trained model of {sample.name!r} ({empty.size} bins empty); pass fewer --bins or train more")
    which = np.clip(np.searchsorted(edges, logs, side="right") - 1, 0, bins - 1)  # np.histogram counts hi in the last bin
    return np.where(inside, 1.0 / counts[which] / bins, 0.0)


def weighted_edf(errors: np.ndarray, weights: np.ndarray, at: np.ndarray) -> np.ndarray:
    """F(e) = the weight of the models with error <= e, at each point of `at`."""
    order = np.argsort(errors, kind="stable")
    cumulative = np.concatenate([[0.0], np.cumsum(weights[order])])
    return cumulative[np.searchsorted(errors[order], at, side="right")]


def weighted_ks(a: Trained, wa: np.ndarray, b: Trained, wb: np.ndarray) -> dict[str, float]:
    """KS between two weighted EDFs: D = sup |Fa - Fb|, p by scipy's asymptotic two-sample law (ks_2samp's 'asymp')
    at Kish's effective sample sizes, since weighting leaves fewer models' worth of evidence than n."""
    grid = np.union1d(a.errors, b.errors)
    d = float(np.max(np.abs(weighted_edf(a.errors, wa, grid) / wa.sum() - weighted_edf(b.errors, wb, grid) / wb.sum())))
    na, nb = (w.sum() ** 2 / (w**2).sum() for w in (wa, wb))
    return {"statistic": d, "pvalue": float(stats.kstwo.sf(d, max(1, round(na * nb / (na + nb)))))}


def is_numeric(distribution: BaseDistribution) -> bool:
    """Ranges and ordered choices of numbers get a percentile band; other choices a set of good values."""
    if isinstance(distribution, CategoricalDistribution):
        return all(isinstance(c, int | float) and not isinstance(c, bool) for c in distribution.choices)
    return True


def good_values(errors: np.ndarray, values: list[Any], numeric: bool, rng: np.random.Generator) -> dict[str, Any]:
    """pycls's bootstrap: the best model of each of DRAWS subsets (25%, with replacement); its values' 2.5-97.5
    percentile band is the good range and the median the best value (for choices: the most frequent winners)."""
    draws = rng.integers(len(errors), size=(DRAWS, max(1, int(len(errors) * SAMPLE))))
    winners = [values[i] for i in draws[np.arange(DRAWS), np.argmin(errors[draws], axis=1)]]
    if numeric:
        # "nearest": a band of values the models held, not an interpolated kernel of 5.6
        lo, best, hi = (v.item() for v in np.percentile(winners, [ALPHA / 2, 50, 100 - ALPHA / 2], method="nearest"))
        return {"best": best, "good": [lo, hi]}
    share = {choice: count / DRAWS for choice, count in Counter(winners).most_common()}
    good, covered = [], 0.0
    for choice, fraction in share.items():  # the most frequent winners until they hold 95% of the draws
        if covered >= 1 - ALPHA / 100:
            break
        good.append(choice)
        covered += fraction
    return {"best": good[0], "good": good, "share": {str(k): v for k, v in share.items()}}


def importances(study: optuna.Study) -> dict[str, float]:
    """Optuna's PED-ANOVA importance of each param for a low error (it assesses conditional params, which fANOVA drops)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # PED-ANOVA warns that it ranks low targets: the error is one
        scores = seed_scores(study)
        return get_param_importances(study, evaluator=PedAnovaImportanceEvaluator(), target=lambda t: 1.0 - scores[t.number].mean)


def dimensions(study: optuna.Study, sample: Trained, seed: int) -> dict[str, dict[str, Any]]:
    """Per param of the study (the dimensions it sampled): importance, best value, good range, models that hold it."""
    weights = importances(study)
    rng = np.random.default_rng(seed)
    found: dict[str, dict[str, Any]] = {}
    for name, distribution in sorted({k: d for t in sample.trials for k, d in t.distributions.items()}.items()):
        held = [i for i, t in enumerate(sample.trials) if name in t.params]  # conditional dims: only where sampled
        found[name] = {"importance": weights.get(name), "n": len(held), "numeric": is_numeric(distribution)}
        values = [sample.trials[i].params[name] for i in held]
        if len(held) >= MIN_TRIALS:
            found[name] |= good_values(sample.errors[held], values, is_numeric(distribution), rng)
        else:
            found[name] |= {"best": None, "good": None}
    return dict(sorted(found.items(), key=lambda kv: -(kv[1]["importance"] or 0.0)))


def describe(study: optuna.Study, sample: Trained, weights: np.ndarray | None, seed: int) -> dict[str, Any]:
    """One study's part of the report: n, errors, EDFs, sampler, dimensions."""
    order = np.argsort(sample.errors, kind="stable")
    errors = sample.errors[order]
    return {
        "study": sample.name, "n": len(errors), "best_error": float(errors[0]), "median_error": float(np.median(errors)),
        "errors": errors.tolist(), "edf": (np.arange(1, len(errors) + 1) / len(errors)).tolist(),
        "normalized_edf": None if weights is None else np.cumsum(weights[order]).tolist(),
        "left_out_of_normalized": None if weights is None else int((weights == 0).sum()),
        "sampler": sample.sampler, "stopped_early": sample.stopped, "warnings": bias_warnings(sample),
        "dimensions": dimensions(study, sample, seed),
    }


def bias_warnings(sample: Trained) -> list[str]:
    """Why the trained models may not be a random sample of the space, and what would be."""
    found = []
    if sample.sampler != "RandomSampler":
        chosen = f"chosen by {sample.sampler}" if sample.sampler else "chosen by a sampler the study did not record"
        found.append(f"{sample.name!r}: trials {chosen}, not drawn at random: the EDFs and good ranges describe where it searched, "
                     "not the space; run a random sweep (search --sampler random --scheduler none) for an unbiased sample")
    if sample.stopped:
        found.append(f"{sample.name!r}: {sample.stopped} trials stopped early are left out, which favours the models that learn "
                     "fast; --scheduler none trains every sampled model")
    return found


def analyze(study: optuna.Study, against: optuna.Study | None = None, *, bins: int, seed: int = 0) -> tuple[dict[str, Any], list[Trained]]:
    """The report of a study (and of `against`, with both EDFs compared by KS) as one JSON-ready object, and the
    trained models it was made of (for the pictures)."""
    samples = [load_trained(study)] + ([load_trained(against)] if against else [])
    weights: list[np.ndarray | None] = [None] * len(samples)
    refused = None
    try:
        lo, hi = shared_range(*samples)
        weights = [bin_weights(s, lo, hi, bins) for s in samples]
    except ConvspaceError as exc:  # the rest of the analysis stands without the normalised EDF
        refused = str(exc)
    report = describe(study, samples[0], weights[0], seed)
    report |= {"bins": bins, "flops_range": None if refused else [lo, hi], "normalized_refused": refused}
    if against:
        a, b = samples
        report["against"] = describe(against, b, weights[1], seed)
        ks = stats.ks_2samp(a.errors, b.errors)
        report["ks"] = {"statistic": float(ks.statistic), "pvalue": float(ks.pvalue)}
        report["normalized_ks"] = None if refused else weighted_ks(a, weights[0], b, weights[1])
    return report, samples
