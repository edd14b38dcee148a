"""Where the drivers write by default: ``kpdd-runs/<command>/<name>``, with names made safe for a path."""

from __future__ import annotations

from pathlib import Path

RUNS = Path("kpdd-runs")


def slug(text: str) -> str:
    """A model string or path as one path component: 'openai/gpt-4o-mini' → 'openai_gpt-4o-mini'."""
    return text.replace("/", "_").replace(":", "_")


def default_out(command: str, name: str) -> Path:
    """``kpdd-runs/<command>/<name>``."""
    return RUNS / command / name


def program_slug(reference: str) -> str:
    """A program reference as a path component: its registry name, or its class's name."""
    from kpdd.modules.reference import label

    return slug(label(reference))
