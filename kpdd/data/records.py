"""The one normalised record type every loader yields, and its conversion to ``dspy.Example``."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import dspy


@dataclass(frozen=True)
class Record:
    """One maths word problem with a numeric gold answer.

    ``rationale``, ``sub_questions`` and ``equation`` are filled where the source has them:
    GSM8K rationales (with their ``<<a*b=c>>`` calculator annotations), GSM8K socratic
    sub-questions, SVAMP / ASDiv / MultiArith equations.
    """

    id: str
    dataset: str
    split: str
    question: str
    answer: float
    rationale: str | None = None
    sub_questions: tuple[str, ...] | None = None
    equation: str | None = None

    def to_example(self) -> dspy.Example:
        """A ``dspy.Example`` with ``question`` as its only input; the other fields ride along."""
        fields = {k: v for k, v in self.__dict__.items() if v is not None}
        if self.sub_questions is not None:
            fields["sub_questions"] = list(self.sub_questions)
        return dspy.Example(**fields).with_inputs("question")


@dataclass
class LoadedSplit:
    """The records of one dataset split, and the rows that were skipped with the reason for each."""

    records: list[Record]
    skipped: dict[str, int] = field(default_factory=dict)  # reason → count

    @property
    def skipped_total(self) -> int:
        return sum(self.skipped.values())


def sample_records(records: list[Record], limit: int | None, seed: int = 0) -> list[Record]:
    """A seeded random subset of ``limit`` records, kept in their original order (all when ``limit`` is None)."""
    if limit is None or limit >= len(records):
        return list(records)
    if limit < 0:
        raise ValueError(f"limit must be >= 0, got {limit}")
    chosen = sorted(random.Random(seed).sample(range(len(records)), limit))
    return [records[i] for i in chosen]
