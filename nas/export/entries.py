"""Exported model-factory entries on disk: which folders hold them, their names, and how to read one (no torch, no timm).

An entry is data: `<name>.yaml`, holding its ArchConfig (with the genome version it was written in) and its record
(study, trial, accuracy, cost). It is read with `yaml.safe_load` and validated here, and `nas.export.zoo` registers it with
timm from that alone: no file of a zoo folder is ever executed (a `<name>.py` beside it is for code that imports
the module directly). The command line reads entries here first, so that `inspect <entry>` and a mistyped name
answer at once, without importing torch.
"""

from __future__ import annotations

import builtins
import keyword
import os
import re
import sys
from pathlib import Path
from typing import Any

from space.config import ArchConfig
from space.cost import PAPER_RESOLUTION
from space.errors import ConvspaceError
from space.files import read_yaml
from trainers.settings import STUDIES_DIR

DEFAULT_ZOO = Path(STUDIES_DIR) / "exports"
PRESET_PREFIX = "convspace_"  # the presets' names in timm's registry: convspace_<preset>
ZOO_ENV = "CONVSPACE_ZOO"  # extra zoo folders, separated by os.pathsep


def zoo_folders() -> list[Path]:
    """studies/exports under the working directory, plus the folders in $CONVSPACE_ZOO, each once (an entry imported
    twice would make timm warn that it overwrites it)."""
    folders = [DEFAULT_ZOO, *(Path(p) for p in os.environ.get(ZOO_ENV, "").split(os.pathsep) if p)]
    unique: dict[Path, Path] = {}
    for folder in folders:
        unique.setdefault(folder.expanduser().resolve(), folder)
    return list(unique.values())


def timm_model_names() -> set[str]:
    """Every model name in timm's registry, read from timm's source rather than by importing it: timm's own
    `list_models` needs `import timm`, which imports torch (7 s on a loaded 2-core box), and a mistyped `train --model`
    must be refused within 2 s. timm registers each model with @register_model on its function; a test checks that
    this set equals `timm.list_models()` for the installed timm."""
    import importlib.util

    spec = importlib.util.find_spec("timm")  # finds the package without running it
    folder = Path(spec.origin).parent / "models" if spec and spec.origin else None
    pattern = re.compile(r"^@register_model\s*\n(?:@.*\n)*def (\w+)\(", re.MULTILINE)
    return {name for path in (folder.glob("*.py") if folder else ()) for name in pattern.findall(path.read_text(encoding="utf-8"))}


def check_model_name(name: str) -> None:
    """A name `timm.create_model` will build once nas.export.zoo is imported: an exported entry in a zoo folder, a
    convspace_<preset>, or a timm model (a pretrained tag after a dot is allowed, as timm allows it); else one line
    with the nearest names, before torch is imported."""
    import difflib

    from space.presets import PRESETS

    known = timm_model_names() | {PRESET_PREFIX + p for p in PRESETS}
    known |= {path.stem for folder in zoo_folders() for path in folder.glob("*.yaml")}
    if name.split(".", 1)[0] in known:
        return
    near = difflib.get_close_matches(name, sorted(known), n=3, cutoff=0.75)
    hint = f"did you mean {', '.join(near)}? " if near else ""
    raise ConvspaceError(f"model: {name[:100]!r} is not a registered model ({hint}export one, see `presets`, or any timm model)")


MAX_NAME = 64
# What an entry's record may hold (besides name and config), and the types of each; None is allowed for every one.
RECORD: dict[str, tuple[type, ...]] = {
    "config_hash": (str,), "study": (str,), "trial": (int, str), "resolution": (int,), "proxy_accuracy": (int, float),
    "proxy_accuracy_mean": (int, float), "proxy_accuracy_std": (int, float), "seeds": (int,), "params": (int,), "flops": (int,),
    "storage": (str,),
}


