"""A study as it lies in storage, as plain JSON, and everything convspace reads of it.

Why: nas.engine.record is the one door to the attributes of trials and studies, and studies stored before it must read the
same. `dump` writes a study's trials and study attributes as stored (Optuna's own fields, raw attributes); `load`
stores such a dump into a new study through Optuna alone (nothing of convspace writes it); `readings` is everything
the commands show of a study (`pareto` and its JSON, each trial's sentence, the dashboard's notes and view, the
export record, the counts the search checks). tests/nas/stored_study.json is the lived study (tests/nas/lived_study.py)
dumped, with its readings, by the code before nas.engine.record's TrialRecord; test_record.py holds today's code to both.
"""

from __future__ import annotations

import datetime
import json
from pathlib import Path
from typing import Any

import optuna
from optuna.distributions import distribution_to_json, json_to_distribution
from optuna.trial import TrialState

FIXTURE = Path(__file__).with_name("stored_study.json")


def dump(study: optuna.Study) -> dict[str, Any]:
    """The study's attributes and every trial, field by field, as stored."""
    storage, study_id = study._storage, study._study_id
    trials = [{"number": t.number, "state": t.state.name, "values": t.values, "params": t.params,
               "distributions": {k: distribution_to_json(d) for k, d in t.distributions.items()},
               "user_attrs": t.user_attrs, "system_attrs": t.system_attrs,
               "intermediate_values": {str(k): v for k, v in t.intermediate_values.items()},
               "datetime_start": t.datetime_start.isoformat() if t.datetime_start else None,
               "datetime_complete": t.datetime_complete.isoformat() if t.datetime_complete else None}
              for t in study.get_trials(deepcopy=False)]
    return {"name": study.study_name, "user_attrs": storage.get_study_user_attrs(study_id),
            "system_attrs": storage.get_study_system_attrs(study_id), "trials": trials}


def load(data: dict[str, Any], url: str) -> optuna.Study:
    """A new study at `url` holding the dump's trials and attributes, written through Optuna's storage API only."""
    study = optuna.create_study(study_name=data["name"], storage=url, directions=["maximize", "minimize"])
    storage, study_id = study._storage, study._study_id
    for key, value in data["user_attrs"].items():
        storage.set_study_user_attr(study_id, key, value)
    for key, value in data["system_attrs"].items():
        storage.set_study_system_attr(study_id, key, value)
    for t in data["trials"]:
        state = TrialState[t["state"]]
        when = {k: datetime.datetime.fromisoformat(t[k]) if t[k] else None for k in ("datetime_start", "datetime_complete")}
        frozen = optuna.trial.FrozenTrial(
            number=t["number"], trial_id=0, state=state, value=None, values=t["values"], params=t["params"],
            distributions={k: json_to_distribution(d) for k, d in t["distributions"].items()}, user_attrs=t["user_attrs"],
            system_attrs=t["system_attrs"], intermediate_values={int(k): v for k, v in t["intermediate_values"].items()}, **when)
        storage.create_new_trial(study_id, template_trial=frozen)
    return optuna.load_study(study_name=data["name"], storage=url)


def _plain(value: Any) -> Any:
    """JSON's view of a value (tuples as lists, enum strings as strings), so that readings compare as stored."""
    return json.loads(json.dumps(value, default=str))


def readings(study: optuna.Study) -> dict[str, Any]:
    """What the commands read of a study: `pareto` (JSON, the counts), each trial's sentence, the dashboard's study
    and trial notes and its view of the trials and the study, the export record of the best trial, the search's counts."""
    from nas.engine.endings import how_it_ended, study_words
    from nas.engine.ledger import StudyLedger
    from nas.engine.study import trained_count
    from nas.export.entries import pick_trial, plan_export
    from nas.front.dashboard_notes import study_note, trial_note
    from nas.front.dashboard_view import TrainedTrialsView
    from nas.front.pareto import counts, front_report
    from nas.front.plots import hypervolume_history
    from nas.front.seeds import seed_scores

    report = front_report(study)
    trials = study.get_trials(deepcopy=False)
    on_front = {row["trial"]: row for row in report.rows}
    view = TrainedTrialsView(study._storage)
    shown = view.get_all_trials(study._study_id, deepcopy=False)
    (frozen,) = [s for s in view.get_all_studies() if s.study_name == study.study_name]
    counted, held = StudyLedger(study).look()
    best = pick_trial(study, None)
    return _plain({
        "pareto": report.to_json(),
        "trials in words": study_words(report.endings),
        "counts": counts(study),
        "hypervolume history": hypervolume_history(study),
        "seed scores": {n: [s.accuracies, s.seeds] for n, s in seed_scores(study).items()},
        "sentences": {t.number: how_it_ended(t, report.endings) for t in trials},
        "study note": study_note(report, study.user_attrs.get("identity"), "pareto"),
        "trial notes": {t.number: trial_note(t, report.endings, on_front) for t in trials},
        "dashboard trials": {t.number: [t.state.name, t.values, list(t.user_attrs.items())] for t in shown},
        "dashboard study": list(frozen.user_attrs.items()),
        "export": plan_export(study, best, None, Path("exports"))["record"],
        "search counts": [counted, sorted(held), trained_count(study)],
    })
