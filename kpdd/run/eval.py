"""``kpdd eval``: a program (a built-in, code or a compiled directory) with an LM on the benchmark sets.

``--program`` and ``--lm`` are parsed once into references (:mod:`kpdd.references`, :func:`references`): a path
must hold a compiled program or a model, and a remote LM must answer one probe call (:func:`check_lms`), before
anything is written; a run whose LM fails for good stops with one line.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import dspy

from kpdd.config import Result, option, redefault, save_config
from kpdd.errors import ConfigError
from kpdd.eval.harness import DatasetScore
from kpdd.eval.lm_guard import FailureGuard
from kpdd.finetune.trainer import TrainConfig
from kpdd.modules.reference import PROGRAM_HELP
from kpdd.modules.student_format import PROMPT_FORMATS
from kpdd.references import LMRef, ProgramRef, parse_program
from kpdd.run.paths import default_out, slug
from kpdd.run.options import (GenerationOptions, LocalEngineOptions, MetricOptions, ParallelOptions, ProgramOptions,
                               SamplingOptions, SeedOptions)
from kpdd.run.remote_options import RemoteLMOptions

ALL = "all"
AUTO = "auto"


@dataclass(frozen=True)
class EvalConfig(ProgramOptions, MetricOptions, SeedOptions, SamplingOptions, GenerationOptions, ParallelOptions,
                 LocalEngineOptions, RemoteLMOptions):
    lm: str = option("smollm2-135m", "the LM: a student or compiled-program directory, a checkpoint, the shipped "
                                     "alias or shipped:<name>, or a model string such as 'openai/<name>' (with "
                                     "--api-base); ./<name> forces a folder, remote:<model> a model string")
    device: str = redefault(TrainConfig, "device", "auto")
    datasets: list[str] = option(["all"], "datasets: gsm8k, svamp, asdiv, multiarith, 'all', or JSON/JSONL files "
                                          "whose rows hold the program's inputs by name")
    split: str | None = option(None, "dataset split (default: each dataset's test split)")
    holdout: float = option(0.0, "only the questions a fine-tune with this --val-fraction and the same --seed held "
                                 "out for validation (with --split train: a held-out part of train; 0: all)",
                            at_least=0, below=1)
    limit: int | None = option(None, "evaluate a seeded random subset of this many questions per dataset "
                                     "(default: all)", at_least=1)
    engine_batch: int | None = option(None, "most requests a local engine generates as one batch (default: the "
                                            "engine's own; raise it on a GPU)", at_least=1)
    trace_sample_rate: float = option(0.02, "share of questions whose DSPy calls are traced to MLflow (0: none)",
                                     at_least=0, at_most=1)
    prompt_format: str = option(AUTO, "how the LM is prompted: auto (a compiled program's recorded format, local or "
                                      "served; DSPy's defaults for other LMs), 'student' or 'chat' (override)",
                                choices=(AUTO, *PROMPT_FORMATS))
    out: str = option("", "predictions file (default kpdd-runs/eval/<program>-<lm>.jsonl); rerun to resume")
    program: str = redefault(ProgramOptions, "program",
                             help=PROGRAM_HELP + "; or a compiled program directory (./<name> where it is named "
                                                 "like a built-in)")
    seed: int = redefault(SeedOptions, "seed", help="seed for the subsets and sampling")
    samples: int = redefault(SamplingOptions, "samples", help="self-consistency: sample k runs per question and take "
                                                              "the majority answer")

    def dataset_names(self) -> list[str]:
        from kpdd.data import EVAL_DATASETS

        return [d for name in self.datasets for d in (EVAL_DATASETS if name == ALL else [name])]

    def predictions_path(self) -> Path:
        if self.out:
            return Path(self.out)
        program = parse_program(self.program)
        name = program.path.name if program.is_compiled else program.label
        stem = "-".join(slug(part) for part in (name, Path(self.lm).name))
        suffix = f"-k{self.samples}" if self.samples > 1 else ""
        return default_out("eval", f"{stem}{suffix}.jsonl")


@dataclass(frozen=True)
class EvalResult(Result):
    """What ``kpdd eval`` measured: accuracy per dataset (``scores``; ``report`` as text) of the program (its
    reference), and where each prediction is."""

    program: str
    predictions: Path
    scores: dict[str, DatasetScore]
    report: str
    examples: list[dspy.Example]


def references(config: EvalConfig) -> tuple[ProgramRef, LMRef]:
    """``--program`` and ``--lm`` as references (a model string on the config's servers): one error line for a
    path that holds neither a program nor a model."""
    return parse_program(config.program), config.lm_reference(config.lm, "--lm", compiled=True)


def with_compiled_program(config: EvalConfig) -> EvalConfig:
    """``--lm <compiled directory>`` runs the program compiled there, so the config names that program: the
    predictions, the saved config and the MLflow run are filed under it, not under the default ``--program``."""
    from kpdd.modules.saved import manifest_program

    program, lm = references(config)
    if lm.is_compiled and not program.is_compiled:
        return replace(config, program=manifest_program(lm.path))
    return config


def check_lms(config: EvalConfig) -> None:
    """Fail fast, before anything is written: a ``--lm``/``--program`` path that holds no model, an unknown alias,
    or a remote LM that cannot answer one probe call is one error line (the CLI calls this before it opens the
    MLflow run)."""
    from kpdd.engines.batching import check_engine
    from kpdd.finetune.student import read_student
    from kpdd.modules import build_program

    program, lm = references(config)
    if not (program.is_compiled or lm.is_compiled):
        build_program(program)  # a reference that does not resolve: one line, before the LM is asked
    if lm.is_remote:
        config.check_remote(lm, "--lm")  # each server of a fan-out
        return
    check_engine(config.engine)
    if not (program.is_compiled or lm.is_compiled):
        read_student(lm)  # a directory without a model's description, before the MLflow run opens


def load_program_and_lm(config: EvalConfig, program: ProgramRef, lm: LMRef) -> tuple[dspy.Module, str, bool]:
    """The program to evaluate with its LM(s) set, its reference, and whether its LM is local. A compiled program
    (``--program``, else ``--lm``) runs its own students, or with a model string as ``--lm`` the served one."""
    from kpdd.engines.compiled import load_compiled, program_with_student
    from kpdd.modules import build_program
    from kpdd.modules.saved import manifest_program

    lm_kwargs = {"max_tokens": config.max_tokens}
    compiled = program if program.is_compiled else lm if lm.is_compiled else None
    if program.is_compiled and lm.is_remote:
        return served_compiled(config, program, lm, lm_kwargs), manifest_program(program.path), False
    if compiled is not None:
        loaded = load_compiled(compiled.path, engine=engine_spec(config), **lm_kwargs)
        return loaded, manifest_program(compiled.path), True
    if lm.is_remote:
        built = build_program(program)
        built.set_lm(config.remote_lm(lm, "--lm", **lm_kwargs))
        return built, program.text, False
    return program_with_student(program, lm, engine=engine_spec(config), **lm_kwargs), program.text, True


def served_compiled(config: EvalConfig, program: ProgramRef, lm: LMRef, lm_kwargs: dict[str, Any]) -> dspy.Module:
    """A compiled (or exported) program whose student runs behind a server, e.g. ``vllm serve`` of ``kpdd export``:
    the program's state, the served model as every predictor's LM, and the prompt format the student was trained on.
    """
    import json

    from kpdd.finetune.student import read_student
    from kpdd.modules.saved import MANIFEST, load_program, with_prompt_adapter
    from kpdd.modules.student_format import adapter_for

    manifest = json.loads((program.path / MANIFEST).read_text())
    students = sorted(set(manifest.get("students", {}).values()))
    if len(students) != 1:
        raise ConfigError(f"{program} has {len(students)} students (one per stage) but --lm names one served "
                          "model: evaluate a multitask student, or the compiled program with its local students")
    loaded = load_program(program.path)
    loaded.set_lm(config.remote_lm(lm, "--lm", **lm_kwargs))
    prompt_format = manifest.get("prompt_format") or read_student(program.path / students[0]).prompt_format
    return with_prompt_adapter(loaded, adapter_for(prompt_format))


def with_prompt_format(program: dspy.Module, prompt_format: str) -> dspy.Module:
    """``--prompt-format``: ``auto`` keeps the format the program carries; ``student`` or ``chat`` overrides it."""
    from kpdd.modules.saved import with_prompt_adapter
    from kpdd.modules.student_format import adapter_for

    if prompt_format != AUTO:
        with_prompt_adapter(program, adapter_for(prompt_format))
    return program


def engine_spec(config: EvalConfig) -> Any:
    """The shared local engine a config asks for (kind + device)."""
    from kpdd.engines.batching import shared_engine

    batch = {"max_batch_size": config.engine_batch} if config.engine_batch else {}
    return shared_engine(config.engine, device=config.device, **batch)


def held_out(examples: list[dspy.Example], config: EvalConfig) -> list[dspy.Example]:
    """The seeded subset to evaluate: with ``holdout``, only questions no fine-tune with that split trained on."""
    from kpdd.data.records import sample_records
    from kpdd.finetune.sft import is_validation

    if config.holdout:
        examples = [e for e in examples if is_validation(e.id, config.holdout, config.seed)]
    return sample_records(examples, config.limit, config.seed)


def run_eval(config: EvalConfig, progress: bool = True, log: bool = True) -> EvalResult:
    """Evaluate and (when an MLflow run is active) log accuracy, intervals, errors and predictions."""
    from kpdd.data import load_dataset
    from kpdd.eval.harness import evaluate, format_report
    from kpdd.finetune.hardware import use_torch_threads
    from kpdd.modules.metric import resolve_metric
    from kpdd.modules.one_call import program_inputs
    from kpdd.modules.saved import student_adapter
    from kpdd.modules.student_format import CHAT
    from kpdd.tracking import dspy_tracing
    from kpdd.tracking.results import log_eval, mlflow_active

    names = config.dataset_names()
    if not names:
        raise ConfigError("no datasets to evaluate: pass --datasets gsm8k,svamp,... or all")
    use_torch_threads(config.torch_threads)  # before a local engine starts
    config = with_compiled_program(config)
    program, program_name, local = load_program_and_lm(config, *references(config))
    inputs, metric = program_inputs(program), resolve_metric(config.metric) if config.metric else None
    examples = [e for name in names for e in held_out(load_dataset(name, split=config.split, inputs=inputs,
                                                                   numeric_answer=metric is None), config)]
    # A trained student's program carries its own prompt format; a bare local model reads DSPy's chat format
    # without the JSON fallback (a second call it was never asked for); an API LM keeps DSPy's defaults.
    adapter = student_adapter(CHAT) if local else None
    program = with_prompt_format(program, config.prompt_format)
    path = config.predictions_path()
    save_config(config, path)
    with dspy_tracing(config.trace_sample_rate if log and mlflow_active() else 0.0):
        scores = evaluate(program, examples, path, threads=config.threads, samples=config.samples,
                          temperature=config.temperature, adapter=adapter, progress=progress,
                          guard=FailureGuard(config.server_gone_s), metric=metric)
    if log:
        log_eval(scores, path, examples)
    return EvalResult(program=program_name, predictions=path, scores=scores, report=format_report(scores),
                      examples=examples)
