"""The evaluation harness: predictions, intervals, taxonomy, self-consistency, resume after a kill."""

import json
import os
import signal
import subprocess
import sys
import time
import uuid

import pytest
from scripted_teacher import ScriptedTeacher

from kpdd.data import load_dataset
from kpdd.eval.harness import evaluate, format_report, majority, wilson_interval
from kpdd.eval.taxonomy import classify, false_calculations
from kpdd.modules import build_program

EXAMPLES = load_dataset("svamp", limit=6, seed=2)




@pytest.fixture
def scripted_lm():
    answers = {e.question: e.answer for e in EXAMPLES}
    wrong = {EXAMPLES[0].question}
    with ScriptedTeacher(answers, wrong=wrong) as server:
        from kpdd.engines.lm import teacher_lm

        yield teacher_lm("openai/scripted-eval", api_base=server.url, cache=False), server


def test_evaluate_writes_predictions_and_scores(tmp_path, scripted_lm):
    lm, _ = scripted_lm
    program = build_program("kpdd-cot")
    program.set_lm(lm)
    scores = evaluate(program, EXAMPLES, tmp_path / "p.jsonl", threads=3, progress=False)
    score = scores["svamp"]
    # The scripted key points state only the result, not the question's quantities: the taxonomy sees it.
    assert (score.total, score.correct) == (6, 5) and score.errors == {"key points miss a quantity": 1}
    low, high = score.interval
    assert low < 5 / 6 < high
    records = [json.loads(line) for line in (tmp_path / "p.jsonl").read_text().splitlines()]
    first = next(r for r in records if r["question_id"] == EXAMPLES[0].id)
    assert first["correct"] is False and first["gold"] == EXAMPLES[0].answer
    assert set(first["stages"]) >= {"core_question", "key_points", "reasoning"}
    assert "svamp" in format_report(scores) and "key points miss a quantity" in format_report(scores)


def test_self_consistency_samples_distinct_rollouts(tmp_path, scripted_lm):
    lm, server = scripted_lm
    program = build_program("direct")
    program.set_lm(lm)
    scores = evaluate(program, EXAMPLES[1:3], tmp_path / "p.jsonl", samples=3, progress=False)
    assert server.requests == 6 and scores["svamp"].correct == 2
    record = json.loads((tmp_path / "p.jsonl").read_text().splitlines()[0])
    assert len(record["samples"]) == 3


def test_majority_vote_and_wilson_interval():
    assert majority([3.0, 4.0, 4.0000001, None]) == 4.0
    assert majority([None, None]) is None
    assert wilson_interval(0, 10)[0] == 0.0 and 0.2 < wilson_interval(0, 10)[1] < 0.35
    assert wilson_interval(50, 100) == pytest.approx((0.404, 0.596), abs=1e-3)


@pytest.mark.parametrize("prediction,expected", [
    ({"error": "parse: program", "answer": None}, "parse: program"),
    ({"key_points": ["Tom has 3 apples."], "answer": 9.0}, "key points miss a quantity"),
    ({"reasoning": "3 + 4 = 8", "answer": 8.0}, "wrong arithmetic"),
    ({"sub_answers": ["3 * 4 = 12", "12 - 4 = 9"], "answer": 9.0}, "wrong arithmetic"),
    ({"program": "ans = 1/0", "execution": "runtime", "answer": None}, "program: runtime"),
    ({"raw_answer": "many", "answer": None}, "no answer"),
    ({"reasoning": "3 + 4 = 7", "answer": 7.0}, "wrong answer"),
])
def test_taxonomy_names_the_first_cause(prediction, expected):
    assert classify("Tom has 3 apples and buys 4 more. How many?", prediction, correct=False) == expected


def test_false_calculations_reads_written_arithmetic():
    assert false_calculations("She pays 12 x 3 = $36, then 36 / 4 = 9 and 1,200 + 300 = 1,500.") == []
    assert false_calculations("So 5 + 5 = 11 apples.") == ["5 + 5 = 11"]


