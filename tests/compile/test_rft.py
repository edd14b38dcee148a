"""Rejection sampling from a scripted student (a real OpenAI-compatible server on 127.0.0.1): only right,
distinct solutions are kept, tagged with their round; a rerun resumes without asking again."""

import uuid
from pathlib import Path

import pytest
from scripted_teacher import ScriptedTeacher

from kpdd.compile.rft import StudentSampler, known_solutions, newly_covered, solution_key
from kpdd.compile.store import TraceStore
from kpdd.engines.lm import teacher_lm
from kpdd.compile.traces import generate_traces
from kpdd.data import load_dataset
from kpdd.modules import build_program
from kpdd.run.improve import split_questions

EXAMPLES = load_dataset("gsm8k", "train", limit=6, seed=11)


def scripted_programs(example):
    """Four samples: right, wrong, the first again (a duplicate), right in another way."""
    answer = f"{example.answer:g}"
    return [f"ans = {answer}", f"ans = {answer} + 1", f"ans = {answer}", f"total = {answer}\nans = total"]


def sampler(server, round_, known=None):
    lm = teacher_lm(f"openai/student-{uuid.uuid4().hex}", api_base=server.url, cache=False, temperature=0.7)
    program = build_program("pot")
    program.set_lm(lm)
    return StudentSampler(program, "scripted-student", round_, temperature=0.7, known=known)


def run_round(tmp_path, server, round_, known=None, examples=EXAMPLES):
    store = TraceStore(tmp_path / f"round-{round_}.jsonl")
    header = {"method": "pot", "teacher": "student:scripted-student", "dataset": "gsm8k", "split": "train",
              "meta": {"round": round_}}
    stats = generate_traces(sampler(server, round_, known), examples, store, header, samples=4, threads=3,
                            progress=False)
    return stats, store


def test_partly_right_samples_yield_only_right_distinct_traces_tagged_with_their_round(tmp_path):
    programs = {e.question: scripted_programs(e) for e in EXAMPLES}
    with ScriptedTeacher({e.question: e.answer for e in EXAMPLES}, programs=programs) as server:
        stats, store = run_round(tmp_path, server, round_=1)
        assert server.requests == 4 * len(EXAMPLES)  # k distinct rollouts each reached the student
    traces = store.traces()
    assert (stats.samples, stats.traces, stats.covered) == (24, 12, 6)
    assert stats.errors == {"wrong answer": 6, "duplicate": 6}
    assert {t["meta"]["round"] for t in traces} == {1}
    assert {t["teacher"] for t in traces} == {"student:scripted-student"}
    for example in EXAMPLES:
        kept = [t for t in traces if t["question_id"] == example.id]
        assert sorted(t["stages"][0]["outputs"]["program"] for t in kept) == sorted(scripted_programs(example)[i]
                                                                                    for i in (0, 3))
        assert all(t["answer"] == pytest.approx(example.answer) for t in kept)


def test_solutions_known_from_earlier_rounds_are_not_kept_again(tmp_path):
    first = {e.question: scripted_programs(e)[:1] for e in EXAMPLES}
    with ScriptedTeacher({e.question: e.answer for e in EXAMPLES}, programs=first) as server:
        _, store = run_round(tmp_path, server, round_=1)
    round_one = store.traces()
    both = {e.question: [scripted_programs(e)[0], scripted_programs(e)[3]] for e in EXAMPLES}
    with ScriptedTeacher({e.question: e.answer for e in EXAMPLES}, programs=both) as server:
        stats, store = run_round(tmp_path, server, 2, known_solutions(round_one))
    round_two = store.traces()
    assert stats.traces == len(EXAMPLES) and {t["meta"]["round"] for t in round_two} == {2}
    assert {solution_key(t["stages"]) for t in round_two}.isdisjoint(solution_key(t["stages"]) for t in round_one)
    assert newly_covered(round_two, round_one) == set()
    assert newly_covered(round_one, []) == {e.id for e in EXAMPLES}


def test_solution_key_ignores_layout_of_programs_and_case_of_rationales():
    program = [{"predictor": "solve", "outputs": {"program": "x = 2\n\n  ans = x * 3  "}}]
    same = [{"predictor": "solve", "outputs": {"program": "x = 2\nans = x * 3"}}]
    assert solution_key(program) == solution_key(same)
    rationale = [{"predictor": "solve", "outputs": {"reasoning": "Two  apples\nand Three", "answer": "5"}}]
    spaced = [{"predictor": "solve", "outputs": {"reasoning": "two apples and three"}}]
    assert solution_key(rationale) == solution_key(spaced)


