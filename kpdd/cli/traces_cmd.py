"""`kpdd traces`: verified teacher traces into an append-only store (rerun to resume)."""

import typer

from kpdd.cli.options import config_command
from kpdd.cli.root import app
from kpdd.references import parse_program
from kpdd.run.traces import TracesConfig


@config_command(app, "traces", TracesConfig)
def traces_command(config: TracesConfig, experiment=None, tracking_uri=None):
    """Run a program on a teacher over training questions; keep the traces whose answer is correct."""
    from kpdd.run.traces import check_lms, run_traces
    from kpdd.tracking import METHOD, TEACHER, command_run
    from kpdd.tracking.results import log_traces

    check_lms(config)  # a path with no model, or a remote LM that does not answer: one line, nothing written
    with command_run("traces", config, tags={METHOD: parse_program(config.program).label, TEACHER: config.teacher},
                     experiment=experiment, tracking_uri=tracking_uri):
        stats = run_traces(config)
        log_traces(stats)
    typer.echo(f"traces: {stats.path}")
    typer.echo(f"questions {stats.questions}, covered {stats.covered} ({stats.coverage:.1%}), "
               f"traces {stats.traces}, failed (retried on rerun) {stats.failed}")
    for reason, count in stats.errors.items():
        typer.echo(f"  dropped: {reason}: {count}")
