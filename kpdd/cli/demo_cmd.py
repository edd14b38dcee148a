"""`kpdd demo`: the README's main command — the shipped student beside its base model, the whole loop offline, then
the comparison table."""

import typer

from kpdd.cli.finetune_cmd import model_line
from kpdd.cli.options import config_command
from kpdd.cli.root import app
from kpdd.distributed import is_main_process
from kpdd.run.demo import DemoConfig, is_smoke_sized


@config_command(app, "demo", DemoConfig)
def demo_command(config: DemoConfig, experiment=None, tracking_uri=None):
    """The shipped student beside its base model; then gold traces → LoRA fine-tune of SmolLM2-135M → evaluation on
    4 sets, per program; all in MLflow."""
    import time

    from kpdd.cli.compare_cmd import ui_command
    from kpdd.run.demo import run_demo
    from kpdd.tracking import command_run, compare

    start = time.perf_counter()
    with command_run("demo", config, experiment=experiment, tracking_uri=tracking_uri) as run:
        outcome = run_demo(config, echo=typer.echo)
    results = outcome.programs
    if not is_main_process():  # the main process of an `accelerate launch` evaluates and compares
        return
    result = compare(experiment=experiment or "kpdd", run_ids=[run.info.run_id], tracking_uri=tracking_uri,
                     out_dir=f"{config.out}/compare")
    typer.echo(f"\n== comparison (demo run {run.info.run_id[:8]}, {time.perf_counter() - start:.0f} s) ==")
    typer.echo(result.table)
    if is_smoke_sized(config):  # say what the figures are, so nobody reads a smoke run as a result
        steps = ", ".join(f"{program} {sum(r.steps for r in result['students'].values())}"
                          for program, result in results.items())
        traces = ", ".join(f"{program} {result['traces'].traces}" for program, result in results.items())
        training = f"{config.max_steps} optimizer steps" if config.max_steps > 0 else f"{config.epochs:g} epoch(s)"
        typer.echo(f"\nThese rows are smoke-sized: {training} over the traces of {config.train_size or 'all'} training "
                   f"questions (traces: {traces}; optimizer steps: {steps}), {config.eval_size or 'all'} questions per "
                   f"set; they show the loop and the error taxonomy, not accuracy{shipped_note(outcome.shipped)}. "
                   "A real run: `kpdd demo --config configs/gsm8k-full.toml` (GPU), or `kpdd finetune "
                   "--time-budget-s 2400` on CPU (docs/RESULTS.md).")
    typer.echo("")
    for plot in result.plots:
        typer.echo(f"plot: {plot}")
    for program, done in results.items():
        if done["model"] is not None:
            typer.echo(f"MLflow model of {program}: {model_line(done['model'], done['registered_as'])}")
    typer.echo(f"MLflow: {ui_command(result.tracking_uri)}  (then open http://127.0.0.1:5000)")


def shipped_note(comparison) -> str:
    """Where the smoke-sized rows' note points for an accuracy: the first table, when the demo printed one."""
    if comparison is None:
        return ""
    return f" (what distillation gives is the first table: {comparison.student} beside its untrained base)"
