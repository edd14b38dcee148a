"""Groups of options that several commands share, declared once: a command's config inherits the groups it takes,
so an option is spelled, described and checked the same wherever it appears (``redefault`` changes only where a
command starts from, or how its help says what the option does there). The remote LM's options are
:class:`kpdd.run.remote_options.RemoteLMOptions`, the training hyper-parameters
:class:`kpdd.finetune.trainer.TrainConfig` (whose ``seed`` is its own: ``kpdd.finetune`` sits below ``kpdd.run``)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from kpdd.config import Checked, option
from kpdd.engines.batching import ENGINE_KINDS
from kpdd.errors import ConfigError
from kpdd.finetune.hardware import CpuThreads
from kpdd.modules.one_call import ONE, STUDENT_CALLS
from kpdd.modules.reference import METRIC_HELP, PROGRAM_HELP
from kpdd.modules.student_format import PROMPT_FORMATS, STUDENT

ENGINES = tuple(ENGINE_KINDS)


@dataclass(frozen=True)
class ProgramOptions(Checked):
    """The DSPy program a command traces, trains or evaluates."""

    LEADS_HELP = True  # what the command works on: first in its --help
    program: str = option("kpdd-pot", PROGRAM_HELP)


@dataclass(frozen=True)
class MetricOptions(Checked):
    """What decides that a program's answer is right."""

    LEADS_HELP = True
    metric: str = option("", METRIC_HELP)


@dataclass(frozen=True)
class SeedOptions(Checked):
    """The seed of a command's random choices (which questions, which samples)."""

    seed: int = option(0, "seed for the subset")


@dataclass(frozen=True)
class SamplingOptions(Checked):
    """How many answers an LM samples per question, and how hot; several greedy samples would all be the same, so
    more than one needs a temperature above 0."""

    samples: int = option(1, "samples per question (k); > 1 needs temperature > 0", at_least=1)
    temperature: float = option(0.7, "sampling temperature when samples > 1", at_least=0)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.samples > 1 and self.temperature <= 0:
            error = ConfigError(f"--samples {self.samples} needs --temperature > 0, got {self.temperature:g}: greedy "
                                "samples would all be the same")
            error.option = "temperature"
            raise error


@dataclass(frozen=True)
class GenerationOptions(Checked):
    """How many tokens an LM may write per call."""

    max_tokens: int = option(512, "max new tokens per LM call", at_least=1)


@dataclass(frozen=True)
class ParallelOptions(Checked):
    """How many questions a command has in flight at once."""

    threads: int = option(16, "questions in flight at once (a local engine batches them)", at_least=1)


@dataclass(frozen=True)
class RegistryOptions(Checked):
    """Where a trained student goes in the MLflow Model Registry."""

    register_as: str | None = option(None, "register the trained student in the MLflow Model Registry under this "
                                           "name (a new version each run; it is logged as a model either way)")


@dataclass(frozen=True)
class RunSizes(Checked):
    """How many questions a whole run (the demo, the GPU experiment) traces and evaluates on."""

    train_size: int = option(0, "GSM8K train questions traced (0: all)", at_least=0)
    eval_size: int = option(500, "questions per evaluation set, a seeded subset (0: the full sets)", at_least=0)


@dataclass(frozen=True)
class LocalEngineOptions(CpuThreads):
    """The local engine that runs students, and the CPU threads it uses."""

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
