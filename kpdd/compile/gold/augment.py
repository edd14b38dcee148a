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
their decimal places ($2.50 → $3.75); a '$', thousands separators and a '%' are kept. Which numbers may change is
:func:`changeable_groups`: read by the answer, in one role only; a question whose program keeps a literal the
question does not explain, or whose reading of it is a guess a variant would inherit, is not varied
(:func:`unchangeable`). Methods whose outputs are prose (``cot``,
``kpdd-cot``, ``socratic``) are not supported: their reasoning states the old calculations, and kpdd does not
rewrite prose arithmetic.

A variant is only as right as the gold program's reading of its question: where the heuristics bound a number
to the wrong role, the variant's answer follows the program, not the problem.
"""

from __future__ import annotations

import ast
import hashlib
import json
import math
import random
import re
from collections import Counter
from dataclasses import dataclass, field
from functools import cached_property
from itertools import combinations
from typing import Any

from kpdd.compile.gold import checks
from kpdd.compile.gold import language as gold_language
from kpdd.compile.gold.checks import reads_stating
from kpdd.compile.gold.calculations import WRITTEN_NUMBER, NoTrace, format_number
from kpdd.compile.gold.programs import (
    ProgramBuilder,
    equation_builder,
    fraction_words,
    question_quantities,
    rationale_builder,
)
from kpdd.compile.store import VARIANT_MARK
from kpdd.eval.answers import is_correct
from kpdd.errors import ConfigError

AUGMENT_VERSION = "augment/10"
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

    @cached_property
    def changeable(self) -> list[list[int]]:
        """The quantities a variant may change, grouped by value (see :func:`changeable_groups`)."""
        return changeable_groups(self)


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


# Numbers a question states besides its quantities: parts of fractions ('1/4'), ordinals ('3rd'), clock times.
_OTHER_NUMBERS = re.compile(r"(\d+)\s*/\s*(\d+)|\b(\d+)(?:st|nd|rd|th)\b|\b(\d+):(\d+)")
# 'the 3 boys', 'all 4 friends', 'both': a number that refers back to people or things the text lists.
_REFERS_BACK = re.compile(r"\b(?:the|these|those|all|both|each of the|all of the)\s+$|\b(?:remaining|other|rest of the|"
                          r"last)\s+$", re.IGNORECASE)
# '6 of them both red hats and blue boots': an overlap bounded by the counts around it.
_OVERLAP = re.compile(r"\bboth\b.*\band\b|\bof them both\b", re.IGNORECASE)


def _fixed_values(source: Source) -> Counter:
    """How often each value stands in the question in any role: quantities, the denominators of fraction words
    ('half' 2, 'a third' 3), the parts of written fractions, ordinals and clock times."""
    question = source.example.question
    values = Counter(q.value for q in source.builder.quantities)
    values.update(q.value for q in fraction_words(question))
    values.update(float(n) for m in _OTHER_NUMBERS.finditer(question) for n in m.groups() if n)
    return values


def _in_a_sum(index: int, quantities, question: str) -> bool:
    """Whether a quantity is the total of three or more later ones, or one of them, that count the same thing
    ('7 brothers. 3 of them ..., 1 of them ..., 1 ..., and another 2 of them'): the text holds that sum, which a
    new value would break."""
    def counts(k: int) -> str:
        return " ".join(question[quantities[k].end:].split()[:2]).lower().rstrip(".,")

    values = [q.value if WRITTEN_NUMBER.fullmatch(q.text) else None for q in quantities]  # digits only
    remaining = {k for k, q in enumerate(quantities) if _REFERS_BACK.search(question[: q.start])
                 or re.search(r"\banother\s+$", question[: q.start], re.IGNORECASE)}  # 'for another 3 days'

    for total, value in enumerate(values):
        later = [(k, v) for k, v in enumerate(values[total + 1:], total + 1) if v and v < (value or 0)][:12]
        # Two parts make a sum when one is 'the remaining 5' (of 20 bags, 15 sold); else three or more.
        for size in range(2 if remaining & {k for k, _ in later} else 3, min(len(later), 5) + 1):
            for parts in combinations(later, size):
                same = sum(counts(k).startswith(("of them", "of these", "of those", counts(total).split(" ")[0]))
                           or k in remaining for k, _ in parts)
                if sum(v for _, v in parts) == value and 2 * same >= size and index in {total, *(k for k, _ in parts)}:
                    return True
    return False


def draw_changes(source: Source, rng: random.Random, some: bool = False) -> list[Change]:
    """New values for the quantities a variant may change (:func:`changeable_groups`), all of them or, with
    ``some``, a random part of them; the numbers of a group (the same number written twice: '2 dogs and 2 cats')
    all get the same new value, so whichever of them the program reads, it reads the new value."""
    groups = source.changeable
    if some and len(groups) > 1:  # fewer new numbers keep more of the source's divisions whole
        groups = sorted(rng.sample(groups, rng.randint(1, len(groups) - 1)))
    changes = []
    for group in groups:
        first = source.builder.quantities[group[0]]
        if drawn := new_value(first.text, rng):
            changes += [Change(q.start, q.end, q.text, drawn[0], drawn[1], source.builder.declared.get(k, ""))
                        for k in group for q in [source.builder.quantities[k]]]
    return sorted(changes, key=lambda c: c.start)


# A number that states how big a unit is, where the text names that unit: '30 days' with 'a month', '5 pennies'
# as the value of a nickel. A new value would change the world, not the problem.
_UNIT_SIZES = [(30, "days?", "month"), (31, "days?", "month"), (7, "days?", "week"), (24, "hours?", "day"),
               (60, "minutes?", "hour"), (60, "seconds?", "minute"), (12, "months?", "year"), (52, "weeks?", "year"),
               (365, "days?", "year"), (12, "inch(?:es)?", "foot|feet"), (3, "feet", "yard"), (16, "ounces?", "pound"),
               (100, "cents?|pennies", "dollar"), (5, "cents?|pennies", "nickel"), (10, "cents?|pennies", "dime"),
               (25, "cents?|pennies", "quarter"), (12, "\\w+", "dozen"),
               (1000, "\\w+", "thousand|kilo\\w*|liter|litre")]
# Counts the words of a question imply: a number of that value that the program reads twice may stand for it once.
_IMPLIED_COUNTS = {2: r"\bweekends?\b|\bpairs?\b|\btwice\b|\bdouble|\bboth\b|\bcouple\b|\btwins?\b",
                   5: r"\bweekdays?\b", 7: r"\bweeks?\b", 12: r"\bdozens?\b|\bmonths?\b|\byears?\b|\bfoot\b|\bfeet\b",
                   24: r"\bdays?\b|\bhours?\b", 60: r"\bhours?\b|\bminutes?\b", 3: r"\bthird\b|\btriple|\byards?\b",
                   4: r"\bquarters?\b"}
# A count per unit that a new value may not exceed: '9 days a week' does not exist.
_PER_UNIT = [("days?", "week", 7), ("days?", "month", 31), ("days?", "year", 366), ("hours?", "day", 24),
             ("months?", "year", 12), ("weeks?", "year", 52), ("minutes?", "hour", 60), ("seconds?", "minute", 60)]
_EQUIVALENCE = re.compile(r"\b(?:same (?:value|amount) as|(?:is|are) equal to|equals?|is worth|are worth|"
                          r"there are \S+ \w+ in (?:a|an|one|each))\b", re.IGNORECASE)


_CLOCK = re.compile(r"\s*(?:a\.?m\b|p\.?m\b|o'clock)", re.IGNORECASE)  # '6 P.M.': a time of day, not a count


def _sentence(question: str, quantity) -> str:
    return re.split(r"(?<=[.?!])\s", question[: quantity.start])[-1] + question[quantity.start:].split(". ")[0]


def _sizes_a_unit(quantity, question: str) -> bool:
    after = question[quantity.end:quantity.end + 20]
    sentence = _sentence(question, quantity)
    return bool(_EQUIVALENCE.search(sentence)) or any(
        quantity.value == size and re.match(rf"\s*-?(?:{small})\b", after, re.IGNORECASE)
        and re.search(rf"\b(?:{big})(?:e?s|ly)?\b", question, re.IGNORECASE) for size, small, big in _UNIT_SIZES)


def changeable_groups(source: Source) -> list[list[int]]:
    """The quantities a variant may change, grouped by value: some of a group is read by the answer; the value
    stands in no other role (not also a fraction's part, an ordinal or a 'half'), and where it is written more
    than once, it is written the same way each time; no member is a part or the total of a sum the text holds,
    'the 3 boys' (a count of what the text lists), a time of day ('6 P.M.'), the size of a unit the text names
    ('30 days' and 'a month', 'the same value as 5 pennies'). (A number the rationale may have meant as a result
    of the same value has no source: the gold teacher drops its question.)"""
    quantities, question, declared = source.builder.quantities, source.example.question, source.builder.declared
    answer_reads = read_by_answer(source.program)
    other_roles = _fixed_values(source) - Counter(q.value for q in quantities)
    by_value: dict[float, list[int]] = {}
    for index, quantity in enumerate(quantities):
        by_value.setdefault(quantity.value, []).append(index)

    def free(index: int) -> bool:
        q = quantities[index]
        # 50 % is its own complement: whether the source's reading took it or 100 % - it cannot be told.
        return WRITTEN_NUMBER.fullmatch(q.text) is not None and not (q.value == 50 and q.text.endswith("%")) \
            and not _in_a_sum(index, quantities, question) and not _REFERS_BACK.search(question[: q.start]) \
            and not _CLOCK.match(question[q.end:]) and not _sizes_a_unit(q, question) \
            and not _OVERLAP.search(_sentence(question, q))

    names = re.findall(r"[A-Za-z_]\w*", "\n".join(source.builder.statements))

    def implied_count(index: int) -> bool:  # Erwin's '2 chocolates' read again for the 2 days of 'weekends'
        pattern = _IMPLIED_COUNTS.get(quantities[index].value)
        return bool(pattern) and names.count(declared.get(index, "")) > 1 and bool(re.search(pattern, question, re.I))

    def read_once_each(group: list[int]) -> bool:  # '2 packages ... 2 packages' read a third time: '2 slices'
        return len(group) == 1 or sum(names.count(declared[k]) for k in group if k in declared) <= len(group)

    return [group for value, group in sorted(by_value.items(), key=lambda item: item[1][0])
            if not other_roles[value] and any(declared.get(k) in answer_reads for k in group)
            and len({quantities[k].text for k in group}) == 1 and all(map(free, group)) and read_once_each(group)
            and not any(map(implied_count, group))]


def changeable(source: Source) -> bool:
    """Whether any number the program reads can change (else every candidate would be the question itself)."""
    return unchangeable(source) is None


# 'two times cheaper', '3 times younger', '2/5 times less': a comparative that reads as a division by N, as
# 1 - 1/N or as 1 - N, and which of them the source's rationale took is a guess a variant would inherit.
_AMBIGUOUS_COMPARATIVE = re.compile(
    r"\b(?:\d+(?:[.,/]\d+)?|one|two|three|four|five|six|seven|eight|nine|ten|half|a few|several|many)\s*-?\s*"
    r"times\s+(?:cheaper|less|smaller|slower|fewer|shorter|lighter|younger|lower|thinner|narrower|weaker|"
    r"worse|poorer|closer|nearer)\b", re.IGNORECASE)


# '9 pills a day for 14 days' where the program never reads the 14: a rate per unit and a count of that unit that
# the source's reading left out (it answered for one day), which a variant would inherit.
_DURATION = r"day|week|hour|month|year|minute|night|semester|session|trip|game"
# 'Each kid has 4 chores' where the kids are only named ('her brother and sister') and the program writes no number
# of its own (no group size): the source's reading may not have multiplied by it. A number before a word for
# people counts the group.
_MEMBER = re.compile(r"\beach (kid|child|sibling|person|friend|student|boy|girl|guest|player|member|worker|employee|"
                     r"grandchild|cousin|neighbou?r|sister|brother)\b", re.IGNORECASE)
_COUNTED_PEOPLE = re.compile(
    r"(?:\d[\d,]*|\b(?:two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|twenty|thirty|dozen|both|all|"
    r"some|many|several|number of|how many))\s+(?:\w+\s+){0,2}(?:kids|children|siblings|people|persons|friends|"
    r"students|classmates|boys|girls|guests|players|members|workers|employees|grandchildren|cousins|neighbou?rs|"
    r"sisters|brothers|of them|of us|adults|family)\b", re.IGNORECASE)


def _unread_duration(source: Source) -> str | None:
    question, reads = source.example.question, read_by_answer(source.program)
    for index, quantity in enumerate(source.builder.quantities):
        unit = re.match(rf"\s*({_DURATION})s?\b", question[quantity.end:], re.IGNORECASE)
        if WRITTEN_NUMBER.fullmatch(quantity.text) and source.builder.declared.get(index) not in reads and unit \
                and re.search(r"\b(?:for|over)\s+(?:the\s+)?(?:first\s+|next\s+|last\s+)?$", question[: quantity.start]) \
                and re.search(rf"\b(?:a|an|per|each|every)\s+{unit.group(1)}\b", _sentence(question, quantity),
                              re.IGNORECASE):
            return quantity.text
    return None


def unchangeable(source: Source) -> str | None:
    """Why no variant of the source can be right, or None."""
    question = source.example.question
    if unexplained_literal(source):
        return "program keeps a literal the question does not explain"
    if _AMBIGUOUS_COMPARATIVE.search(question):
        return "question has an ambiguous comparative ('N times cheaper')"
    if _unread_duration(source):
        return "program leaves out a duration its rate is per ('a day for 14 days')"
    if _MEMBER.search(question) and not _COUNTED_PEOPLE.search(question) \
            and not program_literals(source.program, read_by_answer(source.program) | {"ans"}):
        return "question counts per member of a group it does not count ('each kid')"
    if not draw_changes(source, random.Random(0)):
        return "no number to change"
    return None


# Literals a program may keep: a unit's size or a relation's number, when the question speaks of that unit or
# relation. Any other literal is a number the rationale wrote from the problem's numbers (an age it worked out,
# 0.6 for 100 % - 40 %), which would keep its old value in a variant.
_EXPLAINED = {
    1: r"", 100: r"", 0.01: r"",
    2: r"half|halves|twice|double|doubled|pair|both|couple|two|each|every|round.?trip|twin",
    0.5: r"half", 3: r"third|triple|tripled|thrice|three|yard|feet|foot", 4: r"quarter|fourth|four|week|month",
    0.25: r"quarter|fourth", 0.75: r"quarter|fourth", 5: r"fifth|five|nickel|week", 60: r"minute|hour|second",
    24: r"hour|day|daily", 7: r"day|daily|week", 12: r"month|year|dozen|inch|inches|foot|feet", 52: r"week|year",
    365: r"day|daily|year", 30: r"day|daily|month",
    31: r"day|daily|month|march|may|july|august|october|december|january",
    1000: r"gram|kg|kilo\w*|meter|metre|ml|millilit\w*|liter|litre|km|thousand", 16: r"ounce|pound|cup|quart|gallon",
    10: r"dime|decade|ten", 25: r"quarter", 8: r"ounce|cup|pint|gallon|octopus|octopi|spider", 6: r"half.dozen|six",
    0.1: r"dime|ten|tenth", 0.05: r"nickel|five", 0.2: r"fifth|five", 20: r"twenty|score", 3600: r"hour|second",
    1440: r"day|daily|minute",
}


def unexplained_literal(source: Source) -> str | None:
    """The first literal of the source's program that the question does not explain (see ``_EXPLAINED``): in
    its computed lines, or a given line that reads no number of the question (Katie's 98 miles, which the rationale
    solved for)."""
    question = f"{source.example.question} ".lower()
    fractions = [(float(a), float(b)) for a, b in re.findall(r"(?<![\d.])(\d+)\s*/\s*(\d+)(?![\d.])", question)]
    stated = {v for a, b in fractions for v in (a, b, round(a / b, 6) if b else a)}
    # An ordinal's or a ratio's number ('their 2nd anniversary', '5:7') never changes in a variant.
    stated |= {float(n) for m in _OTHER_NUMBERS.finditer(question) for n in m.groups() if n}
    read, needed = set(source.builder.declared.values()), read_by_answer(source.program) | {"ans"}
    unread_givens = [number for name, number in _GIVEN.findall(source.program) if name not in read and name in needed]
    for number in [*unread_givens, *program_literals(source.program, needed)]:
        if float(number) in stated:
            continue  # a part or the value of a fraction the question writes: '2/3 of', '1/2 your wage'
        pattern = _EXPLAINED.get(float(number))
        # A whole word, in the singular, the plural or as the adjective: 'day' is no part of 'Daytona'.
        if pattern is None or pattern and not re.search(rf"\b(?:{pattern})(?:e?s|ly)?\b", question):
            return number
    return None


def program_literals(program: str, needed: set[str] | None = None) -> list[str]:
    """The numbers written in a program's computed lines (its given lines and '/ 100' of a percentage aside), of
    the lines that assign a name of ``needed`` when given (a line the answer never reads keeps no old value in it)."""
    literals = []
    for line in program.splitlines():
        if _GIVEN.fullmatch(line) or " = " not in line or needed is not None and line.split(" = ")[0] not in needed:
            continue
        expression = line.split(" = ", 1)[1]
        literals += [m.group() for m in re.finditer(r"(?<![\w.])\d+(?:\.\d+)?(?![\w.])", expression)
                     if not (m.group() == "100" and expression[: m.start()].rstrip().endswith("/"))]
    return literals


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
    question must equal the number that stands where the source's program read it, and no two numbers that differ
    in the source may be equal in the variant (a tie the program could not tell apart, or 'increased to' the same)."""
    quantities = question_quantities(variant.question)
    if len(quantities) != len(source.builder.quantities):
        return "question mismatch: numbers moved"
    before = [q.value for q in source.builder.quantities]
    for i, j in combinations(range(len(quantities)), 2):  # '$5, later increased to $7' must not become '$8 ... $8'
        if quantities[i].value == quantities[j].value and before[i] != before[j]:
            return "two different numbers made equal"
    given = given_values(variant.program)
    for index, variable in source.builder.declared.items():
        if given.get(variable) != quantities[index].value:
            return "question mismatch: program reads another value"
    for change in variant.changes:
        after = variant.question[change.start + len(change.new):][:40]
        if any(change.value > most and re.match(rf"\s*{small}\b[^.?!]{{0,25}}\b(?:a|an|per|each|every)\s+{unit}\b",
                                                 after, re.IGNORECASE) for small, unit, most in _PER_UNIT):
            return "a count exceeds the unit it is per ('9 days a week')"
    changed = {c.variable for c in variant.changes} - {""}  # "": a number of a group the program does not read
    if not changed or all(given[v] == source.builder.quantities[i].value
                          for i, v in source.builder.declared.items() if v in changed):
        return "no number changed"
    if not changed & read_by_answer(variant.program):
        return "changed number not read by the answer"
    return None


def read_by_answer(program: str, variable: str = "ans") -> set[str]:
    """The variables that the program's ``ans`` (or ``variable``) depends on."""
    reads = {node.targets[0].id: {n.id for n in ast.walk(node.value) if isinstance(n, ast.Name)}
             for node in ast.parse(program).body if isinstance(node, ast.Assign)}
    needed, todo = set(), [variable]
    while todo:
        for name in reads.get(todo.pop(), ()):
            if name not in needed:
                needed.add(name)
                todo.append(name)
    return needed


_ARITHMETIC = {ast.Add: lambda a, b: a + b, ast.Sub: lambda a, b: a - b, ast.Mult: lambda a, b: a * b,
               ast.Div: lambda a, b: a / b, ast.FloorDiv: lambda a, b: a // b, ast.Mod: lambda a, b: a % b,
               ast.Pow: lambda a, b: a ** b}


def step_values(program: str, operations: list[float] | None = None) -> dict[str, float] | None:
    """Every variable's value, computed from the program's arithmetic alone (names, numbers, + - * / // % **;
    no code runs); None when it holds anything else or fails (the sandbox, which runs it, says why). The value
    of every operation, in program order, is appended to ``operations`` when given."""
    values: dict[str, float] = {}
    operations = [] if operations is None else operations

    def value(node):
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)):
            return float(node.value)
        if isinstance(node, ast.Name):
            return values[node.id]
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            return -value(node.operand) if isinstance(node.op, ast.USub) else value(node.operand)
        if isinstance(node, ast.BinOp) and type(node.op) in _ARITHMETIC and abs(value(node.left)) < 1e12:
            operations.append(float(_ARITHMETIC[type(node.op)](value(node.left), value(node.right))))
            return operations[-1]
        raise ValueError(ast.dump(node))

    try:
        for node in ast.parse(program).body:
            if not (isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)):
                return None
            values[node.targets[0].id] = value(node.value)
    except (ValueError, KeyError, ArithmeticError, SyntaxError, RecursionError):
        return None
    return values


