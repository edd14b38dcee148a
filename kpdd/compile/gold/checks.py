"""Whether a gold trace's key points state every quantity its solution reads.

A literal a solution reads (a given line of a program, a number in its computed lines, a number a rationale's
calculations take from the problem rather than from an earlier result) is *stated* by a text when the text
writes its value: in digits, as a number word, a multiplier ('twice' 2), a fraction ('one-third': 3 and 1/3,
'1/4': 1, 4 and 0.25), or 'both'/'pair' (2). A unit's size (60 with 'minutes', 7 with 'week', 100 with '%') is
world knowledge, stated when the text names the unit as a whole word ('day' is no part of 'Daytona'); 0 and 1 need
no statement. The gold teacher drops a PoT
program that keeps a literal its question does not state; ``benchmarks/bench_gold_faithfulness.py`` counts the
kept traces whose key points state every literal.
"""

from __future__ import annotations

import re

from kpdd.compile.gold.calculations import line_calculations, rationale_lines
from kpdd.compile.gold.programs import question_quantities
from kpdd.compile.gold.wording import UNIT_SIZES, names_unit

__all__ = ["UNIT_SIZES", "is_stated", "key_points_unstated", "names_unit", "program_literals", "rationale_literals",
           "reads_stating", "stated_values", "trace_unstated", "unstated"]

_GIVEN = re.compile(r"^[A-Za-z_]\w* = (-?\d+(?:\.\d+)?)$")
_LITERAL = re.compile(r"(?<![\w.])\d+(?:\.\d+)?(?![\w.])")
_IMPLIED = {2: r"\b(?:both|pair|pairs|couple|twins?|round.?trip|back and forth|there and back)\b"}



def stated_values(text: str) -> set[float]:
    """The values a text writes (see the module docstring)."""
    values = set()
    for q in question_quantities(text):
        values.add(q.value)
        if q.hundredths:  # '20%' is also 0.2
            values.add(round(q.value / 100, 6))
        if q.kind == "fraction" and "/" not in q.text:
            values.add(round(1 / q.value, 6))
    for numerator, denominator in re.findall(r"(?<![\d.])(\d+)\s*/\s*(\d+)(?![\d.])", text):
        if float(denominator):
            values.add(round(float(numerator) / float(denominator), 6))
    # Digits glued to a unit ('10ml', '5kg') or the parts of a ratio ('10:45') state their values too.
    values |= {float(n) for n in re.findall(r"(?<![\d.])\d+(?:\.\d+)?|(?<![\w.])\.\d+", text.replace(",", ""))}
    for value, pattern in _IMPLIED.items():
        if re.search(pattern, text, re.IGNORECASE):
            values.add(float(value))
    return values


def is_stated(literal: float, text: str, values: set[float] | None = None) -> bool:
    """Whether ``text`` states ``literal`` or names the unit whose size it is (0 and 1 always)."""
    literal = round(float(literal), 6)
    values = stated_values(text) if values is None else values
    return literal in {0.0, 1.0} or literal in values or names_unit(literal, text)


def program_literals(program: str) -> list[str]:
    """Every number a program reads: its given lines' values and the literals of its computed lines (the
    denominator of '/ 100', a percentage, aside)."""
    literals = []
    for line in program.splitlines():
        if given := _GIVEN.match(line):
            literals.append(given.group(1))
        elif " = " in line:
            expression = line.split(" = ", 1)[1]
            literals += [m.group() for m in _LITERAL.finditer(expression)
                         if not (m.group() == "100" and expression[: m.start()].rstrip().endswith("/"))]
    return literals


def rationale_literals(rationale: str, question: str = "") -> list[str]:
    """The numbers a rationale's calculations read that are no result of an earlier calculation, nor a number an
    earlier line works out in prose ('In one hour, there are 3 sets of 20 minutes.') that ``question`` does not
    state; a calculation that only restates its result ('x=<<38=38>>38') reads nothing."""
    results, literals, written = set(), [], set()
    in_question = stated_values(question) if question else set()
    for line in rationale_lines(rationale):
        for calculation in line_calculations(line):
            if len(calculation.tokens) == 1 and calculation.result == float(calculation.tokens[0]):
                results.add(round(calculation.result, 6))
                continue  # a result restated, worked out in prose before it: '2006-1992 = <<14=14>>14'
            literals += [t for t in calculation.tokens if t[0].isdigit() and round(float(t), 6) not in results
                         and (round(float(t), 6) in in_question or round(float(t), 6) not in written)]
            if calculation.result is not None:
                results.add(round(calculation.result, 6))
        written |= {round(float(n), 6) for n in re.findall(r"\d+(?:\.\d+)?", line.replace(",", ""))}
    return literals


def unstated(literals: list[str], text: str) -> list[str]:
    """The literals ``text`` does not state."""
    values = stated_values(text)
    return [literal for literal in literals if not is_stated(float(literal), text, values)]


def key_points_unstated(literals: list[str], key_points: list[str], core_question: str) -> list[str]:
    """The literals that KPDD key points and their core question do not state."""
    return unstated(literals, " ".join([*key_points, core_question]))


def trace_unstated(stages: list[dict], rationale: str | None = None) -> list[str]:
    """The literals a KPDD trace's solution reads that its key points and core question do not state: the
    program's (KPDD-PoT), else the rationale's (KPDD-CoT)."""
    inputs = stages[-1]["inputs"]
    program = stages[-1]["outputs"].get("program")
    literals = program_literals(program) if program else rationale_literals(rationale or "", inputs["question"])
    return key_points_unstated(literals, inputs["key_points"], inputs["core_question"])


def reads_stating(question: str, reads: set[int], literals: list[str]) -> set[int]:
    """``reads`` and the question quantities that state a literal no read quantity states, so that the key
    points built from them state every literal the solution reads."""
    quantities = question_quantities(question)
    said = " ".join(quantities[i].text for i in reads)
    missing = {round(float(literal), 6) for literal in unstated(literals, said)}
    return set(reads) | {i for i, q in enumerate(quantities) if stated_values(q.text) & missing}
