"""A trained student as an MLflow model: log it, register it, load it with ``mlflow.pyfunc`` and serve it.

The model is MLflow's models-from-code (``student_model_code.py``, no pickle) over one artifact, ``program``: a
copy of the compiled-program directory that ``save_compiled`` / ``run_finetune`` wrote (the program's JSON state,
its manifest, each student's ``kpdd.json`` and adapter; training checkpoints left out). ``load_context`` rebuilds
the program with :func:`kpdd.engines.compiled.load_compiled`, so the model loads exactly as ``kpdd eval`` does;
``predict`` runs every stage on the student (the sandboxed program run included) and returns, per input row, the
answer, the error type of a failed run, and each stage's fields.

A student's base travels by reference when it is the shipped alias (kpdd converts it on first use) or lives inside
the student directory; a base elsewhere on disk is copied into the model, so the model loads on another machine.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import warnings
from concurrent.futures import ThreadPoolExecutor
from importlib import metadata
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd

from kpdd.errors import ConfigError

MODEL_SUFFIX = "student"  # a model is named <program>-student (the Models tab tells methods apart by name)


def model_name(program_reference: str | None) -> str:
    """``kpdd-pot-student``, ``MyPoT-student``: the logged model's name, from the program it runs."""
    from kpdd.modules.reference import label

    return f"{label(program_reference or '').replace('/', '_') or 'program'}-{MODEL_SUFFIX}"
PROGRAM = "program"  # the artifact key: the compiled-program directory
CODE_FILE = Path(__file__).with_name("student_model_code.py")
BUNDLED_BASE = "base"  # a student's base copied into its directory
DEFAULT_MAX_TOKENS = 512  # as `kpdd eval`
DEFAULT_THREADS = 16  # questions in flight, batched by the local engine (as `kpdd eval`)
REQUIREMENTS = ("dspy", "mlflow", "torch", "transformers", "peft")
TRAINING_ONLY = ("checkpoints",)  # trainer state: resumes training, never read by a loaded program


# The loaded model's settings (``model_config``). MLflow also logs them as params of the run the model is logged
# in, beside the command's own (whose ``engine``, ``device`` and ``threads`` mean training and tracing), hence
# names of their own.
ENGINE, DEVICE = "inference_engine", "inference_device"
MAX_TOKENS, THREADS = "inference_max_tokens", "inference_threads"


class StudentModel(mlflow.pyfunc.PythonModel):
    """The pyfunc flavour of a compiled program. ``model_config``: ``inference_engine`` (transformers, vllm,
    vllm-burst), ``inference_device``, ``inference_max_tokens`` per LM call, ``inference_threads`` (rows in flight
    at once, batched by the engine)."""

    def load_context(self, context) -> None:
        from kpdd.engines.batching import shared_engine
        from kpdd.engines.compiled import load_compiled

        config = {**model_config(), **(context.model_config or {})}
        engine = shared_engine(config[ENGINE], device=config[DEVICE])
        self.program = load_compiled(context.artifacts[PROGRAM], engine=engine, max_tokens=int(config[MAX_TOKENS]))
        self.inputs = input_fields(self.program)
        self.threads = max(1, int(config[THREADS]))

    # pyfunc hands over a DataFrame (after the signature's check); the hint tells MLflow so, and that the
    # signature comes from log_student_model rather than from type hints.
    def predict(self, context, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """One dict per row: ``answer``, ``error`` (None with an answer; else why not, as the evaluation's
        taxonomy says), and each stage's fields: a predictions record's ``answer``, ``error`` and ``stages``."""
        from kpdd.eval.harness import run_program
        from kpdd.eval.taxonomy import classify

        rows = input_rows(model_input, self.inputs)
        with ThreadPoolExecutor(max_workers=min(self.threads, max(1, len(rows)))) as pool:
            runs = list(pool.map(lambda row: run_program(self.program, row), rows))
        return [{"answer": run.get("answer"),
                 "error": None if run.get("answer") is not None else classify(row.get("question", ""), run, False),
                 **{k: v for k, v in run.items() if k not in ("answer", "error")}} for row, run in zip(rows, runs)]


def model_config(engine: str = "transformers", device: str = "auto", max_tokens: int = DEFAULT_MAX_TOKENS,
                 threads: int = DEFAULT_THREADS) -> dict[str, Any]:
    return {ENGINE: engine, DEVICE: device, MAX_TOKENS: max_tokens, THREADS: threads}


def input_fields(program) -> list[str]:
    """What a row must hold: the keyword arguments the program's ``forward`` takes (the question, for every
    built-in program)."""
    from kpdd.modules.one_call import OneCallProgram, program_inputs

    return program_inputs(program.program if isinstance(program, OneCallProgram) else program)


def input_rows(model_input: Any, fields: list[str]) -> list[dict[str, Any]]:
    """Rows of program inputs from what pyfunc hands over (a DataFrame, after the signature's check) or what a
    caller passes: a list of dicts, or one dict; for a one-input program also strings (a list, or one).
    A row without a field is one error naming the row and the field."""
    one = fields[0] if len(fields) == 1 else None
    if isinstance(model_input, pd.DataFrame):
        if one and list(model_input.columns) == [0]:  # a list of strings, framed by pyfunc as one unnamed column
            model_input = model_input.rename(columns={0: one})
        rows = model_input.to_dict(orient="records")
    elif isinstance(model_input, (dict, str)):
        rows = [model_input]
    else:
        rows = list(model_input)
    if one:
        rows = [{one: row} if isinstance(row, str) else row for row in rows]
    for index, row in enumerate(rows):
        if not isinstance(row, dict) or any(name not in row for name in fields):
            raise ConfigError(f"input row {index}: expected the field(s) {', '.join(fields)}, got {row!r}")
    return [{name: row[name] for name in fields} for row in rows]


# Python annotation of a signature's output field → MLflow column type (anything else: any).
COLUMN_TYPES = {str: "string", float: "double", int: "long", bool: "boolean"}


def model_signature(program) -> Any:
    """The model's signature. Inputs: the program's ``forward`` arguments as strings; a one-input program's is one
    unnamed column, so a plain list of strings is an input as for any one-column model. Outputs: what ``predict``
    returns per row (``answer``, ``error`` and every stage's output fields, typed by their signatures), each
    optional since a failed run stops before some stages."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema
    from mlflow.types.schema import AnyType

    from kpdd.modules.one_call import OneCallProgram

    fields = input_fields(program)
    inputs = Schema([ColSpec("string")] if len(fields) == 1 else [ColSpec("string", name) for name in fields])
    stages = program.program if isinstance(program, OneCallProgram) else program
    outputs = {name: COLUMN_TYPES.get(field.annotation, AnyType()) for _, predictor in stages.named_predictors()
               for name, field in predictor.signature.output_fields.items()}
    columns = {"answer": outputs.pop("answer", AnyType()), "error": "string", **outputs}
    return ModelSignature(inputs=inputs,
                          outputs=Schema([ColSpec(kind, name, required=False) for name, kind in columns.items()]))


def log_student_model(compiled: str | Path, *, register_as: str | None = None, params: dict[str, Any] | None = None,
                      tags: dict[str, Any] | None = None, max_tokens: int = DEFAULT_MAX_TOKENS,
                      engine: str = "transformers", device: str = "auto", threads: int = DEFAULT_THREADS):
    """Log the compiled program in ``compiled`` as an MLflow model of the active run (``register_as``: also as the
    next version of that registered model); returns MLflow's ``ModelInfo`` (``model_id``, ``model_uri``,
    ``registered_model_version``). ``params`` add to what the directory says (method, prompt format, call mode,
    traces, base, steps); ``max_tokens`` and the engine options are the loaded model's defaults."""
    from kpdd.modules.saved import load_program

    compiled = Path(compiled)
    manifest = _read_manifest(compiled)
    with tempfile.TemporaryDirectory(prefix="kpdd-model-") as staging:
        program_dir = model_files(compiled, Path(staging) / PROGRAM)
        signature = model_signature(load_program(program_dir))
        with warnings.catch_warnings():
            # The signature is explicit; an input example would make MLflow run the student while logging it.
            warnings.filterwarnings("ignore", message=".*input example was not provided", category=UserWarning)
            return mlflow.pyfunc.log_model(
                name=model_name(manifest.get("program")), python_model=str(CODE_FILE),
                artifacts={PROGRAM: str(program_dir)},
                signature=signature,
                model_config=model_config(engine, device, max_tokens, threads),
                pip_requirements=requirements(), registered_model_name=register_as,
                params={k: str(v) for k, v in {**model_params(program_dir, manifest), **(params or {})}.items()
                        if v is not None},
                tags={k: str(v) for k, v in (tags or {}).items() if v is not None})