# Steps that measure (money, time, length, weight, shares) may leave whole numbers; steps that count may not.
_MEASURES = re.compile(r"\$|%|\b(?:dollars?|cents?|price|cost|costs|paid|pay|earn\w*|spen[dt]\w*|money|profit|saves?|"
                       r"savings|budget|fee|bill|tax|tip|wage|salary|hours?|minutes?|seconds?|days?|weeks?|months?|"
                       r"years?|miles?|mph|km|kilomet\w*|met\w*|feet|foot|inch\w*|yards?|pounds?|lbs?|ounces?|oz|"
                       r"kg|kilograms?|grams?|gallons?|liters?|litres?|ml|cups?|quarts?|pints?|tons?|percent\w*|"
                       r"average|rate|speed|ratio|fraction|share|portion|per|degrees?|area|length|width|"
                       r"height|distance|weight|volume)\b", re.IGNORECASE)


def _measures(name: str, source: Source) -> bool:
    return bool(_MEASURES.search(f"{name.replace('_', ' ')} {source.builder.sources.get(name, '')}"))


def variant_problem(source: Source, variant: Variant, value: float | None) -> str | None:
    """Why a variant's rerun answer ``value`` is not right or not sensible, or None: :func:`answer_problem`;
    the answer is the source's although a number it reads changed; an operation that was positive in the source
    is not; a step that counts (people, things) and was whole in the source is not whole (100 bars among 3
    friends)."""
    if problem := answer_problem(value, source.example.answer):
        return problem
    if is_correct(value, source.example.answer):
        return "answer unchanged"
    old_operations, new_operations = [], []
    before, after = step_values(source.program, old_operations), step_values(variant.program, new_operations)
    if before is None or after is None:
        return None
    if any(old > 0 >= new for old, new in zip(old_operations, new_operations)):
        return "a step turns negative"  # 40 games to lose of 20 left, pollywogs below none
    given = set(given_values(source.program))
    for name, old in before.items():
        if name in given or name == "ans" or not float(old).is_integer() or _measures(name, source):
            continue
        if not round(after.get(name, 0.0), 6).is_integer():
            return "a count is not whole"
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
    literals = checks.program_literals(variant.program)
    reads = reads_stating(variant.question, set(source.builder.declared), literals)
    core_question, key_points = gold_language.core_question_and_key_points(variant.question, reads, literals)
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
    another batch size draws the same ones); two in three change only a part of the numbers they may."""
    drawn = []
    for attempt in range(start, start + count):
        rng = random.Random(f"{seed}:{source.example.id}:{attempt}")
        drawn.append(make_variant(source, draw_changes(source, rng, some=attempt % 3 != 0)))
    return drawn


def as_trace(source: Source, variant: Variant) -> dict[str, Any]:
    """The trace-store record of a kept variant (its own question id and gold; its source in meta)."""
    return {"question_id": variant.question_id, "gold": variant.answer, "question": variant.question,
            "stages": variant.stages, "answer": variant.answer,
            "meta": {"source_question_id": variant.source_id, "substitution": [c.as_meta() for c in variant.changes],
                     "source_answer": source.example.answer, "augment": AUGMENT_VERSION}}
