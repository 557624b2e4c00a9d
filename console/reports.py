"""What the reading commands do once their input is checked: count one network (`inspect`), write and attach the
design-space report (`analyze`), write entries (`export`). Each ends in a printer (console.tables, console.runs)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from console import console, notice
from console.inputs import cost_row, load_config
from space.errors import ConvspaceError


def inspect_network(model: str, resolution: int, verify: bool) -> tuple[Any, dict[str, Any]]:
    """The network `model` names and its report: analytic cost, where it came from, and with `verify` fvcore's and
    torch's counts of the built model."""
    from space.cost import check_fits

    cfg, origin = load_config(model)
    check_fits(cfg, resolution)  # dilated convs padding past their maps would show a degenerate network's cost
    report = {**cost_row(model, cfg, resolution), "resolution": resolution, "origin": origin, "config": cfg.to_dict()}
    if verify:
        from space.network import build_network
        from space.verify import fvcore_flops

        net = build_network(cfg)
        report["params_torch"] = sum(p.numel() for p in net.parameters())
        report["flops_fvcore"] = fvcore_flops(net, resolution)
    return cfg, report


def analyze_study(study: str, url: str, against: str | None, against_url: str | None, bins: int, as_json: bool, out: str | None) -> None:
    """`analyze`: the analysis (against study `against` at `against_url`, if given) printed (or as JSON), its PNGs and HTML
    written into `out` (default beside the study; none with --json unless given), the HTML attached to the study in the
    dashboard."""
    if bins < 1:
        raise ConvspaceError(f"bins: must be >= 1, got {bins}")
    from nas.analysis.design_space import analyze
    from nas.analysis.report import summary, write_report
    from nas.front.dashboard import analysis_folder, publish
    from nas.front.pareto import load_study

    loaded = load_study(study, url)
    report, samples = analyze(loaded, load_study(against, against_url) if against else None, bins=bins)
    folder = Path(out) if out else None if as_json else analysis_folder(url, study)
    written = []
    if folder:
        try:
            written = write_report(report, samples, folder)
        except OSError as exc:
            raise ConvspaceError(f"out: cannot write into {str(folder)!r} ({exc.strerror or type(exc).__name__})") from None
    if as_json:
        print(json.dumps(report))
    else:
        for line in summary(report):
            console.print(line, markup=False, highlight=False)
        if written:
            console.print(f"{len(written) - 1} pictures and {written[-1].name} written to {folder}", markup=False, highlight=False)
    if written:  # the report in the dashboard: a study artifact beside the front PNG
        why = publish(loaded, url, "analyze", [written[-1]], notes=False)
        if why:
            notice(f"the report was not attached to the study in the dashboard: {why}")


def export_trials(study: str, storage: str | None, trials: list[int], best: bool, front: bool, name: str | None, out: Path,
                  force: bool) -> None:
    """`export`: the chosen trials (`trials`, the best, or the front: exactly one) as zoo entries in `out`. Every trial
    and every target is checked before torch is imported and before the first entry is written."""
    if sum((bool(trials), best, front)) != 1:
        raise ConvspaceError("export: give exactly one of --trial N (repeatable), --best and --front")
    if name and (front or len(trials) > 1):
        raise ConvspaceError("name: names one entry; with several trials each is named <study>_trial<N>")
    from console.runs import export_ended, exported
    from nas.engine.storage import resolve_storage
    from nas.export.entries import DEFAULT_ZOO, check_entry_name, pick_trial, plan_export
    from nas.front.pareto import front as pareto_front
    from nas.front.pareto import load_study

    if name:
        check_entry_name(name)  # at once, before the study is opened
    loaded = load_study(study, resolve_storage(study, storage))
    chosen = pareto_front(loaded) if front else [pick_trial(loaded, n) for n in trials or [None]]  # None: the best
    if not chosen:
        raise ConvspaceError(f"front: study {study!r} has no fully trained trial yet")
    plans = [plan_export(loaded, picked, name, out, force=force) for picked in chosen]
    from nas.export.zoo import (
        check_name,  # torch and timm: each entry is built once to check its cost
        export,
    )

    for plan in plans:
        check_name(plan["name"])  # no timm model or preset has it: checked for all before the first is written
    for picked, plan in zip(chosen, plans, strict=True):
        exported(export(loaded, picked, name, out, plan=plan))
    export_ended([plan["name"] for plan in plans], out, DEFAULT_ZOO)


def show_front(study: str, url: str, as_json: bool, plot: str | None) -> None:
    """`pareto`: the front as a table (or JSON), its PNG at `plot`, and the study's notes in the dashboard rewritten."""
    if plot and not plot.lower().endswith(".png"):
        raise ConvspaceError(f"plot: must be a .png file name, got {plot!r}")
    from console.tables import print_front, publish_front
    from nas.front.pareto import front_report, load_study
    from nas.front.plots import plot as plot_front

    loaded = load_study(study, url)
    report = front_report(loaded)  # first: a trial without a config is a one-line error, before any file is written
    if plot:  # a folder that cannot be made or written is one line (nas.front.plots.save_figure)
        plot_front(loaded, plot)  # the budget line at the study's own budget (nas.engine.record)
    if as_json:
        print(json.dumps(report.to_json()))
    else:
        print_front(loaded, report)
        if plot:
            console.print(f"plot written to {plot}", markup=False, highlight=False)
    publish_front(loaded, url, "pareto", plot=Path(plot) if plot else None)
