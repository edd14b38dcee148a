"""Program registry: the names the CLI and configs use."""

import dspy

from kpdd.errors import unknown_name
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
        raise unknown_name("program", name, PROGRAMS)
    return PROGRAMS[name]


def build_program(name: str) -> dspy.Module:
    """A fresh, uncompiled instance of the named program."""
    return program_class(name)()


def program_name(program: dspy.Module) -> str:
    """The registry name of a program instance (its class must be registered; a one-call program: its stages')."""
    from kpdd.modules.one_call import OneCallProgram

    if isinstance(program, OneCallProgram):
        return program_name(program.program)
    for name, cls in PROGRAMS.items():
        if type(program) is cls:
            return name
    raise unknown_name("program class", type(program).__name__, [c.__name__ for c in PROGRAMS.values()])
