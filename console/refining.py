"""What `refine` does once its input is checked: the study's space narrowed and written, then what was narrowed and why
printed (or as JSON) with the loop's next two commands. The deciding is nas.analysis.refine; this is its view."""

from __future__ import annotations

import json
from pathlib import Path

from console import console
from space.errors import ConvspaceError


def refine_space(study: str, url: str, out: str | None, min_importance: float, as_json: bool) -> None:
    """`refine`: the new space file written atomically (beside the study unless `out`), then the account of it."""
    if not 0 <= min_importance <= 1:
        raise ConvspaceError(f"min-importance: must be within [0, 1], got {min_importance:g}")
    if out and not out.lower().endswith((".yaml", ".yml")):
        raise ConvspaceError(f"out: must be a .yaml file name, got {out!r}")
    from nas.analysis.refine import default_path, next_commands, refine, summary, write
    from nas.front.pareto import load_study

    loaded = load_study(study, url)
    refined = refine(loaded, min_importance=min_importance)
    path = Path(out) if out else default_path(url, refined.space.name)
    write(refined, path)
    if as_json:
        print(json.dumps({**refined.to_json(), "out": str(path)}))
        return
    for line in summary(refined, path, next_commands(loaded, refined, path, url)):
        console.print(line, markup=False, highlight=False)
