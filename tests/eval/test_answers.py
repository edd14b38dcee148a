"""Answer extraction and scoring: hand-written tricky cases and the gold rationales."""

import json

import pytest

from kpdd.data import read_split, resolve_data_dir
from kpdd.eval.answers import extract_answer, is_correct, score_answers, score_file


@pytest.mark.parametrize("text,expected", [
    ("#### 72", 72.0),
    ("Natalia sold 48+24 = 72 clips.\n#### 72", 72.0),
    ("A: 18", 18.0),
    ("Q: how many? A: 18 eggs", 18.0),  # 'A:' after text is not a line marker: last number
    ("The answer is $1,234.50.", 1234.5),
    ("The answer is: **42**", 42.0),
    ("So the answer = 7 apples, not 9", 7.0),
    ("\\boxed{3/4}", 0.75),
    ("\\boxed{\\frac{3}{4}}", 0.75),
    ("$\\boxed{-12}$ dollars", -12.0),
    ("She pays 18 dollars", 18.0),
    ("The discount is 45%", 45.0),
    ("It is -7 degrees", -7.0),
    ("16 - 3 - 4 = 9", 9.0),
    ("x = 5-3", 3.0),
    ("a total of 1,000,000 people", 1000000.0),
    ("1,2,3", 3.0),
    ("costs .5 each", 0.5),
    ("3/4 of a pie", 0.75),
    ("He had 5 cats and 3.5 kg", 3.5),
    ("The answer is 10. Then 20 more", 10.0),
    ("#### 5\nThe answer is 6", 5.0),
    ("no number here", None),
    ("", None),
    (None, None),
    (12, 12.0),
    (float("nan"), None),
    (True, None),
    ("1/0", None),
])
def test_extract_answer_tricky_cases(text, expected):
    assert extract_answer(text) == (pytest.approx(expected) if expected is not None else None)


def test_strict_reading_needs_a_marker():
    assert extract_answer("The answer is 5", strict=True) == 5.0
    assert extract_answer("It costs 5 dollars", strict=True) is None
    assert extract_answer("It costs 5 dollars") == 5.0


@pytest.mark.parametrize("prediction,gold,expected", [
    ("72", 72, True), (72.00001, 72, True), (0.1 + 0.2, 0.3, True), ("73", 72, False),
    (None, 1, False), ("0", 0, True), (1e-9, 0, True), ("The answer is 1,234", "1234", True), (-5, 5, False),
])
def test_is_correct_numeric_tolerance(prediction, gold, expected):
    assert is_correct(prediction, gold) is expected


def test_gsm8k_test_gold_rationales_agree_with_their_answers():
    """The raw answer texts (rationale + '#### n') against the '#### n' numbers: 100 %."""
    path = resolve_data_dir() / "gsm8k" / "test.jsonl"
    texts = [json.loads(line)["answer"] for line in path.read_text().splitlines()]
    finals = [text.rpartition("####")[2] for text in texts]
    assert len(texts) == 1319 and all(score_answers(texts, finals))
    # Without the marker, the last number of the rationale is nearly always the answer too.
    records = read_split("gsm8k", "test").records
    assert sum(score_answers([r.rationale for r in records], [r.answer for r in records])) / len(records) > 0.9


def test_score_answers_agrees_with_is_correct_item_by_item():
    predictions = ["1", "2.00001", None, "x", 0.30000000000000004, "-3", "1e-9"]
    golds = [1, 2, 3, 4, 0.3, 3, 0]
    assert score_answers(predictions, golds) == [is_correct(p, g) for p, g in zip(predictions, golds)]
    with pytest.raises(ValueError, match="2 predictions but 1 gold"):
        score_answers(["1", "2"], [1])


def test_score_file_reads_a_predictions_file(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in [{"answer": 3, "gold": 3}, {"answer": None, "gold": 1}]))
    assert score_file(path) == [True, False]