def check_entry_name(name: Any) -> str:
    """An entry's name is a timm model name, a Python function name and a file name: a lowercase ASCII identifier of at
    most 64 characters that is no Python keyword, builtin or standard-library module (a module of that name in a zoo
    folder could shadow it for code that imports from there)."""
    if not isinstance(name, str) or not re.fullmatch(r"[a-z_][a-z0-9_]*", name):
        raise ConvspaceError(f"name: must be a lowercase Python identifier (a-z, digits, _; not starting with a digit), got {name!r}"[:300])
    if len(name) > MAX_NAME:
        raise ConvspaceError(f"name: must be at most {MAX_NAME} characters, got {len(name)} ({name[:20]}...)")
    if keyword.iskeyword(name) or keyword.issoftkeyword(name):
        raise ConvspaceError(f"name: {name!r} is a Python keyword; pick another --name")
    if hasattr(builtins, name):
        raise ConvspaceError(f"name: {name!r} is a Python builtin; pick another --name")
    if name in sys.stdlib_module_names:
        raise ConvspaceError(f"name: {name!r} is a module of Python's standard library; pick another --name")
    return name


def read_entry(path: str | Path) -> dict[str, Any]:
    """One `<name>.yaml` entry, validated: its name (the file's), its config (a valid ArchConfig of a genome version this
    convspace reads, matching its recorded hash) and its record's fields; anything else is one line naming the file."""
    path = Path(path)
    data = read_yaml(path, "zoo entry")
    if not isinstance(data, dict) or not {"name", "config"} <= set(data):
        raise ConvspaceError(f"zoo entry: {path} needs the keys name and config (written by `cli.py export`)")
    unknown = sorted(map(str, set(data) - {"name", "config", *RECORD}))
    if unknown:
        raise ConvspaceError(f"zoo entry: {path} holds unknown keys {', '.join(unknown)} (allowed: name, config, {', '.join(RECORD)})")
    try:
        check_entry_name(data["name"])
    except ConvspaceError as exc:
        raise ConvspaceError(f"zoo entry: {path}: {exc}") from None
    if data["name"] != path.stem:
        raise ConvspaceError(f"zoo entry: {path} names the entry {data['name']!r}: an entry's name is its file's")
    for key, types in RECORD.items():
        value = data.get(key)
        if value is not None and (not isinstance(value, types) or isinstance(value, bool)):
            raise ConvspaceError(f"zoo entry: {path}: {key} must be {' or '.join(t.__name__ for t in types)}, got {value!r}"[:300])
    try:
        cfg = ArchConfig.from_dict(data["config"])
    except ConvspaceError as exc:
        raise ConvspaceError(f"zoo entry: {path}: {exc}") from None
    if data.get("config_hash") not in (None, cfg.hash):
        raise ConvspaceError(f"zoo entry: {path}: its config's hash is {cfg.hash}, its record says {data['config_hash']} (edited by hand?)")
    if data.get("resolution") is not None and data["resolution"] < 1:
        raise ConvspaceError(f"zoo entry: {path}: resolution must be >= 1, got {data['resolution']}")
    return data


def find_entry(name: str) -> dict[str, Any] | None:
    """The exported entry `name` (its YAML in a zoo folder), or None."""
    if not re.fullmatch(r"[a-z_][a-z0-9_]*", name):  # never a path
        return None
    for folder in zoo_folders():
        path = folder / f"{name}.yaml"
        if path.is_file():
            return read_entry(path)
    return None


