"""`kpdd demo`."""

import typer

from kpdd.cli import app


@app.command("demo")
def demo_command():
    """Not yet implemented."""
    typer.echo("kpdd demo: not yet implemented", err=True)
    raise typer.Exit(1)
