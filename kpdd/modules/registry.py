"""Program registry: the short names of the built-in programs; any other program is named by a code reference
(``package.module:Class`` or ``path/to/file.py:Class``, see :mod:`kpdd.modules.reference`)."""

import dspy

from kpdd.errors import unknown_name
from kpdd.modules.reference import build_reference, is_code_reference, program_reference
from kpdd.modules.programs import (
    ChainOfThoughtBaseline,
    DirectAnswer,
    KPDDCoT,
    KPDDPoT,
    ProgramOfThoughtBaseline,
    SocraticCoT,
)

PROGRAMS: dict[str, type[dspy.Module]] = {
    "kpdd-cot": KPDDCoT,
    "kpdd-pot": KPDDPoT,
    "socratic": SocraticCoT,
    "cot": ChainOfThoughtBaseline,
    "pot": ProgramOfThoughtBaseline,
    "direct": DirectAnswer,
}


def program_class(name: str) -> type[dspy.Module]:
    if name not in PROGRAMS:
        raise unknown_name("program", name, [*PROGRAMS, "package.module:Class", "path/to/file.py:Class"])
    return PROGRAMS[name]


def build_program(reference: str) -> dspy.Module:
    """A fresh, uncompiled instance of the referenced program (a registry name or a code reference)."""
    if is_code_reference(reference):
        return build_reference(reference)
    return program_class(reference)()


def program_name(program: dspy.Module) -> str:
    """The reference that rebuilds a program instance: its registry name for a built-in, else its code reference
    (a one-call program: its stages')."""
    from kpdd.modules.one_call import OneCallProgram

    if isinstance(program, OneCallProgram):
        return program_name(program.program)
    return program_reference(program, PROGRAMS)
