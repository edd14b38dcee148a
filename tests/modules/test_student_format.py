"""The students' prompt format and one-call students: round trips, identical prompts, stage-by-stage records."""

import dspy
import pytest
from dspy.utils.exceptions import AdapterParseError

from kpdd.modules import PROGRAMS, build_program
from kpdd.modules.one_call import OneCallProgram, one_call_example, one_call_signature, repeated_predictors
from kpdd.modules.student_format import StudentAdapter, detect_format, parse_list
from recording_lm import RecordingLM

PROGRAM_TEXT = "eggs = 16 - 3 - 4\nif eggs > 0:\n    price = 2\nans = eggs * price"
VALUES = {
    "question": "Janet's ducks lay 16 eggs per day. She eats three. How much does she make?",
    "core_question": "How much does Janet make every day?",
    "key_points": ["Ducks lay 16 eggs per day.", "She eats 3: for breakfast.", "Each egg sells for $2."],
    "reasoning": "16 - 3 = 13\n13 * 2 = 26",
    "answer": "26",
    "program": PROGRAM_TEXT,
    "sub_questions": ["How many eggs are left?", "How much does she make?"],
    "previous": "Q: How many eggs are left? A: 16 - 3 = 13",
    "sub_question": "How much does she make?",
    "sub_answer": "13 * 2 = 26",
}


def _signatures():
    seen = {}
    for name in PROGRAMS:
        program = build_program(name)
        for predictor_name, predictor in program.named_predictors():
            seen[f"{name}:{predictor_name}"] = predictor.signature
        if len(program.named_predictors()) > 1:
            repeated = ["answer_sub"] if name == "socratic" else []
            seen[f"{name}:one-call"] = one_call_signature(program, repeated)
    return seen


@pytest.mark.parametrize("key,signature", list(_signatures().items()))
def test_student_format_round_trips_every_signature(key, signature):
    adapter = StudentAdapter()
    outputs = {}
    for name, field in signature.output_fields.items():
        value = VALUES[name]
        outputs[name] = [value, value + " again"] if "list" in str(field.annotation) and isinstance(value, str) else value
    record = adapter.format_finetune_data(signature, [], {n: VALUES[n] for n in signature.input_fields}, outputs)
    assert [m["role"] for m in record["messages"]] == ["system", "user", "assistant"]
    assert "[[" not in str(record["messages"]) and "JSON" not in str(record["messages"])
    assert adapter.parse(signature, record["messages"][-1]["content"]) == outputs


def test_student_format_writes_lists_one_item_per_line_and_programs_verbatim():
    adapter = StudentAdapter()
    program = build_program("kpdd-pot")
    solve = dict(program.named_predictors())["solve"].signature
    user = adapter.format_user_message_content(solve, VALUES)
    assert user.splitlines()[:4] == [f"question: {VALUES['question']}", f"core_question: {VALUES['core_question']}",
                                     "key_points:", VALUES["key_points"][0]]
    assert adapter.format_assistant_message_content(solve, VALUES) == "program:\n" + PROGRAM_TEXT


def test_student_format_parses_tolerantly():
    info = dict(build_program("kpdd-pot").named_predictors())["key_points.info"].signature
    messy = "**Key Points:**\n- 16 eggs a day\n2. she eats 3\n\n* $2 each\n"
    assert StudentAdapter().parse(info, messy) == {"key_points": ["16 eggs a day", "she eats 3", "$2 each"]}
    assert StudentAdapter().parse(info, "[[ ## key_points ## ]]\n['a', 'b']") == {"key_points": ["a", "b"]}
    assert parse_list('["x", "y"]') == ["x", "y"]


def test_student_format_parse_failure_keeps_the_raw_text():
    core = dict(build_program("kpdd-pot").named_predictors())["key_points.core"].signature
    with pytest.raises(AdapterParseError) as failure:
        StudentAdapter().parse(core, "I think the answer is 26")
    assert failure.value.lm_response == "I think the answer is 26"


