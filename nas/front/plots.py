"""The front's picture: every trained trial by GFLOPs and mean accuracy, the front, the budget, the over-budget strip, and
the search's hypervolume trial by trial. matplotlib is imported only when a picture is drawn."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna

from nas.engine.endings import ENDINGS, REFUSALS, ending
from nas.engine.record import Status, StudyRecord, TrialRecord
from nas.front.pareto import front
from nas.front.seeds import seed_scores
from space.errors import ConvspaceError


def plot_range(gflops: list[float], budget: float | None) -> tuple[float, float, bool]:
    """The front plot's x range in GFLOPs and whether it is logarithmic: set by the trained trials and the budget
    (with room past it for the over-budget strip), never by over-budget samples, which reach 10,000x the budget."""
    xs = [*gflops, *([budget] if budget else [])]
    if not xs:
        return 0.0, 1.0, False
    lo, hi = min(xs), max(xs)
    if lo > 0 and hi / lo > 10:  # more than a decade apart: a linear axis would crush the small networks at 0
        return lo / 1.3, hi * 1.35, True
    return 0.0, hi * 1.2 if hi > 0 else 1.0, False


def plot(study: optuna.Study, path: str, budget: int | None = None) -> tuple[float, float]:
    """PNG of the trained and stopped trials by GFLOPs and proxy accuracy (means over seeds), the front with its trial
    numbers and seed spread, the budget line (`budget`, else the study's own), a strip counting the over-budget samples
    past it, and beside it the hypervolume trial by trial where the search recorded it; returns the x range of the front's
    panel (GFLOPs)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    record = StudyRecord(study)
    budget = budget or record.budget
    groups: dict[str, tuple[list[float], list[float]]] = {key: ([], []) for key in ("trained", "stopped_scheduler", "stopped_time")}
    over_budget: list[float] = []
    unscored = 0  # stopped by the time limit before their first epoch ended: no accuracy to draw
    scores = seed_scores(study)
    for t in study.get_trials(deepcopy=False):
        stored, key = TrialRecord(t), ending(t)
        flops = stored.flops
        if flops is None:
            continue
        if stored.status == Status.OVER_BUDGET:
            over_budget.append(flops / 1e9)
        elif key in groups:
            accuracy = scores[t.number].mean if t.number in scores else stored.proxy_accuracy
            if accuracy is None:
                unscored += 1
                continue
            xs, ys = groups[key]
            xs.append(flops / 1e9)
            ys.append(accuracy)
    limit = budget / 1e9 if budget else None
    lo, hi, log = plot_range([x for xs, _ in groups.values() for x in xs], limit)
    history = hypervolume_history(study)
    if history:
        fig, (ax, hv_ax) = plt.subplots(1, 2, figsize=(11, 4.8), dpi=120, gridspec_kw={"width_ratios": [2.2, 1]})
        draw_hypervolume(hv_ax, history)
    else:
        fig, ax = plt.subplots(figsize=(7.5, 4.8), dpi=120)
    markers = {"trained": dict(marker="o"), "stopped_scheduler": dict(marker="s", alpha=0.6), "stopped_time": dict(marker="D", alpha=0.7)}
    for key, (xs, ys) in groups.items():
        if xs:
            label = f"{ENDINGS[key].words} ({len(xs)}" + (f"; {unscored} more before a first score)" if key == "stopped_time" and unscored else ")")
            ax.scatter(xs, ys, s=22, zorder=2, c=ENDINGS[key].colour, label=label, **markers[key])
    if unscored and not groups["stopped_time"][0]:
        ax.scatter([], [], c=ENDINGS["stopped_time"].colour, marker="D", label=f"{unscored} {ENDINGS['stopped_time'].words} before a first score")
    best = front(study, scores)
    if best:
        xs, ys = [t.values[1] / 1e9 for t in best], [scores[t.number].mean for t in best]
        spread = [scores[t.number].std or 0.0 for t in best]
        repeated = any(spread)
        ax.errorbar(xs, ys, yerr=spread if repeated else None, fmt="-o", c="tab:orange", lw=2, ms=7, capsize=3, zorder=3,
                    label="Pareto front (trial numbers)" + (", mean +- std over seeds" if repeated else ""))
        for t, x, y in zip(best, xs, ys):
            ax.annotate(str(t.number), (x, y), xytext=(5, -10), textcoords="offset points", fontsize=8, zorder=4)
    if limit:
        ax.axvline(limit, ls="--", c="k", lw=1, label=f"budget {limit:g} GFLOPs")
    if over_budget and limit:  # summarised at the edge: their FLOPs would set the scale, and they have no accuracy
        over = len(over_budget) + record.screened.get(Status.OVER_BUDGET, 0)  # with those refused unstored
        most = max(over_budget)
        ax.axvspan(limit, hi, color=ENDINGS["refused"].colour, alpha=0.08, lw=0,
                   label=f"{over} {ENDINGS['refused'].words}: {REFUSALS['over_budget']} (up to {most:,.0f} GFLOPs)" if most >= 10
                   else f"{over} {ENDINGS['refused'].words}: {REFUSALS['over_budget']} (up to {most:.3g} GFLOPs)")
    if log:
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))  # labelled ticks inside a decade or two
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlim(lo, hi)
    ax.set_xlabel("GFLOPs of the target network (fvcore)" + (", log scale" if log else ""))
    ax.set_ylabel("proxy validation top-1")
    ax.set_title(f"study {study.study_name}")
    ax.grid(alpha=0.3, which="major")
    if ax.get_legend_handles_labels()[0]:  # below the axes: inside, it would hide points wherever it went
        ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=2, frameon=False)
    try:
        save_figure(fig, Path(path))
    finally:
        plt.close(fig)
    lo, hi = ax.get_xlim()
    return float(lo), float(hi)


def save_figure(fig: Any, path: Path) -> None:
    """Write a matplotlib figure as a PNG atomically (space.files.written_atomically: a reader never sees half a
    picture); a folder that cannot be made or written is one line naming it."""
    from space.files import written_atomically

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConvspaceError(f"plot: cannot write into the folder {str(path.parent)!r} ({exc.strerror or type(exc).__name__})") from None
    try:
        with written_atomically(path, binary=True) as out:
            fig.savefig(out, format="png", bbox_inches="tight")
    except OSError as exc:
        raise ConvspaceError(f"plot: cannot write {str(path)!r} ({exc.strerror or type(exc).__name__})") from None


def hypervolume_history(study: optuna.Study) -> list[float]:
    """The study's hypervolume after each finished trial, in the order they finished (trials run in parallel: by
    number, a cheap late-numbered trial that finished first would seem to lower it), as the search recorded it."""
    told = [(t, TrialRecord(t).hypervolume) for t in study.get_trials(deepcopy=False) if t.datetime_complete]
    return [float(hv) for _, hv in sorted(((t, hv) for t, hv in told if hv is not None), key=lambda pair: pair[0].datetime_complete)]


def draw_hypervolume(ax: Any, history: list[float]) -> None:
    """The hypervolume after each trial: a curve still rising means the search is still finding better networks."""
    from matplotlib.ticker import MaxNLocator

    finished = range(1, len(history) + 1)
    ax.step(finished, history, where="post", c="tab:green", lw=2)
    ax.plot(finished, history, "o", c="tab:green", ms=3)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("trials finished")
    ax.set_ylabel("hypervolume (FLOPs / budget, accuracy; ref. (1, 0))")
    ax.set_title("progress of the search", fontsize=10)
    ax.set_ylim(0, max(history) * 1.15 or 1.0)
    ax.grid(alpha=0.3)
