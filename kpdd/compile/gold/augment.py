"""Program-checked variants of gold traces: new numbers in a question, the same program, a newly known answer.

A gold program (:mod:`kpdd.compile.gold.programs`) declares each question quantity it reads as a variable
(``duck_eggs_per_day = 16``) and computes the answer from those variables. A *variant* gives some of these
quantities new values of the same kind and magnitude, writes them into the question at the places the program
reads them, rewrites every stage of the trace from the new question (the core question and key points are
re-derived from it exactly as the gold teacher derives them; the program's given lines get the new values) and
reruns the program in the sandbox: its value is the variant's answer. :func:`check_variant` and
:func:`answer_problem` decide which variants are kept; each rejected candidate gets one countable reason.

New values (:func:`new_value`): only numbers written with digits change (words such as 'three' or 'twice' stay);
values below 2 and years stay, and none goes below 2. Integers keep their number of digits and trailing zeros
(300 → 700), within half to twice the value, and in half the draws their divisors among 2, 3, 4 and 5 (48 → 36);
percentages stay whole percentages in the same range, under 100 % when the original was; decimals and money keep
their decimal places ($2.50 → $3.75); a '$', thousands separators and a '%' are kept. A number whose value another
number of the question shares stays: which one the program reads is a guess of the gold heuristics (Jane's base
coat takes 2 minutes and she applies two coats). Methods whose outputs are prose (``cot``, ``kpdd-cot``,
``socratic``) are not
supported: their reasoning states the old calculations, and kpdd does not rewrite prose arithmetic.

A variant is only as right as the gold program's reading of its question: where the heuristics bound a number
to the wrong role, the variant's answer follows the program, not the problem.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from kpdd.compile.gold import language as gold_language
from kpdd.compile.gold.calculations import WRITTEN_NUMBER, NoTrace, format_number
from kpdd.compile.gold.programs import ProgramBuilder, equation_builder, question_quantities, rationale_builder
from kpdd.compile.store import VARIANT_MARK
from kpdd.errors import ConfigError

AUGMENT_VERSION = "augment/1"
SUPPORTED_METHODS = ("kpdd-pot", "pot", "direct")
_GIVEN = re.compile(r"^([A-Za-z_]\w*) = (-?\d+(?:\.\d+)?)$", re.MULTILINE)
# Stage fields a variant re-derives from its question; any other field cannot be kept consistent.
_REWRITTEN = {"question", "core_question", "key_points", "program", "answer"}


def check_method(method: str) -> None:
    if method not in SUPPORTED_METHODS:
        raise ConfigError(f"kpdd augment supports {', '.join(SUPPORTED_METHODS)}, not {method!r}: the reasoning "
                          "of CoT and Socratic traces states the old calculations in prose, which kpdd does not "
                          "rewrite (train those methods on gold traces, or augment a PoT program)")


@dataclass(frozen=True)
class Change:
    """One number changed in the question: where, from what to what, and the program variable reading it."""

    start: int
    end: int
    old: str
    new: str
    value: float
    variable: str  # the program's variable that reads it

    def as_meta(self) -> dict[str, Any]:
        return {"variable": self.variable, "old": self.old, "new": self.new}


@dataclass
class Source:
    """A verified gold trace with what a variant needs: the quantities its program reads."""

    example: Any  # dspy.Example
    stages: list[dict]
    builder: ProgramBuilder
    answer_expression: str

    @property
    def program(self) -> str:
        return self.builder.program(self.answer_expression)


@dataclass
class Variant:
    source_id: str
    question: str
    program: str
    changes: list[Change]
    answer: float | None = None
    stages: list[dict] = field(default_factory=list)

    @property
    def question_id(self) -> str:
        key = json.dumps([c.as_meta() for c in self.changes], sort_keys=True)
        return f"{self.source_id}{VARIANT_MARK}{hashlib.sha256(key.encode()).hexdigest()[:8]}"


# Sources ------------------------------------------------------------------------------------------------

def source_of(example, stages: list[dict]) -> Source:
    """The builder behind a gold trace's program; raises NoTrace when it cannot be rebuilt identically."""
    rationale, equation = getattr(example, "rationale", None), getattr(example, "equation", None)
    if rationale:
        builder, answer = rationale_builder(example.question, rationale, example.answer)
    elif equation:
        builder, answer = equation_builder(example.question, equation, example.answer)
    else:
        raise NoTrace("no rationale or equation")
    source = Source(example, stages, builder, answer)
    written = [s["outputs"]["program"] for s in stages if "program" in s["outputs"]]
    if written and written[0] != source.program:
        raise NoTrace("gold program not reproducible")
    return source


# New values ---------------------------------------------------------------------------------------------

def _is_year(value: float, text: str) -> bool:
    return text.isdigit() and len(text) == 4 and 1800 <= value <= 2100


def new_value(text: str, rng: random.Random) -> tuple[str, float] | None:
    """A new number of the same kind and magnitude as ``text`` ('$2.50', '80%', '1,200', '12'), as (text,
    value); None when the number should stay (see the module docstring)."""
    match = WRITTEN_NUMBER.fullmatch(text)
    if not match:
        return None  # a number word
    dollar, digits, decimals, percent = match.groups()
    value = float(digits.replace(",", "") + (decimals or ""))
    places = len(decimals) - 1 if decimals else 0
    if value < 2 or _is_year(value, digits):
        return None
    choices = _choices(round(value * 10**places), places, bool(percent) and value < 100, rng)
    if not choices:
        return None
    new = rng.choice(choices) / 10**places
    number = f"{new:,.{places}f}" if "," in digits else f"{new:.{places}f}"
    return f"{dollar}{number}{percent}", new


