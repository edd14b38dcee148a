"""Program registry: the built-in programs by their short names (:data:`kpdd.references.BUILTIN_PROGRAMS`); any
other program is named by a code reference (``package.module:Class`` or ``path/to/file.py:Class``, see
:mod:`kpdd.modules.reference`)."""

import dspy

from kpdd.errors import ConfigError, unknown_name
from kpdd.modules.reference import build_reference, program_reference, resolve_object
from kpdd.references import BUILTIN, BUILTIN_PROGRAMS, ProgramRef, parse_program

PROGRAMS: dict[str, type[dspy.Module]] = {name: resolve_object(target) for name, target in BUILTIN_PROGRAMS.items()}


def program_class(name: str) -> type[dspy.Module]:
    if name not in PROGRAMS:
        raise unknown_name("program", name, [*PROGRAMS, "package.module:Class", "path/to/file.py:Class"])
    return PROGRAMS[name]


def build_program(reference: str | ProgramRef) -> dspy.Module:
    """A fresh, uncompiled instance of the referenced program (a built-in or a code reference)."""
    ref = parse_program(reference)
    if ref.is_compiled:
        raise ConfigError(f"{ref.text} is a compiled program, not a program to build: load it with "
                          "kpdd.load (kpdd.engines.compiled.load_compiled), or name its program")
    return program_class(ref.text)() if ref.kind == BUILTIN else build_reference(ref.text)


def program_name(program: dspy.Module) -> str:
    """The reference that rebuilds a program instance: its registry name for a built-in, else its code reference
    (a one-call program: its stages')."""
    from kpdd.modules.one_call import OneCallProgram

    if isinstance(program, OneCallProgram):
        return program_name(program.program)
    return program_reference(program, PROGRAMS)
