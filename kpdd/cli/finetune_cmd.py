"""`kpdd finetune`: fine-tune the student on traces (rerun to resume)."""

import typer

from kpdd.cli.options import config_command
from kpdd.cli.root import app
from kpdd.distributed import is_main_process
from kpdd.references import parse_program
from kpdd.run.finetune import FinetuneConfig


@config_command(app, "finetune", FinetuneConfig)
def finetune_command(config: FinetuneConfig, experiment=None, tracking_uri=None):
    """Fine-tune a student (LoRA or full, multitask or per stage) on trace stores; writes a compiled program.

    Like compile and improve, it runs on jemalloc where libjemalloc is installed, so a long training's memory stays
    flat; KPDD_ALLOCATOR=system keeps the C library's malloc.
    """
    from kpdd.run.finetune import check_stores, logged_student, run_finetune
    from kpdd.tracking import METHOD, STUDENT, command_run
    from kpdd.tracking.results import log_finetune, metrics_logger
    from kpdd.tracking.runs import check_registered_name

    check_stores(config.traces, config.program)  # a missing store: one line, no MLflow run
    check_registered_name(config.register_as)
    with command_run("finetune", config, tags={METHOD: parse_program(config.program).label, STUDENT: config.student},
                     experiment=experiment, tracking_uri=tracking_uri):
        result = run_finetune(config, on_log=metrics_logger())
        log_finetune(result)
        model = logged_student(config, result)
    if not is_main_process():  # the main process of an `accelerate launch` reports for all
        return
    typer.echo(f"compiled program: {result.out}  (evaluate: kpdd eval --lm {result.out})")
    if model is not None:
        typer.echo(f"MLflow model: {model_line(model, config.register_as)}")
    for task, trained in result.students.items():
        typer.echo(student_line(task, trained))


def student_line(task: str, trained) -> str:
    """One trained student's figures: steps, the loss from the first logged value to the last, validation loss,
    speed (and where it ran: device, threads, number format, allocator) and time."""
    loss = _loss(trained.train_loss)
    if trained.first_loss is not None and trained.first_loss != trained.train_loss:  # equal: one loss was logged
        loss = f"{_loss(trained.first_loss)} → {loss}"
    shown = {"device": "{}", "torch_threads": "{} threads", "precision": "{}", "allocator": "{}"}
    parts = [form.format(trained.setup[key]) for key, form in shown.items() if key in trained.setup]
    where = f" ({', '.join(parts)})" if parts else ""
    return (f"  student {task}: {trained.steps} steps, loss {loss}, val loss {_loss(trained.val_loss)}, "
            f"{trained.tokens_per_s:.0f} tokens/s{where}, {trained.train_time_s:.0f} s")


def _loss(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def model_line(model, registered_name: str | None) -> str:
    """Where the logged student is, as ``mlflow.pyfunc.load_model`` takes it."""
    version = model.registered_model_version
    registered = f"  (registered: models:/{registered_name}/{version})" if registered_name and version else ""
    return f"{model.model_uri}{registered}"
