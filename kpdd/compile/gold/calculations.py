"""Calculations in gold annotations, shared by the gold teacher's text heuristics.

The text heuristics of the gold teacher turn GSM8K rationales and benchmark equations into stage outputs:
this module reads rationale lines and their calculations; :mod:`kpdd.compile.gold.programs` writes programs
from them and :mod:`kpdd.compile.gold.language` writes the question language (core question, key points,
Socratic sub-questions). Deterministic string work only; nothing here is executed (the teacher verifies
programs in the sandbox). ``HEURISTICS`` names this version of all three modules in every trace's meta: bump it
when any output changes.

- **Numbers as text** (:func:`format_number`): integers without ``.0``; other values with at most 6 decimals.
- **Reasoning** (:func:`strip_annotations`): the rationale with its ``<<a*b=c>>`` calculator annotations cut out.
- **Calculations** (:func:`line_calculations`): per rationale line, every annotation ``<<expr=result>>``; a line
  without annotations offers its plain arithmetic instead (``90-24 = 66``, ``45 sticks / 90 sticks * 100% = 50%``,
  unit words dropped). Expressions become Python arithmetic: ``x``/``×`` → ``*``, ``÷`` → ``/``, ``^`` → ``**``,
  ``$`` and thousands separators dropped, ``n%`` → ``(n/100)`` (plain ``n`` when the result is a percentage
  too), ``2(3)`` → ``2*(3)``, ``1 1/2`` → ``(1+1/2)``, leading zeros dropped. A calculation's *frame* is the
  text before its expression and the words after its result; a result with no words after it that the line
  states earlier ('He eats 32 from the large pizzas because 2 x 16 = 32') is framed at that earlier mention.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from kpdd.eval.answers import parse_number

HEURISTICS = "gold-heuristics/6"


class NoTrace(Exception):
    """Why a question yields no trace; the message is the short, countable reason."""


def format_number(value: float) -> str:
    """72.0 → '72', 0.5 → '0.5', 1/3 → '0.333333' (a number only, as the answer fields ask)."""
    if float(value).is_integer():
        return str(int(value))
    return f"{value:.6f}".rstrip("0").rstrip(".")


_ANNOTATION = re.compile(r"<<([^<>]*)=([^<>=]*)>>")
_ANNOTATION_ANY = re.compile(r"<<[^<>]*>>")


def strip_annotations(text: str) -> str:
    """'48/2 = <<48/2=24>>24 clips' → '48/2 = 24 clips'."""
    return _ANNOTATION_ANY.sub("", text)


def rationale_lines(rationale: str) -> list[str]:
    return [line.strip() for line in rationale.split("\n") if line.strip()]


# Calculations -------------------------------------------------------------------------------------------

OPERATORS = {"+", "-", "*", "/", "**", "//", "%"}
_TOKEN = re.compile(r"\d+(?:\.\d+)?|\.\d+|\*\*|//|[-+*/()]")
# A number as written in prose: '$1,200', '80%', '2.5' (groups: '$', digits, decimals, '%'); no part of
# an ordinal ('3rd'), fraction ('1/2') or time ('2:30') is one.
WRITTEN_NUMBER = re.compile(r"(?<![\w./:,])(\$?)(\d{1,3}(?:,\d{3})+|\d+)(\.\d+)?(%?)(?![\w/:]|[.,]\d)")
_RESULT_SHOWN = re.compile(r"\s*(-?\d[\d,]*(?:\.\d+)?|-?\.\d+)(%?)")
TIMES_SIGN = re.compile(r"(?<=[\d)])\s*[xX×]\s*(?=[\d($.])")
# An expression in prose: numbers (each may carry '/unit' and up to 3 unit words) joined by operators.
# Possessive quantifiers keep long sums from backtracking exponentially.
_TERM = r"\(*+\s*+(?:\$?\d[\d,]*+(?:\.\d+)?+%?+|\$?\.\d+%?+)(?:/[A-Za-z]+)?+(?:\s*\))*+(?:\s+[A-Za-z']+){0,3}+"
_EXPRESSION = rf"{_TERM}(?:\s*+(?:[-+*/÷^–−]|(?=\())\s*+{_TERM})++"
_PLAIN_MATH = re.compile(rf"({_EXPRESSION})\s*=\s*(\$?-?\d[\d,]*(?:\.\d+)?(?:/\d+)?%?)")
_TRAILING_EXPRESSION = re.compile(rf"[\s=$]*(?:{_EXPRESSION})?[\s=$]*$")


@dataclass(frozen=True)
class Calculation:
    """One calculation of a rationale line: Python tokens, the written result, and its frame in the prose."""

    tokens: tuple[str, ...]  # normalised expression; () when it is not plain arithmetic
    result: float | None  # the result as written (possibly rounded by the author)
    before: str  # the line's text before the expression
    after: str  # the line's text after the result
    money: bool  # '$' before the result


def normalise_expression(text: str, percent_result: bool = False) -> tuple[str, ...]:
    """Arithmetic as people write it → Python tokens (see the module docstring); () when unreadable."""
    text = re.sub(r"(?<=\d),(?=\d{3}(?!\d))", "", text).replace("$", "")
    text = TIMES_SIGN.sub("*", text.translate(str.maketrans({"÷": "/", "–": "-", "−": "-"}))).replace("^", "**")
    text = re.sub(r"(\d+(?:\.\d+)?)\s*%", r"\1" if percent_result else r"(\1/100)", text)
    text = re.sub(r"\b(\d+)\s+(\d+)\s*/\s*(\d+)\b", r"(\1+\2/\3)", text)  # a mixed number: 1 1/2
    if re.search(r"[\d.]\s+[\d.]", text):
        return ()  # two numbers with no operator between them
    compact = re.sub(r"\s+", "", text)
    tokens = _TOKEN.findall(compact)
    if not tokens or "".join(tokens) != compact or not balanced(tokens) or tokens[0] in "*/)" \
            or tokens[-1] in OPERATORS:
        return ()
    out: list[str] = []
    for token in tokens:
        number = token[0].isdigit() or token[0] == "."
        if out and (token == "(" and (out[-1] == ")" or out[-1][0] in "0123456789.") or number and out[-1] == ")"):
            out.append("*")  # implicit multiplication
        out.append((token.lstrip("0") or "0") if token.isdigit() else "0" + token if token[0] == "." else token)
    return tuple(out)


def balanced(tokens) -> bool:
    """Whether every ')' closes an earlier '(' and none is left open."""
    depth = 0
    for token in tokens:
        depth += (token == "(") - (token == ")")
        if depth < 0:
            return False
    return depth == 0


def _calculation(expression: str, result: str, percent: bool, before: str, after: str, money: bool) -> Calculation:
    before = _TRAILING_EXPRESSION.sub("", before)
    return Calculation(normalise_expression(re.sub(r"/[A-Za-z]+|[A-Za-z']+", "", expression), percent),
                       parse_number(result), before.strip(), strip_annotations(after).strip(), money)


def line_calculations(line: str) -> list[Calculation]:
    """The calculations of one rationale line: its annotations, else its plain ``a op b = c`` arithmetic."""
    line = TIMES_SIGN.sub(" * ", line)
    if "<<" not in line:
        return [_calculation(m.group(1), m.group(2).lstrip("$").rstrip("%"), m.group(2).endswith("%"),
                             line[: m.start()], line[m.end():], m.group(2).startswith("$"))
                for m in _PLAIN_MATH.finditer(line)]
    calculations = []
    for match in _ANNOTATION.finditer(line):
        head = strip_annotations(line[: match.start()]).rstrip()
        shown = _RESULT_SHOWN.match(line, match.end())
        percent = bool(shown and shown.group(2)) or match.group(2).strip().endswith("%")
        calculations.append(_calculation(match.group(1), match.group(2), percent, head,
                                         line[shown.end() if shown else match.end():], head.endswith("$")))
    return calculations


def written_value(match: re.Match) -> float:
    """The value of a ``WRITTEN_NUMBER`` match: '$1,200' → 1200.0, '2.5%' → 2.5."""
    return float(match.group(2).replace(",", "") + (match.group(3) or ""))


def frame(calculation: Calculation) -> tuple[str, str, bool]:
    """(text before, text after, money) of a calculation's result, moved to an earlier mention of the result
    when nothing follows it: 'She made $90 in profit because 270 - 180 = 90' → ('She made', ' in profit
    because', True)."""
    if not re.search(r"[A-Za-z]", calculation.after) and calculation.result is not None:
        mentions = [m for m in WRITTEN_NUMBER.finditer(calculation.before) if written_value(m) == calculation.result
                    and re.search(r"[A-Za-z]", calculation.before[: m.start()])]
        if mentions:
            m = mentions[-1]
            return calculation.before[: m.start()], calculation.before[m.end():], calculation.money or bool(m.group(1))
    return calculation.before, calculation.after, calculation.money
