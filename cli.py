"""convspace command line: search ConvNet design spaces under a FLOPs budget.

Heavy libraries (torch, ray, optuna) are imported inside the commands so `--help` stays instant.
"""

from __future__ import annotations

import functools
import json
import os
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from nas.settings import SAMPLERS, SCHEDULERS, SearchSettings
from nas.storage import DAMAGED, STORAGE_ENV, display_url, has_password, mask_passwords, resolve_storage, storage_fault
from space.errors import ConvspaceError
from trainers.settings import ProxySettings

# timm still calls torch.jit.script at import; the deprecation notice is noise for our users.
warnings.filterwarnings("ignore", message=".*torch.jit.script.*")
warnings.filterwarnings("ignore", message=".*is experimental.*")  # Optuna's notice on set_metric_names
warnings.filterwarnings("ignore", message=".*is an experimental feature.*")  # ... and on heartbeat_interval
# Optuna expects heartbeats with Study.optimize; the search uses ask/tell and sends them itself (nas/search.py).
warnings.filterwarnings("ignore", message=".*Heartbeat of storage is supposed to be used with Study.optimize.*")

# No local variables in a traceback: they would show a --storage URL with its password.
app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__.splitlines()[0], pretty_exceptions_show_locals=False)
# Piped output (logs, CI) gets a wide table instead of rich's 80-column default, unless $COLUMNS says otherwise.
console = Console(width=None if sys.stdout.isatty() or os.environ.get("COLUMNS") else 160)


def user_errors(command: Callable[..., Any]) -> Callable[..., Any]:
    """A user mistake prints one line (no traceback) and exits with 2."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except ConvspaceError as exc:
            print(f"error: {mask_passwords(str(exc))}", file=sys.stderr)  # a URL in a message never shows its password
            raise typer.Exit(2) from None
        except Exception as exc:
            fault = storage_fault(exc)  # the storage failed underneath (damaged, locked, full, gone): one line, not a traceback
            if fault is None:
                raise
            hint = ("the SQLite file is damaged: restore it from a copy, or salvage it with `sqlite3 FILE .recover`"
                    if any(words in fault for words in DAMAGED) else "nothing finished is lost: rerun the same command to resume")
            print(f"error: storage: {fault}; {hint}", file=sys.stderr)
            raise typer.Exit(2) from None

    return wrapper


def load_config(name_or_file: str) -> tuple[Any, dict[str, Any]]:
    """A preset (`convnext_tiny` or `convspace_convnext_tiny`), an exported entry's name, or an ArchConfig / entry
    YAML or JSON file; with where it came from (study, trial, proxy accuracy) when it is an export."""
    from nas.entries import find_entry
    from space.config import ArchConfig
    from space.files import read_yaml
    from space.presets import PRESETS

    preset = name_or_file.removeprefix("convspace_")
    if preset in PRESETS:
        return PRESETS[preset], {"preset": preset}
    path = Path(name_or_file)
    data = read_yaml(path, "config") if path.is_file() else find_entry(name_or_file)
    if data is None:
        raise ConvspaceError(f"model: {name_or_file!r} is neither a preset (see `presets`), an exported entry nor a config file")
    if isinstance(data, dict) and {"name", "config"} <= set(data):  # an exported entry wraps its config
        origin = {k: data[k] for k in ("name", "study", "trial", "proxy_accuracy") if data.get(k) is not None}
        return ArchConfig.from_dict(data["config"]), origin
    return ArchConfig.from_dict(data), {}


def cost_row(name: str, cfg: Any, resolution: int) -> dict[str, Any]:
    from space.cost import arch_cost

    cost = arch_cost(cfg, resolution)
    return {"name": name, "params": cost.params, "flops": cost.flops, "hash": cfg.hash}


def print_costs(rows: list[dict[str, Any]], title: str) -> None:
    table = Table(title=title)
    for column in ("name", "params (M)", "GFLOPs", "hash"):
        table.add_column(column, justify="left" if column in ("name", "hash") else "right")
    for row in rows:
        table.add_row(row["name"], f"{row['params'] / 1e6:.2f}", f"{row['flops'] / 1e9:.3f}", row["hash"])
    console.print(table)


@app.command()
@user_errors
def presets(
    as_json: bool = typer.Option(False, "--json", help="One JSON list instead of a table."),
    resolution: int = typer.Option(224, help="Input side length for the FLOPs count."),
) -> None:
    """Params and GFLOPs of every published network and ConvNeXt roadmap step."""
    from space.presets import PRESETS

    rows = [cost_row(name, cfg, resolution) for name, cfg in PRESETS.items()]
    if as_json:
        print(json.dumps(rows, indent=1))
    else:
        print_costs(rows, f"presets at {resolution}x{resolution} (FLOPs: fvcore multiply-adds)")


@app.command()
@user_errors
def inspect(
    model: str = typer.Argument(..., help="Preset name, exported entry name, or ArchConfig YAML/JSON file."),
    resolution: int = typer.Option(224, help="Input side length for the FLOPs count."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
    verify: bool = typer.Option(False, "--verify", help="Also build the model and count with fvcore and torch."),
) -> None:
    """One network: its config, params and FLOPs (analytic; --verify checks against fvcore)."""
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
    if as_json:
        print(json.dumps(report))
        return
    console.print(cfg.to_yaml())
    if origin:
        console.print("from " + ", ".join(f"{k.replace('_', ' ')} {v:.4f}" if isinstance(v, float) else f"{k.replace('_', ' ')} {v}"
                                          for k, v in origin.items()))
    print_costs([report], f"{model} at {resolution}x{resolution}")
    if verify:
        same = report["params_torch"] == report["params"] and report["flops_fvcore"] == report["flops"]
        console.print(f"fvcore {report['flops_fvcore']:,} FLOPs, torch {report['params_torch']:,} params: "
                      + ("[green]equal to the analytic count[/]" if same else "[red]DIFFERENT from the analytic count[/]"))


@app.command()
@user_errors
def sample(
    space: str = typer.Option("default", help="Space YAML file, or the name of a shipped space."),
    n: int = typer.Option(5, "-n", min=1, help="How many points."),
    seed: int = typer.Option(0, help="Same seed, same points."),
    budget: str = typer.Option(None, help="Keep only points within this budget, e.g. 4.5GFLOPs (a fitted space's "
                                          "points are scaled onto a random target within it, as the search does)."),
    resolution: int = typer.Option(224, help="Input side length for the FLOPs count."),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON list with each config."),
) -> None:
    """Random points of a design space with their cost (seeded)."""
    import random

    from space.choices import SeededSuggester, Space
    from space.cost import parse_flops
    from space.fitting import Band, propose

    limit = parse_flops(budget) if budget else None
    design = Space.from_yaml(space)
    rng, rows, drawn = random.Random(seed), [], 0
    while len(rows) < n and drawn < 1000 * n:
        drawn += 1
        if limit and design.scale == "fitted":
            proposal = propose(design, SeededSuggester(rng), Band(limit, resolution=resolution))
            if proposal.refusal:
                continue
            cfg = proposal.config
        else:
            cfg = design.sample(SeededSuggester(rng))
        row = cost_row(f"#{drawn}", cfg, resolution)
        if limit is None or row["flops"] <= limit:
            rows.append({**row, "config": cfg.to_dict()})
    if len(rows) < n:
        raise ConvspaceError(f"budget: only {len(rows)} of {drawn} sampled points fit in {budget}")
    if as_json:
        print(json.dumps(rows))
    else:
        print_costs(rows, f"{design.name}: {n} points" + (f" within {budget} ({drawn} drawn)" if limit else ""))


def coloured(parts: list[tuple[str, str | None]]) -> Text:
    """A summary of nas.record (text, ending key) in the ending's colour, as the plots and the dashboard draw it."""
    from nas.record import ENDINGS

    return Text.assemble(*((text, ENDINGS[key].colour if key else "") for text, key in parts))


