"""``kpdd improve``: rejection-sampling fine-tuning (RFT) of a student, round by round, every stage resumable.

Round 0 evaluates the starting student on a held-out validation split of the training questions (the same
per-question coin as fine-tuning's validation side, ``kpdd.finetune.sft.is_validation``, so no held-out question
or variant of one is ever trained on). Each round r then

1. samples k solutions per training question from the current student (:class:`kpdd.compile.rft.StudentSampler`)
   into ``round-<r>/samples.jsonl`` — teacher ``student:<model id>``, the round in each trace's meta;
2. trains a student from the base model on the given traces (gold, augmented) plus every round's samples so far
   (``round-<r>/compiled``; resumes from checkpoints);
3. evaluates it on the validation questions (``round-<r>/validation.jsonl``).

It stops after ``rounds`` rounds, or as soon as validation accuracy does not rise above the best so far. A rerun
finds every finished stage on disk and goes on from the first unfinished one. With MLflow active, each round is a
child run (drawn, kept, new questions covered, training examples, validation accuracy), and the command's run gets
the same figures with the round as step.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kpdd.compile.store import TraceStats
from kpdd.config import Result, option, redefault, save_config
from kpdd.errors import ConfigError
from kpdd.finetune.trainer import TrainConfig
from kpdd.modules.reference import PROGRAM_HELP
from kpdd.references import parse_program
from kpdd.run.finetune import FinetuneResult
from kpdd.run.options import (GenerationOptions, LocalEngineOptions, ParallelOptions, ProgramOptions, SamplingOptions,
                               TrainingQuestions, shared_options)
from kpdd.run.paths import default_out, program_slug

logger = logging.getLogger(__name__)
ROUNDS_FILE = "rounds.jsonl"


@dataclass(frozen=True)
class ImproveConfig(ProgramOptions, SamplingOptions, GenerationOptions, ParallelOptions, TrainingQuestions,
                    LocalEngineOptions, TrainConfig):
    student_program: str = option("", "compiled program directory of the starting student (`kpdd finetune` output)")
    traces: list[str] = option([], "trace stores mixed into every round's training (gold, augmented)")
    rounds: int = option(3, "rounds at most (each: sample, keep, retrain, validate)", at_least=1)
    out: str = option("", "output directory (default kpdd-runs/improve/<program>)")
    program: str = redefault(ProgramOptions, "program", help="the program the student runs: " + PROGRAM_HELP)
    samples: int = redefault(SamplingOptions, "samples", 4, help="samples per training question and round (k)")
    temperature: float = redefault(SamplingOptions, "temperature", help="sampling temperature")
    max_tokens: int = redefault(GenerationOptions, "max_tokens", 256, help="max new tokens per student call")

    def out_dir(self) -> Path:
        return Path(self.out) if self.out else default_out("improve", program_slug(self.program))

    def train_config(self) -> TrainConfig:
        return TrainConfig(**shared_options(self, TrainConfig))


@dataclass(frozen=True)
class Round(Result):
    """One round's figures, a line of ``rounds.jsonl`` (round 0: the starting student's validation only)."""

    round: int
    student: str  # its compiled-program directory
    val_accuracy: float
    validation_questions: int | None = None
    drawn: int | None = None
    correct: int | None = None
    kept: int | None = None
    new_questions: int | None = None
    questions: int | None = None
    training_traces: int | None = None
    dropped: dict[str, int] | None = None

    def record(self) -> dict[str, Any]:
        """The line of ``rounds.jsonl`` (the figures a round has)."""
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> Round:
        return cls(**{f.name: record[f.name] for f in dataclasses.fields(cls) if f.name in record})


@dataclass(frozen=True)
class ImproveResult(Result):
    """What ``kpdd improve`` made: its output directory, the best student's compiled program, each round."""

    out: Path
    best: Path
    rounds: list[Round]


def starting_student(config: ImproveConfig) -> Path:
    """``--student-program``: the compiled program of the starting student (one error line for anything else)."""
    if not config.student_program:
        raise ConfigError("no starting student: pass --student-program <compiled dir> (from `kpdd finetune`)")
    ref = parse_program(config.student_program, "--student-program")
    if not ref.is_compiled:
        raise ConfigError(f"--student-program {ref}: expected a compiled program directory (from `kpdd finetune`), "
                          "not a program")
    return ref.path


