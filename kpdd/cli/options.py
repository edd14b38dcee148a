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

from kpdd.config import load_config


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


def _option(field: dataclasses.Field, tp: Any) -> inspect.Parameter:
    flag = "--" + field.name.replace("_", "-")
    default = field.default if field.default is not dataclasses.MISSING else field.default_factory()
    cli_type = _cli_type(tp)
    shown = ",".join(default) if isinstance(default, list) else default
    help_text = field.metadata.get("help", "")
    if shown not in ("", None) and "default" not in help_text:  # some help texts explain their own default
        help_text += f" (default: {shown})"
    if cli_type is bool:
        decl = typer.Option(f"{flag}/--no-{flag[2:]}", help=help_text, show_default=False)
    else:
        decl = typer.Option(flag, help=help_text, show_default=False)
    return inspect.Parameter(field.name, inspect.Parameter.KEYWORD_ONLY, default=None,
                             annotation=Annotated[Optional[cli_type], decl])


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
    ``--help`` starts with what the command is about rather than the shared options."""
    declared_at: dict[str, int] = {}
    for level, klass in enumerate(config_cls.__mro__):
        for name in vars(klass).get("__annotations__", {}):
            declared_at.setdefault(name, level)
    return sorted(dataclasses.fields(config_cls), key=lambda f: declared_at[f.name])


def config_command(app: typer.Typer, name: str, config_cls: type) -> Callable:
    """Register ``fn(config, experiment=..., tracking_uri=...)`` as ``kpdd <name>`` with generated options."""
    hints = typing.get_type_hints(config_cls)

    def decorator(fn: Callable) -> Callable:
        def command(**kwargs):
            config_file = kwargs.pop("config_file")
            experiment, tracking_uri = kwargs.pop("experiment"), kwargs.pop("tracking_uri")
            config = load_config(config_cls, config_file, section=name, **kwargs)
            return fn(config, experiment=experiment, tracking_uri=tracking_uri)

        fields = [_option(f, hints[f.name]) for f in in_reading_order(config_cls)]
        command.__signature__ = inspect.Signature(TRACKING + fields)
        command.__doc__ = fn.__doc__
        command.__name__ = fn.__name__
        app.command(name)(command)
        return fn

    return decorator
