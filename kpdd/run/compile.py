"""``kpdd compile``: optimise the program on the teacher → traces → fine-tune → the compiled student program.

With ``augment`` > 0, program-checked variants of the traced questions join the traces (``kpdd augment``); with
``rft_rounds`` > 0, rounds of rejection-sampling fine-tuning follow the fine-tune and the best round's student is
the result (``kpdd improve``).

Each stage writes under ``out`` and is resumable, so rerunning the command continues where it stopped: the
optimised teacher program is reused, the trace store resumes, training resumes from its last checkpoint.
With MLflow active, each stage is a child run of the command's run. Under ``accelerate launch`` the main process
runs the teacher while the others wait, then every process trains (data-parallel). The teacher (and GEPA's
reflection LM) must answer one probe call before anything is written (:func:`check_lms`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kpdd.compile.optimize import OPTIMIZERS as DSPY_OPTIMIZERS
from kpdd.compile.store import TraceStats
from kpdd.config import Result, option, redefault, save_config
from kpdd.distributed import is_main_process, main_process_first
from kpdd.errors import ConfigError, KpddError
from kpdd.finetune.trainer import TrainConfig, TrainResult
from kpdd.references import LMRef, parse_program
from kpdd.run.options import (LocalEngineOptions, MetricOptions, ParallelOptions, ProgramOptions, RegistryOptions,
                               SamplingOptions, StudentFormatOptions, TrainingQuestions, shared_options)
from kpdd.run.paths import default_out, program_slug, slug
from kpdd.run.remote_options import RemoteLMOptions
from kpdd.run.traces import GOLD

logger = logging.getLogger(__name__)

NO_OPTIMIZER = "none"
OPTIMIZERS = (NO_OPTIMIZER, *DSPY_OPTIMIZERS)
TRACES = "traces.jsonl"


@dataclass(frozen=True)
class CompileConfig(ProgramOptions, MetricOptions, SamplingOptions, ParallelOptions, RegistryOptions,
                    StudentFormatOptions, TrainingQuestions, LocalEngineOptions, TrainConfig, RemoteLMOptions):
    teacher: str = option(GOLD, "'gold', a model directory ('./my-student' or 'local:<path>'), or a model string "
                                "such as 'openai/gpt-4o-mini' ('remote:<model>' where a folder has its name)")
    optimizer: str = option(NO_OPTIMIZER, "teacher optimizer: none, bootstrap-fewshot, bootstrap-random-search, "
                                          "mipro, gepa", choices=OPTIMIZERS)
    optimize_size: int = option(50, "training questions used to optimise the teacher program", at_least=1)
    reflection_lm: str | None = option(None, "the LM GEPA reflects on the teacher's answers with, in any form "
                                             "--teacher takes (default: the teacher)")
    prompt_model: str | None = option(None, "the LM MIPROv2 proposes instructions with, in any form --teacher takes "
                                            "(default: the teacher)")
    trials: int | None = option(None, "optimizer trials: MIPROv2's candidate programs evaluated, GEPA's proposals "
                                      "(default: half of --optimize-size, at most 30)", at_least=1)
    augment: int = option(0, "program-checked variants per traced question, added to the traces (kpdd augment; "
                             "kpdd-pot, pot, direct; 0: none)", at_least=0)
    rft_rounds: int = option(0, "rounds of rejection-sampling fine-tuning after the fine-tune (kpdd improve; 0: none)",
                             at_least=0)
    rft_samples: int = option(4, "student samples per question and RFT round", at_least=1)
    out: str = option("", "output directory (default kpdd-runs/compile/<program>-<teacher>)")
    samples: int = redefault(SamplingOptions, "samples", help="teacher samples per question")
    temperature: float = redefault(SamplingOptions, "temperature", help="teacher sampling temperature when samples > 1")
    threads: int = redefault(ParallelOptions, "threads", 8, help="questions traced in parallel")

    def out_dir(self) -> Path:
        if self.out:
            return Path(self.out)
        return default_out("compile", f"{program_slug(self.program)}-{slug(self.teacher)}")


@dataclass(frozen=True)
class CompileResult(Result):
    """What ``kpdd compile`` made: the compiled program's directory (the best round's with ``--rft-rounds``), the
    trace store's stats, each student's training figures, and the student's MLflow model (None without tracking)."""

    compiled: Path
    traces: TraceStats
    students: dict[str, TrainResult]
    model: Any = None  # mlflow.models.model.ModelInfo