def split_questions(examples: list, val_fraction: float, seed: int) -> tuple[list, list]:
    """(training questions, validation questions), by fine-tuning's own per-question coin."""
    from kpdd.finetune.sft import is_validation

    train = [e for e in examples if not is_validation(e.id, val_fraction, seed)]
    validation = [e for e in examples if is_validation(e.id, val_fraction, seed)]
    return train, validation


def student_model_id(compiled: str | Path) -> str:
    """The model id of a compiled program's (first) student: the name its samples are recorded under."""
    from kpdd.finetune.student import read_student
    from kpdd.modules.saved import MANIFEST

    manifest = json.loads((Path(compiled) / MANIFEST).read_text())
    return read_student(Path(compiled) / next(iter(manifest["students"].values()))).model_id


def _load(config: ImproveConfig, compiled: str | Path):
    from kpdd.engines.batching import shared_engine
    from kpdd.engines.compiled import load_compiled

    return load_compiled(compiled, engine=shared_engine(config.engine, device=config.device),
                         max_tokens=config.max_tokens)


def validate(config: ImproveConfig, compiled: str | Path, validation: list, path: Path, progress: bool) -> float:
    """Accuracy of a compiled student on the validation questions (greedy; predictions resumable)."""
    from kpdd.eval.harness import evaluate

    # The compiled student's program speaks its own prompt format (kpdd.modules.programs.KpddProgram).
    scores = evaluate(_load(config, compiled), validation, path, threads=config.threads, progress=progress)
    return validation_accuracy(scores, path)


def validation_accuracy(scores: dict, path: Path) -> float:
    """Accuracy on the validation questions. A question whose LM call failed (e.g. an engine that could not start)
    has no answer rather than a wrong one, and a round must not be judged, or the run stopped, on it."""
    from kpdd.errors import LMUnavailableError
    from kpdd.eval.taxonomy import LM_ERROR

    correct, total = sum(s.correct for s in scores.values()), sum(s.total for s in scores.values())
    failed = sum(s.errors[LM_ERROR] for s in scores.values())
    if failed:
        raise LMUnavailableError(f"validation: {failed} of {total} questions failed on an LM call (see the "
                                 f"records in {path}); the answered ones are kept: rerun to retry the rest")
    return correct / total if total else 0.0


def sample_round(config: ImproveConfig, round_: int, compiled: str | Path, train: list, known: dict,
                 progress: bool) -> TraceStats:
    """Round ``round_``'s samples from the student in ``compiled`` into its store; returns the store's stats."""
    from kpdd.compile.rft import StudentSampler
    from kpdd.compile.store import TraceStore
    from kpdd.compile.traces import generate_traces

    model_id = student_model_id(compiled)
    sampler = StudentSampler(_load(config, compiled), model_id, round_, config.temperature, known)
    header = {"method": config.program, "teacher": sampler.name, "dataset": Path(config.dataset).stem,
              "split": config.split, "meta": {"round": round_, "samples": config.samples,
                                              "temperature": config.temperature}}
    store = TraceStore(config.out_dir() / f"round-{round_}" / "samples.jsonl")
    return generate_traces(sampler, train, store, header, config.samples, config.threads, progress)


def retrain(config: ImproveConfig, round_: int, sample_stores: list[str], progress: bool) -> FinetuneResult:
    """A student trained from the base model on the given traces and every round's samples so far."""
    from kpdd.run.finetune import FinetuneConfig, run_finetune
    from kpdd.tracking.results import log_finetune, maybe_stage, metrics_logger

    train_fields = shared_options(config, TrainConfig)
    finetune = FinetuneConfig(**train_fields, traces=[*config.traces, *sample_stores], program=config.program,
                              **student_format(config.student_program),
                              out=str(config.out_dir() / f"round-{round_}" / "compiled"))
    with maybe_stage("finetune", **train_fields):
        trained = run_finetune(finetune, progress=progress, on_log=metrics_logger())
        log_finetune(trained)
    return trained


def student_format(compiled: str | Path) -> dict[str, str]:
    """The starting student's prompt format and call mode, which every round's student keeps."""
    from kpdd.finetune.student import read_student
    from kpdd.modules.saved import MANIFEST

    manifest = json.loads((Path(compiled) / MANIFEST).read_text())
    ref = read_student(Path(compiled) / next(iter(manifest["students"].values())))
    return {"prompt_format": ref.prompt_format, "student_calls": ref.student_calls}


