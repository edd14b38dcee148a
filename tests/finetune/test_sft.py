"""Traces → SFT records: exactly the messages the student program will send, split by question."""

import dspy
import pytest

from kpdd.compile.gold import GoldTeacher
from kpdd.data import load_dataset
from kpdd.errors import DataError
from kpdd.finetune.sft import build_sft_data, merge_tasks, read_jsonl, write_jsonl
from kpdd.modules import build_program
from kpdd.modules.saved import student_adapter
from recording_lm import RecordingLM

EXAMPLES = load_dataset("gsm8k", "train", limit=30, seed=11)


def traces_for(method):
    teacher = GoldTeacher(method)
    return [{"id": e.id, "question_id": e.id, **t} for e in EXAMPLES for t in teacher.sample(e).traces]


@pytest.mark.parametrize("prompt_format", ["student", "chat"])
@pytest.mark.parametrize("method", ["kpdd-pot", "socratic"])
def test_records_equal_what_the_program_sends_at_inference(method, prompt_format):
    """Replay one trace through the program with a scripted LM: every prompt it sends is a record's prompt."""
    trace = traces_for(method)[0]
    program = build_program(method)
    data = build_sft_data([trace], program, val_fraction=0.0, prompt_format=prompt_format)
    records = [r for task in data.values() for r in task["train"]]
    lm = RecordingLM([student_adapter(prompt_format).format_assistant_message_content(
        dict(program.named_predictors())[stage["predictor"]].signature, stage["outputs"]) for stage in trace["stages"]])
    with dspy.context(lm=lm, adapter=student_adapter(prompt_format)):
        program(question=trace["stages"][0]["inputs"]["question"])
    sent = lm.prompts
    assert len(sent) == len(trace["stages"]) == len(records)
    for messages, stage in zip(sent, trace["stages"]):
        record = next(r for r in records if r["messages"][:-1] == messages)
        signature = dict(program.named_predictors())[stage["predictor"]].signature
        parsed = student_adapter(prompt_format).parse(signature, record["messages"][-1]["content"])
        assert parsed == stage["outputs"]  # the assistant turn parses back to the teacher's outputs


def test_split_is_by_question_and_multitask_merges_every_stage():
    traces = traces_for("kpdd-cot")
    data = build_sft_data(traces, build_program("kpdd-cot"), val_fraction=0.3, seed=1)
    assert set(data) == {"key_points.core", "key_points.info", "solve"}
    merged = merge_tasks(data)
    assert len(merged["train"]) + len(merged["validation"]) == 3 * len(traces)
    questions = {side: {r["messages"][1]["content"].split("\n")[0] for r in merged[side]} for side in merged}
    assert questions["train"].isdisjoint(questions["validation"]) and questions["validation"]


def test_wrong_program_for_the_traces_is_a_clear_error():
    with pytest.raises(DataError, match="stage 'decompose' is not a predictor of the student program"):
        build_sft_data(traces_for("socratic")[:1], build_program("kpdd-pot"))


def test_jsonl_round_trip_and_bad_line(tmp_path):
    records = merge_tasks(build_sft_data(traces_for("direct")[:3], build_program("direct"), val_fraction=0))["train"]
    assert read_jsonl(write_jsonl(records, tmp_path / "sft.jsonl")) == records
    (tmp_path / "bad.jsonl").write_text('{"messages": [{"role": "user", "content": "x"}]}\n')
    with pytest.raises(DataError, match="bad.jsonl line 1: field 'messages'"):
        read_jsonl(tmp_path / "bad.jsonl")


def test_one_call_records_hold_every_stage_once_and_fewer_tokens():
    traces = traces_for("kpdd-pot")
    per_stage = merge_tasks(build_sft_data(traces, build_program("kpdd-pot"), val_fraction=0.2))
    one = build_sft_data(traces, build_program("kpdd-pot"), val_fraction=0.2, student_calls="one")["one_call"]
    assert len(one["train"]) + len(one["validation"]) == len(traces)
    assert 3 * len(one["validation"]) == len(per_stage["validation"])  # the same questions held out
    record = one["train"][0]["messages"]
    assert record[0]["content"] == "core_question key_points program"
    assert record[1]["content"].count("question:") == 1 and record[2]["content"].startswith("core_question: ")
    size = lambda records: sum(len(m["content"]) for r in records for m in r["messages"])  # noqa: E731
    assert size(one["train"]) < 0.6 * size(per_stage["train"])
