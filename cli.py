"""convspace command line: search ConvNet design spaces under a FLOPs budget.

Each command as the user sees it: its options (a settings part's are made from its fields: console/options.py), then
the settings made and checked (no torch or Ray yet), the run, and the printer; a reading command hands its options to
one console/ function (reports, refining) that checks them first. Heavy libraries (torch, ray, optuna) are imported
inside the commands so `--help` and a refused command stay instant.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from console import console
from console.errors import run_app, user_errors  # noqa: F401  (a command may also be declared @app.command() @user_errors)
from console.inputs import cost_row, sample_rows
from console.options import FLOPS_RESOLUTION, SPACE, STORAGE, STUDY, Part, command_of, study_option
from console.reports import analyze_study, export_trials, inspect_network, show_front
from console.tables import print_costs, print_network, warn_remote
from nas.engine.settings import CONFIRM_SEEDS, DASHBOARD_HOST, DASHBOARD_PORT, BudgetBand, CostSettings, FidelitySample, SearchSettings, TrialResources
from nas.engine.storage import resolve_storage
from nas.export.entries import DEFAULT_ZOO, check_model_name
from space.errors import ConvspaceError
from trainers.settings import ProxySettings, TrainSettings

# No local variables in a traceback: they would show a --storage URL with its password.
app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__.splitlines()[0], pretty_exceptions_show_locals=False)
command = command_of(app)  # a command of the app, its mistakes told in one line (exit 2)
Options = dict[str, Any]  # a settings part's options, by field name (console.options.Part)


@command
def presets(as_json: bool = typer.Option(False, "--json", help="One JSON list instead of a table."), resolution: int = FLOPS_RESOLUTION) -> None:
    """Params and GFLOPs of every published network and ConvNeXt roadmap step."""
    from space.presets import PRESETS

    rows = [cost_row(name, cfg, resolution) for name, cfg in PRESETS.items()]
    if as_json:
        print(json.dumps(rows, indent=1))
    else:
        print_costs(rows, f"presets at {resolution}x{resolution} (FLOPs: fvcore multiply-adds)")


@command
def inspect(
    model: str = typer.Argument(..., help="Preset name, exported entry name, or ArchConfig YAML/JSON file."),
    resolution: int = FLOPS_RESOLUTION,
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
    verify: bool = typer.Option(False, "--verify", help="Also build the model and count with fvcore and torch."),
) -> None:
    """One network: its config, params and FLOPs (analytic; --verify checks against fvcore)."""
    cfg, report = inspect_network(model, resolution, verify)
    if as_json:
        print(json.dumps(report))
    else:
        print_network(model, cfg, report, resolution, verify)


@command
def sample(
    space: str = SPACE,
    n: int = typer.Option(5, "-n", min=1, help="How many points."),
    seed: int = typer.Option(0, help="Same seed, same points."),
    budget: str = typer.Option(None, help="Keep only points within this budget, e.g. 4.5GFLOPs (a fitted space's "
                                          "points are scaled onto a random target within it, as the search does)."),
    resolution: int = FLOPS_RESOLUTION,
    as_json: bool = typer.Option(False, "--json", help="Print a JSON list with each config."),
) -> None:
    """Random points of a design space with their cost (seeded)."""
    from space.choices import Space
    from space.cost import parse_flops

    limit = parse_flops(budget) if budget else None
    design = Space.from_yaml(space)
    rows, drawn = sample_rows(design, n, seed, limit, resolution)
    if len(rows) < n:
        raise ConvspaceError(f"budget: only {len(rows)} of {drawn} sampled points fit in {budget}")
    if as_json:
        print(json.dumps(rows))
    else:
        print_costs(rows, f"{design.name}: {n} points" + (f" within {budget} ({drawn} drawn)" if limit else ""))


@command
def search(
    band: Options = Part(BudgetBand),
    space: str = SPACE,
    study: str = study_option("Study name; rerunning with the same name resumes it."),
    storage: str = STORAGE,
    run: Options = Part(SearchSettings),
    proxy: Options = Part(ProxySettings),
    cost: Options = Part(CostSettings),
    resources: Options = Part(TrialResources),
) -> None:
    """Search the space under a FLOPs budget: Optuna multi-objective study + Ray Tune proxy trainings (ASHA)."""
    from console.runs import search_ended, search_progress
    from nas.engine.settings import check_search
    from space.choices import Space

    # Every setting, the data, the budget and the Ray address are checked before torch or Ray is imported and
    # before the study is opened: a mistake is one line within a second, and leaves no file and no Ray behind.
    url = resolve_storage(study, storage)
    trained_by = ProxySettings(**proxy, seed=run["seed"])
    settings = SearchSettings(study=study, space=Space.from_yaml(space), storage=url, proxy=trained_by, **band, **run, **cost, **resources)
    check_search(settings)
    from nas.engine.search import run_search
    from nas.front.live import SearchView

    with SearchView(console, study=study, epochs=settings.proxy.epochs, live=console.is_terminal, time_budget=settings.time_budget) as view:
        outcome = run_search(settings, search_progress(view, settings, url), checked=True)
    code = search_ended(outcome, view, settings, url, storage)
    if code:
        raise typer.Exit(code)


@command
def pareto(
    study: str = STUDY,
    storage: str = STORAGE,
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object: study, budget, flops_min, front (rows with accuracy = mean over seeds, "
                              "accuracy_std, seeds, within_noise), hypervolume, noise (pooled std over seeds, or null)."),
    plot: str = typer.Option(None, help="Also write a PNG of every trial with the front and the budget to this path (`search` "
                                        "leaves one beside the study: studies/<study>-front.png)."),
) -> None:
    """The Pareto front of feasible, fully trained trials (table, JSON, PNG); also rewrites the study's dashboard notes."""
    show_front(study, resolve_storage(study, storage), as_json, plot)


