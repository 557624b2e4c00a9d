"""What the commands that train print: their progress lines as trainings end, and what they say when they are done.

Each `*_progress` returns the callback a run reports its typed events through (nas.engine.events.dispatch over a table of
handlers); printers only print: storing a trial is the engine's (nas), never a printer's.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rich.table import Table

from console import console
from console.tables import print_agreement, print_front, publish_front, write_front_png
from nas.engine.commands import DEFAULT_STUDY
from nas.engine.events import ConfirmOpened, Progress, RunEnded, RunRequeued, SearchOpened, dispatch
from nas.engine.storage import display_url, has_password


def search_progress(view: Any, settings: Any, url: str) -> Progress:
    """The search's: a header once the study is open, then the live view (nas.front.live) for every event."""

    def opened(e: SearchOpened) -> None:
        s, proxy = settings, settings.proxy
        view.console.print(f"study [bold]{s.study}[/] in {display_url(url)}: {s.trials} trials within {s.budget / 1e9:.3g} GFLOPs "
                           f"(at {s.cost_resolution}px, {s.cost_classes} classes), proxy {proxy.epochs} epochs of {proxy.data} at {proxy.resolution}px")
        if e.warm_started:
            view.console.print(f"warm start: {', '.join(e.warm_started)} (fitted into the band) train first")
        if e.remaining < e.trials:
            view.console.print(f"{e.trials - e.remaining} of {e.trials} trials already in the study: training {e.remaining} more")

    header = dispatch({SearchOpened: opened})

    def progress(event: Any) -> None:  # the header first, then the view takes every event
        header(event)
        view(event)

    return progress


def search_ended(outcome: Any, view: Any, settings: Any, url: str, storage: str | None) -> int:
    """What the search did, its front (table, PNG, dashboard notes) and the command to look at it; the exit code:
    130 interrupted, 1 when every trial of this run failed (most often the proxy's settings), else 0."""
    from nas.engine.commands import command
    from nas.engine.endings import ended_words, proposed_words, refused_words
    from nas.front.dashboard import front_png

    study = settings.study
    if outcome.recovered:
        console.print(f"{outcome.recovered} trial(s) left running by an earlier driver: cut short, their networks queued to train again")
    state = "interrupted" if outcome.interrupted else f"time budget of {settings.time_budget:g} s spent" if outcome.out_of_time else "done"
    console.print(f"{state} ({outcome.seconds:.0f} s), this run: {ended_words(view.ended)}; networks chosen {proposed_words(outcome.proposed)}; "
                  f"refused before training: {refused_words(outcome.rejected)}", markup=False, highlight=False)
    print_front(outcome.study)
    png = front_png(url, study)
    if view.finished or not png.exists():  # a rerun that trained nothing keeps the picture it left (no matplotlib: fast)
        png = write_front_png(outcome.study, png)
        if png:
            console.print(f"front PNG: {png}", markup=False, highlight=False)
    else:
        png = None
    publish_front(outcome.study, url, "search", plot=png)
    console.print(f"stored in {display_url(url)}; look at it with: "
                  + command(["dashboard", *([] if study == DEFAULT_STUDY else ["--study", study]), *(["--storage", display_url(storage)] if storage else [])])
                  + (" (*** stands for the password)" if storage and has_password(storage) else ""), markup=False, highlight=False)
    if outcome.interrupted:
        return 130
    if outcome.failures and not outcome.ended.get("trained") and not outcome.ended.get("stopped"):
        # Nothing this run trained scored: most often the proxy's settings (a learning rate that diverges), not the networks.
        console.print(f"error: every trial of this run failed ({len(outcome.failures)}), the first with: {outcome.failures[0][:200]}; "
                      "check the proxy settings (--lr, --batch-size, --data)", highlight=False)
        return 1
    return 0