def pick_trial(study: Any, number: int | None) -> Any:
    """`--trial N` (a trial that trained, to the end or stopped early, and scored) or the best: most accurate fully trained,
    ties fewer FLOPs. A trial with no accuracy is refused in one line saying how it ended (nas.engine.endings' words)."""
    from optuna.trial import TrialState

    from nas.engine.endings import ending, endings, how_it_ended  # here: `import nas.export.entries` stays free of Optuna
    from nas.engine.record import StudyRecord, TrialRecord

    if number is None:
        done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if not done:
            raise ConvspaceError(f"trial: study {study.study_name!r} has no fully trained trial yet")
        from nas.front.seeds import seed_scores

        scores = seed_scores(study)  # the mean over seeds where `confirm` added some
        return max(done, key=lambda t: (scores[t.number].mean, -t.values[1]))
    everything = study.get_trials(deepcopy=False)
    trials = {t.number: t for t in everything}
    if number not in trials:
        raise ConvspaceError(f"trial: study {study.study_name!r} has no trial {number} (trials 0..{len(trials) - 1})")
    trial = trials[number]
    key, record = ending(trial), TrialRecord(trial)
    scored = isinstance(record.proxy_accuracy, int | float) or bool(trial.values)
    if key in ("trained", "stopped_scheduler", "stopped_time") and scored and record.config is not None:
        return trial
    found = endings(everything, StudyRecord(study))
    hint = ""
    if key == "cut_short" and number in found.retried_as:
        hint = f"; its network is trial {found.retried_as[number]}'s: export --trial {found.retried_as[number]}"
    elif key == "repeat" and record.repeat_of is not None:
        hint = f"; export --trial {record.repeat_of}, the trial it repeats"
    raise ConvspaceError(f"trial: {number} has no accuracy to export: {how_it_ended(trial, found)}{hint}"[:400])


def default_entry_name(study: str, number: int) -> str:
    """`<study>_trial<N>` made a valid entry name: lowercase, other characters as `_`, never a leading digit, the
    study's part cut so that the whole fits in 64 characters."""
    suffix = f"_trial{number}"
    name = re.sub(r"\W", "_", study.lower(), flags=re.ASCII)
    name = f"study_{name}" if name[:1].isdigit() else name
    return name[:MAX_NAME - len(suffix)] + suffix


def _seed_record(scores: Any) -> dict[str, Any]:
    """What an entry records of a network trained with several seeds (`confirm`): their mean, std and count."""
    if scores is None or len(scores.accuracies) < 2:
        return {}
    return {"proxy_accuracy_mean": scores.mean, "proxy_accuracy_std": scores.std, "seeds": len(scores.accuracies)}


def plan_export(study: Any, trial: Any, name: str | None, out: Path, *, force: bool = False) -> dict[str, Any]:
    """What exporting `trial` as `name` into `out` writes (the entry's data), checked before anything is: a valid free name,
    and no other entry of that name there unless `force` (the same entry again is `unchanged`, not a conflict)."""
    import yaml

    from nas.engine.record import StudyRecord, TrialRecord
    from nas.front.pareto import trial_config  # here, not at the top: `import nas.export.entries` stays free of Optuna
    from nas.front.seeds import seed_scores

    name = name or default_entry_name(study.study_name, trial.number)
    check_entry_name(name)  # and nas.export.zoo.export checks that no timm model or preset has it (that needs timm)
    cfg = trial_config(trial)
    resolution = (StudyRecord(study).identity or {}).get("cost_resolution", PAPER_RESOLUTION)
    stored = TrialRecord(trial)
    record = {"study": study.study_name, "trial": trial.number, "resolution": resolution,
              "proxy_accuracy": stored.proxy_accuracy, "params": stored.params,
              **_seed_record(seed_scores(study).get(trial.number)),
              "flops": stored.flops}
    data = yaml.safe_load(yaml.safe_dump({"name": name, **record, "config_hash": cfg.hash, "config": cfg.to_dict()}))  # as read back
    target = out / f"{name}.yaml"
    state = "new"
    if target.exists() or target.with_suffix(".py").exists():
        try:
            existing = read_entry(target)
        except (ConvspaceError, OSError):
            existing = None  # a broken or half entry (a .py without its YAML): replaced only with --force too
        if existing == data:
            state = "unchanged"
        elif not force:
            was = (f" (study {existing.get('study')}, trial {existing.get('trial')})" if existing else "")
            raise ConvspaceError(f"name: {target} already holds an entry{was}; pass --force to replace it, or pick another --name")
        else:
            state = "replaced"
    return {"name": name, "state": state, "data": data, "record": record, "cfg": cfg, "out": out}
