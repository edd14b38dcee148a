"""Saved programs, the programs students run (per stage or in one call) and the adapter they run with.

A saved program is its DSPy JSON state (demos, instructions; no LMs, no pickle) beside a small manifest naming
the program by its reference (:mod:`kpdd.modules.reference`), so :func:`load_program` can rebuild it in a fresh
process on another machine: a registry name or an importable ``package.module:Class`` as it is, and a program
defined in a file (``file.py:Class``, or a script's class) with a copy of that file under ``source/``, as MLflow's
models-from-code keeps its file. :func:`save_program` and :func:`load_program` share ``MANIFEST``.
"""

from __future__ import annotations

import functools
import json
import shutil
from pathlib import Path

import dspy

from kpdd.errors import ConfigError
from kpdd.modules.one_call import ONE, PER_STAGE, STUDENT_CALLS, OneCallProgram
from kpdd.modules.programs import KpddProgram
from kpdd.modules.reference import REFERENCE_ATTR
from kpdd.modules.registry import build_program, program_name
from kpdd.modules.student_format import STUDENT, adapter_for
from kpdd.references import MANIFEST, ProgramRef, is_file_reference


def student_adapter(prompt_format: str = STUDENT) -> dspy.ChatAdapter:
    """The adapter students run with (never a JSON fallback: a second call with a prompt never trained on)."""
    return adapter_for(prompt_format)


SOURCE = "source"  # the copied file of a file-defined program


@functools.cache
def _speaking(cls: type) -> type:
    """``cls`` with :class:`KpddProgram`'s ``prompt_adapter`` (same name and module, so it saves as ``cls``)."""
    return type(cls.__name__, (KpddProgram, cls), {"__module__": cls.__module__, "__qualname__": cls.__qualname__})


def with_prompt_adapter(program: dspy.Module, adapter: dspy.Adapter | None) -> dspy.Module:
    """Make ``program`` run with ``adapter`` wherever it is called. Built-in programs are ``KpddProgram``s; a user's
    class gets the same behaviour through a subclass (its predictors, names and state stay the same)."""
    if not isinstance(program, KpddProgram):
        setattr(program, REFERENCE_ATTR, program_name(program))
        program.__class__ = _speaking(type(program))
    program.prompt_adapter = adapter
    return program


def build_student_program(name: str | ProgramRef, student_calls: str = PER_STAGE,
                          repeated: list[str] | tuple = ()) -> dspy.Module:
    """A fresh program (any reference) as a student runs it: per stage, or (multi-stage programs) in one call."""
    return as_student_program(build_program(name), student_calls, repeated)


def as_student_program(program: dspy.Module, student_calls: str = PER_STAGE,
                       repeated: list[str] | tuple = ()) -> dspy.Module:
    """``program`` as a student runs it: itself (per stage, or one predictor), or its stages in one call."""
    if student_calls not in STUDENT_CALLS:
        raise ConfigError(f"student calls {student_calls!r}: expected {' or '.join(STUDENT_CALLS)}")
    if student_calls == ONE and len(program.named_predictors()) > 1:
        return OneCallProgram(program, repeated)
    return program


def save_program(program: dspy.Module, directory: str | Path, name: str | None = None, **meta) -> Path:
    """Save a program's DSPy state (demos, instructions) and the reference that rebuilds it (``name``, checked
    against the program, or the program's own); ``meta`` goes into the manifest (the students, and for compiled
    students their prompt format, call mode and repeated predictors)."""
    reference = program_name(program)
    if name is not None and name != reference:
        raise ConfigError(f"program is a {reference!r}, not {name!r}")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = program.dump_state()
    for predictor_state in state.values():  # LMs travel separately (kpdd.engines.compiled): no engine paths here
        if isinstance(predictor_state, dict):
            predictor_state["lm"] = None
    (directory / "program.json").write_text(json.dumps(state, indent=2, ensure_ascii=False))
    manifest = {"program": reference, "state": "program.json", **meta}
    if is_file_reference(reference):
        source = Path(reference.rpartition(":")[0]).expanduser()
        copy = directory / SOURCE / source.name
        copy.parent.mkdir(exist_ok=True)
        if source.resolve() != copy.resolve():
            shutil.copyfile(source, copy)
        manifest["source"] = f"{SOURCE}/{source.name}"
    (directory / MANIFEST).write_text(json.dumps(manifest, indent=2))
    return directory


def saved_reference(directory: str | Path) -> str:
    """The reference that rebuilds the program saved in ``directory`` (its copied source file, if it has one)."""
    manifest = json.loads((Path(directory) / MANIFEST).read_text())
    if manifest.get("source"):
        return f"{Path(directory) / manifest['source']}:{manifest['program'].rpartition(':')[2]}"
    return manifest["program"]


def load_program(path: str | Path, name: str | None = None) -> dspy.Module:
    """Rebuild a program saved by :func:`save_program` (a directory), or load a bare state JSON into ``name``."""
    path = Path(path)
    if path.is_dir():
        manifest_path = path / MANIFEST
        if not manifest_path.is_file():
            raise ConfigError(f"{path}: not a saved kpdd program (no {MANIFEST})")
        manifest = json.loads(manifest_path.read_text())
        if name and manifest["program"] != name:
            raise ConfigError(f"{path} holds a {manifest['program']!r} program, not {name!r}")
        name, path = saved_reference(path), path / manifest["state"]
        calls, repeated = manifest.get("student_calls", PER_STAGE), manifest.get("repeated", [])
    else:
        calls, repeated = PER_STAGE, []
    if not path.is_file():
        raise ConfigError(f"saved program {path} does not exist")
    if name is None:
        raise ConfigError(f"{path}: a bare program state needs the program name (e.g. --program kpdd-pot)")
    program = build_student_program(name, calls, repeated)
    program.load_state(json.loads(path.read_text()))
    return program


def manifest_program(directory: str | Path) -> str:
    """The reference of the program saved in ``directory`` (as saved: a copied source file is not in it)."""
    return json.loads((Path(directory) / MANIFEST).read_text())["program"]
