"""A row of `kpdd compare`: what the table and the plots both show."""

from __future__ import annotations

from dataclasses import dataclass, field
from statistics import fmean


@dataclass(frozen=True)
class CompareRow:
    """One evaluated method × student × teacher; ``accuracy`` maps dataset → fraction correct."""

    run_id: str
    method: str | None
    student: str | None
    teacher: str | None
    accuracy: dict[str, float]
    traces: int | None = None
    train_time_s: float | None = None
    curve_run_id: str | None = None  # the run whose train/loss history is this row's training curve
    intervals: dict[str, tuple[float, float]] = field(default_factory=dict)  # dataset → 95 % interval (fractions)

    @property
    def average(self) -> float:
        return fmean(self.accuracy.values())

    @property
    def label(self) -> str:
        return " · ".join(part for part in (self.method, self.student) if part) or self.run_id[:8]