def teacher_references(config: CompileConfig) -> dict[str, LMRef | None]:
    """``--teacher`` (None: gold), ``--reflection-lm`` and ``--prompt-model`` (None: the teacher) as references on
    the config's servers, by option."""
    specs = {"--teacher": None if config.teacher == GOLD else config.teacher,
             "--reflection-lm": config.reflection_lm, "--prompt-model": config.prompt_model}
    return {option_name: config.lm_reference(spec, option_name) if spec else None
            for option_name, spec in specs.items()}


def optimized_teacher_program(config: CompileConfig, echo=print) -> Path | None:
    """Optimise the program on the teacher LM once; later runs reuse the saved program. The optimizer's work is
    written under ``<out>/optimize`` as it is made, so a rerun after a kill resumes it."""
    from kpdd.compile.optimize import optimize
    from kpdd.compile.optimize_log import OptimizeLog
    from kpdd.data import load_dataset
    from kpdd.modules import build_program
    from kpdd.modules.saved import MANIFEST, save_program
    from kpdd.tracking.results import log_optimize, maybe_stage, trial_logger

    if config.optimizer == NO_OPTIMIZER:
        return None
    if config.teacher == GOLD:
        raise ConfigError("the gold teacher has no LM to optimise: use --optimizer none, or a teacher LM")
    target = config.out_dir() / "teacher-program"
    if (target / MANIFEST).is_file():
        logger.info("reusing the optimised teacher program in %s", target)
        return target
    with maybe_stage("optimise", optimizer=config.optimizer, size=config.optimize_size, trials=config.trials,
                     prompt_model=config.prompt_model or config.teacher):
        # --teacher, --reflection-lm, --prompt-model (check_lms probed them)
        lm, reflection, prompt_model = (None if ref is None else config.remote_lm(ref, name, probe=False)
                                        for name, ref in teacher_references(config).items())
        trainset = load_dataset(config.dataset, config.split, limit=config.optimize_size, seed=config.seed + 1)
        log = OptimizeLog(config.out_dir() / "optimize", on_trial=trial_logger(), server_gone_s=config.server_gone_s)
        try:
            program = optimize(build_program(config.program), lm, trainset, config.optimizer, log=log,
                               reflection_lm=reflection, prompt_model=prompt_model, trials=config.trials,
                               seed=config.seed, threads=config.threads)
        except KpddError:
            log_optimize(log.summary(), log.directory, None)  # what was skipped before it gave up
            raise
        save_program(program, target, config.program, optimizer=config.optimizer, teacher=config.teacher)
        summary = log.summary()
        log_optimize(summary, log.directory, target)
        echo(optimize_summary(config.optimizer, summary))
        return target


def optimize_summary(optimizer: str, summary: dict[str, Any]) -> str:
    """One line: the trials, the unoptimised and optimised scores, and what was skipped."""
    parts = [f"optimizer {optimizer}: {summary['trials']} trials"]
    if summary.get("score_unoptimized") is not None and summary.get("score_optimized") is not None:
        parts.append(f"val score {summary['score_unoptimized']:.1f} -> {summary['score_optimized']:.1f} "
                     f"(n={summary['n']})")
    skipped = summary["skipped"]
    parts.append("skipped: " + (", ".join(f"{k} {v}" for k, v in skipped.items()) if skipped else "none"))
    return "; ".join(parts)


def check_lms(config: CompileConfig) -> None:
    """Fail fast, before anything is written: a teacher path that holds no model, or a teacher or reflection LM
    that cannot answer one probe call, is one error line (the CLI calls this before it opens the MLflow run)."""
    from kpdd.engines.batching import check_engine
    from kpdd.tracking.runs import check_registered_name

    check_registered_name(config.register_as)
    check_engine(config.engine)
    parse_program(config.program)
    for option_name, lm in teacher_references(config).items():
        if lm is not None:
            config.check_remote(lm, option_name)


