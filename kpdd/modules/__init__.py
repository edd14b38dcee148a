"""Signatures and reasoning programs (KPDD-CoT, KPDD-PoT, Socratic CoT and baselines)."""

from kpdd.modules.metric import answer_metric
from kpdd.modules.programs import (
    ChainOfThoughtBaseline,
    DirectAnswer,
    KeyPoints,
    KPDDCoT,
    KPDDPoT,
    ProgramOfThoughtBaseline,
    SocraticCoT,
)
from kpdd.modules.registry import PROGRAMS, build_program, program_class, program_name
from kpdd.modules.signatures import (
    AnswerSubQuestion,
    ChainOfThoughtSig,
    CoreQuestion,
    Decompose,
    DirectAnswerSig,
    ProblemInfo,
    ProgramOfThoughtSig,
    SolveCoT,
    SolvePoT,
)

__all__ = [
    "AnswerSubQuestion", "ChainOfThoughtBaseline", "ChainOfThoughtSig", "CoreQuestion", "Decompose",
    "DirectAnswer", "DirectAnswerSig", "KeyPoints", "KPDDCoT", "KPDDPoT", "PROGRAMS", "ProblemInfo",
    "ProgramOfThoughtBaseline", "ProgramOfThoughtSig", "SocraticCoT", "SolveCoT", "SolvePoT",
    "answer_metric", "build_program", "program_class", "program_name",
]
