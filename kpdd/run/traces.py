"""``kpdd traces``: the config, the teacher it names, and the run that fills the trace store.

A teacher path must hold a model, and a remote teacher must answer one probe call (:func:`check_lms`), before
anything is written; a run whose teacher fails for good stops with one line and keeps what it wrote.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import dspy

from kpdd.compile.store import TraceStats, TraceStore
from kpdd.compile.traces import Teacher, generate_traces
from kpdd.config import option, redefault, save_config
from kpdd.errors import ConfigError
from kpdd.eval.lm_guard import FailureGuard
from kpdd.references import BUILTIN, BUILTIN_PROGRAMS, LMRef, ProgramRef, parse_program
from kpdd.run.options import (GenerationOptions, MetricOptions, ParallelOptions, ProgramOptions, SamplingOptions,
                               SeedOptions, TrainingQuestions)
from kpdd.run.paths import default_out, program_slug, slug
from kpdd.run.remote_options import RemoteLMOptions

GOLD = "gold"


@dataclass(frozen=True)
class TracesConfig(ProgramOptions, MetricOptions, SeedOptions, SamplingOptions, GenerationOptions, ParallelOptions,
                   TrainingQuestions, RemoteLMOptions):
    teacher: str = option(GOLD, "'gold' (dataset annotations, no LM), a model directory ('./my-student' or "
                                "'local:<path>'), or a model string such as 'openai/gpt-4o-mini' ('remote:<model>' "
                                "where a folder has its name)")
    teacher_program: str | None = option(None, "a saved, optimised teacher program (program.save JSON) to sample")
    out: str = option("", "trace store path (default kpdd-runs/traces/<program>-<teacher>-<dataset>-<split>.jsonl)")
    max_tokens: int = redefault(GenerationOptions, "max_tokens", 1024, help="max tokens per teacher call")
    threads: int = redefault(ParallelOptions, "threads", 8, help="questions processed in parallel")

    def store_path(self) -> Path:
        if self.out:
            return Path(self.out)
        name = f"{program_slug(self.program)}-{slug(self.teacher)}-{Path(self.dataset).stem}-{self.split}.jsonl"
        return default_out("traces", name)


def teacher_reference(config: TracesConfig) -> LMRef | None:
    """``--teacher`` as an LM reference on the config's servers; None for the gold teacher (no LM)."""
    return None if config.teacher == GOLD else config.lm_reference(config.teacher, "--teacher")


def build_teacher(config: TracesConfig, program: dspy.Module, teacher: LMRef | None) -> Teacher:
    """The teacher a config names: gold annotations (``teacher`` None), or the program on a teacher LM."""
    if teacher is None:
        from kpdd.compile.gold import GoldTeacher

        return GoldTeacher(config.program)
    from kpdd.compile.teachers import LMTeacher
    from kpdd.modules.metric import resolve_metric

    lm = config.remote_lm(teacher, "--teacher", max_tokens=config.max_tokens)
    return LMTeacher(program, lm, config.program, temperature=config.temperature, name=config.teacher,
                     metric=resolve_metric(config.metric))


def check_lms(config: TracesConfig) -> None:
    """Fail fast, before anything is written: a program reference that does not resolve, the gold teacher for a
    program it cannot annotate, a teacher path that holds no model, or a remote teacher that cannot answer one
    probe call, is one error line (the CLI calls this before it opens the MLflow run)."""
    from kpdd.modules import build_program

    program = parse_program(config.program)
    build_program(program)
    check_gold(program, config.teacher)
    teacher = teacher_reference(config)
    if teacher is not None:
        config.check_remote(teacher, "--teacher")


def check_gold(program: ProgramRef, teacher: str) -> None:
    if teacher == GOLD and program.kind != BUILTIN:
        raise ConfigError("--teacher gold writes traces of the built-in programs only "
                          f"({', '.join(BUILTIN_PROGRAMS)}); "
                          f"{program} needs an LM teacher (--teacher openai/<model> or local:<path>)")


def run_traces(config: TracesConfig, progress: bool = True) -> TraceStats:
    """``kpdd traces``: load the questions, build the teacher, generate into the store; returns the store's stats."""
    from kpdd.data import load_dataset
    from kpdd.modules import build_program
    from kpdd.modules.one_call import program_inputs
    from kpdd.modules.saved import load_program

    reference, teacher = parse_program(config.program), teacher_reference(config)
    check_gold(reference, config.teacher)
    program = (load_program(config.teacher_program, config.program) if config.teacher_program
               else build_program(reference))
    examples = load_dataset(config.dataset, config.split, limit=config.limit, seed=config.seed,
                            inputs=program_inputs(program), numeric_answer=not config.metric)
    teacher = build_teacher(config, program, teacher)
    header = {"method": config.program, "teacher": teacher.name, "dataset": Path(config.dataset).stem,
              "split": config.split, "meta": {"samples": config.samples, "temperature": config.temperature,
                                              "teacher_program": config.teacher_program}}
    store = TraceStore(config.store_path())
    save_config(config, store.path)
    return generate_traces(teacher, examples, store, header, config.samples, config.threads, progress,
                           guard=FailureGuard(config.server_gone_s))
