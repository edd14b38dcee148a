"""The one answer extractor: turns model or gold text into a number, for the metric and the harness.

Two readings, as lm-evaluation-harness reports them for GSM8K: *strict* trusts only an explicit
final-answer marker ('#### 72', '\\boxed{3/4}', 'The answer is 5', 'A: 18'); *flexible* (the default)
falls back to the last number in the text.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable

# A number token: sign only where it cannot be a minus between two operands ('16 - 3' has no '-3').
_NUM = (r"(?<![\w.])-?\s?\$?\s?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:\s*/\s*\d+(?:\.\d+)?)?%?"
        r"|(?<![\w.])-?\$?\.\d+%?")
_NUMBER = re.compile(_NUM)
_BOXED = re.compile(r"\\boxed\{\s*((?:[^{}]|\{[^{}]*\})*)\}")
_FRAC = re.compile(r"\\d?frac\{\s*(-?[\d.]+)\s*\}\{\s*(-?[\d.]+)\s*\}")
# Markers in the order they are trusted: an explicit final-answer marker beats "the last number".
_MARKERS = [
    re.compile(r"####\s*(" + _NUM + ")"),
    re.compile(r"answer\s*(?:is|=|:)\s*[:=]?\s*(?:\*\*)?\s*(" + _NUM + ")", re.IGNORECASE),
    re.compile(r"(?:^|\n)\s*A\s*:\s*(" + _NUM + ")"),
]


def parse_number(text: str) -> float | None:
    """Parse one number token: '$1,234.50' → 1234.5, '3/4' → 0.75, '45%' → 45.0, '-7' → -7.0."""
    token = re.sub(r"[\s$,]", "", text).rstrip(".").rstrip("%")
    if not token:
        return None
    try:
        if "/" in token:
            numerator, denominator = token.split("/", 1)
            value = float(numerator) / float(denominator)
        else:
            value = float(token)
    except (ValueError, ZeroDivisionError):
        return None
    return value if math.isfinite(value) else None


def _boxed(text: str) -> float | None:
    """The last \\boxed{...}: a \\frac, or the number inside."""
    matches = _BOXED.findall(text)
    if not matches:
        return None
    inner = matches[-1]
    frac = _FRAC.search(inner)
    if frac:
        return parse_number(f"{frac.group(1)}/{frac.group(2)}")
    numbers = _NUMBER.findall(inner)
    return parse_number(numbers[-1]) if numbers else None


def extract_answer(text, strict: bool = False) -> float | None:
    """The numeric answer in ``text``: after a final-answer marker if one is present, else (unless
    ``strict``) the last number. Numbers pass through unchanged; None and non-finite give None."""
    if text is None or isinstance(text, bool):
        return None
    if isinstance(text, (int, float)):
        return float(text) if math.isfinite(text) else None
    text = str(text)
    for marker in _MARKERS[:1]:
        match = marker.findall(text)
        if match and (value := parse_number(match[-1])) is not None:
            return value
    boxed = _boxed(text)
    if boxed is not None:
        return boxed
    for marker in _MARKERS[1:]:
        match = marker.findall(text)
        if match and (value := parse_number(match[-1])) is not None:
            return value
    if strict:
        return None
    numbers = _NUMBER.findall(text)
    return parse_number(numbers[-1]) if numbers else None


def numbers_in(text: str) -> list[float]:
    """Every number token in a text, in order ('$1,200' → 1200.0, '3/4' → 0.75, '45%' → 45.0)."""
    return [v for v in (parse_number(m) for m in _NUMBER.findall(text or "")) if v is not None]


def is_correct(prediction, gold, rel_tol: float = 1e-4, abs_tol: float = 1e-6) -> bool:
    """True when ``prediction`` (number or text) equals the numeric ``gold`` within tolerance.

    The relative tolerance absorbs float noise from executed programs (0.1 + 0.2) and answers
    rounded to 4 significant digits; the absolute one handles gold 0.
    """
    value = extract_answer(prediction)
    gold_value = extract_answer(gold)
    if value is None or gold_value is None:
        return False
    return math.isclose(value, gold_value, rel_tol=rel_tol, abs_tol=abs_tol)


def score_answers(predictions: Iterable, golds: Iterable, strict: bool = False,
                  rel_tol: float = 1e-4, abs_tol: float = 1e-6) -> list[bool]:
    """``is_correct`` over whole columns: extraction per item, then one vectorised comparison."""
    import numpy as np

    predicted = np.array([_or_nan(extract_answer(p, strict)) for p in predictions], dtype=float)
    gold = np.array([_or_nan(extract_answer(g)) for g in golds], dtype=float)
    if predicted.shape != gold.shape:
        raise ValueError(f"score_answers: {len(predicted)} predictions but {len(gold)} gold answers")
    # math.isclose's symmetric rule, so this agrees with is_correct item for item; NaN never matches.
    tolerance = np.maximum(rel_tol * np.maximum(np.abs(predicted), np.abs(gold)), abs_tol)
    with np.errstate(invalid="ignore"):
        return (np.abs(predicted - gold) <= tolerance).tolist()


def score_file(path, prediction_field: str = "answer", gold_field: str = "gold", strict: bool = False) -> list[bool]:
    """Score every row of a predictions JSONL file (the harness's format by default)."""
    from kpdd import jsonl

    rows = [row for _, row in jsonl.numbered(path, skip_torn=False)]  # a file by hand may lack the last newline
    return score_answers([r.get(prediction_field) for r in rows], [r.get(gold_field) for r in rows], strict)


def _or_nan(value: float | None) -> float:
    return math.nan if value is None else value
