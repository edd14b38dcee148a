"""The ``kpdd`` command: thin commands that parse options into a config and call one library function.

Each command lives in its own module here and imports heavy libraries only inside its function, so
``kpdd --help`` answers fast.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys

import typer

from kpdd.cli.root import app
from kpdd.config import use_offline_defaults


def _descendants(pid: int) -> list[int]:
    """Every process below ``pid``, children first."""
    import psutil

    with contextlib.suppress(psutil.NoSuchProcess):
        return [child.pid for child in psutil.Process(pid).children(recursive=True)]
    return []


def _terminated(signum, frame) -> None:
    """``kill``: stop every process we started too, mark the MLflow runs killed, exit. An orphaned vLLM engine
    keeps gigabytes of RAM and makes the rerun fail (and a busy one ignores its own SIGTERM), so the children
    are killed outright: they hold no state; finished work is already on disk and the rerun resumes it."""
    for pid in _descendants(os.getpid()):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    if "mlflow" in sys.modules:
        import mlflow

        with contextlib.suppress(Exception):
            while mlflow.active_run():
                mlflow.end_run("KILLED")
    sys.stderr.write("terminated; rerun the same command to resume\n")
    sys.stderr.flush()
    os._exit(128 + signum)


def main(argv: list[str] | None = None) -> None:
    """Entry point: our own errors print as one line (``--debug`` shows the traceback)."""
    use_offline_defaults()  # before the commands import dspy, litellm and mlflow
    from kpdd.cli import commands  # noqa: F401  (registers the subcommands)
    from kpdd.errors import KpddError

    signal.signal(signal.SIGTERM, _terminated)
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

        # typer >= 0.2x raises its own copy of click's exceptions (a mistyped option showed a traceback).
        usage_errors = (click.ClickException, *[c for c in [getattr(typer, "TyperException", None)] if c])
        if isinstance(e, usage_errors) and hasattr(e, "show"):
            e.show()
            raise SystemExit(getattr(e, "exit_code", 2)) from None
        if isinstance(e, (click.exceptions.Exit, typer.Exit)):
            raise SystemExit(e.exit_code) from None
        raise


def console() -> None:
    """The installed ``kpdd`` command: :func:`main`, on jemalloc for the commands that train
    (:mod:`kpdd.cli.allocator`)."""
    from kpdd.cli.allocator import preload_jemalloc_for_training

    preload_jemalloc_for_training(sys.argv)
    main()
