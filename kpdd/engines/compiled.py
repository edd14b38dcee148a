"""A compiled program together with its weights: save it, move it, load it back as a runnable program.

Layout of a compiled-program directory::

    kpdd-program.json   {"program": <reference>, "state": "program.json", "students": {predictor: "students/<id>"}}
    program.json        the DSPy state (demos, instructions), without LMs
    source/<file>.py    a file-defined program's source (kpdd.modules.saved)
    students/<id>/      each distinct student directory (kpdd.json + LoRA adapter), copied in

Paths are relative, so the directory can be copied anywhere; the base model comes from its alias (the shipped
student) or from a path recorded relative to the student.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import dspy

from kpdd.engines.lm import student_lm
from kpdd.errors import ConfigError
from kpdd.finetune.registry import LOCAL_PREFIX, registered_student
from kpdd.finetune.student import STUDENT_FILE, read_student
from kpdd.modules.one_call import ONE, PER_STAGE, OneCallProgram
from kpdd.modules.saved import MANIFEST, build_student_program, load_program, save_program, with_prompt_adapter
from kpdd.modules.student_format import adapter_for
from kpdd.references import LMRef, ProgramRef

STUDENTS = "students"


def _student_of(lm: dspy.LM | None, predictor: str):

    if lm is None or not lm.model.startswith(LOCAL_PREFIX):
        raise ConfigError(f"predictor {predictor!r} has no local student LM to save (got {getattr(lm, 'model', None)!r})")
    return registered_student(lm.model.removeprefix(LOCAL_PREFIX))


def save_compiled(program: dspy.Module, directory: str | Path, name: str | None = None) -> Path:
    """Save ``program`` (any program whose predictors run local students) with copies of its students; ``name``
    (optional) is checked against the program's reference (:func:`kpdd.modules.program_name`)."""
    directory = Path(directory)
    students: dict[str, str] = {}
    formats: set[str] = set()
    for predictor_name, predictor in program.named_predictors():
        ref = _student_of(predictor.lm or dspy.settings.lm, predictor_name)
        target = directory / STUDENTS / ref.model_id
        if ref.root is None:
            raise ConfigError(f"predictor {predictor_name!r} runs the bare base model {ref.base!r}: nothing to save")
        if not (target / STUDENT_FILE).is_file() and ref.root.resolve() != target.resolve():
            shutil.copytree(ref.root, target, ignore=shutil.ignore_patterns("checkpoints"), dirs_exist_ok=True)
            _rebase(target, ref)
        students[predictor_name] = f"{STUDENTS}/{ref.model_id}"
        formats.add(ref.prompt_format)
    if len(formats) > 1:
        raise ConfigError(f"the program's students were trained on different prompt formats ({sorted(formats)})")
    return save_program(program, directory, name, students=students, prompt_format=formats.pop(),
                        student_calls=ONE if isinstance(program, OneCallProgram) else PER_STAGE,
                        repeated=getattr(program, "repeated", []))


def _rebase(target: Path, ref) -> None:
    """A copied student whose base is a relative path must point at the same base from its new place."""
    manifest = json.loads((target / STUDENT_FILE).read_text())
    if not (target / manifest["base"]).exists() and ref.base_path.exists():
        manifest["base"] = str(ref.base_path)
        (target / STUDENT_FILE).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")


def load_compiled(directory: str | Path | ProgramRef | LMRef, engine: Any = "transformers", **lm_kwargs) -> dspy.Module:
    """The program saved by :func:`save_compiled`, each predictor set to its student's LM. ``directory``: a
    compiled-program directory, or a reference to one."""
    if isinstance(directory, (ProgramRef, LMRef)) and directory.is_compiled:
        directory = directory.path
    directory = Path(directory)
    manifest_path = directory / MANIFEST
    if not manifest_path.is_file():
        raise ConfigError(f"{directory}: not a compiled kpdd program (no {MANIFEST})")
    manifest = json.loads(manifest_path.read_text())
    program = load_program(directory)
    lms: dict[str, dspy.LM] = {}
    formats = set()
    for predictor_name, predictor in program.named_predictors():
        relative = manifest.get("students", {}).get(predictor_name)
        if relative is None:
            raise ConfigError(f"{manifest_path}: no student for predictor {predictor_name!r}")
        if relative not in lms:
            lms[relative] = student_lm(directory / relative, engine=engine, **lm_kwargs)
            formats.add(read_student(directory / relative).prompt_format)
        predictor.lm = lms[relative]
    return with_prompt_adapter(program, adapter_for(manifest.get("prompt_format") or formats.pop()))


def program_with_student(program: str | ProgramRef, student: str | Path | LMRef, engine: Any = "transformers",
                         **lm_kwargs) -> dspy.Module:
    """A fresh program (a built-in or code reference) whose every predictor runs one local student (a multitask
    student, or a base model)."""
    ref = read_student(student)
    program = build_student_program(program, ref.student_calls, ref.repeated)
    program.set_lm(student_lm(ref, engine=engine, **lm_kwargs))
    if ref.root is not None:  # a trained student speaks its format; a bare base model takes the caller's
        with_prompt_adapter(program, adapter_for(ref.prompt_format))
    return program
