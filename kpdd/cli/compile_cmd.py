"""`kpdd compile`."""

import typer

from kpdd.cli import app


@app.command("compile")
def compile_command():
    """Not yet implemented."""
    typer.echo("kpdd compile: not yet implemented", err=True)
    raise typer.Exit(1)
