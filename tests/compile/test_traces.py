"""The LM-teacher path against a real OpenAI-compatible server on 127.0.0.1, with faults; kill and resume."""

import json
import os
import signal
import subprocess
import sys
import time
import uuid

import pytest
from scripted_teacher import ScriptedTeacher

from kpdd.compile.store import QuestionResult, TraceStore
from kpdd.compile.teachers import LMTeacher
from kpdd.compile.traces import generate_traces
from kpdd.data import load_dataset
from kpdd.engines.lm import teacher_lm
from kpdd.errors import ConfigError
from kpdd.modules import build_program
from kpdd.run.traces import TracesConfig, run_traces

EXAMPLES = load_dataset("gsm8k", "train", limit=12, seed=5)
ANSWERS = {e.question: e.answer for e in EXAMPLES}


def header(method="kpdd-pot"):
    return {"method": method, "teacher": "openai/scripted", "dataset": "gsm8k", "split": "train", "meta": {}}


def lm_teacher(server, method="kpdd-pot", samples_temperature=0.7, **lm_kwargs):
    lm = teacher_lm("openai/scripted", api_base=server.url, cache=False, **lm_kwargs)
    return LMTeacher(build_program(method), lm, method, temperature=samples_temperature)


def test_lm_teacher_keeps_only_correct_traces_with_every_stage(tmp_path):
    wrong = {EXAMPLES[0].question, EXAMPLES[1].question}
    with ScriptedTeacher(ANSWERS, wrong=wrong) as server:
        stats = generate_traces(lm_teacher(server), EXAMPLES, TraceStore(tmp_path / "t.jsonl"), header(),
                                threads=4, progress=False)
    assert (stats.questions, stats.traces, stats.covered) == (12, 10, 10)
    assert stats.errors == {"wrong answer": 2}
    trace = TraceStore(tmp_path / "t.jsonl").traces()[0]
    assert [s["predictor"] for s in trace["stages"]] == ["key_points.core", "key_points.info", "solve"]
    assert trace["stages"][1]["outputs"]["key_points"] == [f"The result is {trace['gold']:g}."]
    assert trace["stages"][2]["inputs"]["key_points"] == trace["stages"][1]["outputs"]["key_points"]



def test_lm_teacher_stores_a_user_label_named_otherwise_than_answer(tmp_path):
    import dspy
    from user_programs import REVIEWS, respond, write_pipelines

    from kpdd.modules.reference import resolve_object

    source, _, _ = write_pipelines(tmp_path)
    example = dspy.Example(id="review-0", **REVIEWS[0]).with_inputs("review")
    with ScriptedTeacher({}, respond=respond) as server:
        lm = teacher_lm("openai/scripted", api_base=server.url, cache=False)
        teacher = LMTeacher(build_program(f"{source}:ReviewTagger"), lm, "ReviewTagger",
                            metric=resolve_object(f"{source}:sentiment_matches"))
        generate_traces(teacher, [example], TraceStore(tmp_path / "t.jsonl"), header("ReviewTagger"),
                        progress=False)
    [trace] = TraceStore(tmp_path / "t.jsonl").traces()
    assert trace["gold"] == {"sentiment": "positive"}

def test_transient_faults_are_retried_with_backoff(tmp_path):
    faults = ["429", "500", "429", "garbage", None, "slow", "500"]
    with ScriptedTeacher(ANSWERS, faults=faults, slow_s=2.0) as server:
        teacher = lm_teacher(server, "direct", timeout=1.0)
        stats = generate_traces(teacher, EXAMPLES[:4], TraceStore(tmp_path / "t.jsonl"), header("direct"),
                                threads=1, progress=False)
        assert server.requests >= 4 + 6  # every fault cost a retry
    assert (stats.traces, stats.failed) == (4, 0)


def test_a_question_that_keeps_failing_is_recorded_then_retried_on_resume(tmp_path):
    store = TraceStore(tmp_path / "t.jsonl")
    with ScriptedTeacher(ANSWERS, faults=["500"] * 100) as server:
        teacher = lm_teacher(server, "direct", num_retries=1)
        teacher.backoff_s = 0.01
        stats = generate_traces(teacher, EXAMPLES[:2], store, header("direct"), threads=1, progress=False)
    assert (stats.failed, stats.traces) == (2, 0)
    assert stats.errors == {"lm: LMServerError": 2}
    with ScriptedTeacher(ANSWERS) as server:
        stats = generate_traces(lm_teacher(server, "direct"), EXAMPLES[:2], store, header("direct"),
                                threads=1, progress=False)
        assert server.requests == 2  # only the failed questions ran again
    assert (stats.failed, stats.traces, stats.questions) == (0, 2, 2)