def test_student_format_sft_prompt_equals_inference_prompt():
    program = build_program("kpdd-pot")
    solve = dict(program.named_predictors())["solve"].signature
    adapter = StudentAdapter()
    record = adapter.format_finetune_data(solve, [], {n: VALUES[n] for n in solve.input_fields},
                                          {"program": PROGRAM_TEXT})
    lm = RecordingLM(["core_question: How much?", "key_points:\na\nb", "program:\n" + PROGRAM_TEXT])
    program.set_lm(lm)
    with dspy.context(adapter=adapter):
        program(question=VALUES["question"])
    sent = lm.prompts[-1]
    inputs = {"question": VALUES["question"], "core_question": "How much?", "key_points": ["a", "b"]}
    assert sent == adapter.format_finetune_data(solve, [], inputs, {"program": ""})["messages"][:-1]
    assert record["messages"][0] == sent[0] and record["messages"][1]["content"].count("question:") == 2


def test_detect_format_tells_chat_records_from_student_records():
    signature = dict(build_program("direct").named_predictors())["solve"].signature
    chat = dspy.ChatAdapter().format_finetune_data(signature, [], {"question": "q"}, {"answer": "1"})
    student = StudentAdapter().format_finetune_data(signature, [], {"question": "q"}, {"answer": "1"})
    assert detect_format(chat["messages"]) == "chat" and detect_format(student["messages"]) == "student"


def _trace(program_name, stages):
    return {"id": "t1", "question_id": "q1", "stages": stages, "method": program_name}


def test_one_call_student_record_holds_each_stage_fields():
    program = OneCallProgram(build_program("kpdd-pot"))
    completion = ("core_question: How much does Janet make?\nkey_points:\n16 eggs\n3 eaten\n$2 each\n"
                  "program:\nans = (16 - 3) * 2")
    lm = RecordingLM([completion])
    program.set_lm(lm)
    with dspy.context(adapter=StudentAdapter()):
        prediction = program(question=VALUES["question"])
    assert len(lm.prompts) == 1 and lm.prompts[0][1]["content"].count("question") == 1
    assert prediction.core_question == "How much does Janet make?"
    assert prediction.key_points == ["16 eggs", "3 eaten", "$2 each"]
    assert prediction.program == "ans = (16 - 3) * 2" and prediction.answer == 26


def test_a_student_stops_where_it_starts_over():
    """A weak student loops (``core_question: … key_points: core_question: …``): its call stops at the second marker
    of its first output field, keeping any stop the LM already had."""
    program = OneCallProgram(build_program("kpdd-pot"))
    lm = RecordingLM(["core_question: How much?\nkey_points:\n16 eggs\nprogram:\nans = 26"])
    lm.kwargs["stop"] = "<end>"
    program.set_lm(lm)
    with dspy.context(adapter=StudentAdapter()):
        program(question=VALUES["question"])
    assert lm.sent_kwargs[0]["stop"] == ["<end>", "\ncore_question:"]
    assert "stop" not in lm.kwargs or lm.kwargs["stop"] == "<end>"  # the LM's own settings are left as they were


def test_one_call_student_names_the_stage_that_failed_to_parse():
    program = OneCallProgram(build_program("kpdd-pot"))
    program.set_lm(RecordingLM(["core_question: How much?\nans = 3"]))
    with dspy.context(adapter=StudentAdapter()), pytest.raises(AdapterParseError) as failure:
        program(question=VALUES["question"])
    assert list(failure.value.signature.output_fields) == ["key_points"]
    assert "ans = 3" in failure.value.lm_response


def test_one_call_socratic_replays_each_sub_answer_in_turn():
    stages = [
        {"predictor": "decompose", "inputs": {"question": "Q?"}, "outputs": {"sub_questions": ["a?", "b?"]}},
        {"predictor": "answer_sub", "inputs": {"question": "Q?", "previous": "", "sub_question": "a?"},
         "outputs": {"sub_answer": "1 + 1 = 2"}},
        {"predictor": "answer_sub", "inputs": {"question": "Q?", "previous": "Q: a? A: 2", "sub_question": "b?"},
         "outputs": {"sub_answer": "2 * 3 = 6"}},
    ]
    repeated = repeated_predictors([_trace("socratic", stages)])
    assert repeated == ["answer_sub"]
    program = OneCallProgram(build_program("socratic"), repeated)
    inputs, outputs = one_call_example(_trace("socratic", stages), program.one_call.signature, repeated)
    assert inputs == {"question": "Q?"} and outputs["sub_answer"] == ["1 + 1 = 2", "2 * 3 = 6"]
    completion = StudentAdapter().format_assistant_message_content(program.one_call.signature, outputs)
    program.set_lm(RecordingLM([completion]))
    with dspy.context(adapter=StudentAdapter()):
        prediction = program(question="Q?")
    assert prediction.sub_answers == ["1 + 1 = 2", "2 * 3 = 6"] and prediction.answer == 6


