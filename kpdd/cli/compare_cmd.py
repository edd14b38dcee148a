"""`kpdd compare`: a table and plots over the evaluated runs of an MLflow experiment."""

from __future__ import annotations

from pathlib import Path

import typer

from kpdd.cli.root import app


@app.command("compare")
def compare_command(
    experiment: str = typer.Option("kpdd", "--experiment", help="MLflow experiment whose runs to compare."),
    runs: str = typer.Option("", "--runs", help="Comma-separated run ids to compare (default: every evaluated run)."),
    out: Path = typer.Option(Path("kpdd-runs/compare"), "--out", help="Folder for the PNG plots."),
    tracking_uri: str | None = typer.Option(None, "--tracking-uri",
                                            help="MLflow store (default: $MLFLOW_TRACKING_URI, else ./mlflow.db)."),
):
    """Compare methods, students and teachers: accuracy per dataset, training curves, accuracy vs traces."""
    from kpdd.tracking import compare

    run_ids = [run_id.strip() for run_id in runs.split(",") if run_id.strip()] or None
    result = compare(experiment=experiment, run_ids=run_ids, out_dir=out, tracking_uri=tracking_uri)
    typer.echo(result.table)
    typer.echo("")
    for plot in result.plots:
        typer.echo(f"plot: {plot}")
    typer.echo(f"logged as run {result.run_id} in experiment {result.experiment!r}")
    typer.echo(f"browse: {ui_command(result.tracking_uri)}")


def ui_command(tracking_uri: str) -> str:
    """How to open the MLflow UI on this store (a relative path when the database is in the working directory)."""
    if not tracking_uri.startswith("sqlite:///"):
        return f"open {tracking_uri} in a browser"
    database = Path(tracking_uri[len("sqlite:///"):])
    if database.is_absolute() and database.parent == Path.cwd():
        database = Path(database.name)
    return f"mlflow ui --backend-store-uri sqlite:///{database}"
