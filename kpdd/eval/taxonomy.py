"""The error taxonomy: why a prediction was wrong, read from its stages, first cause first.

Types, in the order they are checked (the earliest stage that went wrong is the one to fix):

- ``parse: <stage fields>``   the model's output for that stage did not parse (missing field markers, ...);
- ``lm error``                the LM call itself failed;
- ``key points miss a quantity``  KPDD: a number given in the question is absent from the key points;
- ``wrong arithmetic``        a written calculation ``a op b = c`` is false (CoT reasoning, Socratic sub-answers);
- ``program: <error>``        PoT: the program did not execute (timeout, syntax, runtime, no_answer, ...);
- ``no answer``               no number could be read from the final output;
- ``wrong answer``            everything ran and was consistent, but the answer is not the gold one.
"""

from __future__ import annotations

import ast
import math
import operator
import re
from typing import TYPE_CHECKING, Any

from kpdd.eval.answers import numbers_in

if TYPE_CHECKING:
    from dspy.utils.exceptions import AdapterParseError

# 'expression = result' with only numbers and + - * / x ( ) in the expression.
_CALCULATION = re.compile(r"((?:[-+*/x×÷().\s$]|\d[\d,]*(?:\.\d+)?)+?)=\s*\$?\s*(-?[\d,]*\.?\d+)")
_OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv}

PARSE, LM_ERROR, MISSED_QUANTITY, ARITHMETIC, NO_ANSWER, WRONG = (
    "parse", "lm error", "key points miss a quantity", "wrong arithmetic", "no answer", "wrong answer")


def parse_error(error: AdapterParseError) -> str:
    """'parse: <the stage's output fields>' — fields name the stage (signatures may be renamed copies)."""
    return f"{PARSE}: {', '.join(error.signature.output_fields)}"


def quantities(text: str) -> set[float]:
    """The numbers stated in a text ('$1,200' → 1200.0)."""
    return set(numbers_in(text))


def _arithmetic(node: ast.AST) -> float:
    """Evaluate + - * / over number literals only (never ``eval``)."""
    if isinstance(node, ast.Expression):
        return _arithmetic(node.body)
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)):
        return float(node.value)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        return -_arithmetic(node.operand)
    if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
        return _OPS[type(node.op)](_arithmetic(node.left), _arithmetic(node.right))
    raise ValueError("not plain arithmetic")


def false_calculations(text: str) -> list[str]:
    """The written calculations in ``text`` whose result is wrong, e.g. '3 * 4 = 13'."""
    wrong = []
    for expression, result in _CALCULATION.findall(text or ""):
        cleaned = expression.replace(",", "").replace("$", "").replace("x", "*").replace("×", "*").replace("÷", "/")
        if not re.search(r"\d\s*[-+*/]\s*[\d(]", cleaned):
            continue  # a bare number ('so 5 = 5'), not a calculation
        try:
            value = _arithmetic(ast.parse(cleaned.strip(), mode="eval"))
            claimed = float(result.replace(",", ""))
        except (ValueError, SyntaxError, ZeroDivisionError):
            continue
        if not math.isclose(value, claimed, rel_tol=1e-3, abs_tol=1e-2):
            wrong.append(f"{expression.strip()} = {result}")
    return wrong


def classify(question: str, prediction: dict[str, Any], correct: bool) -> str | None:
    """The taxonomy type of one prediction (None when correct). ``prediction`` holds its stage outputs."""
    if correct:
        return None
    if prediction.get("error"):
        return prediction["error"]  # parse / lm errors were recorded when the program raised
    key_points = prediction.get("key_points")
    if key_points is not None:
        stated = quantities("\n".join(map(str, key_points)))
        if any(q not in stated for q in quantities(question)):
            return MISSED_QUANTITY
    written = "\n".join([str(prediction.get("reasoning") or ""), *map(str, prediction.get("sub_answers") or [])])
    if false_calculations(written):
        return ARITHMETIC
    execution = prediction.get("execution")
    if isinstance(execution, str):
        return f"program: {execution}"
    if prediction.get("answer") is None:
        return NO_ANSWER
    return WRONG
