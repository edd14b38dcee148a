"""``kpdd finetune``: traces → chat-format SFT data → one multitask student, or one student per stage.

The output is a compiled-program directory (:mod:`kpdd.engines.compiled`): the program's state and its
students, ready for ``kpdd eval --lm <out>``. Rerunning the same command resumes each student's training from
its latest checkpoint; a student that already finished is kept. Under ``accelerate launch`` every process
trains on the same split (data-parallel) and the main process writes the students and the compiled program.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dspy

from kpdd.config import Result, option, redefault, save_config
from kpdd.distributed import is_main_process
from kpdd.errors import ConfigError
from kpdd.finetune.trainer import TrainConfig, TrainResult
from kpdd.modules.reference import PROGRAM_HELP
from kpdd.run.options import ProgramOptions, RegistryOptions, StudentFormatOptions, shared_options
from kpdd.run.paths import default_out, program_slug

logger = logging.getLogger(__name__)

ALL_STAGES = "all"


@dataclass(frozen=True)
class FinetuneConfig(ProgramOptions, RegistryOptions, StudentFormatOptions, TrainConfig):
    traces: list[str] = option([], "trace store file(s) written by `kpdd traces`")
    stages: list[str] = option([], "train only these predictors (default: all of the program's)")
    max_traces: int | None = option(None, "use at most this many traces (a seeded subset of questions)", at_least=1)
    out: str = option("", "output directory (default kpdd-runs/finetune/<program>)")
    resume: bool = option(True, "resume from the latest checkpoint in the output directory")
    program: str = redefault(ProgramOptions, "program", help="the program the traces belong to: " + PROGRAM_HELP)

    def out_dir(self) -> Path:
        return Path(self.out) if self.out else default_out("finetune", program_slug(self.program))

    def train_config(self) -> TrainConfig:
        return TrainConfig(**shared_options(self, TrainConfig))


@dataclass(frozen=True)
class FinetuneResult(Result):
    """What ``kpdd finetune`` made: the compiled program's directory, the number of traces trained on, and each
    student's training figures (by task: ``all`` for a multitask student, else the predictor's name)."""

    out: Path
    traces: int
    students: dict[str, TrainResult]


def check_stores(paths: list[str], program: str) -> None:
    """Every trace store named is there (the CLI calls this before it opens the MLflow run)."""
    if not paths:
        raise ConfigError("no trace store given: pass --traces <file> (written by `kpdd traces`)")
    for path in paths:
        if not Path(path).is_file():
            raise ConfigError(f"trace store {path} does not exist; run `kpdd traces --program {program}` first")


def load_traces(paths: list[str], program: str, max_traces: int | None = None, seed: int = 0) -> list[dict]:
    """The traces of ``program`` from the stores, optionally a seeded subset of their questions."""
    import random

    from kpdd.compile.store import TraceStore
    from kpdd.modules.reference import label

    check_stores(paths, program)
    traces = []
    for path in paths:
        store_traces = TraceStore(path).traces()
        other = {t["method"] for t in store_traces if label(t["method"]) != label(program)}
        if other:
            raise ConfigError(f"{path} holds traces of {sorted(other)}, not of program {program!r}")
        traces += store_traces
    if max_traces is not None and max_traces < len(traces):
        traces = sorted(random.Random(seed).sample(traces, max_traces), key=lambda t: t["question_id"])
    return traces


def run_finetune(config: FinetuneConfig, progress: bool = True,
                 on_log: Callable[[dict, int], None] | None = None,
                 program: dspy.Module | None = None) -> FinetuneResult:
    """Train the student(s) and write the compiled program; returns its directory and each student's figures.
    ``program``: the program object to train (default: a fresh one built from ``config.program``)."""
    from kpdd.finetune.sft import build_sft_data, merge_tasks
    from kpdd.finetune.trainer import train_student
    from kpdd.modules.one_call import OneCallProgram, repeated_predictors
    from kpdd.modules.saved import as_student_program, build_student_program, save_program

    traces = load_traces(config.traces, config.program, config.max_traces, config.seed)
    if program is None:
        program = build_student_program(config.program, config.student_calls, repeated_predictors(traces))
    else:
        program = as_student_program(program.deepcopy(), config.student_calls, repeated_predictors(traces))
    data = build_sft_data(traces, program.program if isinstance(program, OneCallProgram) else program,
                          val_fraction=config.val_fraction, seed=config.seed, predictors=config.stages or None,
                          prompt_format=config.prompt_format, student_calls=config.student_calls)
    tasks = {ALL_STAGES: merge_tasks(data)} if config.multitask else data
    out = config.out_dir()
    if is_main_process():  # under `accelerate launch`, one process writes
        save_config(config, out)
    meta = {"prompt_format": config.prompt_format, "student_calls": config.student_calls,
            "repeated": getattr(program, "repeated", [])}
    results: dict[str, TrainResult] = {}
    for task, split in tasks.items():
        logger.info("training student %r on %d records (%d for validation)", task, len(split["train"]),
                    len(split["validation"]))
        results[task] = train_student(config.train_config(), split["train"], split["validation"],
                                      out / "students" / task, program=config.program, resume=config.resume,
                                      progress=progress, on_log=on_log, student_meta=meta)
    students = {name: f"students/{ALL_STAGES if config.multitask else name}"
                for name, _ in program.named_predictors() if config.multitask or name in results}
    missing = [name for name, _ in program.named_predictors() if name not in students]
    if missing:
        raise ConfigError(f"stages {missing} got no student: train them too (drop --stages) to run the program")
    if is_main_process():  # under `accelerate launch` every process trained; one writes
        save_program(program, out, config.program, students=students, traces=len(traces), **meta)
    return FinetuneResult(out=out, traces=len(traces), students=results)


def logged_student(config: FinetuneConfig, result: FinetuneResult) -> Any:
    """The compiled program of :func:`run_finetune` as an MLflow model of the active run, with how it was made as
    params (None when tracking is off, or on a process other than the main one)."""
    from kpdd.tracking import METHOD, STUDENT
    from kpdd.tracking.model import log_student_model
    from kpdd.tracking.results import mlflow_active

    if not mlflow_active():
        return None
    params = {"data": ",".join(Path(path).name for path in config.traces), "max_traces": config.max_traces,
              "seed": config.seed}
    return log_student_model(result.out, register_as=config.register_as, params=params, device=config.device,
                             tags={METHOD: config.program, STUDENT: config.student})
