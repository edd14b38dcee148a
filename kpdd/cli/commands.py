"""Registers every subcommand on the app (one module per command)."""

from kpdd.cli import (  # noqa: F401
    augment_cmd, compare_cmd, compile_cmd, demo_cmd, eval_cmd, experiment_cmd, export_cmd, finetune_cmd, improve_cmd,
    traces_cmd,
)
