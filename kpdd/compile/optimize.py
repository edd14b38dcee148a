"""Teacher optimisation: compile a program on a teacher LM with any DSPy optimizer, metric = answer correctness.

The optimised program is saved as DSPy JSON state (``program.save``) beside a small manifest naming the
registry program, so :func:`load_program` can rebuild it; no pickle.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import dspy

from kpdd.errors import ConfigError, unknown_name
from kpdd.modules import answer_metric, build_program
from kpdd.modules.metric import answer_feedback_metric
from kpdd.modules.one_call import ONE, PER_STAGE, STUDENT_CALLS, OneCallProgram


def _bootstrap(metric, **kw):
    return dspy.BootstrapFewShot(metric=metric, max_bootstrapped_demos=kw.get("demos", 4),
                                 max_labeled_demos=kw.get("demos", 4))


def _random_search(metric, **kw):
    return dspy.BootstrapFewShotWithRandomSearch(metric=metric, max_bootstrapped_demos=kw.get("demos", 4),
                                                 max_labeled_demos=kw.get("demos", 4),
                                                 num_candidate_programs=kw.get("candidates", 8),
                                                 num_threads=kw.get("threads", 8))


def _mipro(metric, **kw):
    return dspy.MIPROv2(metric=metric, auto=kw.get("auto", "light"), num_threads=kw.get("threads", 8),
                        seed=kw.get("seed", 0))


def _gepa(metric, **kw):
    if kw.get("reflection_lm") is None:
        raise ConfigError("optimizer 'gepa' needs a reflection LM (--reflection-lm, e.g. a strong model string)")
    return dspy.GEPA(metric=answer_feedback_metric, reflection_lm=kw["reflection_lm"], auto=kw.get("auto", "light"),
                     num_threads=kw.get("threads", 8), seed=kw.get("seed", 0))


OPTIMIZERS: dict[str, Callable] = {
    "bootstrap-fewshot": _bootstrap,
    "bootstrap-random-search": _random_search,
    "mipro": _mipro,
    "gepa": _gepa,
}


def optimize(program: dspy.Module, teacher: dspy.LM, trainset: list[dspy.Example], optimizer: str = "bootstrap-fewshot",
             valset: list[dspy.Example] | None = None, **optimizer_kwargs) -> dspy.Module:
    """A new program compiled on ``teacher``; ``program`` itself is left unchanged."""
    if optimizer not in OPTIMIZERS:
        raise unknown_name("optimizer", optimizer, OPTIMIZERS)
    student = program.deepcopy()
    with dspy.context(lm=teacher):  # some optimizers read the LM when they are built (MIPROv2)
        teleprompter = OPTIMIZERS[optimizer](answer_metric, **optimizer_kwargs)
        if optimizer in ("mipro", "gepa"):
            return teleprompter.compile(student, trainset=trainset, valset=valset)
        return teleprompter.compile(student, trainset=trainset)


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
    from kpdd.modules import program_name

    if name != program_name(program):
        raise ConfigError(f"program is a {program_name(program)!r}, not {name!r}")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = program.dump_state()
    for predictor_state in state.values():  # LMs travel separately (kpdd.finetune.compiled): no engine paths here
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
