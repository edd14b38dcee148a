"""`kpdd compile`: optimise → traces → fine-tune, resumable; prints the compiled program's directory."""

import typer

from kpdd.cli.finetune_cmd import model_line
from kpdd.cli.options import config_command
from kpdd.cli.root import app
from kpdd.distributed import is_main_process
from kpdd.references import parse_program
from kpdd.run.compile import CompileConfig


@config_command(app, "compile", CompileConfig)
def compile_command(config: CompileConfig, experiment=None, tracking_uri=None):
    """Compile a program into a fine-tuned student: teacher optimisation, verified traces, SFT (rerun to resume)."""
    from kpdd.run.compile import check_lms, run_compile
    from kpdd.tracking import METHOD, STUDENT, TEACHER, command_run

    tags = {METHOD: parse_program(config.program).label, TEACHER: config.teacher, STUDENT: config.student}
    check_lms(config)  # a path with no model, or a remote LM that does not answer: one line, nothing written
    with command_run("compile", config, tags=tags, experiment=experiment, tracking_uri=tracking_uri):
        result = run_compile(config)
    if not is_main_process():  # the main process of an `accelerate launch` reports for all
        return
    stats = result.traces
    typer.echo(f"traces: {stats.traces} for {stats.covered} of {stats.questions} questions ({stats.coverage:.1%})")
    typer.echo(f"compiled program: {result.compiled}  (evaluate: kpdd eval --lm {result.compiled})")
    if result.model is not None:
        typer.echo(f"MLflow model: {model_line(result.model, config.register_as)}")