def print_front(study: Any, report: Any = None) -> Any:
    """The Pareto table of a study, whole at 100 columns: the architecture folds onto a second line, never cut.
    Accuracies are means over seeds (`confirm`); a point whose gain over the cheaper one is within noise is marked.
    Then the noise floor, the hypervolume, the trials by how they ended and who chose them. Returns the report."""
    from nas.commands import command
    from nas.pareto import front_report
    from nas.record import proposed_words, refused_words, study_parts

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
                      + command(["confirm", "--seeds", "3", *([] if study.study_name == STUDY else ["--study", study.study_name])]),
                      markup=False, highlight=False)
    if report.hypervolume is not None:
        console.print(f"hypervolume {report.hypervolume:.4f} (area the front dominates in (FLOPs / budget, accuracy), reference point (1, 0))")
    console.print(Text.assemble("trials in the study: ", coloured(study_parts(report.endings)),
                                f"; refused before training: {refused_words(report.endings.refused)}"))
    console.print(f"networks trained, chosen {proposed_words(report.proposed_by)}", markup=False, highlight=False)
    return report


def notice(line: str) -> None:
    """One line on stderr about something beside the command's result that did not happen (stdout may be JSON)."""
    print(f"note: {mask_passwords(line)}", file=sys.stderr)


def publish_front(study: Any, url: str, by: str, *, plot: Path | None = None) -> None:
    """Rewrite the study's notes in the dashboard (and upload `plot`, the front PNG); a study that cannot be written here
    (read-only, a storage fault) keeps its old notes, said in one line: what the command printed stands."""
    from nas.dashboard import publish

    why = publish(study, url, by, [plot] if plot else [])
    if why:
        notice(f"the dashboard's notes of {study.study_name} were not updated: {why}")


def write_front_png(study: Any, path: Path) -> Path | None:
    """The front PNG at `path`, or None (said in one line) where it cannot be written: the search's trials stand."""
    from nas.pareto import plot as plot_front

    try:
        plot_front(study, str(path))  # the budget line at the study's own budget (nas.record)
    except ConvspaceError as exc:
        notice(f"the front PNG was not written: {exc}")
        return None
    return path


def flops_option(name: str, text: str | None) -> int:
    """A FLOPs count given on the command line (0 when left out); a bad one is an error naming the option."""
    from space.cost import parse_flops

    try:
        return parse_flops(text) if text else 0
    except ConvspaceError as exc:
        raise ConvspaceError(f"{name}: {str(exc).removeprefix('budget: ')}") from None


PROXY, SEARCH = ProxySettings, SearchSettings  # the defaults live once, in the settings dataclasses
STUDY = "convspace"  # the default study of every command
STORAGE_HELP = f"SQLAlchemy URL (default ${STORAGE_ENV}, else sqlite:///studies/<study>.db)."