@command
def confirm(
    seeds: int = typer.Option(CONFIRM_SEEDS, help="Seeds in all per network, >= 2: the search's own training is the first."),
    top: int = typer.Option(None, help="Confirm the N most accurate trained networks instead of the Pareto front."),
    study: str = STUDY,
    storage: str = STORAGE,
    resources: Options = Part(TrialResources),
) -> None:
    """Train the front's networks again with other seeds: the front on mean accuracies, and the study's noise floor."""
    from nas.engine.settings import check_confirm

    each = TrialResources(**resources)
    check_confirm(seeds, top, each)
    url = resolve_storage(study, storage)
    from console.runs import confirm_ended, confirm_progress
    from nas.evaluate.confirm import run_confirm

    outcome = run_confirm(study, url, seeds=seeds, top=top, resources=each, progress=confirm_progress(study, seeds, top), checked=True)
    confirm_ended(outcome, url, study, seeds)


@command
def analyze(
    study: str = STUDY,
    storage: str = STORAGE,
    against: str = typer.Option(None, help="A second study (same --storage, else its own default file) to compare with by KS."),
    # NDS uses 40 bins with ~1,000 models, 10 in some figures; a study of tens of models fills few
    bins: int = typer.Option(10, help="FLOPs bins of the complexity-normalised EDF (log-spaced; each must hold a trained model)."),
    as_json: bool = typer.Option(False, "--json", help="Print the analysis as one JSON object."),
    out: str = typer.Option(None, help="Folder for the PNGs and analysis.html (every picture embedded, readable offline); default "
                                      "beside the study: studies/<study>-analysis (with --json: none unless given)."),
) -> None:
    """Design-space analysis of the trained trials: error EDFs, good values and importance per dimension, KS against --against."""
    analyze_study(study, resolve_storage(study, storage), against, against and resolve_storage(against, storage), bins, as_json, out)


@command
def refine(
    study: str = STUDY,
    storage: str = STORAGE,
    out: str = typer.Option(None, help="The new space file (.yaml); default beside the study: studies/<study>-refined.yaml."),
    # PED-ANOVA over 60 models of pure noise gave a width 0.73; over 41 real ones, attention (cut CBAM: error quartile 0.78) 0.001
    min_importance: float = typer.Option(0.0, help="Test only dimensions at least this important (PED-ANOVA, of 1 in all; over tens of "
                                                   "models it ranks noise first, so by default every dimension is tested)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object: space, from, changes (dimension, before, after, "
                                                       "importance, evidence), n, min_importance, unchanged (why), warnings, out."),
) -> None:
    """Narrow the study's space where its trained models clearly say so: a new space file (a subset), each change with its evidence."""
    from console.refining import refine_space

    refine_space(study, resolve_storage(study, storage), out, min_importance, as_json)


@command
def dashboard(
    study: str = STUDY,
    storage: str = STORAGE,
    host: str = typer.Option(DASHBOARD_HOST, help="Interface to serve on (loopback by default)."),
    port: int = typer.Option(DASHBOARD_PORT, help="Port."),
    allow_remote: bool = typer.Option(False, "--allow-remote", help="Serve on a --host other machines can reach (the token then "
                                                                    "travels in plain HTTP: prefer an SSH tunnel)."),
) -> None:
    """Serve the study in optuna-dashboard behind a token made for this launch (on this machine only, unless --allow-remote)."""
    from nas.engine.settings import check_host

    if check_host(host, allow_remote, port):  # before anything is opened or served
        warn_remote(host, port)
    from nas.front.dashboard import serve_dashboard

    serve_dashboard(resolve_storage(study, storage), study, host, port)  # prints its URL (with the token) unwrapped


