"""Registers every subcommand on the app (one module per command)."""

from kpdd.cli import compare_cmd, compile_cmd, demo_cmd, eval_cmd, finetune_cmd, traces_cmd  # noqa: F401
