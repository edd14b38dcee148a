"""`kpdd improve`: rejection-sampling fine-tuning of a student, round by round (rerun to resume)."""

import typer

from kpdd.cli.options import config_command
from kpdd.cli.root import app
from kpdd.references import parse_program
from kpdd.run.improve import ImproveConfig


@config_command(app, "improve", ImproveConfig)
def improve_command(config: ImproveConfig, experiment=None, tracking_uri=None):
    """Sample the student k times per training question, keep its verified-correct new solutions, retrain from
    the base model on them plus the given traces, validate; repeat while validation accuracy rises."""
    from kpdd.engines.batching import check_engine
    from kpdd.run.improve import run_improve
    from kpdd.tracking import METHOD, STUDENT, TEACHER, command_run

    check_engine(config.engine)  # before the MLflow run opens
    tags = {METHOD: parse_program(config.program).label, STUDENT: config.student, TEACHER: "student"}
    with command_run("improve", config, tags=tags, experiment=experiment, tracking_uri=tracking_uri):
        result = run_improve(config, echo=typer.echo)
    typer.echo(f"best student: {result.best}  (evaluate: kpdd eval --lm {result.best})")