@app.command()
@user_errors
def search(
    budget: str = typer.Option(..., help="FLOPs budget of the target network, e.g. 4.5GFLOPs, 450M, 4.5e9."),
    space: str = typer.Option("default", help="Space YAML file, or the name of a shipped space."),
    study: str = typer.Option(STUDY, help="Study name; rerunning with the same name resumes it."),
    storage: str = typer.Option(None, help=STORAGE_HELP),
    flops_min: str = typer.Option(None, help="Refuse networks below this many FLOPs too, as over-budget ones are: a band "
                                  "[flops-min, budget] for studies that want every network near the budget, e.g. 4GFLOPs."),
    trials: int = typer.Option(SEARCH.trials, help="Trials to train in the study, counting those already there: trained to the end, "
                                                   "stopped early (--scheduler or the time limit), or failed (points refused before training do not count)."),
    epochs: int = typer.Option(PROXY.epochs, help="Proxy training epochs per trial."),
    resolution: int = typer.Option(PROXY.resolution, help="Proxy training resolution (>= 32: the networks reduce 32x)."),
    batch_size: int = typer.Option(PROXY.batch_size, help="Proxy batch size."),
    train_images: int = typer.Option(PROXY.train_images, help="Training images per proxy epoch (a fixed seeded subset; 0: all)."),
    lr: float = typer.Option(PROXY.lr, help="Proxy peak learning rate (AdamW)."),
    bn_batches: int = typer.Option(PROXY.bn_batches, help="Training batches that re-estimate BatchNorm statistics before each evaluation (0: off)."),
    augment: bool | None = typer.Option(None, "--augment/--no-augment", help="Random crops (reflect-padded) and horizontal flips "
                                           "of the training images, batch-wise on the device; part of the study's identity. Default: on "
                                           "for cifar10/100 and ImageFolders, off for digits (a flipped digit is another or none)."),
    data: str = typer.Option(PROXY.data, help="digits (embedded), cifar10, cifar100, an ImageFolder path, or synthetic (tests)."),
    data_dir: str = typer.Option(None, help="Where CIFAR files live (default ./data)."),
    cache_dir: str = typer.Option(None, help="Where CIFAR and ImageFolders are decoded once at the proxy resolution, for every "
                                  "trial and later run to memory-map (default studies/cache). Not part of the study's identity."),
    cost_resolution: int = typer.Option(SEARCH.cost_resolution, help="Resolution at which FLOPs and the budget are counted."),
    cost_classes: int = typer.Option(SEARCH.cost_classes, help="Classes of the target network's head for the FLOPs count."),
    sampler: str = typer.Option(SEARCH.sampler, help=f"{', '.join(SAMPLERS)}."),
    warm_start: bool = typer.Option(SEARCH.warm_start, "--warm-start/--no-warm-start", help="Train the published networks that "
                                    "fit the band (or scale into it) first, in a new study: ConvNeXt-T, ResNet-50, Conv2Former-T, ..."),
    cpus_per_trial: float = typer.Option(SEARCH.cpus_per_trial, help="CPUs each proxy training gets."),
    gpus_per_trial: float = typer.Option(SEARCH.gpus_per_trial, help="GPUs each proxy training gets (fractions pack several per GPU)."),
    address: str = typer.Option(None, help="Address of an existing Ray cluster, HOST:PORT (default: start Ray locally)."),
    time_budget: float = typer.Option(None, help="Stop after this many seconds of wall clock (the trials still training are queued for the rerun)."),
    trial_time_limit: float = typer.Option(None, help="Seconds one trial may train; then it stops early (recorded as stopped, "
                                                     "stop_reason 'time limit'), so one huge sampled network cannot hold up the search."),
    scheduler: str = typer.Option(SEARCH.scheduler, help=f"Early stopping, one of {', '.join(SCHEDULERS)}: pareto-asha keeps the "
                                  "non-dominated (accuracy, FLOPs) trials of each rung, asha the most accurate, none stops nothing."),
    grace_period: int = typer.Option(SEARCH.grace_period, help="ASHA: epochs every trial trains before it may be stopped."),
    reduction_factor: int = typer.Option(SEARCH.reduction_factor, help="ASHA: keep the best 1/factor at each rung."),
    seed: int = typer.Option(SEARCH.seed, help="Seeds the sampler, the data split and the training."),
    heartbeat_interval: int = typer.Option(SEARCH.heartbeat_interval, help="Seconds between heartbeats of running trials."),
    heartbeat_grace: int = typer.Option(SEARCH.heartbeat_grace, help="A running trial silent this long (its driver died) is retrained."),
) -> None:
    """Search the space under a FLOPs budget: Optuna multi-objective study + Ray Tune proxy trainings (ASHA)."""
    from nas.settings import check_search
    from space.choices import Space
    from space.cost import parse_flops

    # Every setting, the data, the budget and the Ray address are checked before torch or Ray is imported and
    # before the study is opened: a mistake is one line within a second, and leaves no file and no Ray behind.
    url = resolve_storage(study, storage)
    proxy = PROXY(epochs=epochs, resolution=resolution, batch_size=batch_size, lr=lr, data=data, train_images=train_images or None,
                  bn_batches=bn_batches, data_dir=data_dir, seed=seed, augment=augment, cache_dir=cache_dir)
    settings = SEARCH(
        study=study, budget=parse_flops(budget), flops_min=flops_option("flops-min", flops_min), space=Space.from_yaml(space),
        storage=url, proxy=proxy, trials=trials,
        cost_resolution=cost_resolution, cost_classes=cost_classes, sampler=sampler, warm_start=warm_start, cpus_per_trial=cpus_per_trial,
        gpus_per_trial=gpus_per_trial, address=address, time_budget=time_budget, trial_time_limit=trial_time_limit, grace_period=grace_period,
        scheduler=scheduler, reduction_factor=reduction_factor, seed=seed, heartbeat_interval=heartbeat_interval, heartbeat_grace=heartbeat_grace,
    )
    check_search(settings)
    from nas.live import SearchView
    from nas.record import ended_words, proposed_words, refused_words
    from nas.search import run_search

    with SearchView(console, study=study, epochs=settings.proxy.epochs, live=console.is_terminal, time_budget=settings.time_budget) as view:

        def progress(event: str, info: dict[str, Any]) -> None:
            if event == "start":  # the study is open
                view.console.print(f"study [bold]{study}[/] in {display_url(url)}: {trials} trials within {settings.budget / 1e9:.3g} "
                                   f"GFLOPs (at {cost_resolution}px, {cost_classes} classes), proxy {epochs} epochs of {data} at {resolution}px")
                if info.get("warm_started"):
                    view.console.print(f"warm start: {', '.join(info['warm_started'])} (fitted into the band) train first")
                if info["remaining"] < info["trials"]:
                    view.console.print(f"{info['trials'] - info['remaining']} of {info['trials']} trials already in the study: "
                                       f"training {info['remaining']} more")
            view(event, info)

        outcome = run_search(settings, progress, checked=True)
    if outcome.recovered:
        console.print(f"{outcome.recovered} trial(s) left running by an earlier driver: cut short, their networks queued to train again")
    state = "interrupted" if outcome.interrupted else f"time budget of {time_budget:g} s spent" if outcome.out_of_time else "done"
    console.print(f"{state} ({outcome.seconds:.0f} s), this run: {ended_words(view.ended)}; networks chosen {proposed_words(outcome.proposed)}; "
                  f"refused before training: {refused_words(outcome.rejected)}", markup=False, highlight=False)
    print_front(outcome.study)
    from nas.commands import command
    from nas.dashboard import front_png

    png = front_png(url, study)
    if view.finished or not png.exists():  # a rerun that trained nothing keeps the picture it left (no matplotlib: fast)
        png = write_front_png(outcome.study, png)
        if png:
            console.print(f"front PNG: {png}", markup=False, highlight=False)
    else:
        png = None
    publish_front(outcome.study, url, "search", plot=png)
    console.print(f"stored in {display_url(url)}; look at it with: "
                  + command(["dashboard", *([] if study == STUDY else ["--study", study]), *(["--storage", display_url(storage)] if storage else [])])
                  + (" (*** stands for the password)" if storage and has_password(storage) else ""), markup=False, highlight=False)
    if outcome.interrupted:
        raise typer.Exit(130)
    if outcome.failures and not outcome.ended.get("trained") and not outcome.ended.get("stopped"):
        # Nothing this run trained scored: most often the proxy's settings (a learning rate that diverges), not the networks.
        console.print(f"error: every trial of this run failed ({len(outcome.failures)}), the first with: {outcome.failures[0][:200]}; "
                      "check the proxy settings (--lr, --batch-size, --data)", highlight=False)
        raise typer.Exit(1)


