"""Saved programs, the programs students run (per stage or in one call) and the adapter they run with.

A saved program is its DSPy JSON state (demos, instructions; no LMs, no pickle) beside a small manifest naming
the registry program, so :func:`load_program` can rebuild it. :func:`save_program` and :func:`load_program`
share ``MANIFEST``.
"""

from __future__ import annotations

import json
from pathlib import Path

import dspy

from kpdd.errors import ConfigError
from kpdd.modules.one_call import ONE, PER_STAGE, STUDENT_CALLS, OneCallProgram
from kpdd.modules.registry import build_program, program_name
from kpdd.modules.student_format import STUDENT, adapter_for


def student_adapter(prompt_format: str = STUDENT) -> dspy.ChatAdapter:
    """The adapter students run with (never a JSON fallback: a second call with a prompt never trained on)."""
    return adapter_for(prompt_format)


MANIFEST = "kpdd-program.json"


def build_student_program(name: str, student_calls: str = PER_STAGE, repeated: list[str] | tuple = ()) -> dspy.Module:
    """A fresh registry program as a student runs it: per stage, or (multi-stage programs) in one call."""
    program = build_program(name)
    if student_calls not in STUDENT_CALLS:
        raise ConfigError(f"student calls {student_calls!r}: expected {' or '.join(STUDENT_CALLS)}")
    if student_calls == ONE and len(program.named_predictors()) > 1:
        return OneCallProgram(program, repeated)
    return program


def save_program(program: dspy.Module, directory: str | Path, name: str, **meta) -> Path:
    """Save a program's DSPy state (demos, instructions) and which registry program it is; ``meta`` goes into the
    manifest (the students, and for compiled students their prompt format, call mode and repeated predictors)."""
    if name != program_name(program):
        raise ConfigError(f"program is a {program_name(program)!r}, not {name!r}")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = program.dump_state()
    for predictor_state in state.values():  # LMs travel separately (kpdd.engines.compiled): no engine paths here
        if isinstance(predictor_state, dict):
            predictor_state["lm"] = None
    (directory / "program.json").write_text(json.dumps(state, indent=2, ensure_ascii=False))
    (directory / MANIFEST).write_text(json.dumps({"program": name, "state": "program.json", **meta}, indent=2))
    return directory


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
        name, path = manifest["program"], path / manifest["state"]
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
    """The registry name of the program saved in ``directory``."""
    return json.loads((Path(directory) / MANIFEST).read_text())["program"]