def test_k_samples_use_distinct_rollouts_and_duplicates_are_dropped(tmp_path):
    with ScriptedTeacher(ANSWERS) as server:
        # Cache on (a fresh model name, so no earlier run's entries): the rollout ids must bypass it.
        lm = teacher_lm(f"openai/scripted-{uuid.uuid4().hex}", api_base=server.url)
        teacher = LMTeacher(build_program("direct"), lm, "direct", temperature=0.7)
        result = teacher.sample(EXAMPLES[0], samples=3)
        assert server.requests == 3
    assert (result.samples, result.correct, len(result.traces)) == (3, 3, 1)
    assert result.errors == {"duplicate": 2}


def test_greedy_multi_sampling_is_refused():
    with pytest.raises(ConfigError, match="--samples 3 needs --temperature > 0, got 0"):
        run_traces(TracesConfig(program="direct", teacher="openai/x", samples=3, temperature=0, limit=1))


def test_resuming_into_a_store_of_another_program_is_refused(tmp_path):
    store = TraceStore(tmp_path / "t.jsonl")
    store.append(QuestionResult("q1", samples=1), header("cot"))
    with pytest.raises(ConfigError, match="holds traces of method 'cot'"):
        generate_traces(None, EXAMPLES[:1], store, header("direct"), progress=False)


def test_torn_last_line_is_repaired_and_unclosed_blocks_ignored(tmp_path):
    store = TraceStore(tmp_path / "t.jsonl")
    stages = [{"predictor": "solve", "inputs": {"question": "q"}, "outputs": {"answer": "1"}}]
    store.append(QuestionResult("q1", gold=1.0, samples=1, correct=1,
                                traces=[{"stages": stages, "answer": 1.0}]), header("direct"))
    with store.path.open("a") as f:  # a block cut off by a kill: a trace line, then half of the next one
        f.write(json.dumps({"schema": 1, "kind": "trace", "block": "x", "id": "y", "question_id": "q2"}) + "\n")
        f.write('{"schema": 1, "kind": "que')
    assert store.repair() > 0 and store.path.read_text().endswith("\n")
    assert [t["question_id"] for t in store.traces()] == ["q1"]
    assert store.done() == {"q1"}


def test_kill_mid_run_then_rerun_gives_every_question_once(tmp_path):
    """A real `kpdd traces` process killed at a random moment, then rerun: no lost, no duplicated record."""
    out = tmp_path / "traces.jsonl"
    examples = load_dataset("gsm8k", "train", limit=40, seed=1)
    answers = {e.question: e.answer for e in examples}
    teacher = f"openai/scripted-{uuid.uuid4().hex}"  # a fresh name: DSPy's disk cache must not answer for it
    command = [sys.executable, "-m", "kpdd", "traces", "--program", "direct", "--teacher", teacher,
               "--limit", "40", "--seed", "1", "--threads", "2", "--out", str(out)]
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"}
    with ScriptedTeacher(answers, faults=["slow"] * 1000, slow_s=0.05) as server:
        command += ["--api-base", server.url]
        process = subprocess.Popen(command, env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.time() + 120
        while time.time() < deadline and (not out.exists() or out.read_text().count('"kind": "question"') < 8):
            time.sleep(0.05)
        process.send_signal(signal.SIGKILL)
        process.wait()
        closed_before = len(TraceStore(out).done())
        assert 8 <= closed_before < 40, "the kill should land mid-run"
        done = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        assert server.requests <= 40 + 2 * 2 + 2  # asked again: the in-flight ones only (+ one probe per run)
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    closing = [line["question_id"] for line in lines if line["kind"] == "question"]
    assert sorted(closing) == sorted(e.id for e in examples)  # every question exactly once
    traces = TraceStore(out).traces()
    assert len(traces) == 40 and len({t["id"] for t in traces}) == 40