def _trained_on(compiled: str | Path) -> int | None:
    """The starting student's number of training traces, where its manifest records it."""
    from kpdd.modules.saved import MANIFEST

    traces = json.loads((Path(compiled) / MANIFEST).read_text()).get("traces")
    return traces if isinstance(traces, int) else None


def _recorded_rounds(out: Path) -> dict[int, Round]:
    from kpdd import jsonl

    if not (out / ROUNDS_FILE).is_file():
        return {}
    return {r["round"]: Round.from_record(r) for r in jsonl.read(out / ROUNDS_FILE)}


def run_round(config: ImproveConfig, round_: int, student: str, stores: list[str], given: list[dict], train: list,
              validation: list, progress: bool) -> Round:
    """One round: sample ``student`` into the last of ``stores``, retrain on ``given`` + ``stores``, validate."""
    from kpdd.compile.rft import known_solutions, newly_covered
    from kpdd.compile.store import TraceStore

    earlier = [t for path in stores[:-1] for t in TraceStore(path).traces()]
    stats = sample_round(config, round_, student, train, known_solutions([*given, *earlier]), progress)
    kept = TraceStore(stats.path).traces()
    trained = retrain(config, round_, stores, progress)
    accuracy = validate(config, trained.out, validation, config.out_dir() / f"round-{round_}" / "validation.jsonl",
                        progress)
    return Round(round=round_, student=str(trained.out), val_accuracy=accuracy, drawn=stats.samples,
                 correct=round(stats.sample_accuracy * stats.samples), kept=len(kept),
                 new_questions=len(newly_covered(kept, earlier)), questions=stats.questions,
                 training_traces=trained.traces, dropped=stats.errors)


def run_improve(config: ImproveConfig, progress: bool = True, echo=print) -> ImproveResult:
    """All rounds (see the module docstring); returns each round's figures and the best student's directory."""
    from kpdd import jsonl
    from kpdd.data import load_dataset
    from kpdd.run.finetune import load_traces
    from kpdd.tracking.results import log_round, maybe_stage

    start = starting_student(config)
    out = config.out_dir()
    out.mkdir(parents=True, exist_ok=True)
    save_config(config, out)
    train, validation = split_questions(load_dataset(config.dataset, config.split, limit=config.limit,
                                                     seed=config.seed), config.val_fraction, config.seed)
    if not train or not validation:
        raise ConfigError(f"{len(train)} training and {len(validation)} validation questions: use more questions "
                          "(--limit) or another --val-fraction")
    given = load_traces(config.traces, config.program) if config.traces else []
    recorded = _recorded_rounds(out)
    if 0 not in recorded:
        accuracy = validate(config, start, validation, out / "round-0" / "validation.jsonl", progress)
        recorded[0] = Round(round=0, student=config.student_program, val_accuracy=accuracy,
                            validation_questions=len(validation), training_traces=_trained_on(start))
        jsonl.append(out / ROUNDS_FILE, [recorded[0].record()])
        log_round(recorded[0].record())
    echo(f"round 0: validation accuracy {recorded[0].val_accuracy:.1%} on {len(validation)} questions")
    best, current, stores = recorded[0], config.student_program, []
    for round_ in range(1, config.rounds + 1):
        stores.append(str(out / f"round-{round_}" / "samples.jsonl"))
        if round_ not in recorded:
            with maybe_stage(f"round-{round_}", round=round_, student=current):
                recorded[round_] = run_round(config, round_, current, stores, given, train, validation, progress)
                log_round(recorded[round_].record())
            jsonl.append(out / ROUNDS_FILE, [recorded[round_].record()])
        figures = recorded[round_]
        echo(f"round {round_}: drawn {figures.drawn}, correct {figures.correct}, kept {figures.kept} "
             f"(new questions {figures.new_questions}), trained on {figures.training_traces} traces, "
             f"validation accuracy {figures.val_accuracy:.1%}")
        current = figures.student
        if figures.val_accuracy <= best.val_accuracy:
            echo(f"validation accuracy did not rise above {best.val_accuracy:.1%}: stopping")
            break
        best = figures
    return ImproveResult(out=out, best=Path(best.student), rounds=[recorded[r] for r in sorted(recorded)])
