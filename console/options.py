"""The command line's options, made from the settings' fields, so a default and a help text are written once.

A settings field that is an option carries its help in its `metadata` (trainers.settings.option); a command names the
parts it takes with `Part(Settings)` as a parameter's default, and `with_options` puts the fields' options there. The
command gets that parameter as a dict of field values, converted as the settings take them, and builds the settings
itself (so it decides the order of the checks, and adds what the command line does not say, such as the proxy's seed).
Options that belong to no settings (the study, the storage, the space) are declared once below.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import typing
from collections.abc import Callable, Iterable
from typing import Any

import typer

from nas.engine.commands import DEFAULT_STUDY
from nas.engine.settings import CostSettings
from nas.engine.storage import STORAGE_ENV
from space.errors import ConvspaceError
from space.space_file import DEFAULT_SPACE

STORAGE = typer.Option(None, help=f"SQLAlchemy URL (default ${STORAGE_ENV}, else sqlite:///studies/<study>.db).")
SPACE = typer.Option(DEFAULT_SPACE, help="Space YAML file, or the name of a shipped space.")
FLOPS_RESOLUTION = typer.Option(CostSettings.cost_resolution, help="Input side length for the FLOPs count.")


def study_option(help: str = "Study name.", default: str = DEFAULT_STUDY) -> Any:
    """The --study option with a command's own words (a search resumes the study it names) or default."""
    return typer.Option(default, help=help)


STUDY = study_option()  # the study every reading command defaults to: the one `search` writes


def flops_option(name: str, text: str | None, *, required: bool = False) -> int:
    """A FLOPs count given on the command line (0 when an optional one is left out); a bad one is an error naming the option."""
    from space.cost import parse_flops

    try:
        return parse_flops(text) if text or required else 0
    except ConvspaceError as exc:
        raise ConvspaceError(f"{name}: {str(exc).removeprefix('budget: ')}") from None


class Part:
    """A parameter's default that stands for the options of a settings class: the fields it declares itself that
    carry a help, in their order, less `skip`."""

    def __init__(self, settings: type, *, skip: Iterable[str] = ()) -> None:
        own = vars(settings).get("__annotations__", {})  # not the fields of the parts it is composed of
        hints = typing.get_type_hints(settings)
        self.fields = [f for f in dataclasses.fields(settings) if f.name in own and "help" in f.metadata and f.name not in set(skip)]
        self.types = {f.name: hints[f.name] for f in self.fields}

    def parameters(self) -> list[inspect.Parameter]:
        """One typer option per field: the field's default (required where it has none) and help."""
        return [inspect.Parameter(f.name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=self._option(f), annotation=self._type(f))
                for f in self.fields]

    def _type(self, f: dataclasses.Field) -> Any:
        if f.metadata.get("flops"):
            return str
        if "none_as" in f.metadata:  # the command line spells None as a value of the type
            return next(t for t in typing.get_args(self.types[f.name]) if t is not type(None))
        return self.types[f.name]

    def _option(self, f: dataclasses.Field) -> Any:
        required = f.default is dataclasses.MISSING
        default = ... if required else None if f.metadata.get("flops") else f.metadata.get("none_as") if f.default is None else f.default
        decls = f.metadata.get("decls", ())
        decls = [decls] if isinstance(decls, str) else list(decls)
        return typer.Option(default, *decls, help=f.metadata["help"])

    def values(self, given: dict[str, Any]) -> dict[str, Any]:
        """Take this part's options out of `given`: field name -> value as the settings take it."""
        values = {}
        for f in self.fields:
            value = given.pop(f.name)
            if f.metadata.get("flops"):
                value = flops_option(f.name.replace("_", "-"), value, required=f.default is dataclasses.MISSING)
            elif "none_as" in f.metadata and value == f.metadata["none_as"]:
                value = None
            values[f.name] = value
        return values


def with_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """Put each `Part` parameter's options in its place in the command's signature (what typer reads); the command is
    called with that parameter as the dict of the part's values."""
    signature = inspect.signature(command)
    parts = {p.name: p.default for p in signature.parameters.values() if isinstance(p.default, Part)}
    parameters = [q for p in signature.parameters.values() for q in (p.default.parameters() if p.name in parts else [p])]

    @functools.wraps(command)
    def wrapper(**given: Any) -> Any:
        for name, part in parts.items():
            given[name] = part.values(given)
        return command(**given)

    wrapper.__signature__ = signature.replace(parameters=parameters)  # type: ignore[attr-defined]
    return wrapper


def command_of(app: typer.Typer) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """The decorator that makes a function a command of `app`: its `Part` options put in place (`with_options`), and a
    user's mistake told in one line with exit 2 (console.errors.user_errors)."""
    from console.errors import user_errors

    def register(function: Callable[..., Any]) -> Callable[..., Any]:
        return app.command()(user_errors(with_options(function)))

    return register
