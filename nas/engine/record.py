"""The trial record: every attribute convspace stores on a trial and on a study, read and written here only.

Optuna keeps a trial's state (COMPLETE, PRUNED, FAIL, ...) and a free dict of "user attributes"; what convspace keeps
there (the network, who chose it, how its training ended, which trial it retries or repeats, ...) is declared once, in
`TrialRecord` and `StudyRecord`, so that a reader finds every attribute with its meaning in one place and a misspelt
name fails when written instead of reading back as missing. No other module touches `user_attrs`. The names and
values on disk are those written before this module existed (plain strings: `Status` is a `StrEnum`), so stored
studies read the same.

Our `status` attribute says why a trial ended, since PRUNED alone cannot tell a sample refused before training from a
trial stopped early; `ENDINGS` is the one table of how a trial ended, with the words and the colour every view uses.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from enum import StrEnum
from typing import Any, Generic, TypeVar, overload

import optuna
from optuna.storages import BaseStorage
from optuna.trial import FrozenTrial, TrialState

from space.config import ArchConfig
from space.cost import Cost

ACC, FLOPS = "acc", "flops"  # Tune's metric names; FLOPS is also the trial attribute with the target's FLOPs
STATUS = "status"
EPOCH_ACCURACIES = "epoch_accuracies"  # each epoch's proxy accuracy: reported to Tune, kept on the trial
OVER_BUDGET_CONSTRAINT = "flops_over_budget"  # Optuna constraint of every sampled point: FLOPs minus the budget
UNDER_BAND_CONSTRAINT = "flops_under_band"  # with --flops-min: that floor minus FLOPs
INTERRUPTED = "interrupted"  # fail_reason prefix of trials a stopped search or a dead driver cut short
TIME_LIMIT = "time limit"  # stop_reason of a trial --trial-time-limit stopped (any other: the scheduler's name)


class Status(StrEnum):
    """How a trial ended (its `status` attribute)."""

    TRAINED = "trained"  # every epoch: COMPLETE, on the front if non-dominated
    STOPPED = "stopped"  # stopped early (ASHA or the time limit): PRUNED, its partial accuracy kept
    FAILED = "failed"  # raised, or its worker died: FAIL with fail_reason
    OVER_BUDGET = "over_budget"  # refused before training: PRUNED
    UNDER_BAND = "under_band"  # refused before training: below --flops-min, PRUNED
    DUPLICATE = "duplicate"  # refused before training: its config was already evaluated
    SURPLUS = "surplus"  # refused before training: another driver took the last of --trials
    UNFIT = "unfit"  # refused before training: a dilated conv would pad past its map at the proxy resolution
    INFEASIBLE = "infeasible"  # refused before training: no scale of its shape lands in the band (space.fitting)
    REPEAT = "repeat"  # a trained trial's network trained again with another seed (`confirm`): PRUNED (nas.front.seeds)


NEVER_TRAINED = (Status.OVER_BUDGET, Status.UNDER_BAND, Status.INFEASIBLE, Status.UNFIT, Status.DUPLICATE, Status.SURPLUS)
PROPOSED_BY = "proposed_by"  # who chose a trial's network: one of PROPOSERS
PROPOSERS = ("sampler", "warm_start", "random", "retry")
# Study user attrs counting the points an earlier bridge drew in memory and refused without storing a trial (studies
# made before proposals were fitted to the budget): the study's count of rejected samples is the stored ones plus these.
SCREENED = {Status.OVER_BUDGET: "rejected_over_budget", Status.UNDER_BAND: "rejected_under_band", Status.UNFIT: "rejected_unfit"}

T = TypeVar("T")


class Attr(Generic[T]):
    """One stored attribute of a trial or a study: its name on disk is its name in the record class (or `key`); it
    reads as None where the trial or study has none."""

    def __init__(self, key: str | None = None) -> None:
        self.key = key or ""

    def __set_name__(self, owner: type, name: str) -> None:
        self.key = self.key or name

    @overload
    def __get__(self, obj: None, owner: type) -> Attr[T]: ...

    @overload
    def __get__(self, obj: _Record, owner: type) -> T | None: ...

    def __get__(self, obj: _Record | None, owner: type) -> Attr[T] | T | None:
        return self if obj is None else obj.attrs.get(self.key)


class _Record:
    """What TrialRecord and StudyRecord share: the stored mapping, and writes checked against the declared attributes."""

    __slots__ = ("_source",)
    FIELDS: frozenset[str] = frozenset()  # every attribute name declared by the class (its `Attr`s)

    def __init_subclass__(cls) -> None:
        cls.FIELDS = frozenset(a.key for c in cls.__mro__ for a in vars(c).values() if isinstance(a, Attr))

    @property
    def attrs(self) -> Mapping[str, Any]:
        """Every stored attribute, as stored (to show them all; read one through its `Attr`)."""
        return self._source.user_attrs

    def write(self, attrs: Mapping[str, Any]) -> None:
        """Store `attrs` (declared names only: a misspelt one is a programming error, not a silent new attribute)."""
        check_names(type(self), attrs)
        for key, value in attrs.items():
            self._source.set_user_attr(key, value)


def check_names(record: type[_Record], attrs: Mapping[str, Any]) -> None:
    """Refuse attribute names the record does not declare."""
    unknown = sorted(set(attrs) - record.FIELDS)
    if unknown:
        raise ValueError(f"{record.__name__}: undeclared attributes {', '.join(unknown)}")


class TrialRecord(_Record):
    """One trial's stored attributes, typed (a FrozenTrial or a live trial's; written only to a live one)."""

    __slots__ = ()

    def __init__(self, trial: FrozenTrial | optuna.trial.Trial) -> None:
        self._source = trial

    # the network (every trial that was sampled or enqueued and costed)
    config: Attr[str] = Attr()  # ArchConfig JSON
    hash: Attr[str] = Attr()  # ArchConfig.hash: the duplicate check's key
    flops: Attr[int] = Attr(FLOPS)  # of the target network, at the study's cost resolution
    params: Attr[int] = Attr()
    fitted_base_width: Attr[int] = Attr()  # a fitted space's solver (space.fitting.Proposal.attrs)
    fitted_depth_scale: Attr[float] = Attr()
    flops_target_flops: Attr[float] = Attr()
    # who chose it, and who trains it
    proposed_by_stored: Attr[str] = Attr(PROPOSED_BY)  # as stored (read `proposed_by`: it answers for older trials too)
    warm_start: Attr[str] = Attr()  # the preset a warm-start trial was enqueued from
    retry_of: Attr[int] = Attr()  # the trial cut short whose network this one trains again
    retry_reason: Attr[str] = Attr()  # why that trial was cut short
    screened: Attr[bool] = Attr()  # trials from before proposals were fitted: a random draw replaced the proposal
    accepted: Attr[bool] = Attr()  # claimed for training (counts toward --trials while it runs)
    driver: Attr[int] = Attr()  # the number of the driver that trained it (nas.engine.study.claim_driver)
    proxy: Attr[dict[str, Any]] = Attr()  # the proxy settings it trained with
    scheduler: Attr[str] = Attr()  # the early stopping that ran over it
    # how its training went and ended
    status: Attr[str] = Attr(STATUS)  # a Status
    epochs: Attr[int] = Attr()  # epochs trained
    epoch_accuracies: Attr[list[float]] = Attr(EPOCH_ACCURACIES)
    proxy_accuracy: Attr[float] = Attr()  # the last epoch's
    train_seconds: Attr[float] = Attr()  # training alone
    trainable_seconds: Attr[float] = Attr()  # from entering the trainable: with model build and data
    wall_seconds: Attr[float] = Attr()  # from the ask to the tell
    stop_reason: Attr[str] = Attr()  # TIME_LIMIT or the scheduler's name
    fail_reason: Attr[str] = Attr()  # INTERRUPTED-prefixed when no fault of its network
    ray_error: Attr[str] = Attr()  # Ray's report of a dead worker
    hypervolume: Attr[float] = Attr()  # the study's, once this trial was told
    # repeats (`confirm`) and fixed networks (`ablation`, `fidelity`)
    repeat_of: Attr[int] = Attr()  # the trained trial whose network this one trained again
    seed: Attr[int] = Attr()  # a repeat's training seed
    preset: Attr[str] = Attr()  # an ablation step's preset name
    fidelity: Attr[str] = Attr()  # a fidelity run's schedule (proxy or long)
    sample: Attr[int] = Attr()  # a fidelity run's network number

    @property
    def proposed_by(self) -> str:
        """Who chose the trial's network (PROPOSERS). Trials stored before the attribute: a random in-band draw that replaced
        an out-of-band proposal (`screened`), a retry, or the sampler."""
        if self.proposed_by_stored is not None:
            return str(self.proposed_by_stored)
        if self.screened:
            return "random"
        return "retry" if self.retry_of is not None else "sampler"

    @property
    def names_proposer(self) -> bool:
        """Whether the trial itself says who chose its network (the attribute, or enqueued as a retry)."""
        attrs = self.attrs
        return PROPOSED_BY in attrs or "retry_of" in attrs

    def shown(self, attrs: dict[str, Any]) -> FrozenTrial:
        """A copy of the (frozen) trial carrying `attrs` instead, for a read view (the dashboard's); never stored."""
        shown = copy.copy(self._source)
        shown.user_attrs = attrs
        return shown


class StudyRecord(_Record):
    """A study's stored attributes, typed (an optuna Study's, a FrozenStudy's, or a storage's study by id)."""

    __slots__ = ()

    def __init__(self, study: optuna.Study | Any) -> None:
        self._source = study

    @classmethod
    def stored(cls, storage: BaseStorage, study_id: int) -> StudyRecord:
        """The record of study `study_id` read straight from a storage (the dashboard's view of it)."""
        return cls(_StoredStudy(storage, study_id))

    identity: Attr[dict[str, Any]] = Attr()  # the settings that define it (nas.engine.study): a resume must match them
    sampler: Attr[str] = Attr()  # the sampler class that drew its trials
    budget: Attr[int] = Attr()  # FLOPs
    flops_min: Attr[int] = Attr()  # FLOPs, 0 or None for no floor
    hypervolume: Attr[float] = Attr()  # the latest, as the search told it
    warm_started: Attr[list[str]] = Attr()  # the presets enqueued (a resumed study is not warm-started again)
    rejected_over_budget: Attr[int] = Attr(SCREENED[Status.OVER_BUDGET])
    rejected_under_band: Attr[int] = Attr(SCREENED[Status.UNDER_BAND])
    rejected_unfit: Attr[int] = Attr(SCREENED[Status.UNFIT])

    @property
    def screened(self) -> dict[str, int]:
        """Points refused in memory, by status (over_budget, under_band, unfit), never stored as trials."""
        attrs = self.attrs
        return {status: int(attrs[key]) for status, key in SCREENED.items() if attrs.get(key)}


class _StoredStudy:
    """A study's attributes through a storage's API (what a Study does, for a view that holds no Study)."""

    def __init__(self, storage: BaseStorage, study_id: int) -> None:
        self.storage, self.study_id = storage, study_id

    @property
    def user_attrs(self) -> dict[str, Any]:
        return self.storage.get_study_user_attrs(self.study_id)

    def set_user_attr(self, key: str, value: Any) -> None:
        self.storage.set_study_user_attr(self.study_id, key, value)


def write_stored(storage: BaseStorage, trial_id: int, attrs: Mapping[str, Any]) -> None:
    """Store `attrs` on a trial by its id, through the storage: for a trial another process (a dead driver) asked for,
    which no trial object of ours can write."""
    check_names(TrialRecord, attrs)
    for key, value in attrs.items():
        storage.set_trial_user_attr(trial_id, key, value)


def enqueue(study: optuna.Study, params: dict[str, Any], attrs: Mapping[str, Any], *, skip_if_exists: bool) -> None:
    """Queue `params` to be trained first, the trial carrying `attrs` (a retry, a warm start)."""
    check_names(TrialRecord, attrs)
    study.enqueue_trial(params, user_attrs=dict(attrs), skip_if_exists=skip_if_exists)


def new_trial(attrs: Mapping[str, Any], **trial: Any) -> FrozenTrial:
    """A finished trial to add to a study (`study.add_trial`) carrying `attrs`; `trial`: optuna.trial.create_trial's
    arguments (state, values, params, distributions, ...)."""
    check_names(TrialRecord, attrs)
    return optuna.trial.create_trial(user_attrs=dict(attrs), **trial)


AnyTrial = FrozenTrial | optuna.trial.Trial  # a stored trial, or one being asked or told


def status(trial: AnyTrial) -> str | None:
    """The trial's status attribute (None while it is being sampled or waits to be retried)."""
    return TrialRecord(trial).status


def proposed_by(trial: AnyTrial) -> str:
    """Who chose the trial's network (PROPOSERS; see TrialRecord.proposed_by)."""
    return TrialRecord(trial).proposed_by


def interrupted(trial: AnyTrial) -> bool:
    """Cut short through no fault of its config (Ctrl-C, the time budget, a dead driver): its config is queued again."""
    record = TrialRecord(trial)
    return record.status == Status.FAILED and str(record.fail_reason or "").startswith(INTERRUPTED)


def counts_toward_total(trial: FrozenTrial) -> bool:
    """Trials that trained to an end (completed, stopped early, failed by their own fault) or are training now."""
    if trial.state == TrialState.RUNNING:
        return bool(TrialRecord(trial).accepted)
    return status(trial) in (Status.TRAINED, Status.STOPPED, Status.FAILED) and not interrupted(trial)


def holds_config(trial: FrozenTrial) -> bool:
    """Whether this trial's config has been (or is being) evaluated, so no other trial trains it."""
    if trial.state == TrialState.RUNNING:
        return bool(TrialRecord(trial).accepted)
    return trial.state == TrialState.COMPLETE or status(trial) == Status.STOPPED


def network_attrs(cfg: ArchConfig, cost: Cost) -> dict[str, Any]:
    """What every trial records of its network: the config (JSON), its hash, and the target's FLOPs and params."""
    return {"config": cfg.to_json(), "hash": cfg.hash, FLOPS: cost.flops, "params": cost.params}


def outcome_attrs(result: dict[str, Any], *, epochs: int, proxy_epochs: int, scheduler: str | None = None) -> dict[str, Any]:
    """What a finished training adds: status (and why it stopped or failed), epochs, accuracies and seconds.

    `scheduler` names the early stopping that ran (pareto-asha, asha): the stop_reason of a trial it stopped."""
    # One accuracy per epoch trained, so a stopped trial's history can be read and the rungs audited.
    attrs: dict[str, Any] = {"epochs": epochs, EPOCH_ACCURACIES: [float(a) for a in result.get(EPOCH_ACCURACIES) or []]}
    if ACC in result:
        attrs["proxy_accuracy"] = float(result[ACC])
        attrs["train_seconds"] = round(float(result.get("train_seconds", 0.0)), 3)
        # from entering the trainable: also counts model build and data, not dispatch or worker start
        attrs["trainable_seconds"] = round(float(result.get("trainable_seconds", 0.0)), 3)
    if "error" in result or (ACC not in result and not result.get("time_limited")):
        attrs[STATUS] = Status.FAILED
        attrs["fail_reason"] = result.get("error") or "the trial process died (see the Ray trial log)"
    elif epochs >= proxy_epochs:
        attrs[STATUS] = Status.TRAINED
    else:
        attrs[STATUS] = Status.STOPPED
        attrs["stop_reason"] = TIME_LIMIT if result.get("time_limited") else (scheduler or "stopped early")
    return attrs