def confirm_progress(study: str, seeds: int, top: int | None) -> Progress:
    """`confirm`'s: what it will train, then each repeat as it ends."""

    def opened(e: ConfirmOpened) -> None:
        what = f"the {len(e.targets)} most accurate networks" if top else f"the {len(e.targets)} front networks"
        console.print(f"confirming {what} of {study} with {seeds} seeds each: {e.runs} trainings to run"
                      + ("" if e.runs else " (every seed is in the study already)"), markup=False, highlight=False)

    def ended(e: RunEnded) -> None:  # in the words of nas.engine.record: a repeat, or how a training that did not end as one went
        score = f"accuracy {e.acc:.4f}" if e.acc is not None else e.status
        console.print(f"  {e.name}: {score} ({e.train_seconds:.0f} s)", markup=False, highlight=False)

    return dispatch({ConfirmOpened: opened, RunEnded: ended, RunRequeued: requeued})


def confirm_ended(outcome: Any, url: str, study: str, seeds: int) -> None:
    """The front on the means, a new PNG where they moved, and what was left undone (failed, claimed elsewhere, unconfirmed)."""
    from nas.evaluate.confirm import CLAIM_GRACE
    from nas.front.dashboard import front_png

    print_front(outcome.study)
    png = write_front_png(outcome.study, front_png(url, study)) if outcome.trained else None  # the means moved: a new picture
    publish_front(outcome.study, url, "confirm", plot=png)
    if outcome.failed:
        console.print(f"{len(outcome.failed)} training(s) failed and were not stored (rerun confirm to retry): "
                      + "; ".join(outcome.failed), markup=False, highlight=False)
    if outcome.elsewhere:
        console.print(f"{len(outcome.elsewhere)} training(s) were claimed by another confirm run of this study and left to it: "
                      f"{'; '.join(outcome.elsewhere)} (a run that was killed lets its claims lapse after {CLAIM_GRACE:.0f} s: "
                      "rerun confirm then)", markup=False, highlight=False)
    if outcome.unconfirmed:
        console.print(f"the front on the means now holds trial(s) {', '.join(map(str, outcome.unconfirmed))} with fewer than {seeds} "
                      "seeds: run confirm again to confirm them too", markup=False, highlight=False)


def network_progress(what: str, *, quiet: bool = False) -> Progress:
    """`ablation`'s and `fidelity`'s: each fixed network as its training ends (by its job's name), or is queued again
    because its Ray worker died; `what` names the score."""

    def ended(e: RunEnded) -> None:
        if e.status == "failed":
            console.print(f"  {e.name} failed: {e.reason}", markup=False, highlight=False)
        else:
            console.print(f"  {e.name} finished: {what} {float('nan') if e.acc is None else e.acc:.4f}", highlight=False)

    return dispatch({} if quiet else {RunEnded: ended, RunRequeued: requeued})


def requeued(e: RunRequeued) -> None:
    """A given training whose Ray worker died, trained once more: one line, the same for `confirm` and the fixed runs."""
    console.print(f"  {e.name} cut short ({e.reason}): queued to train again", markup=False, highlight=False)


def ablation_ended(study: str, rows: list[dict[str, Any]], agreement: Any, url: str) -> None:
    """Each network's proxy accuracy beside its reference, and how far the two rankings agree."""
    table = Table(title=f"{study}: proxy accuracy beside the reference")
    for column in ("network", "GFLOPs", "proxy top-1", "reference top-1"):
        table.add_column(column, justify="left" if column == "network" else "right")
    for r in rows:
        spread = f" ± {100 * r['proxy_std']:.2f} ({r['seeds']} seeds)" if r["seeds"] > 1 else ""  # after `confirm --top`
        table.add_row(r["preset"], f"{r['gflops']:.2f}", f"{100 * r['proxy_accuracy']:.2f}{spread}", f"{r['reference']:.2f}")
    console.print(table)
    print_agreement(agreement, "proxy", "reference")
    console.print(f"stored in {display_url(url)}", markup=False, highlight=False)


