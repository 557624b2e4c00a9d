"""Fixed-architecture studies (e.g. the ConvNeXt roadmap): proxy-train each listed preset through Ray Tune,
store the results in an Optuna study, and compare them with reference (paper) accuracies.

Unlike a search nothing is sampled and nothing is stopped early: every listed network trains fully, and a
rerun only trains the ones the study does not hold yet.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from optuna.trial import TrialState

from nas.engine.events import Progress
from nas.engine.record import TrialRecord
from nas.engine.settings import TrialResources, check_address
from nas.engine.study import open_study
from nas.evaluate.fixed import Job, train_fixed
from nas.evaluate.ranking import Agreement, agreement
from nas.evaluate.study_file import StudyFile
from nas.front.seeds import seed_scores
from space.cost import PAPER_CLASSES
from space.presets import get_preset
from trainers.data import load_data


def ablation_identity(file: StudyFile) -> dict[str, Any]:
    """What must not change when an ablation study is resumed: its steps are compared with each other."""
    return {"kind": "ablation", "proxy": file.proxy.identity()}


def run_ablation(file: StudyFile, storage: str, *, resources: TrialResources | None = None, results_dir: str | None = None,
                 progress: Progress | None = None) -> list[dict[str, Any]]:
    """Train the networks the study does not hold yet, with `resources` (default: nas.engine.settings'); return one row per
    network (proxy and reference accuracy)."""
    # What the study file alone cannot tell fails here, before any file is written or Ray starts.
    resources = resources or TrialResources()
    check_address(resources.address)
    load_data(file.proxy.data, file.proxy.resolution, file.proxy.seed, file.proxy.data_dir, file.proxy.cache_dir)  # builds the cache
    study, _ = open_study(file.study, storage, ablation_identity(file))  # refuses a study trained with another proxy
    done = {TrialRecord(t).preset for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))}
    jobs = [Job(name, dataclasses.replace(get_preset(name), num_classes=PAPER_CLASSES), {"preset": name}) for name in file.reference if name not in done]
    train_fixed(study, storage, file.study, file.proxy, jobs, resources=resources, results_dir=results_dir, progress=progress)
    by_name = {TrialRecord(t).preset: t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))}
    scores = seed_scores(study)  # the mean over seeds where `confirm --top` repeated the steps
    return [{"preset": n, "proxy_accuracy": scores[by_name[n].number].mean, "proxy_std": scores[by_name[n].number].std,
             "seeds": len(scores[by_name[n].number].accuracies), "reference": ref, "gflops": by_name[n].values[1] / 1e9}
            for n, ref in file.reference.items()]


def rank_agreement(rows: list[dict[str, Any]], seed: int = 0) -> Agreement:
    """How the proxy ranks the networks against the reference: Kendall's tau-b with its bootstrap 95% interval."""
    return agreement([r["proxy_accuracy"] for r in rows], [r["reference"] for r in rows], seed=seed)
