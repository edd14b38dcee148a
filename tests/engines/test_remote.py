"""Remote LMs fail in one line: a path that holds no model, a probe before the run, a guard during it.

Real HTTP servers on 127.0.0.1 (tests/scripted_teacher.py): a closed port, one that answers 401, one that does not
serve the model, one that dies mid-run and comes back on the same port.
"""

import json
import os
import re
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import mlflow
import pytest
from dspy.utils.exceptions import LMAuthError, LMServerError, LMTransportError
from scripted_teacher import ScriptedTeacher

from kpdd.compile.store import TraceStore
from kpdd.compile.teachers import LMTeacher
from kpdd.compile.traces import generate_traces
from kpdd.data import load_dataset
from kpdd.engines.lm import teacher_lm
from kpdd.engines.remote import probe_lm
from kpdd.errors import ConfigError, LMUnavailableError
from kpdd.eval.harness import evaluate, read_predictions
from kpdd.eval.lm_guard import FailureGuard
from kpdd.modules import build_program

EXAMPLES = load_dataset("multiarith", limit=8, seed=3)
ANSWERS = {e.question: e.answer for e in EXAMPLES}
HEADER = {"method": "direct", "teacher": "openai/scripted", "dataset": "multiarith", "split": "test", "meta": {}}


def closed_port() -> int:
    """A port on 127.0.0.1 where nothing listens: connecting is refused."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def kpdd(*args: str, cwd, env: dict | None = None) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"} | (env or {})
    return subprocess.run([sys.executable, "-m", "kpdd", *args], cwd=cwd, env=environment, capture_output=True,
                          text=True, timeout=300)


def assert_fails_in_one_line(done: subprocess.CompletedProcess, line: str, started: float) -> None:
    assert done.returncode == 2, done.stderr[-2000:]
    assert done.stderr.splitlines() == [f"error: {line}"]  # the one line, no traceback, no progress bar
    assert time.time() - started < 60


def assert_nothing_written(cwd, tracking_uri: str) -> None:
    assert not (cwd / "kpdd-runs").exists()
    client = mlflow.MlflowClient(tracking_uri)
    assert client.search_runs([e.experiment_id for e in client.search_experiments()]) == []


# A path that holds no model ------------------------------------------------------------------------------------

def test_cli_a_missing_lm_directory_is_one_line(tmp_path, mlflow_store):
    started = time.time()
    done = kpdd("eval", "--program", "pot", "--lm", "./nope", "--datasets", "gsm8k", cwd=tmp_path)
    assert_fails_in_one_line(done, f"--lm ./nope: no such directory ({tmp_path.resolve() / 'nope'}); expected a "
                                   "kpdd student directory (with kpdd.json), a compiled program (with "
                                   "kpdd-program.json), or a Hugging Face checkpoint (with config.json)", started)
    assert_nothing_written(tmp_path, mlflow_store)


def test_teacher_lm_of_a_missing_directory_is_one_line():
    with pytest.raises(ConfigError) as error:
        teacher_lm("./nope")
    assert str(error.value) == (f"--teacher ./nope: no such directory ({Path('nope').resolve()}); expected a kpdd "
                                "student directory (with kpdd.json) or a Hugging Face checkpoint (with config.json)")


def test_eval_checks_program_and_lm_arguments_before_the_run():
    from kpdd.errors import KpddError
    from kpdd.run.eval import EvalConfig, check_lms

    with pytest.raises(ConfigError, match=r"^--program ./nope: no such directory \(\S+nope\); expected a compiled "
                                          r"program directory \(with kpdd-program.json\)$"):
        check_lms(EvalConfig(program="./nope"))
    with pytest.raises(KpddError, match="^--lm 'smolm2-135m': expected a model directory .* Did you mean "):
        check_lms(EvalConfig(lm="smolm2-135m"))
    check_lms(EvalConfig())  # the shipped alias: nothing to probe, nothing loaded


# The probe before a run -----------------------------------------------------------------------------------------

def test_cli_a_closed_port_is_one_line_before_anything_is_written(tmp_path, mlflow_store):
    port = closed_port()
    url = f"http://127.0.0.1:{port}/v1"
    started = time.time()
    done = kpdd("eval", "--program", "direct", "--lm", "openai/foo", "--api-base", url, "--datasets", "multiarith",
                "--limit", "2", cwd=tmp_path)
    assert_fails_in_one_line(done, f"--lm openai/foo: nothing answers at {url} (failed to connect to "
                                   f"127.0.0.1:{port}: [Errno 111] Connection refused): start the server, or fix "
                                   "--api-base", started)
    assert_nothing_written(tmp_path, mlflow_store)


def test_cli_a_refused_key_is_one_line_before_anything_is_written(tmp_path, mlflow_store):
    with ScriptedTeacher(ANSWERS, api_key="sk-right") as server:
        started = time.time()
        done = kpdd("traces", "--program", "direct", "--teacher", "openai/scripted", "--api-base", server.url,
                    "--limit", "2", cwd=tmp_path, env={"OPENAI_API_KEY": "sk-wrong"})
        assert server.requests == 0  # the 401 was the only answer
    assert_fails_in_one_line(done, f"--teacher openai/scripted: {server.url} refused the API key (401 "
                                   "Unauthorized): put the right key in OPENAI_API_KEY, or name the variable that "
                                   "holds it with --api-key-env", started)
    assert_nothing_written(tmp_path, mlflow_store)


def test_cli_a_missing_key_names_the_variable(tmp_path, mlflow_store):
    started = time.time()
    done = kpdd("traces", "--teacher", "openai/gpt-4o-mini", cwd=tmp_path)
    assert_fails_in_one_line(done, "--teacher openai/gpt-4o-mini: no API key: set OPENAI_API_KEY (export "
                                   "OPENAI_API_KEY=...), or pass --api-base for an OpenAI-compatible server", started)
    assert_nothing_written(tmp_path, mlflow_store)


@pytest.mark.slow  # imports litellm (10-20 s)
def test_a_missing_key_for_a_litellm_provider_is_named_by_litellm(monkeypatch):
    """DSPy hands together_ai to LiteLLM, which only fails at the network: LiteLLM's validate_environment names
    the variable."""
    for name in ("TOGETHERAI_API_KEY", "TOGETHER_API_KEY", "TOGETHER_AI_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(LMUnavailableError) as error:
        probe_lm(teacher_lm("together_ai/meta-llama/Llama-3-8b"), "--teacher", "OPENAI_API_KEY")
    assert str(error.value) == "--teacher together_ai/meta-llama/Llama-3-8b: no API key: set TOGETHERAI_API_KEY " \
                               "(export TOGETHERAI_API_KEY=...), or pass --api-base for an OpenAI-compatible server"


def test_probe_names_the_models_a_server_serves():
    with ScriptedTeacher(ANSWERS, models={"served"}) as server:
        with pytest.raises(LMUnavailableError) as error:
            probe_lm(teacher_lm("openai/other", api_base=server.url), "--lm")
    assert str(error.value) == f"--lm openai/other: {server.url} does not serve model 'other' (404 Not Found): " \
                               "it serves openai/served"


def test_probe_lets_a_run_start_on_a_transient_error_and_asks_once():
    with ScriptedTeacher(ANSWERS, faults=["500"]) as server:
        lm = teacher_lm(f"openai/p-{uuid.uuid4().hex}", api_base=server.url)
        probe_lm(lm, "--lm")  # a 5xx: the server is there, the run will retry
        probe_lm(lm, "--lm")  # answered
        probe_lm(lm, "--lm")  # already answered in this process: not asked again
        assert server.requests == 2


# The guard during a run -----------------------------------------------------------------------------------------

def test_guard_stops_at_a_dead_server_only_after_the_set_time():
    guard = FailureGuard(server_gone_s=0.3)
    refused = LMTransportError("failed to connect to 127.0.0.1:9: [Errno 111] Connection refused", model="openai/m")
    guard.on_lm_end("c1", None, LMServerError("boom", model="openai/m", status=500))  # transient: never stops
    guard.on_lm_end("c2", None, refused)
    assert not guard.stopped  # it answered 0.3 s ago at most
    time.sleep(0.4)
    guard.on_lm_end("c3", ["ok"], None)  # an answer restarts the clock
    guard.on_lm_end("c4", None, refused)
    assert not guard.stopped
    time.sleep(0.4)
    guard.on_lm_end("c5", None, refused)
    assert re.fullmatch(r"openai/m has not answered for 0\.[45] s \(failed to connect to 127\.0\.0\.1:9: \[Errno 111\] "
                        r"Connection refused\)", guard.reason) and guard.fix == "start its server again"


def test_guard_stops_after_three_permanent_errors_in_a_row():
    guard = FailureGuard()
    auth = LMAuthError("Incorrect API key provided", model="openai/m", status=401)
    for _ in range(2):
        guard.on_lm_end("c", None, auth)
    guard.on_lm_end("c", ["ok"], None)  # an answer in between: not in a row
    guard.on_lm_end("c", None, auth)
    guard.on_lm_end("c", None, auth)
    assert not guard.stopped
    guard.on_lm_end("c", None, auth)
    assert guard.reason == "3 calls to openai/m in a row failed for good (401 Unauthorized: Incorrect API key " \
                           "provided)"


def test_eval_stops_after_permanent_errors_and_keeps_what_it_wrote(tmp_path):
    path = tmp_path / "p.jsonl"
    with ScriptedTeacher(ANSWERS, faults=[None] * 3 + ["401"] * 20) as server:
        program = build_program("direct")
        program.set_lm(teacher_lm(f"openai/k-{uuid.uuid4().hex}", api_base=server.url, cache=False))
        with pytest.raises(LMUnavailableError) as error:
            evaluate(program, EXAMPLES, path, threads=1, progress=False)
        assert server.requests == 6  # 3 answers, then 3 refusals in a row; the other questions never started
    model = program.predictors()[0].lm.model
    assert str(error.value) == (f"3 calls to {model} in a row failed for good (401 Unauthorized: Incorrect API key "
                                f"provided); stopped with 3 of 8 questions answered, kept in {path}: check its API "
                                "key, then rerun the same command to resume")
    records = read_predictions(path)
    assert len(records) == 6 and sum(r["error"] is None for r in records) == 3


def test_traces_stop_when_the_teacher_dies_and_resume_when_it_is_back(tmp_path):
    store = TraceStore(tmp_path / "t.jsonl")
    model = f"openai/d-{uuid.uuid4().hex}"
    with ScriptedTeacher(ANSWERS, die_after=4) as server:
        port = server.server.server_port
        teacher = LMTeacher(build_program("direct"), teacher_lm(model, api_base=server.url, num_retries=1), "direct")
        with pytest.raises(LMUnavailableError) as error:
            generate_traces(teacher, EXAMPLES, store, HEADER, threads=1, progress=False,
                            guard=FailureGuard(server_gone_s=0.5))
    assert re.fullmatch(rf"{model} has not answered for 1\.\d s \(failed to connect to 127\.0\.0\.1:{port}: \[Errno "
                        rf"111\] Connection refused\); stopped with 4 of 8 questions done, kept in "
                        rf"{re.escape(str(store.path))}: start its server again, then rerun the same command to "
                        "resume", str(error.value))
    assert len(store.done()) == 4 and len(store.traces()) == 4
    with ScriptedTeacher(ANSWERS, port=port) as server:  # back on the same port
        teacher = LMTeacher(build_program("direct"), teacher_lm(model, api_base=server.url), "direct")
        stats = generate_traces(teacher, EXAMPLES, store, HEADER, threads=1, progress=False)
        assert server.requests == 4  # only the questions the dead server left
    assert (stats.questions, stats.traces, stats.failed) == (8, 8, 0)


@pytest.mark.slow  # two `kpdd eval` processes: about 30 s on a loaded 2-core machine
def test_cli_eval_whose_server_dies_stops_in_one_line_and_the_same_command_resumes(tmp_path):
    out = tmp_path / "preds.jsonl"
    name = f"s-{uuid.uuid4().hex}"  # a fresh model name: DSPy's disk cache must not answer for it
    with ScriptedTeacher(ANSWERS, die_after=5, faults=["slow"] * 100, slow_s=0.1) as server:  # the probe + 4
        port = server.server.server_port
        command = ["eval", "--program", "direct", "--lm", f"openai/{name}", "--api-base", server.url, "--datasets",
                   "multiarith", "--limit", "8", "--seed", "3", "--threads", "2", "--out", str(out),
                   "--trace-sample-rate", "0", "--retries", "1", "--server-gone-s", "1"]
        done = kpdd(*command, cwd=tmp_path)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    last = re.split(r"[\r\n]+", done.stderr.strip())[-1]
    found = re.fullmatch(rf"error: openai/{name} has not answered for [\d.]+ s \(failed to connect to 127\.0\.0\.1:"
                         rf"{port}: \[Errno 111\] Connection refused\); stopped with (\d) of 8 questions answered, "
                         rf"kept in {re.escape(str(out))}: start its server again, then rerun the same command to "
                         "resume", last)
    assert found, last
    kept = [json.loads(line) for line in out.read_text().splitlines()]
    answered = {r["question_id"] for r in kept if r["error"] != "lm error"}
    assert len(answered) == int(found.group(1)) and 4 <= len(answered) < 8
    with ScriptedTeacher(ANSWERS, port=port) as server:
        again = kpdd(*command, cwd=tmp_path)
        assert again.returncode == 0, again.stderr[-2000:]
        assert server.requests == 1 + 8 - len(answered)  # the probe, then only the questions not answered yet
    records = read_predictions(out)
    assert len(records) == 8 and all(r["correct"] for r in records)
    assert answered <= {json.loads(line)["question_id"] for line in out.read_text().splitlines()[:len(kept)]}
