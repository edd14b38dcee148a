"""The ``kpdd`` Typer app and its root options; each command module registers itself on ``app``."""

from __future__ import annotations

import typer

app = typer.Typer(
    name="kpdd",
    help="Distil maths reasoning pipelines written as DSPy modules into a small model's weights.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _root(debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors.")):
    """Declares ``--debug`` for ``--help``; :func:`kpdd.cli.main` reads it before parsing."""
