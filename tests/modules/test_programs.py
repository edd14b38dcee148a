"""The six programs through DSPy's real adapter path, driven by scripted LMs."""

import dspy
import pytest
from dspy.utils import DummyLM

from kpdd.errors import RegistryError
from kpdd.modules import (
    PROGRAMS,
    KeyPoints,
    KPDDCoT,
    KPDDPoT,
    SocraticCoT,
    answer_metric,
    build_program,
    program_name,
)

QUESTION = "Tom has 3 apples and buys 4 more. How many apples does he have?"


def run(program, answers):
    lm = DummyLM(answers)
    with dspy.context(lm=lm, adapter=dspy.ChatAdapter()):
        return program(question=QUESTION), lm


def test_kpdd_cot_returns_every_stage_and_a_number():
    prediction, lm = run(KPDDCoT(), [
        {"core_question": "How many apples does Tom have?"},
        {"key_points": ["Tom has 3 apples.", "He buys 4 more."]},
        {"reasoning": "3 + 4 = 7", "answer": "7 apples"},
    ])
    assert prediction.answer == 7.0 and prediction.raw_answer == "7 apples"
    assert prediction.key_points == ["Tom has 3 apples.", "He buys 4 more."]
    assert prediction.core_question == "How many apples does Tom have?"
    # The solver saw the key points the previous stage produced, through the adapter's prompt.
    assert '["Tom has 3 apples.", "He buys 4 more."]' in lm.history[-1]["messages"][-1]["content"]


def test_kpdd_pot_executes_the_program_in_the_sandbox():
    prediction, _ = run(KPDDPoT(), [
        {"core_question": "How many apples?"},
        {"key_points": ["3 apples", "4 more"]},
        {"program": "```python\napples = 3\nbought = 4\nans = apples + bought\n```"},
    ])
    assert prediction.answer == 7.0 and prediction.execution == 7.0
    assert "ans = apples + bought" in prediction.program


def test_kpdd_pot_reports_a_failed_program_as_its_error_type():
    prediction, _ = run(KPDDPoT(), [{"core_question": "q"}, {"key_points": ["k"]}, {"program": "ans = 1 / 0"}])
    assert prediction.answer is None and prediction.execution == "runtime"


def test_socratic_answers_each_sub_question_with_the_previous_ones():
    prediction, lm = run(SocraticCoT(), [
        {"sub_questions": ["How many apples did Tom buy?", "How many apples does he have?"]},
        {"sub_answer": "He bought 4."},
        {"sub_answer": "3 + 4 = 7"},
    ])
    assert prediction.sub_answers == ["He bought 4.", "3 + 4 = 7"] and prediction.answer == 7.0
    assert "Q: How many apples did Tom buy? A: He bought 4." in lm.history[-1]["messages"][-1]["content"]


def test_socratic_bounds_a_runaway_decomposition():
    program = SocraticCoT(max_steps=2)
    prediction, lm = run(program, [{"sub_questions": [f"q{i}?" for i in range(9)]},
                                   {"sub_answer": "1"}, {"sub_answer": "2"}])
    assert len(prediction.sub_answers) == 2 and len(lm.history) == 3


@pytest.mark.parametrize("name,answers,expected", [
    ("cot", [{"reasoning": "3+4=7", "answer": "7"}], 7.0),
    ("pot", [{"program": "ans = 3 + 4"}], 7.0),
    ("direct", [{"answer": "The answer is 7."}], 7.0),
])
def test_baselines(name, answers, expected):
    prediction, _ = run(build_program(name), answers)
    assert prediction.answer == expected


def test_stages_are_swappable_submodules():
    """KPDD's key points can feed another solver: the stage is a module of its own."""
    class KeyPointsThenCoT(dspy.Module):
        def __init__(self):
            super().__init__()
            self.key_points = KeyPoints()
            self.solve = dspy.ChainOfThought("question, key_points: list[str] -> answer")

        def forward(self, question):
            kp = self.key_points(question=question)
            return self.solve(question=question, key_points=kp.key_points)

    prediction, _ = run(KeyPointsThenCoT(), [{"core_question": "q"}, {"key_points": ["3", "4"]},
                                             {"reasoning": "3+4", "answer": "7"}])
    assert prediction.answer == "7"
    assert [name for name, _ in KPDDPoT().named_predictors()] == ["key_points.core", "key_points.info", "solve"]


def test_registry_round_trip_and_close_match_error():
    for name, cls in PROGRAMS.items():
        assert program_name(build_program(name)) == name and isinstance(build_program(name), cls)
    with pytest.raises(RegistryError, match="Did you mean 'kpdd-pot'"):
        build_program("kpdd-pt")


def test_answer_metric_with_dspy_evaluate():
    examples = [dspy.Example(question=QUESTION, answer=7.0).with_inputs("question"),
                dspy.Example(question=QUESTION + " ", answer=8.0).with_inputs("question")]
    lm = DummyLM([{"answer": "7"}, {"answer": "7"}])
    with dspy.context(lm=lm):
        result = dspy.Evaluate(devset=examples, metric=answer_metric, num_threads=1)(build_program("direct"))
    assert result.score == 50.0
