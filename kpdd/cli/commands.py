"""Registers every subcommand on the app (one module per command)."""

from kpdd.cli import (  # noqa: F401
    compare_cmd, compile_cmd, demo_cmd, eval_cmd, export_cmd, finetune_cmd, traces_cmd,
)