def _choices(scaled: int, places: int, under_100_percent: bool, rng: random.Random) -> list[int]:
    """New values for a number written as the integer ``scaled`` in units of its last decimal place."""
    digits = len(str(scaled))
    step = 10 ** min(digits - len(str(scaled).rstrip("0")), digits - 1)  # keep the trailing zeros
    low, high = max(math.ceil(scaled / 2), 2 * 10**places), 2 * scaled  # never below 2: '1 muffins' reads wrong
    if not places:  # integers keep their number of digits
        low, high = max(low, 10 ** (digits - 1)), min(high, 10**digits - 1)
    if under_100_percent:
        high = min(high, 99 * 10**places)
    choices = [n for n in range(math.ceil(low / step) * step, high + 1, step) if n != scaled]
    # Half the draws keep the original's small divisors, which keeps the problem's divisions whole (half of 48,
    # a third of 90); the other half keep the variety.
    divisors = [d for d in (2, 3, 4, 5) if scaled % d == 0] if rng.random() < 0.5 else []
    return [c for c in choices if all(c % d == 0 for d in divisors)] or choices


def draw_changes(source: Source, rng: random.Random) -> list[Change]:
    """New values for the quantities the program reads whose value no other number of the question shares."""
    quantities = source.builder.quantities
    values = Counter(q.value for q in quantities)
    changes = []
    for index, variable in sorted(source.builder.declared.items()):
        quantity = quantities[index]
        drawn = new_value(quantity.text, rng) if values[quantity.value] == 1 else None
        if drawn:
            changes.append(Change(quantity.start, quantity.end, quantity.text, drawn[0], drawn[1], variable))
    return changes


def changeable(source: Source) -> bool:
    """Whether any number the program reads can change (else every candidate would be the question itself)."""
    return bool(draw_changes(source, random.Random(0)))


# Variants -----------------------------------------------------------------------------------------------

def make_variant(source: Source, changes: list[Change]) -> Variant:
    """The question and program with ``changes`` applied (the answer comes from running the program)."""
    question = source.example.question
    for change in reversed(changes):
        question = question[: change.start] + change.new + question[change.end:]
    new_values = {c.variable: c.value for c in changes}
    program = _GIVEN.sub(lambda m: f"{m.group(1)} = {format_number(new_values[m.group(1)])}"
                         if m.group(1) in new_values else m.group(0), source.program)
    return Variant(source.example.id, question, program, changes)


def given_values(program: str) -> dict[str, float]:
    """The program's given lines (``name = number``) as {name: value}."""
    return {name: float(value) for name, value in _GIVEN.findall(program)}


def check_variant(source: Source, variant: Variant) -> str | None:
    """Why the variant's question does not match its program, or None: every variable the program reads from the
    question must equal the number that stands where the source's program read it."""
    quantities = question_quantities(variant.question)
    if len(quantities) != len(source.builder.quantities):
        return "question mismatch: numbers moved"
    given = given_values(variant.program)
    for index, variable in source.builder.declared.items():
        if given.get(variable) != quantities[index].value:
            return "question mismatch: program reads another value"
    changed = {c.variable for c in variant.changes}
    if not changed or all(given[v] == source.builder.quantities[i].value
                          for i, v in source.builder.declared.items() if v in changed):
        return "no number changed"
    return None


def answer_problem(value: float | None, original: float) -> str | None:
    """Why a variant's answer is not sensible, or None: finite; a non-negative whole number where the original
    was one; not negative or zero where the original was not."""
    if value is None or not math.isfinite(value):
        return "answer not finite"
    if value < 0 <= original:
        return "answer negative"
    if value == 0 != original:
        return "answer zero"
    if float(original).is_integer() and not round(value, 6).is_integer():
        return "answer not a whole number"
    return None


def variant_answer(value: float, original: float) -> float:
    """The recorded answer: a whole number where the original was one (floating-point noise dropped)."""
    return float(round(value)) if float(original).is_integer() else round(value, 6)


def rewrite_stages(source: Source, variant: Variant) -> list[dict]:
    """Every stage of the source trace, its fields re-derived from the variant's question and program."""
    core_question, key_points = gold_language.core_question_and_key_points(variant.question)
    values = {"question": variant.question, "core_question": core_question, "key_points": key_points,
              "program": variant.program, "answer": format_number(variant.answer)}
    stages = []
    for stage in source.stages:
        fields = {**stage["inputs"], **stage["outputs"]}
        kept = set(fields) - _REWRITTEN
        if kept:
            raise ConfigError(f"stage {stage['predictor']!r} has fields {sorted(kept)} that augment cannot rewrite")
        stages.append({"predictor": stage["predictor"],
                       "inputs": {k: values[k] for k in stage["inputs"]},
                       "outputs": {k: values[k] for k in stage["outputs"]}})
    return stages


def candidates(source: Source, seed: int, start: int, count: int) -> list[Variant]:
    """Candidates ``start`` .. ``start + count - 1`` of a source, each from its own seeded draw (so a rerun or
    another batch size draws the same ones)."""
    drawn = []
    for attempt in range(start, start + count):
        rng = random.Random(f"{seed}:{source.example.id}:{attempt}")
        drawn.append(make_variant(source, draw_changes(source, rng)))
    return drawn


def as_trace(source: Source, variant: Variant) -> dict[str, Any]:
    """The trace-store record of a kept variant (its own question id and gold; its source in meta)."""
    return {"question_id": variant.question_id, "gold": variant.answer, "question": variant.question,
            "stages": variant.stages, "answer": variant.answer,
            "meta": {"source_question_id": variant.source_id, "substitution": [c.as_meta() for c in variant.changes],
                     "source_answer": source.example.answer, "augment": AUGMENT_VERSION}}
