"""`refine`: from the design-space analysis of a study to a narrower space, the loop of Radosavovic et al. ("Designing
Network Design Spaces": AnyNetX A -> B -> ... -> RegNet): sample at random, read where the good models lie, restrict the
space there, sample the restricted space and compare the two EDFs (`analyze --against`).

A dimension is narrowed only where three things agree. (1) PED-ANOVA calls it important enough (`--min-importance`,
of the importances that sum to 1; 0 by default, since over tens of models it is a poor judge: it gave 0.73 to a width
on a study of pure noise, and 0.001 to the attention of a real sweep whose cut CBAM models had an error quartile of
0.78). (2) pycls's bootstrap (nas.analysis.design_space.good_values, the one `analyze` shows) puts the best models of most random
subsets inside a part of it: a sub-range of a range, some values of a choice list. (3) The models inside that part are
clearly better than those outside: the median error inside is below the lower quartile outside (the typical kept model
beats three in four of those cut), by more than chance gives. (3) is needed because (2) always keeps the few best
models: with tens of models the good part is narrower than the dimension even where nothing matters. So the gap is held
against the same procedure run on errors shuffled over the models (a permutation test, Bonferroni over the dimensions
tested): a study where nothing matters is narrowed in at most about 1 of 20 cases (measured: 1 of 60 studies of 60
models of pure noise, tests/nas/test_refine.py's space, seeds 0-59; in 8 more a good part looked better and the shuffles refused it).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import optuna

from nas.analysis.design_space import MIN_TRIALS, Trained, bias_warnings, dimensions, good_values, load_trained
from nas.engine.record import StudyRecord
from nas.engine.study import upgraded
from space.choices import Space
from space.dimensions import Dimension, encode_choice
from space.errors import ConvspaceError
from space.files import write_atomically
from space.narrowing import dimension_from_record, is_subspace, narrow_choices, narrow_range, space_dict, space_yaml, spec_of, within
from space.space_file import DEFAULT_SPACE

MIN_SIDE = 3  # models on each side of a cut, at the least: a quartile of fewer says nothing
QUARTILES = (25, 50, 75)
ALL_GOOD = "the bootstrap's good part is all of it"
ALPHA = 0.05  # the chance of narrowing a study where no dimension matters, at most
PERMUTATIONS = 399  # shuffles of the errors per tested dimension, at the least (p resolves to 1/400)
_PER_STAGE = re.compile(r"^(?P<name>.+)_s\d+$")


@dataclass(frozen=True)
class Change:
    """One narrowed dimension: its spec before and after, its importance, and the evidence (n, the error quartiles of the
    models inside and outside what was kept, and the shuffle test: p, the shuffles, the level it had to reach)."""

    dimension: str
    before: dict[str, Any]
    after: dict[str, Any]
    importance: float
    evidence: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {"dimension": self.dimension, "before": self.before, "after": self.after, "importance": self.importance,
                "evidence": self.evidence}


@dataclass(frozen=True)
class Refinement:
    """The narrowed space, what changed and why, what did not and why, and why the study may not be a random sample."""

    space: Space
    source: str  # the study it came from
    original: Space
    n: int  # trained models read
    min_importance: float
    changes: list[Change]
    unchanged: dict[str, str] = field(default_factory=dict)  # dimension -> why it was kept whole
    warnings: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"space": self.space.name, "from": self.source, "changes": [c.to_json() for c in self.changes],
                "n": self.n, "min_importance": self.min_importance, "unchanged": self.unchanged, "warnings": self.warnings}

    def yaml(self) -> str:
        """The new space file: the study's space with the changes, each under a comment saying what was kept and why."""
        header = [f"Refined by `convspace refine` from study {self.source!r}: {self.n} trained models of space {self.original.name!r},",
                  f"narrowed where PED-ANOVA importance >= {self.min_importance:g}, pycls's bootstrap put the best models in a part of",
                  "the dimension, and the median error inside it is below the lower quartile outside by more than the errors",
                  "shuffled over the models give (a permutation test; nas/analysis/refine.py).",
                  *(f"warning: {w}" for w in self.warnings),
                  "Every other dimension is the study's own. Sample it with `search --space <this file>`; compare with `analyze --against`."]
        notes = {c.dimension: change_note(c) for c in self.changes}
        return space_yaml(self.space, header, notes)


