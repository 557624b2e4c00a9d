"""The warm start: published networks enqueued as the first trials of a new study.

Why: a sampler's first generation is random, and random shapes of a wide space are mostly unlike anything that
works. The ConvNeXt roadmap and the published sizes are known good designs; those the space holds are fitted into the
band by the same solver as every proposal (a larger one scaled down to the budget, a smaller one up to the lowest
target) and enqueued, so the first generation holds ResNet-50 / ConvNeXt-T-class networks the sampler breeds from.
They take at most half of NSGA-II's first population and a third of the trials, so the sampler's own draws still explore.
"""

from __future__ import annotations

import optuna

from nas.engine.bridge import POPULATION
from nas.engine.record import PROPOSED_BY, StudyRecord, TrialRecord, enqueue, holds_config
from space.choices import Replay, Space
from space.fitting import Band, fitted_params, propose
from space.presets import PRESETS

# Published networks first, one of each family, then the rest and the roadmap steps (in the paper's order).
ORDER = ("convnext_tiny", "resnet50", "conv2former_t", "resnext50_32x4d", "resnest50d", "conv2former_n", "convnext_small")


def warm_start_points(space: Space, band: Band, limit: int = POPULATION // 2) -> list[tuple[str, dict]]:
    """(preset name, trial params) of up to `limit` published networks the space holds, each fitted into the band
    and distinct from the others after fitting."""
    names = [*ORDER, *(n for n in PRESETS if n not in ORDER)]
    points, seen = [], set()
    for name in names:
        params = fitted_params(space, PRESETS[name], band)
        if params is None:
            continue
        proposal = propose(space, Replay(params), band)
        if proposal.refusal is not None or proposal.config.hash in seen:
            continue
        seen.add(proposal.config.hash)
        points.append((name, params))
        if len(points) == limit:
            break
    return points


def warm_start_size(trials: int) -> int:
    """How many published networks a search of `trials` trials starts with: half of NSGA-II's first population, and no
    more than a third of the trials, so that a short search is still mostly the sampler's."""
    return max(1, min(POPULATION // 2, trials // 3))


def enqueue_warm_start(study: optuna.Study, space: Space, band: Band, limit: int = POPULATION // 2) -> list[str]:
    """Enqueue the warm start once per study (never on a resume); the names enqueued."""
    record = StudyRecord(study)
    if record.warm_started is not None:
        return []
    trained = {TrialRecord(t).hash for t in study.get_trials(deepcopy=False) if holds_config(t)}
    names = []
    for name, params in warm_start_points(space, band, limit):
        proposal = propose(space, Replay(params), band)
        if proposal.config.hash in trained:
            continue
        enqueue(study, params, {PROPOSED_BY: "warm_start", "warm_start": name}, skip_if_exists=True)
        names.append(name)
    record.write({"warm_started": names})
    return names
