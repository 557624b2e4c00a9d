"""What the reading commands print: cost tables, one network, the Pareto front and its notes, rank agreement.

Printers only print (and, for the front, publish the notes the dashboard shows): they never write trials to a study.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from rich.table import Table
from rich.text import Text

from console import console, notice
from nas.engine.commands import DEFAULT_STUDY
from nas.engine.settings import CONFIRM_SEEDS, tunnel
from space.errors import ConvspaceError


def print_costs(rows: list[dict[str, Any]], title: str) -> None:
    """Networks' params and GFLOPs as a table (rows of console.inputs.cost_row)."""
    table = Table(title=title)
    for column in ("name", "params (M)", "GFLOPs", "hash"):
        table.add_column(column, justify="left" if column in ("name", "hash") else "right")
    for row in rows:
        table.add_row(row["name"], f"{row['params'] / 1e6:.2f}", f"{row['flops'] / 1e9:.3f}", row["hash"])
    console.print(table)


def print_network(model: str, cfg: Any, report: dict[str, Any], resolution: int, verify: bool) -> None:
    """`inspect`'s page: the config, where it came from, its cost, and with --verify whether fvcore and torch agree."""
    console.print(cfg.to_yaml())
    if report["origin"]:
        console.print("from " + ", ".join(f"{k.replace('_', ' ')} {v:.4f}" if isinstance(v, float) else f"{k.replace('_', ' ')} {v}"
                                          for k, v in report["origin"].items()))
    print_costs([report], f"{model} at {resolution}x{resolution}")
    if verify:
        same = report["params_torch"] == report["params"] and report["flops_fvcore"] == report["flops"]
        console.print(f"fvcore {report['flops_fvcore']:,} FLOPs, torch {report['params_torch']:,} params: "
                      + ("[green]equal to the analytic count[/]" if same else "[red]DIFFERENT from the analytic count[/]"))


def coloured(parts: list[tuple[str, str | None]]) -> Text:
    """A summary of nas.engine.record (text, ending key) in the ending's colour, as the plots and the dashboard draw it."""
    from nas.engine.endings import ENDINGS

    return Text.assemble(*((text, ENDINGS[key].colour if key else "") for text, key in parts))


def print_front(study: Any, report: Any = None) -> Any:
    """The Pareto table of a study, whole at 100 columns: the architecture folds onto a second line, never cut.
    Accuracies are means over seeds (`confirm`); a point whose gain over the cheaper one is within noise is marked.
    Then the noise floor, the hypervolume, the trials by how they ended and who chose them. Returns the report."""
    from nas.engine.commands import command
    from nas.engine.endings import proposed_words, refused_words, study_parts
    from nas.front.pareto import front_report

    report = report or front_report(study)  # first: a trial without a config is a one-line error
    table = Table(title=f"Pareto front of {study.study_name}: proxy accuracy up, FLOPs down", title_justify="left")
    for column in ("trial", "accuracy", "seeds", "GFLOPs", "params M"):
        table.add_column(column, justify="right", no_wrap=True)
    table.add_column("architecture", overflow="fold", ratio=1)
    for row in report.rows:
        accuracy = f"{row['accuracy']:.4f}" + (f" ± {row['accuracy_std']:.4f}" if row["accuracy_std"] is not None else "")
        table.add_row(str(row["trial"]), accuracy + (" ≈" if row["within_noise"] else ""), str(row["seeds"]),
                      f"{row['flops'] / 1e9:.3f}", f"{row['params'] / 1e6:.2f}", row["summary"])
    if table.row_count:
        console.print(table)
    else:
        console.print(f"Pareto front of {study.study_name}: none yet (no trial trained to the end)")
    if report.noise:
        marked = sum(row["within_noise"] for row in report.rows)
        console.print(f"noise floor ± {report.noise['std']:.4f} (pooled std over seeds of {report.noise['trials']} networks)"
                      + (f"; ≈ marks {marked} point(s) whose gain over the next cheaper one is within noise" if marked else ""))
    elif report.rows:
        console.print("noise floor unknown: one seed per network; measure it with: "
                      + command(["confirm", "--seeds", str(CONFIRM_SEEDS), *([] if study.study_name == DEFAULT_STUDY else ["--study", study.study_name])]),
                      markup=False, highlight=False)
    if report.hypervolume is not None:
        console.print(f"hypervolume {report.hypervolume:.4f} (area the front dominates in (FLOPs / budget, accuracy), reference point (1, 0))")
    console.print(Text.assemble("trials in the study: ", coloured(study_parts(report.endings)),
                                f"; refused before training: {refused_words(report.endings.refused)}"))
    console.print(f"networks trained, chosen {proposed_words(report.proposed_by)}", markup=False, highlight=False)
    return report


def publish_front(study: Any, url: str, by: str, *, plot: Path | None = None) -> None:
    """Rewrite the study's notes in the dashboard (and upload `plot`, the front PNG); a study that cannot be written here
    (read-only, a storage fault) keeps its old notes, said in one line: what the command printed stands."""
    from nas.front.dashboard import publish

    why = publish(study, url, by, [plot] if plot else [])
    if why:
        notice(f"the dashboard's notes of {study.study_name} were not updated: {why}")


def write_front_png(study: Any, path: Path) -> Path | None:
    """The front PNG at `path`, or None (said in one line) where it cannot be written: the search's trials stand."""
    from nas.front.plots import plot as plot_front

    try:
        plot_front(study, str(path))  # the budget line at the study's own budget (nas.engine.record)
    except ConvspaceError as exc:
        notice(f"the front PNG was not written: {exc}")
        return None
    return path


def warn_remote(host: str, port: int) -> None:
    """The dashboard served where other machines reach it (--allow-remote): what that exposes, on stderr."""
    print(f"warning: the dashboard on {host}:{port} can be reached from other machines: it still asks for its token, but plain HTTP "
          "carries the token and the study unencrypted to whoever can watch the network; an SSH tunnel "
          f"({tunnel(port)}) keeps it on loopback", file=sys.stderr)


def print_agreement(a: Any, first: str, second: str) -> None:
    """Kendall's tau with its bootstrap interval (and whether that excludes 0), Spearman's rho and the top-k overlap."""
    from nas.evaluate.ranking import MIN_FOR_INTERVAL

    lo, hi = a.ci95
    interval = (f"no interval: fewer than {MIN_FOR_INTERVAL} networks" if a.resamples == 0 else f"95% bootstrap interval [{lo:+.3f}, {hi:+.3f}]; "
                + ("it excludes 0: the rankings agree" if lo > 0 else "it excludes 0: the rankings disagree" if hi < 0
                   else "it includes 0: too few networks (or too noisy) to tell"))
    console.print(f"{first} vs {second} over {a.n} networks: Kendall tau {a.kendall_tau:+.3f} ({interval}; p = {a.p_value:.2g}), Spearman {a.spearman:+.3f}, "
                  f"top-{a.top_k} overlap {a.top_k_overlap}/{a.top_k}", markup=False, highlight=False)