def test_a_second_run_resumes_without_asking_the_student_again(tmp_path):
    programs = {e.question: scripted_programs(e) for e in EXAMPLES}
    with ScriptedTeacher({e.question: e.answer for e in EXAMPLES}, programs=programs) as server:
        first, store = run_round(tmp_path, server, round_=1, examples=EXAMPLES[:3])
        asked = server.requests
        again, _ = run_round(tmp_path, server, round_=1, examples=EXAMPLES[:3])
        assert server.requests == asked and again.traces == first.traces == 6
        more, _ = run_round(tmp_path, server, round_=1)
        assert server.requests == asked + 4 * 3 and more.traces == 12


def test_validation_questions_are_fine_tunings_held_out_side():
    examples = load_dataset("gsm8k", "train", limit=200, seed=0)
    train, validation = split_questions(examples, 0.2, seed=0)
    from kpdd.finetune.sft import is_validation

    assert len(train) + len(validation) == 200 and 20 <= len(validation) <= 60
    assert all(is_validation(e.id, 0.2, 0) for e in validation) and not any(is_validation(e.id, 0.2, 0) for e in train)


def test_improve_resumes_finished_rounds_from_their_record_and_stops_when_accuracy_stops_rising(tmp_path):
    from kpdd import jsonl
    from kpdd.errors import ConfigError
    from kpdd.run.improve import ROUNDS_FILE, ImproveConfig, run_improve

    start = tmp_path / "start"
    start.mkdir()
    (start / "kpdd-program.json").write_text("{}")
    config = ImproveConfig(student_program=str(start), limit=50, val_fraction=0.2, rounds=3, out=str(tmp_path))
    jsonl.append(tmp_path / ROUNDS_FILE, [
        {"round": 0, "student": str(start), "val_accuracy": 0.1},
        {"round": 1, "student": "r1", "val_accuracy": 0.3, "drawn": 160, "correct": 20, "kept": 15,
         "new_questions": 9, "training_traces": 60},
        {"round": 2, "student": "r2", "val_accuracy": 0.3, "drawn": 160, "correct": 25, "kept": 12,
         "new_questions": 2, "training_traces": 72}])
    said = []
    result = run_improve(config, progress=False, echo=said.append)  # no model is loaded: every round is recorded
    assert result.best == Path("r1") and [r.round for r in result.rounds] == [0, 1, 2]
    assert said[-1].startswith("validation accuracy did not rise above 30.0%")
    with pytest.raises(ConfigError, match="--student-program"):
        run_improve(ImproveConfig(out=str(tmp_path / "none")), progress=False)


def test_a_one_call_students_samples_are_recorded_as_per_stage_traces(tmp_path):
    from kpdd.modules.saved import build_student_program
    from kpdd.modules.student_format import CHAT, adapter_for

    programs = {e.question: scripted_programs(e) for e in EXAMPLES[:2]}
    with ScriptedTeacher({e.question: e.answer for e in EXAMPLES}, programs=programs) as server:
        program = build_student_program("kpdd-pot", "one")
        program.set_lm(teacher_lm(f"openai/student-{uuid.uuid4().hex}", api_base=server.url, cache=False))
        program.prompt_adapter = adapter_for(CHAT)  # the scripted server speaks DSPy's chat format
        sampler = StudentSampler(program, "one-call-student", 1, temperature=0.7)
        result = sampler.sample(EXAMPLES[0], samples=4)
    assert (result.samples, result.correct, len(result.traces)) == (4, 3, 2)
    stages = result.traces[0]["stages"]
    assert [s["predictor"] for s in stages] == ["key_points.core", "key_points.info", "solve"]
    assert stages[2]["inputs"]["key_points"] == stages[1]["outputs"]["key_points"]
    assert stages[2]["inputs"]["core_question"] == stages[0]["outputs"]["core_question"]
    assert stages[2]["outputs"]["program"] == scripted_programs(EXAMPLES[0])[0]


def test_a_validation_whose_lm_failed_stops_the_round_instead_of_scoring_zero(tmp_path):
    from collections import Counter

    from kpdd.errors import LMUnavailableError
    from kpdd.eval.harness import DatasetScore
    from kpdd.eval.taxonomy import LM_ERROR
    from kpdd.run.improve import validation_accuracy

    answered = {"gsm8k": DatasetScore("gsm8k", total=4, correct=1, errors=Counter({"wrong answer": 3}))}
    assert validation_accuracy(answered, tmp_path / "v.jsonl") == 0.25
    failed = {"gsm8k": DatasetScore("gsm8k", total=4, correct=0, errors=Counter({LM_ERROR: 3, "wrong answer": 1}))}
    with pytest.raises(LMUnavailableError, match="3 of 4 questions failed on an LM call"):
        validation_accuracy(failed, tmp_path / "v.jsonl")
