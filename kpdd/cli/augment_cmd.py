"""`kpdd augment`: program-checked variants of the gold-traced questions into a trace store (rerun to resume)."""

import typer

from kpdd.cli.options import config_command
from kpdd.cli.root import app
from kpdd.run.augment import TEACHER, AugmentConfig


@config_command(app, "augment", AugmentConfig)
def augment_command(config: AugmentConfig, experiment=None, tracking_uri=None):
    """New numbers for each gold-traced question: rewrite the question and its trace, rerun the program in the
    sandbox, keep the variants whose answer is sensible and whose question still matches the program."""
    from kpdd.run.augment import run_augment
    from kpdd.tracking import METHOD, TEACHER as TEACHER_TAG, command_run
    from kpdd.tracking.results import log_augment

    with command_run("augment", config, tags={METHOD: config.program, TEACHER_TAG: TEACHER},
                     experiment=experiment, tracking_uri=tracking_uri):
        stats = run_augment(config)
        log_augment(stats)
    typer.echo(f"variants: {stats.path}")
    typer.echo(f"questions {stats.questions}, with >= 1 variant {stats.covered} ({stats.coverage:.1%}), "
               f"variants {stats.traces} ({stats.traces_per_question:.2f} per covered question), "
               f"candidates drawn {stats.samples}, failed (retried on rerun) {stats.failed}")
    typer.echo(f"this run: {stats.new_variants} variants in {stats.seconds:.1f} s "
               f"({stats.variants_per_s:.1f} variants/s)")
    for reason, count in stats.errors.items():
        typer.echo(f"  rejected: {reason}: {count}")