def fidelity_started(settings: Any, url: str) -> None:
    """What `fidelity` compares: N networks, the proxy's epochs and images against the long schedule's."""
    s, proxy = settings, settings.proxy
    console.print(f"study {s.study} in {display_url(url)}: {s.n} networks within {s.budget / 1e9:.3g} GFLOPs, proxy {proxy.epochs} "
                  f"epoch(s) of {proxy.train_images or 'all'} images vs {s.long.epochs} of {s.long.train_images or 'all'}, {proxy.data} at "
                  f"{proxy.resolution}px", markup=False, highlight=False)


def fidelity_ended(report: Any, url: str) -> None:
    """The two accuracy columns side by side, their rank agreement, and the minutes each schedule took."""
    table = Table(title=f"{report.study}: proxy accuracy beside the long schedule's")
    for column in ("network", "GFLOPs", "proxy top-1", "long top-1", "config"):
        table.add_column(column, justify="left" if column == "config" else "right")
    for p in report.pairs:
        table.add_row(str(p["sample"]), f"{p['gflops']:.2f}", f"{100 * p['proxy']:.2f}", f"{100 * p['long']:.2f}", p["config"])
    console.print(table)
    print_agreement(report.agreement, "proxy", "long schedule")
    console.print(f"training time: proxy {report.proxy_minutes:.1f} min, long {report.long_minutes:.1f} min (trainable wall time, "
                  f"summed over networks); stored in {display_url(url)}", markup=False, highlight=False)


def exported(entry: dict[str, Any]) -> None:
    """One entry `export` wrote (or found already written), checked against its rebuilt model."""
    said = {"unchanged": f"trial {entry['trial']} is already exported as [bold]{entry['name']}[/] (unchanged)",
            "replaced": f"exported trial {entry['trial']} as [bold]{entry['name']}[/], replacing the entry of that name"}
    console.print(said.get(entry["state"], f"exported trial {entry['trial']} as [bold]{entry['name']}[/]")
                  + f": {entry['params'] / 1e6:.2f}M params, {entry['flops'] / 1e9:.3f} GFLOPs (checked against the rebuilt model)")
    console.print(f"  {entry['config']}\n  {entry['module']}", markup=False, highlight=False)


def export_ended(names: list[str], out: Path, default_zoo: Path) -> None:
    """The line to use the entries with, naming the zoo folder where it is not the one `import nas.export.zoo` reads by itself."""
    zoo = "" if out == default_zoo else f"  (with CONVSPACE_ZOO={out})"
    console.print(f"use: import nas.export.zoo; timm.create_model({names[0]!r}, num_classes=..., drop_path_rate=...)"
                  + (f"; likewise {', '.join(map(repr, names[1:]))}" if len(names) > 1 else "") + zoo, markup=False, highlight=False)


@contextmanager
def training_bar(epochs: int) -> Iterator[Progress]:
    """`train`'s progress: a bar over each epoch's steps and a line per epoch. The bar appears with the first training
    step: a mistake found while building (an unknown model, a batch larger than the data) is one line with no empty
    bar drawn above it."""
    from rich.progress import BarColumn, MofNCompleteColumn, TimeRemainingColumn
    from rich.progress import Progress as Bar

    from trainers.events import EpochTrained, StepEnded

    bar = Bar("{task.description}", BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), console=console)
    task = None

    def shown() -> Any:
        nonlocal task
        if task is None:
            bar.start()
            task = bar.add_task("epoch", total=None)
        return task

    def step(e: StepEnded) -> None:
        bar.update(shown(), description=f"epoch {e.epoch}/{epochs}", completed=e.step, total=e.steps)

    def epoch(e: EpochTrained) -> None:
        shown()
        line = e.summary
        ema = f", EMA top-1 {line['ema_top1']:.2f}" if "ema_top1" in line else ""
        bar.console.print(f"epoch {line['epoch']}/{epochs}: loss {line['train_loss']:.4f}, top-1 {line['top1']:.2f}, "
                          f"top-5 {line['top5']:.2f}{ema} ({line['seconds']:.0f} s)")

    try:
        yield dispatch({StepEnded: step, EpochTrained: epoch})
    finally:
        if task is not None:
            bar.stop()
