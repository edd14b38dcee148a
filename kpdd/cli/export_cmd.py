"""`kpdd export`: merged Hugging Face checkpoints of a compiled program's students, for `vllm serve`."""

import typer

from kpdd.cli.options import config_command
from kpdd.cli.root import app
from kpdd.run.export import ExportConfig


@config_command(app, "export", ExportConfig)
def export_command(config: ExportConfig, experiment=None, tracking_uri=None):
    """Merge each student's LoRA adapter into its base: checkpoints that `vllm serve` and transformers load as is."""
    from kpdd.run.export import run_export
    from kpdd.tracking import command_run

    with command_run("export", config, experiment=experiment, tracking_uri=tracking_uri):
        result = run_export(config)
    program = result.out if result.program else "<program>"
    for checkpoint, name in result.students.items():
        typer.echo(f"exported: {checkpoint}\n  serve:    vllm serve {checkpoint} --served-model-name {name} --port 8000")
    if len(result.students) == 1:
        typer.echo(f"  evaluate: kpdd eval --program {program} --lm openai/{name} --api-base http://127.0.0.1:8000/v1")
    else:
        typer.echo("one student per stage: serve each on its own port; `kpdd eval` runs one served LM per program")