@app.command()
@user_errors
def pareto(
    study: str = typer.Option(STUDY, help="Study name."),
    storage: str = typer.Option(None, help=STORAGE_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object: study, budget, flops_min, front (rows with accuracy = mean over seeds, "
                              "accuracy_std, seeds, within_noise), hypervolume, noise (pooled std over seeds, or null)."),
    plot: str = typer.Option(None, help="Also write a PNG of every trial with the front and the budget to this path (`search` "
                                        "leaves one beside the study: studies/<study>-front.png)."),
) -> None:
    """The Pareto front of feasible, fully trained trials (table, JSON, PNG); also rewrites the study's dashboard notes."""
    from nas.pareto import front_report, load_study
    from nas.pareto import plot as plot_front

    if plot and not plot.lower().endswith(".png"):
        raise ConvspaceError(f"plot: must be a .png file name, got {plot!r}")
    url = resolve_storage(study, storage)
    loaded = load_study(study, url)
    report = front_report(loaded)  # first: a trial without a config is a one-line error, before any file is written
    if plot:  # a folder that cannot be made or written is one line (nas.pareto.save_figure)
        plot_front(loaded, plot)  # the budget line at the study's own budget (nas.record)
    if as_json:
        print(json.dumps(report.to_json()))
    else:
        print_front(loaded, report)
        if plot:
            console.print(f"plot written to {plot}", markup=False, highlight=False)
    publish_front(loaded, url, "pareto", plot=Path(plot) if plot else None)


@app.command()
@user_errors
def confirm(
    seeds: int = typer.Option(3, help="Seeds in all per network, >= 2: the search's own training is the first."),
    top: int = typer.Option(None, help="Confirm the N most accurate trained networks instead of the Pareto front."),
    study: str = typer.Option(STUDY, help="Study name."),
    storage: str = typer.Option(None, help=STORAGE_HELP),
    cpus_per_trial: float = typer.Option(SEARCH.cpus_per_trial, help="CPUs each proxy training gets."),
    gpus_per_trial: float = typer.Option(SEARCH.gpus_per_trial, help="GPUs each proxy training gets (fractions pack several per GPU)."),
    address: str = typer.Option(None, help="Address of an existing Ray cluster, HOST:PORT (default: start Ray locally)."),
) -> None:
    """Train the front's networks again with other seeds: the front on mean accuracies, and the study's noise floor."""
    from nas.settings import check_confirm

    check_confirm(seeds, top, cpus_per_trial, gpus_per_trial, address)
    url = resolve_storage(study, storage)
    from nas.confirm import CLAIM_GRACE, run_confirm

    def progress(event: str, info: dict[str, Any]) -> None:
        if event == "start":
            what = f"the {len(info['targets'])} most accurate networks" if top else f"the {len(info['targets'])} front networks"
            console.print(f"confirming {what} of {study} with {seeds} seeds each: {info['runs']} trainings to run"
                          + ("" if info["runs"] else " (every seed is in the study already)"), markup=False, highlight=False)
        elif event == "done":  # in the words of nas.record: a repeat, or how a training that did not end as one went
            score = f"accuracy {info['acc']:.4f}" if info.get("acc") is not None else f"{info.get('status')}"
            console.print(f"  repeat of trial {info['number']} with seed {info['seed']}: {score} ({info.get('train_seconds', 0):.0f} s)",
                          markup=False, highlight=False)
        elif event == "requeued":  # its Ray worker died: trained once more
            console.print(f"  repeat of trial {info['number']} with seed {info['seed']} cut short ({info['reason']}): queued to train again",
                          markup=False, highlight=False)

    outcome = run_confirm(study, url, seeds=seeds, top=top, cpus_per_trial=cpus_per_trial, gpus_per_trial=gpus_per_trial,
                          address=address, progress=progress, checked=True)
    print_front(outcome.study)
    from nas.dashboard import front_png

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


@app.command()
@user_errors
def analyze(
    study: str = typer.Option(STUDY, help="Study name."),
    storage: str = typer.Option(None, help=STORAGE_HELP),
    against: str = typer.Option(None, help="A second study (same --storage, else its own default file) to compare with by KS."),
    # NDS uses 40 bins with ~1,000 models, 10 in some figures; a study of tens of models fills few
    bins: int = typer.Option(10, help="FLOPs bins of the complexity-normalised EDF (log-spaced; each must hold a trained model)."),
    as_json: bool = typer.Option(False, "--json", help="Print the analysis as one JSON object."),
    out: str = typer.Option(None, help="Folder for the PNGs and analysis.html (every picture embedded, readable offline); default "
                                      "beside the study: studies/<study>-analysis (with --json: none unless given)."),
) -> None:
    """Design-space analysis of the trained trials: error EDFs, good values and importance per dimension, KS against --against."""
    from nas.analysis import analyze as analyze_study
    from nas.analysis_report import summary, write_report
    from nas.dashboard import analysis_folder, publish
    from nas.pareto import load_study

    if bins < 1:
        raise ConvspaceError(f"bins: must be >= 1, got {bins}")
    url = resolve_storage(study, storage)
    other = load_study(against, resolve_storage(against, storage)) if against else None
    loaded = load_study(study, url)
    report, samples = analyze_study(loaded, other, bins=bins)
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


@app.command()
@user_errors
def dashboard(
    study: str = typer.Option(STUDY, help="Study name."),
    storage: str = typer.Option(None, help=STORAGE_HELP),
    host: str = typer.Option("127.0.0.1", help="Interface to serve on (loopback by default)."),
    port: int = typer.Option(8080, help="Port."),
    allow_remote: bool = typer.Option(False, "--allow-remote", help="Serve on a --host other machines can reach (the token then "
                                                                    "travels in plain HTTP: prefer an SSH tunnel)."),
) -> None:
    """Serve the study in optuna-dashboard behind a token made for this launch (on this machine only, unless --allow-remote)."""
    from nas.settings import check_host

    if not 0 <= port <= 65535:  # before anything is opened; else a traceback from deep in the socket module
        raise ConvspaceError(f"port: must be in 1..65535 (or 0: a free port the system picks), got {port}")
    if check_host(host, allow_remote):  # before anything is opened or served
        print(f"warning: the dashboard on {host}:{port} can be reached from other machines: it still asks for its token, but plain HTTP "
              "carries the token and the study unencrypted to whoever can watch the network; an SSH tunnel "
              "(ssh -L 8080:127.0.0.1:8080 HOST) keeps it on loopback", file=sys.stderr)
    from nas.dashboard import serve_dashboard

    serve_dashboard(resolve_storage(study, storage), study, host, port)  # prints its URL (with the token) unwrapped


@app.command()
@user_errors
def export(
    study: str = typer.Option(STUDY, help="Study name."),
    trial: list[int] = typer.Option(None, help="Trial number to export (repeat for several)."),
    best: bool = typer.Option(False, "--best", help="Export the most accurate fully trained trial (ties: fewer FLOPs)."),
    front: bool = typer.Option(False, "--front", help="Export every trial on the Pareto front."),
    name: str = typer.Option(None, help="Model name for timm.create_model (one trial only; default <study>_trial<N>)."),
    out: str = typer.Option("studies/exports", help="Zoo folder to write the entries into."),
    force: bool = typer.Option(False, "--force", help="Replace an entry of the same name already in --out."),
    storage: str = typer.Option(None, help=STORAGE_HELP),
) -> None:
    """Turn trials into timm model-factory entries (YAML config + @register_model module); builds each to check its cost."""
    trial = trial or []  # typer gives None when --trial is absent
    if sum((bool(trial), best, front)) != 1:
        raise ConvspaceError("export: give exactly one of --trial N (repeatable), --best and --front")
    if name and (front or len(trial) > 1):
        raise ConvspaceError("name: names one entry; with several trials each is named <study>_trial<N>")
    from nas.entries import check_entry_name, pick_trial, plan_export

    if name:
        check_entry_name(name)  # at once, before the study is opened
    from nas.pareto import front as pareto_front
    from nas.pareto import load_study

    loaded = load_study(study, resolve_storage(study, storage))
    chosen = pareto_front(loaded) if front else [pick_trial(loaded, n) for n in trial or [None]]  # None: the best
    if not chosen:
        raise ConvspaceError(f"front: study {study!r} has no fully trained trial yet")
    # Every trial and every target is checked before torch is imported and before the first entry is written.
    plans = [plan_export(loaded, picked, name, Path(out), force=force) for picked in chosen]
    from nas.zoo import check_name  # torch and timm: each entry is built once to check its cost
    from nas.zoo import export as export_trial

    for plan in plans:
        check_name(plan["name"])  # no timm model or preset has it: checked for all before the first is written
    for picked, plan in zip(chosen, plans, strict=True):
        entry = export_trial(loaded, picked, name, Path(out), plan=plan)
        said = {"unchanged": f"trial {entry['trial']} is already exported as [bold]{entry['name']}[/] (unchanged)",
                "replaced": f"exported trial {entry['trial']} as [bold]{entry['name']}[/], replacing the entry of that name"}
        console.print(said.get(entry["state"], f"exported trial {entry['trial']} as [bold]{entry['name']}[/]")
                      + f": {entry['params'] / 1e6:.2f}M params, {entry['flops'] / 1e9:.3f} GFLOPs (checked against the rebuilt model)")
        console.print(f"  {entry['config']}\n  {entry['module']}", markup=False, highlight=False)
    names = [plan["name"] for plan in plans]
    zoo = "" if Path(out) == Path("studies/exports") else f"  (with CONVSPACE_ZOO={out})"
    console.print(f"use: import nas.zoo; timm.create_model({names[0]!r}, num_classes=..., drop_path_rate=...)"
                  + (f"; likewise {', '.join(map(repr, names[1:]))}" if len(names) > 1 else "") + zoo, markup=False, highlight=False)


@app.command()
@user_errors
def train(
    model: str = typer.Option(..., help="A registered model: an exported entry, a convspace_<preset>, or any timm model."),
    data: str = typer.Option("digits", help="digits (embedded), cifar10, cifar100 or an ImageFolder path."),
    data_dir: str = typer.Option(None, help="Where CIFAR files live."),
    epochs: int = typer.Option(300, help="Epochs (ConvNeXt: 300)."),
    batch_size: int = typer.Option(128, help="Batch size (the lr scales with it)."),
    lr: float = typer.Option(None, help="Peak lr (default 4e-3 x batch / 4096)."),
    warmup_epochs: int = typer.Option(20, help="Linear warmup epochs (ConvNeXt: 20)."),
    resolution: int = typer.Option(None, help="Input size (default: the model's, 224)."),
    drop_path: float = typer.Option(None, help="Stochastic depth (default by size: 0.1 / 0.4 / 0.5)."),
    mixup: float = typer.Option(0.8, help="Mixup alpha (0 disables)."),
    cutmix: float = typer.Option(1.0, help="CutMix alpha (0 disables)."),
    ema_decay: float = typer.Option(0.9999, help="EMA decay (0 disables; always off for BatchNorm models)."),
    workers: int = typer.Option(0, help="Data loader worker processes."),
    output: str = typer.Option("runs/train", help="Folder for last.pth (every epoch) and log.jsonl."),
    resume: bool = typer.Option(False, "--resume", help="Continue from <output>/last.pth exactly."),
    seed: int = typer.Option(0, help="Seed."),
) -> None:
    """Full training of an exported architecture with the ConvNeXt recipe (timm's optimizer, scheduler, mixup, EMA)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    from trainers.settings import TrainSettings, check_data

    settings = TrainSettings(model=model, data=data, data_dir=data_dir, output=output, epochs=epochs, batch_size=batch_size, lr=lr,
                             warmup_epochs=warmup_epochs, resolution=resolution, drop_path=drop_path, mixup=mixup, cutmix=cutmix,
                             ema_decay=ema_decay, workers=workers, seed=seed)
    check_data(data, data_dir)  # before torch is imported: a wrong path is one line at once
    import nas.zoo  # noqa: F401  (registers presets and exported entries with timm)
    from trainers.full import train as run_training

    # The bar appears with the first training step: a mistake found while building (an unknown model, a batch larger
    # than the data) is one line with no empty bar drawn above it.
    bar = Progress("{task.description}", BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), console=console)
    task = None

    def progress(event: str, info: dict[str, Any]) -> None:
        nonlocal task
        if task is None:
            bar.start()
            task = bar.add_task("epoch", total=None)
        if event == "step":
            bar.update(task, description=f"epoch {info['epoch']}/{epochs}", completed=info["step"], total=info["steps"])
        else:
            ema = f", EMA top-1 {info['ema_top1']:.2f}" if "ema_top1" in info else ""
            bar.console.print(f"epoch {info['epoch']}/{epochs}: loss {info['train_loss']:.4f}, top-1 {info['top1']:.2f}, "
                              f"top-5 {info['top5']:.2f}{ema} ({info['seconds']:.0f} s)")

    try:
        summary = run_training(settings, resume=resume, progress=progress)
    finally:
        if task is not None:
            bar.stop()
    if not summary:
        console.print(f"nothing to do: {output}/last.pth already finished {epochs} epochs")
    console.print(f"checkpoint {output}/last.pth, log {output}/log.jsonl")


@app.command()
@user_errors
def ablation(
    file: str = typer.Argument(..., help="A study file listing networks and their reference accuracy (e.g. studies/roadmap.yaml)."),
    storage: str = typer.Option(None, help=STORAGE_HELP),
    cpus_per_trial: float = typer.Option(1.0, help="CPUs each proxy training gets."),
    gpus_per_trial: float = typer.Option(0.0, help="GPUs each proxy training gets."),
    address: str = typer.Option(None, help="Address of an existing Ray cluster."),
) -> None:
    """Re-run fixed networks (the ConvNeXt roadmap) with the proxy trainer; compare with the paper (Kendall tau with a 95% interval)."""
    from nas.ablation import load_study_file, rank_agreement, run_ablation

    spec = load_study_file(file)
    url = resolve_storage(spec.study, storage)

    def progress(event: str, info: dict[str, Any]) -> None:
        if event == "done" and info.get("status") == "failed":
            console.print(f"  {info.get('preset', 'a network')} failed: {info.get('reason')}", markup=False, highlight=False)
        elif event == "done":
            console.print(f"  {info.get('preset', 'a network')} finished: proxy accuracy {info.get('acc', float('nan')):.4f}")
        elif event == "requeued":  # its Ray worker died: trained once more
            console.print(f"  {info.get('preset', 'a network')} cut short ({info['reason']}): queued to train again", markup=False,
                          highlight=False)

    rows = run_ablation(spec, url, cpus_per_trial=cpus_per_trial, gpus_per_trial=gpus_per_trial, address=address, progress=progress)
    table = Table(title=f"{spec.study}: proxy accuracy beside the reference")
    for column in ("network", "GFLOPs", "proxy top-1", "reference top-1"):
        table.add_column(column, justify="left" if column == "network" else "right")
    for r in rows:
        spread = f" ± {100 * r['proxy_std']:.2f} ({r['seeds']} seeds)" if r["seeds"] > 1 else ""  # after `confirm --top`
        table.add_row(r["preset"], f"{r['gflops']:.2f}", f"{100 * r['proxy_accuracy']:.2f}{spread}", f"{r['reference']:.2f}")
    console.print(table)
    print_agreement(rank_agreement(rows), "proxy", "reference")
    console.print(f"stored in {display_url(url)}", markup=False, highlight=False)


def print_agreement(a: Any, first: str, second: str) -> None:
    """Kendall's tau with its bootstrap interval (and whether that excludes 0), Spearman's rho and the top-k overlap."""
    from nas.ranking import MIN_FOR_INTERVAL

    lo, hi = a.ci95
    interval = (f"no interval: fewer than {MIN_FOR_INTERVAL} networks" if a.resamples == 0 else f"95% bootstrap interval [{lo:+.3f}, {hi:+.3f}]; "
                + ("it excludes 0: the rankings agree" if lo > 0 else "it excludes 0: the rankings disagree" if hi < 0
                   else "it includes 0: too few networks (or too noisy) to tell"))
    console.print(f"{first} vs {second} over {a.n} networks: Kendall tau {a.kendall_tau:+.3f} ({interval}; p = {a.p_value:.2g}), Spearman {a.spearman:+.3f}, "
                  f"top-{a.top_k} overlap {a.top_k_overlap}/{a.top_k}", markup=False, highlight=False)


@app.command()
@user_errors
def fidelity(
    budget: str = typer.Option(..., help="FLOPs budget the N networks are drawn within, e.g. 4.5GFLOPs."),
    n: int = typer.Option(8, "--n", "-n", help="How many random networks, >= 5 (seeded; a larger --n on a rerun keeps the first ones)."),
    space: str = typer.Option("default", help="Space YAML file, or the name of a shipped space."),
    proxy_epochs: int = typer.Option(1, help="Epochs of the proxy under test."),
    long_epochs: int = typer.Option(PROXY.epochs, help="Epochs of the longer schedule it is compared with (default: the search's proxy)."),
    train_images: int = typer.Option(PROXY.train_images, help="Training images per proxy epoch (a fixed seeded subset; 0: all)."),
    long_train_images: int = typer.Option(None, help="Training images per epoch of the long schedule (default: --train-images; 0: all)."),
    resolution: int = typer.Option(PROXY.resolution, help="Training resolution of both (>= 32)."),
    batch_size: int = typer.Option(PROXY.batch_size, help="Batch size of both."),
    lr: float = typer.Option(PROXY.lr, help="Peak learning rate of both (AdamW)."),
    bn_batches: int = typer.Option(PROXY.bn_batches, help="Training batches that re-estimate BatchNorm statistics before each evaluation (0: off)."),
    augment: bool | None = typer.Option(None, "--augment/--no-augment", help="Random crops and flips of the training images in both "
                                        "(default: on for cifar10/100 and ImageFolders, off for digits)."),
    data: str = typer.Option(PROXY.data, help="digits (embedded), cifar10, cifar100, an ImageFolder path, or synthetic (tests)."),
    data_dir: str = typer.Option(None, help="Where CIFAR files live (default ./data)."),
    cache_dir: str = typer.Option(None, help="Where CIFAR and ImageFolders are decoded once (default studies/cache)."),
    cost_resolution: int = typer.Option(SEARCH.cost_resolution, help="Resolution at which FLOPs and the budget are counted."),
    cost_classes: int = typer.Option(SEARCH.cost_classes, help="Classes of the target network's head for the FLOPs count."),
    top_k: int = typer.Option(3, help="Report how many of the k best by the proxy are among the k best by the long schedule."),
    seed: int = typer.Option(SEARCH.seed, help="Seeds the sampled networks, the data split, the training and the bootstrap."),
    study: str = typer.Option("fidelity", help="Study name; a rerun resumes it (a rerun with other proxy settings reuses the long runs)."),
    storage: str = typer.Option(None, help=STORAGE_HELP),
    cpus_per_trial: float = typer.Option(SEARCH.cpus_per_trial, help="CPUs each training gets."),
    gpus_per_trial: float = typer.Option(SEARCH.gpus_per_trial, help="GPUs each training gets."),
    address: str = typer.Option(None, help="Address of an existing Ray cluster, HOST:PORT (default: start Ray locally)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object: kendall_tau, ci95, spearman, top_k_overlap, n, minutes, pairs."),
) -> None:
    """Does the proxy rank like longer training? N in-budget networks trained both ways on your data; Kendall tau with a 95% interval."""
    from nas.fidelity import FidelitySettings, check_fidelity
    from space.choices import Space
    from space.cost import parse_flops

    # checked before torch or Ray is imported, as the search is
    url = resolve_storage(study, storage)
    proxy = PROXY(epochs=proxy_epochs, resolution=resolution, batch_size=batch_size, lr=lr, data=data, train_images=train_images or None,
                  bn_batches=bn_batches, data_dir=data_dir, seed=seed, augment=augment, cache_dir=cache_dir)
    long_images = train_images if long_train_images is None else long_train_images
    settings = FidelitySettings(study=study, storage=url, space=Space.from_yaml(space), budget=parse_flops(budget), proxy=proxy,
                                long_epochs=long_epochs, long_train_images=long_images or None, n=n, top_k=top_k,
                                cost_resolution=cost_resolution, cost_classes=cost_classes, cpus_per_trial=cpus_per_trial,
                                gpus_per_trial=gpus_per_trial, address=address)
    check_fidelity(settings)
    from nas.fidelity import run_fidelity

    def progress(event: str, info: dict[str, Any]) -> None:
        if event == "done" and not as_json and info.get("status") == "failed":
            console.print(f"  {info.get('name', 'a network')} failed: {info.get('reason')}", markup=False, highlight=False)
        elif event == "done" and not as_json:
            console.print(f"  {info.get('name', 'a network')} finished: accuracy {info.get('acc', float('nan')):.4f}", highlight=False)
        elif event == "requeued" and not as_json:  # its Ray worker died: trained once more
            console.print(f"  {info.get('name', 'a network')} cut short ({info['reason']}): queued to train again", markup=False,
                          highlight=False)

    if not as_json:
        console.print(f"study {study} in {display_url(url)}: {n} networks within {settings.budget / 1e9:.3g} GFLOPs, proxy {proxy_epochs} "
                      f"epoch(s) of {proxy.train_images or 'all'} images vs {long_epochs} of {settings.long.train_images or 'all'}, {data} at {resolution}px",
                      markup=False, highlight=False)
    report = run_fidelity(settings, progress)
    if as_json:
        print(json.dumps(report.to_dict()))
        return
    table = Table(title=f"{study}: proxy accuracy beside the long schedule's")
    for column in ("network", "GFLOPs", "proxy top-1", "long top-1", "config"):
        table.add_column(column, justify="left" if column == "config" else "right")
    for p in report.pairs:
        table.add_row(str(p["sample"]), f"{p['gflops']:.2f}", f"{100 * p['proxy']:.2f}", f"{100 * p['long']:.2f}", p["config"])
    console.print(table)
    print_agreement(report.agreement, "proxy", "long schedule")
    console.print(f"training time: proxy {report.proxy_minutes:.1f} min, long {report.long_minutes:.1f} min (trainable wall time, "
                  f"summed over networks); stored in {display_url(url)}", markup=False, highlight=False)


# typer vendors click and exports only BadParameter of its exceptions; BadParameter's base is the
# UsageError that every bad command line raises (missing option, bad value, unknown command).
UsageError = typer.BadParameter.__base__


def main() -> None:
    """Run the app; a bad command line also prints one line (typer's own is a multi-line usage box)."""
    try:
        code = app(standalone_mode=False)
    except UsageError as exc:
        if message := exc.format_message():  # empty for a bare `cli.py`: the help was already printed
            where = f" (see `{exc.ctx.command_path} --help`)" if exc.ctx else ""
            print(f"error: {mask_passwords(message)}{where}", file=sys.stderr)  # e.g. "unexpected extra argument (URL)"
        sys.exit(exc.exit_code)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
