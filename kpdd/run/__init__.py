"""The drivers: one module per ``kpdd`` command that chains the stages (traces, augment, finetune, improve,
compile, eval, demo).

The stage packages never import a driver; the CLI parses options into a driver's config and calls it.
"""

from kpdd.run.distill import distill

__all__ = ["distill"]