def run_compile(config: CompileConfig, progress: bool = True, log_model: bool = True) -> CompileResult:
    """The whole compile: the compiled program's directory, the trace stats, the training figures and
    (``log_model``, with MLflow active) the student's MLflow model."""
    from kpdd.run.finetune import FinetuneConfig, run_finetune
    from kpdd.tracking.results import log_finetune, maybe_stage, metrics_logger

    check_lms(config)
    out = config.out_dir()
    if is_main_process():
        save_config(config, out)
    # Under `accelerate launch` the teacher runs once, in the main process; the others then read its store.
    with main_process_first():
        stats = teacher_traces(config, progress) if is_main_process() else written_traces(out / TRACES)
        variants = augmented_store(config, progress) if is_main_process() else \
            [str(out / "augment.jsonl")] * (config.augment > 0)
    stores = [str(out / TRACES), *variants]
    train_fields = shared_options(config, TrainConfig)
    finetune_config = FinetuneConfig(**train_fields, traces=stores, program=config.program,
                                     multitask=config.multitask, prompt_format=config.prompt_format,
                                     student_calls=config.student_calls, out=str(out / "compiled"))
    with maybe_stage("finetune", **train_fields):
        trained = run_finetune(finetune_config, progress=progress, on_log=metrics_logger())
        log_finetune(trained)
    compiled = improved(config, trained.out, stores, progress)
    model = logged_student(config, compiled, register_as=config.register_as) if log_model else None
    return CompileResult(compiled=compiled, traces=stats, students=trained.students, model=model)


def logged_student(config: CompileConfig, compiled: str | Path, register_as: str | None = None,
                   **model_config) -> Any:
    """The compiled student as an MLflow model of the active run, with how it was made as params (None when
    tracking is off, or on a process other than the main one). ``model_config``: the loaded model's defaults
    (``max_tokens``, ``threads``)."""
    from kpdd.tracking import METHOD, STUDENT, TEACHER
    from kpdd.tracking.model import log_student_model
    from kpdd.tracking.results import mlflow_active

    if not mlflow_active():
        return None
    params = {"teacher": config.teacher, "optimizer": config.optimizer, "data": f"{config.dataset}:{config.split}",
              "limit": config.limit, "samples": config.samples, "augment": config.augment,
              "rft_rounds": config.rft_rounds, "seed": config.seed}
    return log_student_model(compiled, register_as=register_as, params=params, engine=config.engine,
                             device=config.device, tags={METHOD: config.program, TEACHER: config.teacher,
                                                         STUDENT: config.student}, **model_config)


def teacher_traces(config: CompileConfig, progress: bool = True) -> TraceStats:
    """The optimised teacher program (once) and its verified traces (resumable); returns the store's stats."""
    from kpdd.run.traces import TracesConfig, run_traces
    from kpdd.tracking.results import log_traces, maybe_stage

    out = config.out_dir()
    teacher_program = optimized_teacher_program(config)
    traces_config = TracesConfig(**shared_options(config, ProgramOptions, MetricOptions, SamplingOptions,
                                                  ParallelOptions, TrainingQuestions, RemoteLMOptions),
                                 teacher=config.teacher, seed=config.seed,
                                 teacher_program=str(teacher_program) if teacher_program else None,
                                 out=str(out / TRACES))
    with maybe_stage("traces", **traces_config.__dict__):
        stats = run_traces(traces_config, progress=progress)
        log_traces(stats)
    return stats


def written_traces(path: Path) -> TraceStats:
    """The stats of a trace store another process wrote."""
    from kpdd.compile.store import TraceStore

    return TraceStore(path).stats()


def augmented_store(config: CompileConfig, progress: bool) -> list[str]:
    """``--augment N``: variants of the traced questions in their own store (none when N is 0)."""
    from kpdd.run.augment import AugmentConfig, run_augment
    from kpdd.tracking.results import log_augment, maybe_stage

    if config.augment <= 0:
        return []
    augment_config = AugmentConfig(program=config.program, dataset=config.dataset, split=config.split,
                                   limit=config.limit, seed=config.seed, variants=config.augment,
                                   out=str(config.out_dir() / "augment.jsonl"))
    with maybe_stage("augment", **augment_config.__dict__):
        stats = run_augment(augment_config, progress=progress)
        log_augment(stats)
    return [str(stats.path)]


def improved(config: CompileConfig, compiled: Path, stores: list[str], progress: bool) -> Path:
    """``--rft-rounds R``: the best student of R rounds of rejection-sampling fine-tuning (``compiled`` when R is 0)."""
    from kpdd.run.improve import ImproveConfig, run_improve
    from kpdd.tracking.results import maybe_stage

    if config.rft_rounds <= 0:
        return compiled
    train_fields = shared_options(config, TrainConfig)
    improve_config = ImproveConfig(**train_fields, program=config.program, student_program=str(compiled), traces=stores,
                                   dataset=config.dataset, split=config.split, limit=config.limit,
                                   rounds=config.rft_rounds, samples=config.rft_samples, engine=config.engine,
                                   out=str(config.out_dir() / "improve"))
    with maybe_stage("improve", rounds=config.rft_rounds, samples=config.rft_samples):
        return run_improve(improve_config, progress=progress, echo=logger.info).best
