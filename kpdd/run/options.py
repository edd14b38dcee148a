"""Groups of options that several commands share, declared once: a command's config inherits the groups it takes,
so an option is spelled, described and checked the same wherever it appears (``redefault`` changes only where a
command starts from). The remote LM's options are :class:`kpdd.run.remote_options.RemoteLMOptions`, the training
hyper-parameters :class:`kpdd.finetune.trainer.TrainConfig`."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from kpdd.config import Checked, option
from kpdd.engines.batching import ENGINE_KINDS
from kpdd.finetune.hardware import CpuThreads
from kpdd.modules.one_call import ONE, STUDENT_CALLS
from kpdd.modules.student_format import PROMPT_FORMATS, STUDENT

ENGINES = tuple(ENGINE_KINDS)


@dataclass(frozen=True)
class LocalEngineOptions(CpuThreads):
    engine: str = option("transformers", "local engine that runs students: transformers, vllm (continuous batching) "
                                         "or vllm-burst", choices=ENGINES)


@dataclass(frozen=True)
class StudentFormatOptions(Checked):
    """How a student is trained to be prompted; recorded with it, so evaluation needs neither."""

    prompt_format: str = option(STUDENT, "the students' prompt format: student (kpdd's compact format) or chat "
                                         "(DSPy's ChatAdapter, for comparison)", choices=PROMPT_FORMATS)
    student_calls: str = option(ONE, "one: the student writes every stage in one completion; per-stage: one call "
                                     "per stage, as the teacher ran it", choices=STUDENT_CALLS)
    multitask: bool = option(True, "one student for every stage (else one student per stage)")


@dataclass(frozen=True)
class TrainingQuestions(Checked):
    """Which training questions a command reads."""

    dataset: str = option("gsm8k", "dataset name, or a JSON/JSONL file whose rows hold the program's inputs by name")
    split: str = option("train", "dataset split")
    limit: int | None = option(None, "use a seeded random subset of this many questions (default: all)", at_least=1)


def shared_options(config: Any, *groups: type) -> dict[str, Any]:
    """The values ``config`` holds for the options of these groups, to hand on to another config that composes them."""
    return {field.name: getattr(config, field.name) for group in groups for field in dataclasses.fields(group)}
