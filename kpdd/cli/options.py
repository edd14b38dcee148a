"""Command-line options generated from a config dataclass, so every config field is a ``--flag`` with its help.

A command takes ``--config FILE`` (TOML/YAML; a table named after the command is used when present), then
its options on top; ``--experiment`` and ``--tracking-uri`` choose the MLflow store.
"""

from __future__ import annotations

import dataclasses
import inspect
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from kpdd.config import flag, load_config


def _cli_type(tp: Any) -> Any:
    """The type typer parses a field as: a list option may be repeated (each value may also be comma-separated
    text, split by the config loader), ``X | None`` comes as ``X``."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        tp = next(a for a in typing.get_args(tp) if a is not type(None))
        origin = typing.get_origin(tp)
    if origin in (list, tuple):
        return list[str]
    return tp


def _help(field: dataclasses.Field, default: Any) -> str:
    """The field's help, with its default and the choices it takes where the text does not already say them."""
    help_text = field.metadata.get("help", "")
    choices = field.metadata.get("choices")
    if choices and not all(str(choice) in help_text for choice in choices):
        help_text += f" (one of: {', '.join(map(str, choices))})"
    shown = ",".join(map(str, default)) if isinstance(default, list) else default
    shown = field.metadata.get("default_text") or shown
    if shown not in ("", None) and "default" not in help_text:  # some help texts explain their own default
        help_text += f" (default: {shown})"
    return help_text


def _parameter(name: str, option_name: str, cli_type: Any, **option_kwargs) -> inspect.Parameter:
    if cli_type is bool:
        decl = typer.Option(f"{option_name}/--no-{option_name[2:]}", show_default=False, **option_kwargs)
    else:
        decl = typer.Option(option_name, show_default=False, **option_kwargs)
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None,
                             annotation=Annotated[Optional[cli_type], decl])


def _options(field: dataclasses.Field, tp: Any) -> list[inspect.Parameter]:
    """The field's ``--flag``, and a hidden flag for each old name it still answers to (the config warns)."""
    default = field.default if field.default is not dataclasses.MISSING else field.default_factory()
    cli_type = _cli_type(tp)
    return [_parameter(field.name, flag(field.name), cli_type, help=_help(field, default)),
            *[_parameter(alias, flag(alias), cli_type, hidden=True) for alias in field.metadata.get("aliases", ())]]


TRACKING = [
    inspect.Parameter("config_file", inspect.Parameter.KEYWORD_ONLY, default=None,
                      annotation=Annotated[Optional[Path], typer.Option("--config", help="TOML or YAML config file; "
                                           "options given on the command line win")]),
    inspect.Parameter("experiment", inspect.Parameter.KEYWORD_ONLY, default=None,
                      annotation=Annotated[Optional[str], typer.Option(help="MLflow experiment (default: kpdd)")]),
    inspect.Parameter("tracking_uri", inspect.Parameter.KEYWORD_ONLY, default=None,
                      annotation=Annotated[Optional[str], typer.Option(
                          help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db)")]),
]


def in_reading_order(config_cls: type) -> list[dataclasses.Field]:
    """A config's fields, its own first and then those it inherits (a nearer base's before a farther one's), so that
    ``--help`` starts with what the command is about rather than the shared options; a group that names what the
    command works on (``LEADS_HELP``, e.g. ``--program``) comes before even the command's own."""
    declared_at: dict[str, tuple[bool, int]] = {}
    for level, klass in enumerate(config_cls.__mro__):
        for name in vars(klass).get("__annotations__", {}):
            # a shared option given another default stays with its group
            declared_at[name] = (not vars(klass).get("LEADS_HELP", False), level)
    return sorted(dataclasses.fields(config_cls), key=lambda f: declared_at[f.name])


CONFIGS: dict[str, type] = {}  # command name → its config dataclass, for the docs and the option checks' tests


def config_command(app: typer.Typer, name: str, config_cls: type) -> Callable:
    """Register ``fn(config, experiment=..., tracking_uri=...)`` as ``kpdd <name>`` with generated options."""
    hints = typing.get_type_hints(config_cls)
    CONFIGS[name] = config_cls

    def decorator(fn: Callable) -> Callable:
        def command(**kwargs):
            config_file = kwargs.pop("config_file")
            experiment, tracking_uri = kwargs.pop("experiment"), kwargs.pop("tracking_uri")
            config = load_config(config_cls, config_file, section=name, **kwargs)
            return fn(config, experiment=experiment, tracking_uri=tracking_uri)

        fields = [p for f in in_reading_order(config_cls) for p in _options(f, hints[f.name])]
        command.__signature__ = inspect.Signature(TRACKING + fields)
        command.__doc__ = fn.__doc__
        command.__name__ = fn.__name__
        app.command(name)(command)
        return fn

    return decorator