def study_space(study: optuna.Study) -> Space:
    """The space a search's study sampled, as its identity recorded it (dimensions and scale), validated."""
    identity = upgraded(StudyRecord(study).identity) or {}
    dims = identity.get("space_dims")
    if not isinstance(dims, dict) or not dims:
        raise ConvspaceError(f"study: {study.study_name!r} records no design space (refine reads a search's study: "
                             "search --sampler random --scheduler none)")
    data = {"name": str(identity.get("space", "space")), "scale": identity.get("space_scale", "absolute"),
            "dimensions": {k: spec_of(dimension_from_record(k, v)) for k, v in dims.items()}}
    return Space.from_dict(data)


def evidence(errors: np.ndarray, inside: np.ndarray) -> dict[str, Any]:
    """n, and the error quartiles (25th, 50th, 75th percentile) of the models inside and outside what is kept."""
    def side(mask: np.ndarray) -> dict[str, Any]:
        part = errors[mask]
        return {"n": int(mask.sum()), "error_quartiles": [round(float(q), 4) for q in np.percentile(part, QUARTILES)] if part.size else None}

    return {"n": int(errors.size), "inside": side(inside), "outside": side(~inside)}


def gap(errors: np.ndarray, inside: np.ndarray) -> float:
    """How clearly the kept models beat the cut ones: the lower error quartile outside minus the median error inside
    (above 0: the typical kept model beats three in four cut ones); -inf where a side holds fewer than MIN_SIDE."""
    if inside.sum() < MIN_SIDE or (~inside).sum() < MIN_SIDE:
        return -math.inf
    return float(np.percentile(errors[~inside], QUARTILES[0]) - np.median(errors[inside]))


def candidate(dim: Dimension, good: Any, numeric: bool, values: list[Any]) -> tuple[Dimension, np.ndarray] | None:
    """The dimension cut to the bootstrap's good part, and which of the trials' `values` (as stored) it keeps; None where
    the good part is all of it."""
    if dim.kind in ("int", "float"):
        lo, hi = good
        cut = narrow_range(dim, lo, hi)
        if within(dim, cut):  # the whole range (a stepped float bound read back as 0.5000000000000001 included)
            return None
        return cut, np.array([lo <= v <= hi for v in values], dtype=bool)  # the values as the trials hold them
    kept = [v for v in dim.values if (good[0] <= v <= good[1] if numeric else encode_choice(v) in good)]
    if len(kept) == len(dim.values):
        return None
    stored = [encode_choice(v) for v in kept]
    return narrow_choices(dim, kept), np.array([v in stored for v in values], dtype=bool)


def permutation_p(dim: Dimension, numeric: bool, values: list[Any], errors: np.ndarray, observed: float, permutations: int,
                  rng: np.random.Generator) -> float:
    """How often the whole procedure (bootstrap, cut, gap) finds a gap as large when the errors are shuffled over the
    models, i.e. when the dimension does not matter: the good part is chosen to hold the best models, so its gap needs
    this yardstick rather than a textbook test."""
    hits = 0
    for _ in range(permutations):
        shuffled = rng.permutation(errors)
        cut = candidate(dim, good_values(shuffled, values, numeric, rng)["good"], numeric, values)
        hits += cut is not None and gap(shuffled, cut[1]) >= observed
    return (hits + 1) / (permutations + 1)


