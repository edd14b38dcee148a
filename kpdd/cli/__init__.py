"""The ``kpdd`` command: thin commands that parse options into a config and call one library function.

Each command lives in its own module here and imports heavy libraries only inside its function, so
``kpdd --help`` answers fast.
"""

from __future__ import annotations

import os
import sys

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
    if debug:
        os.environ["KPDD_DEBUG"] = "1"


from kpdd.cli import commands  # noqa: E402,F401  (registers the subcommands)


def main(argv: list[str] | None = None) -> None:
    """Entry point: our own errors print as one line (``--debug`` shows the traceback)."""
    from kpdd.errors import KpddError

    debug = "--debug" in (argv if argv is not None else sys.argv)
    try:
        app(args=argv, standalone_mode=False)
    except KpddError as e:
        if debug:
            raise
        typer.secho(f"error: {e}", fg=typer.colors.RED, err=True)
        raise SystemExit(2) from None
    except (typer.Abort, KeyboardInterrupt):
        typer.echo("interrupted; rerun the same command to resume", err=True)
        raise SystemExit(130) from None
    except Exception as e:  # click's own usage errors carry their exit code
        import click

        if isinstance(e, click.ClickException):
            e.show()
            raise SystemExit(e.exit_code) from None
        if isinstance(e, click.exceptions.Exit):
            raise SystemExit(e.exit_code) from None
        raise
