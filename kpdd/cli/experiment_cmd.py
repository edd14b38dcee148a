"""`kpdd experiment`: every method's student trained and evaluated in one time-boxed run, then a report."""

import typer

from kpdd.cli.options import config_command
from kpdd.cli.root import app
from kpdd.run.experiment import ExperimentConfig


@config_command(app, "experiment", ExperimentConfig)
def experiment_command(config: ExperimentConfig, experiment=None, tracking_uri=None):
    """Per method: gold traces → full fine-tune → evaluation on 4 sets, while the budget lasts; then a report."""
    import logging
    import sys

    from kpdd.run.experiment import Clock, run_experiment

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s", stream=sys.stdout)
    clock = Clock.of(config)
    results = run_experiment(config, clock, experiment=experiment, tracking_uri=tracking_uri)
    done = sum(r.get("status") == "done" for r in results["runs"])
    typer.echo(f"experiment: {done} of {len(results['runs'])} runs done in {clock.used():.0f} s; "
               f"outputs in {config.out}")
    for note in results["notes"]:
        typer.echo(f"  note: {note}")