def refine(study: optuna.Study, *, min_importance: float, name: str | None = None, seed: int = 0) -> Refinement:
    """The study's space narrowed where its trained models clearly say so (see the module docstring); the rest unchanged."""
    original = study_space(study)
    sample = load_trained(study)
    dims, changes, unchanged, reached, tested = dict(original.dims), [], {}, [], 0
    for param, info in dimensions(study, sample, seed).items():
        match = _PER_STAGE.match(param)
        if param not in original.dims and match and match["name"] in original.dims:
            unchanged[match["name"]] = "sampled per stage: one spec serves every stage (narrow it by hand from `analyze`)"
        elif param in original.dims:  # else not a dimension of the space (a fitted space's FLOPs target)
            tested += (info["importance"] or 0.0) >= min_importance and info["good"] is not None
            why = _screen(original.dims[param], info, sample, min_importance)
            if isinstance(why, str):
                unchanged[param] = why
            else:
                reached.append(why)
    # Bonferroni over every dimension the procedure could have narrowed (one whose good part came out whole counts too:
    # under shuffling it might not): a study where nothing matters is narrowed in at most 1 of 20 cases
    alpha = ALPHA / max(1, tested)
    permutations = max(PERMUTATIONS, math.ceil(4 / alpha))
    for i, (dim, narrowed, errors, inside, values, importance, numeric) in enumerate(reached):
        proof = evidence(errors, inside)
        observed = gap(errors, inside)
        short = _short(spec_of(narrowed))
        if observed == -math.inf:
            unchanged[dim.name] = (f"good part {short} keeps {proof['inside']['n']} models and cuts {proof['outside']['n']} "
                                   f"(each side needs {MIN_SIDE})")
            continue
        if observed <= 0:
            unchanged[dim.name] = (f"good part {short} is not clearly better: median error inside {_quartile(proof['inside'], 1)}, "
                                   f"lower quartile outside {_quartile(proof['outside'], 0)}")
            continue
        p = permutation_p(dim, numeric, values, errors, observed, permutations, np.random.default_rng([seed, i]))
        proof |= {"p": round(p, 4), "permutations": permutations, "alpha": round(alpha, 4)}
        if p > alpha:
            unchanged[dim.name] = (f"good part {short} is better, but no more than chance: shuffled errors gave as large a gap in "
                                   f"p = {p:.3f} of {permutations} shuffles (needs <= {alpha:.3g})")
            continue
        dims[dim.name] = narrowed
        changes.append(Change(dim.name, spec_of(dim), spec_of(narrowed), round(importance, 4), proof))
    narrowed_space = Space(name or f"{study.study_name}-refined", _description(original, study.study_name, len(sample.trials), changes),
                           dims, original.scale)
    narrowed_space = Space.from_dict(space_dict(narrowed_space))  # validated as any space file is
    if not is_subspace(narrowed_space, original):  # by construction; a failure here is a bug, not a user error
        raise AssertionError(f"refine: {narrowed_space.name!r} is not a subspace of {original.name!r}")
    return Refinement(narrowed_space, study.study_name, original, len(sample.trials), min_importance, changes, unchanged,
                      bias_warnings(sample))


def _screen(dim: Dimension, info: dict[str, Any], sample: Trained, min_importance: float) -> str | tuple[Any, ...]:
    """Why a dimension stays whole before any test, or what the test needs: the dimension, its cut, the errors and values of
    the models that hold it, which of them the cut keeps, its importance, and whether it is ordered."""
    importance = info["importance"] or 0.0
    if importance < min_importance:
        return f"importance {importance:.3f} < {min_importance:g}"
    if info["good"] is None:
        return f"held by {info['n']} trained models (a good range needs {MIN_TRIALS})"
    held = [i for i, t in enumerate(sample.trials) if dim.name in t.params]
    values = [sample.trials[i].params[dim.name] for i in held]
    cut = candidate(dim, info["good"], info["numeric"], values)
    if cut is None:
        return ALL_GOOD
    return dim, cut[0], sample.errors[held], cut[1], values, float(importance), info["numeric"]


def change_note(change: Change) -> list[str]:
    """The comment lines above a narrowed dimension in the space file."""
    inside, outside = change.evidence["inside"], change.evidence["outside"]
    return [f"{change.dimension}: kept {_short(change.after)} of {_short(change.before)} (importance {change.importance:.3f});",
            f"  of {change.evidence['n']} models, error quartiles {_quartiles(inside)} for the {inside['n']} kept, "
            f"{_quartiles(outside)} for the {outside['n']} cut; a gap this large in p = {change.evidence['p']:.4f} of "
            f"{change.evidence['permutations']} shufflings of the errors"]


def _short(spec: dict[str, Any]) -> str:
    """`3-9 (step 2)`, `{none, se}`: a spec in a few words."""
    if "choice" in spec:
        return "{" + ", ".join(str(v) for v in spec["choice"]) + "}"
    if "value" in spec:
        return str(spec["value"])
    kind = "int" if "int" in spec else "float"
    lo, hi = spec[kind]
    return f"{lo}-{hi}" + (f" (step {spec['step']})" if spec.get("step") else "") + (" (log)" if spec.get("log") else "")