class _Item(__import__("pydantic").BaseModel):
    name: str
    count: int


def _random_field(rng):
    """(annotation, value) of one of the output types a user's signature may have."""
    from typing import Literal

    words = ["apple", "two words", "x-1", "Total: 3", "ünïcode"]
    kind = rng.randrange(9)
    if kind == 0:
        return str, rng.choice(words)
    if kind == 1:
        return int, rng.randint(-50, 500)
    if kind == 2:
        return float, rng.choice([0.5, -2.25, 1e3, 3.0])
    if kind == 3:
        return bool, rng.random() < 0.5
    if kind == 4:
        return Literal["yes", "no", "maybe"], rng.choice(["yes", "no", "maybe"])
    if kind == 5:
        return list[str], rng.sample(words, rng.randint(1, 3))
    if kind == 6:
        return list[int], [rng.randint(-9, 99) for _ in range(rng.randint(1, 4))]
    if kind == 7:
        return dict[str, int], {w: rng.randint(0, 9) for w in rng.sample(["a", "b c", "d"], 2)}
    return list[_Item], [_Item(name=rng.choice(words), count=rng.randint(0, 5)) for _ in range(2)]


@pytest.mark.parametrize("seed", range(40))
def test_any_signature_round_trips_through_the_students_format(seed):
    """Generated signatures with several inputs and typed outputs: format the outputs, parse them back."""
    import random

    rng = random.Random(seed)
    fields = {f"in_{i}": (str, dspy.InputField()) for i in range(rng.randint(1, 3))}
    values = {}
    for i in range(rng.randint(1, 5)):
        annotation, value = _random_field(rng)
        fields[f"out_{i}"] = (annotation, dspy.OutputField())
        values[f"out_{i}"] = value
    signature = dspy.Signature(fields, "generated")
    adapter = StudentAdapter()
    completion = adapter.format_assistant_message_content(signature, values)
    assert adapter.parse(signature, completion) == values


def test_one_call_names_two_chain_of_thought_stages_apart():
    from kpdd.modules.one_call import OneCallProgram, one_call_signature

    class Twice(dspy.Module):
        def __init__(self):
            super().__init__()
            self.first = dspy.ChainOfThought("text -> draft")
            self.second = dspy.ChainOfThought("text, draft -> final: int")

        def forward(self, text):
            return self.second(text=text, draft=self.first(text=text).draft)

    signature = one_call_signature(Twice())
    assert list(signature.output_fields) == ["reasoning", "draft", "second_predict_reasoning", "final"]
    completion = "reasoning: r1\ndraft: d\nsecond_predict_reasoning: r2\nfinal: 7"
    program = OneCallProgram(Twice())
    with dspy.context(lm=dspy.utils.DummyLM([{"x": "unused"}]), adapter=StudentAdapter()):
        program.one_call.lm = _Completion(completion)
        prediction = program(text="t")
    assert prediction.final == 7 and prediction.reasoning == "r2"


class _Completion(dspy.BaseLM):
    """An LM that answers every call with one fixed text."""

    def __init__(self, text):
        super().__init__(model="fixed")
        self.text = text

    def forward(self, prompt=None, messages=None, **kwargs):
        from types import SimpleNamespace

        choice = SimpleNamespace(message=SimpleNamespace(content=self.text, tool_calls=None), finish_reason="stop",
                                 logprobs=None, index=0)
        return SimpleNamespace(choices=[choice], usage={}, model="fixed")