@command
def export(
    study: str = STUDY,
    trial: list[int] = typer.Option(None, help="Trial number to export (repeat for several)."),
    best: bool = typer.Option(False, "--best", help="Export the most accurate fully trained trial (ties: fewer FLOPs)."),
    front: bool = typer.Option(False, "--front", help="Export every trial on the Pareto front."),
    name: str = typer.Option(None, help="Model name for timm.create_model (one trial only; default <study>_trial<N>)."),
    out: str = typer.Option(str(DEFAULT_ZOO), help="Zoo folder to write the entries into."),
    force: bool = typer.Option(False, "--force", help="Replace an entry of the same name already in --out."),
    storage: str = STORAGE,
) -> None:
    """Turn trials into timm model-factory entries (YAML config + @register_model module); builds each to check its cost."""
    export_trials(study, storage, trial or [], best, front, name, Path(out), force)  # typer gives None when --trial is absent


@command
def train(
    recipe: Options = Part(TrainSettings),
    resume: bool = typer.Option(False, "--resume", help="Continue from <output>/last.pth exactly."),
) -> None:
    """Full training of an exported architecture with the ConvNeXt recipe (timm's optimizer, scheduler, mixup, EMA)."""
    from console.runs import training_bar
    from trainers.settings import check_data

    settings = TrainSettings(**recipe)
    check_data(settings.data, settings.data_dir)  # before torch is imported: a wrong path or name is one line at once
    check_model_name(settings.model)
    import nas.export.zoo  # noqa: F401  (registers presets and exported entries with timm)
    from trainers.full import train as run_training

    with training_bar(settings.epochs) as progress:
        summary = run_training(settings, resume=resume, progress=progress)
    if not summary:
        console.print(f"nothing to do: {settings.output}/last.pth already finished {settings.epochs} epochs")
    console.print(f"checkpoint {settings.output}/last.pth, log {settings.output}/log.jsonl")


@command
def ablation(
    file: str = typer.Argument(..., help="A study file listing networks and their reference accuracy (e.g. studies/roadmap.yaml)."),
    storage: str = STORAGE,
    resources: Options = Part(TrialResources),
) -> None:
    """Re-run fixed networks (the ConvNeXt roadmap) with the proxy trainer; compare with the paper (Kendall tau with a 95% interval)."""
    from nas.evaluate.study_file import load_study_file

    spec = load_study_file(file)  # before torch or Ray is imported: a mistake in the file is one line at once
    url = resolve_storage(spec.study, storage)
    from console.runs import ablation_ended, network_progress
    from nas.evaluate.ablation import rank_agreement, run_ablation

    rows = run_ablation(spec, url, resources=TrialResources(**resources), progress=network_progress("proxy accuracy"))
    ablation_ended(spec.study, rows, rank_agreement(rows), url)


@command
def fidelity(
    band: Options = Part(BudgetBand, skip=("flops_min",)),
    networks: Options = Part(FidelitySample),
    space: str = SPACE,
    proxy_epochs: int = typer.Option(1, help="Epochs of the proxy under test."),
    long_epochs: int = typer.Option(ProxySettings.epochs, help="Epochs of the longer schedule it is compared with (default: the search's proxy)."),
    long_train_images: int = typer.Option(None, help="Training images per epoch of the long schedule (default: --train-images; 0: all)."),
    proxy: Options = Part(ProxySettings, skip=("epochs",)),
    cost: Options = Part(CostSettings),
    seed: int = typer.Option(SearchSettings.seed, help="Seeds the sampled networks, the data split, the training and the bootstrap."),
    study: str = study_option("Study name; a rerun resumes it (a rerun with other proxy settings reuses the long runs).", "fidelity"),
    storage: str = STORAGE,
    resources: Options = Part(TrialResources),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object: kendall_tau, ci95, spearman, top_k_overlap, n, minutes, pairs."),
) -> None:
    """Does the proxy rank like longer training? N in-budget networks trained both ways on your data (the proxy's settings
    but its epochs, and --long-train-images, are both's); Kendall tau with a 95% interval."""
    from console.runs import fidelity_ended, fidelity_started, network_progress
    from nas.evaluate.fidelity import FidelitySettings, check_fidelity
    from space.choices import Space

    # checked before torch or Ray is imported, as the search is
    url = resolve_storage(study, storage)
    trained_by = ProxySettings(**proxy, epochs=proxy_epochs, seed=seed)
    long_images = proxy["train_images"] if long_train_images is None else long_train_images or None
    settings = FidelitySettings(study=study, storage=url, space=Space.from_yaml(space), proxy=trained_by, long_epochs=long_epochs,
                                long_train_images=long_images, **band, **networks, **cost, **resources)
    check_fidelity(settings)
    from nas.evaluate.fidelity import run_fidelity

    if not as_json:
        fidelity_started(settings, url)
    report = run_fidelity(settings, network_progress("accuracy", quiet=as_json))
    if as_json:
        print(json.dumps(report.to_dict()))
    else:
        fidelity_ended(report, url)


def main() -> None:
    """Run the app; a bad command line prints one line and exits with 2 (console.errors)."""
    run_app(app)


if __name__ == "__main__":
    main()
