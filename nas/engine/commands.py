"""The commands convspace prints for a person to run next: spelled as this command was run, and for a search, with the
options that make it resume the study as it was made (so a printed command works when pasted, not only in spirit).

No Optuna, torch or Ray here: the command line imports this to print hints.
"""

from __future__ import annotations

import os
import shlex
import shutil
import sys
from pathlib import Path
from typing import Any

from space.cost import PAPER_CLASSES, PAPER_RESOLUTION, parse_flops
from space.space_file import DEFAULT_SPACE, is_shipped

DEFAULT_STUDY = "convspace"


def program(argv0: str | None = None) -> str:
    """How to run convspace again, as this process was run: `.venv/bin/convspace` (the console command, by the path the
    person typed, or `convspace` where that is on $PATH), or `.venv/bin/python cli.py` (the script, with the Python that
    runs it when that lives under the working folder, else `python`). Anything else (tests, the API): `convspace`."""
    arg = argv0 if argv0 is not None else (sys.argv[0] if sys.argv else "")
    name = Path(arg).name
    if name == "convspace":
        found = shutil.which("convspace")
        if found and Path(found).resolve() == Path(arg).resolve():
            return "convspace"
        shown = _relative(arg)
        return shown if "/" in shown else f"./{shown}"  # a bare name would be looked up on $PATH
    if name == "cli.py":
        python = _relative(sys.executable)
        return f"{'python' if python.startswith('/') else python} {_relative(arg)}"
    return "convspace"


def _relative(path: str) -> str:
    """`path` relative to the working folder when it lies under it (`.venv/bin/convspace`), else as given."""
    try:
        shown = os.path.relpath(Path(path).absolute(), Path.cwd())
    except ValueError:  # another drive (Windows)
        return path
    return path if shown.startswith("..") else shown


def flops_text(flops: int) -> str:
    """A FLOPs count as the command line takes it back exactly: `4.5GFLOPs`, `450MFLOPs`, else the plain number."""
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        text = f"{flops / scale:.12g}{unit}FLOPs"
        if flops >= scale and "e" not in text and parse_flops(text) == flops:
            return text
    return str(int(flops))


def _default(field: str) -> Any:
    from trainers.settings import ProxySettings

    return getattr(ProxySettings(), field)


# proxy identity fields the command line sets, and their options (the rest keep their defaults on the command line)
PROXY_OPTIONS = {"epochs": "--epochs", "resolution": "--resolution", "batch_size": "--batch-size", "lr": "--lr",
                 "train_images": "--train-images", "bn_batches": "--bn-batches", "data": "--data", "data_dir": "--data-dir",
                 "seed": "--seed"}


def search_args(study: str, identity: dict[str, Any], *, storage: str | None = None, **options: Any) -> tuple[list[str], list[str]]:
    """The `search` arguments that resume `study` as it was made (its identity: budget, space, band, cost, proxy), plus
    `options` (`trials=24` -> `--trials 24`); and what the arguments cannot say, to say beside them (a space file's path,
    a proxy setting no option sets)."""
    from trainers.settings import SMALL_DATASETS

    args = ["search", "--budget", flops_text(int(identity["budget"]))]
    if study != DEFAULT_STUDY:
        args += ["--study", study]
    if storage:
        args += ["--storage", storage]
    unset = []
    space = identity.get("space", DEFAULT_SPACE)
    if space != DEFAULT_SPACE:
        args += ["--space", space if is_shipped(space) else f"{space}.yaml"]
        if not is_shipped(space):
            unset.append(f"--space: the path of the study's space file, named {space!r}")
    if identity.get("flops_min"):
        args += ["--flops-min", flops_text(int(identity["flops_min"]))]
    for key, option, default in (("cost_resolution", "--cost-resolution", PAPER_RESOLUTION), ("cost_classes", "--cost-classes", PAPER_CLASSES)):
        if identity.get(key, default) != default:
            args += [option, str(identity[key])]
    proxy = identity.get("proxy") or {}
    for key, value in proxy.items():
        if key in PROXY_OPTIONS:
            if key == "train_images" and value is None:
                value = 0  # all images, as the command line spells it
            if value != _default(key) and not (key == "train_images" and value == 0 and _default(key) is None):
                args += [PROXY_OPTIONS[key], str(value)]
        elif key == "augment":
            default = proxy.get("data", "digits") not in SMALL_DATASETS
            if bool(value) != default:
                args.append("--augment" if value else "--no-augment")
        elif key not in ("threads", "cache_dir") and value != _default(key):
            unset.append(f"the study's proxy {key} {value}, which no option sets")
    for key, value in options.items():
        args += [f"--{key.replace('_', '-')}", str(value)]
    return args, unset


def shell(args: list[str]) -> str:
    """Arguments as one line a shell reads back as the same arguments."""
    return " ".join(shlex.quote(a) for a in args)


def command(args: list[str]) -> str:
    """`.venv/bin/convspace search --budget 4.5GFLOPs ...`: a command to paste, spelled as this one was run."""
    return f"{program()} {shell(args)}"