def _eval_command(program: str, examples, server, out, seed: int) -> list[str]:
    return [sys.executable, "-m", "kpdd", "eval", "--program", program, "--lm", f"openai/s-{uuid.uuid4().hex}",
            "--api-base", server.url, "--datasets", "multiarith", "--limit", str(len(examples)), "--seed", str(seed),
            "--threads", "2", "--out", str(out), "--trace-sample-rate", "0"]


def _start_until_recorded(command: list[str], cwd, out, rows: int) -> subprocess.Popen:
    """Start ``command`` and return once ``out`` holds ``rows`` predictions."""
    process = subprocess.Popen(command, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and (not out.exists() or len(out.read_text().splitlines()) < rows):
        time.sleep(0.05)
    return process


def test_eval_killed_mid_run_resumes_without_repeating(tmp_path):
    """`kpdd eval` in a subprocess, killed, rerun: every question exactly once in the predictions file."""
    examples = load_dataset("multiarith", limit=30, seed=3)
    out = tmp_path / "preds.jsonl"
    with ScriptedTeacher({e.question: e.answer for e in examples}, faults=["slow"] * 1000, slow_s=0.05) as server:
        command = _eval_command("direct", examples, server, out, seed=3)
        process = _start_until_recorded(command, tmp_path, out, rows=6)
        process.send_signal(signal.SIGKILL)
        process.wait()
        before = len(out.read_text().splitlines())
        assert 6 <= before < 30
        done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300, env=os.environ)
        assert done.returncode == 0, done.stderr[-2000:]
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(r["question_id"] for r in records) == sorted(e.id for e in examples)
    assert "multiarith" in done.stdout and "100.0%" in done.stdout
    saved = json.loads((tmp_path / "preds.config.json").read_text())  # the resolved config, beside its output
    assert saved["type"] == "EvalConfig" and saved["out"] == str(out) and saved["datasets"] == ["multiarith"]


def test_questions_that_failed_on_the_lm_are_retried_on_resume(tmp_path):
    """A server failure is recorded (not lost) and counts as wrong, and the rerun asks those questions again."""
    from kpdd.engines.lm import teacher_lm
    from kpdd.eval.harness import read_predictions

    examples = EXAMPLES[:4]
    path = tmp_path / "p.jsonl"
    with ScriptedTeacher({e.question: e.answer for e in examples}, faults=["500"] * 2) as server:
        program = build_program("direct")
        program.set_lm(teacher_lm(f"openai/flaky-{uuid.uuid4().hex}", api_base=server.url, cache=False, num_retries=0))
        first = evaluate(program, examples, path, threads=1, progress=False)
        assert first["svamp"].errors["lm error"] == 2 and first["svamp"].correct == 2
        assert "rerun the same command to retry them" in format_report(first)
        second = evaluate(program, examples, path, threads=1, progress=False)
        assert server.requests == 4 + 2  # only the two failed questions were asked again
    assert second["svamp"].correct == 4 and not second["svamp"].errors
    assert len(path.read_text().splitlines()) == 6 and len(read_predictions(path)) == 4


def _alive(pid: int) -> bool:
    try:
        state = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_sigterm_stops_every_child_process_and_marks_the_run_killed(tmp_path):
    """`kill` on `kpdd eval`: the sandbox workers it started die with it, and its MLflow run says KILLED."""
    import mlflow

    from kpdd.cli import _descendants

    examples = load_dataset("multiarith", limit=20, seed=4)
    out = tmp_path / "preds.jsonl"
    with ScriptedTeacher({e.question: e.answer for e in examples}, faults=["slow"] * 1000, slow_s=0.1) as server:
        process = _start_until_recorded(_eval_command("pot", examples, server, out, seed=4), tmp_path, out, rows=2)
        children = _descendants(process.pid)
        assert children, "the PoT program runs its programs in sandbox worker processes"
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 128 + signal.SIGTERM
    assert "rerun the same command to resume" in process.stderr.read()
    time.sleep(0.5)
    assert not [pid for pid in children if _alive(pid)]
    runs = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}").search_runs(
        [e.experiment_id for e in mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}").search_experiments()])
    assert runs and {r.info.status for r in runs} == {"KILLED"}