def _quartiles(side: dict[str, Any]) -> str:
    return "/".join(f"{q:.3f}" for q in side["error_quartiles"]) if side["error_quartiles"] else "-"


def _quartile(side: dict[str, Any], i: int) -> str:
    return f"{side['error_quartiles'][i]:.3f}" if side["error_quartiles"] else "- (none)"


def _description(original: Space, study: str, n: int, changes: list[Change]) -> str:
    what = ", ".join(c.dimension for c in changes) or "nothing clearly better, no dimension narrowed"
    return f"{original.name} refined from study {study} ({n} trained models): {what}"


def write(refinement: Refinement, path: Path) -> None:
    """The space file, written atomically (a search never reads half of one), then read back as every command reads it."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(path, refinement.yaml())
    except OSError as exc:
        raise ConvspaceError(f"out: cannot write {str(path)!r} ({exc.strerror or type(exc).__name__})") from None
    if Space.from_yaml(path).dims != refinement.space.dims:  # the writer and the reader disagree: a bug, not a user error
        raise AssertionError(f"refine: {path} does not read back as the space written")


def next_commands(study: optuna.Study, refinement: Refinement, path: Path, url: str) -> list[str]:
    """The loop's next two commands, spelled as this one was run: a random sweep of the new space with the study's budget
    and proxy (as many models as the study trained), then `analyze --against` to compare the two EDFs."""
    from nas.engine.commands import command, search_args
    from nas.engine.storage import default_storage, display_url

    identity = upgraded(StudyRecord(study).identity) or {}
    if not identity.get("budget") or identity.get("kind"):
        return []
    named = display_url(url) if url != default_storage(study.study_name) else None  # the default needs no --storage
    new = refinement.space.name
    # the space goes in as an option: the identity's own space is the study's, which `search_args` would name
    args, unset = search_args(new, {**identity, "space": DEFAULT_SPACE}, storage=named, space=str(path), sampler="random",
                              scheduler="none", trials=refinement.n)
    sweep = command([*args, "--no-warm-start"]) + (f" ({'; '.join(unset)})" if unset else "")
    analyze = ["analyze", "--study", study.study_name, "--against", new] + (["--storage", named] if named else [])
    return [sweep, command(analyze)]


def default_path(url: str, name: str) -> Path:
    """Where the new space goes unless told: beside the study (studies/<name>.yaml for the default SQLite file)."""
    from nas.front.dashboard import output_folder

    return output_folder(url) / f"{name}.yaml"


def summary(refinement: Refinement, path: Path, commands: list[str]) -> list[str]:
    """The terminal's account: what was narrowed and on what evidence, what was left whole and why, the file, the next
    commands of the loop, and the warnings."""
    r = refinement
    lines = [f"study {r.source!r}: {r.n} trained models of space {r.original.name!r}; {len(r.changes)} dimension(s) narrowed"
             + (":" if r.changes else " (none clearly better)")]
    for c in r.changes:
        inside, outside = c.evidence["inside"], c.evidence["outside"]
        lines.append(f"  {c.dimension}: {_short(c.before)} -> {_short(c.after)} (importance {c.importance:.3f}; median error "
                     f"{inside['error_quartiles'][1]:.3f} of {inside['n']} kept, lower quartile {outside['error_quartiles'][0]:.3f} "
                     f"of {outside['n']} cut; p {c.evidence['p']:.4f})")
    below = {k: why for k, why in r.unchanged.items() if why.startswith("importance ")}
    whole = [k for k, why in r.unchanged.items() if why == ALL_GOOD]
    lines += [f"  left whole: {k}: {why}" for k, why in r.unchanged.items() if k not in below and k not in whole]
    if whole:  # the commonest reason at tens of models: one line for all of them
        lines.append(f"  left whole, {ALL_GOOD}: {', '.join(whole)}")
    if below:
        lines.append(f"  left whole, importance below {r.min_importance:g}: "
                     + ", ".join(f"{k} {why.split()[1]}" for k, why in below.items()))
    lines.append(f"space {r.space.name!r} written to {path}")
    if commands:
        lines += [f"sample it at random: {commands[0]}", f"then compare the two: {commands[1]}"]
    return lines + [f"warning: {w}" for w in r.warnings]