def model_files(compiled: Path, target: Path) -> Path:
    """A copy of the compiled-program directory for the model: without training checkpoints, and with any base
    that lives elsewhere on disk copied into its student (``base``), so the copy depends on no outside path."""
    from kpdd.finetune.student import SHIPPED_MODELS, STUDENT_FILE, read_student

    shutil.copytree(compiled, target, ignore=shutil.ignore_patterns(*TRAINING_ONLY))
    for student_file in sorted(target.glob(f"*/*/{STUDENT_FILE}")):
        record = json.loads(student_file.read_text())
        base = record["base"]
        if base in SHIPPED_MODELS or not Path(base).is_absolute():
            continue
        shutil.copytree(read_student(student_file.parent).base_path, student_file.parent / BUNDLED_BASE)
        record["base"] = BUNDLED_BASE
        student_file.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    return target


def model_params(program_dir: Path, manifest: dict[str, Any]) -> dict[str, Any]:
    """What the directory says about how the student was made: method, prompt format, call mode, trace count, and
    its students' base, LoRA or full fine-tune, and optimizer steps."""
    from kpdd.finetune.student import read_student

    students = [read_student(program_dir / relative) for relative in sorted(set(manifest.get("students", {}).values()))]
    configs = [student.train.get("config", {}) for student in students]
    params = {"method": manifest.get("program"), "prompt_format": manifest.get("prompt_format"),
              "student_calls": manifest.get("student_calls"), "traces": manifest.get("traces"),
              "students": len(students),
              "base": ",".join(sorted({str(c.get("student", s.base)) for c, s in zip(configs, students, strict=True)})),
              "lora": ",".join(sorted({str(c.get("lora")) for c in configs if "lora" in c})) or None,
              "steps": sum(int(s.train.get("train/steps", 0)) for s in students)}
    return {key: value for key, value in params.items() if value is not None}


def requirements() -> list[str]:
    """The libraries a loaded model needs, at the versions it was logged with (kpdd itself first)."""
    pins = []
    for package in ("kpdd", *REQUIREMENTS):
        try:
            pins.append(f"{package}=={metadata.version(package)}")
        except metadata.PackageNotFoundError:
            pins.append(package)
    return pins


def _read_manifest(compiled: Path) -> dict[str, Any]:
    from kpdd.modules.saved import MANIFEST

    path = compiled / MANIFEST
    if not path.is_file():
        raise ConfigError(f"{compiled}: not a compiled kpdd program (no {MANIFEST}); expected the directory "
                          "`kpdd finetune` or `kpdd compile` wrote")
    return json.loads(path.read_text())
