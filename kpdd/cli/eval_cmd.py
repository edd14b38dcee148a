"""`kpdd eval`: a program with an LM on GSM8K, SVAMP, ASDiv, MultiArith (rerun to resume)."""

import typer

from kpdd.cli.options import config_command
from kpdd.cli.root import app
from kpdd.references import parse_program
from kpdd.run.eval import EvalConfig


@config_command(app, "eval", EvalConfig)
def eval_command(config: EvalConfig, experiment=None, tracking_uri=None):
    """Evaluate: accuracy per dataset with 95 % intervals, the error taxonomy, per-example predictions."""
    from kpdd.run.eval import check_lms, run_eval, with_compiled_program
    from kpdd.tracking import METHOD, STUDENT, command_run

    config = with_compiled_program(config)  # the run is named after the program that runs
    check_lms(config)  # a path with no model, or a remote LM that does not answer: one line, nothing written
    with command_run("eval", config, tags={METHOD: parse_program(config.program).label, STUDENT: config.lm},
                     experiment=experiment, tracking_uri=tracking_uri):
        result = run_eval(config)
    typer.echo(result.report)
    typer.echo(f"\npredictions: {result.predictions}")
