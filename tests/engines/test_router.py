"""A teacher fanned over several real OpenAI-compatible servers on 127.0.0.1 through LiteLLM's Router: spread,
fail-over, cool-down, Retry-After, a server killed mid-run, and a store that resumes with nothing lost or repeated."""

import itertools
import json
import signal
import subprocess
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
from scripted_teacher import ScriptedTeacher, TeacherProcess

from kpdd.compile.store import TraceStore
from kpdd.compile.teachers import LMTeacher
from kpdd.compile.traces import generate_traces
from kpdd.data import load_dataset
from kpdd.engines.lm import teacher_lm
from kpdd.engines.router import RouterEngine, read_endpoints, routed_lm
from kpdd.errors import ConfigError
from kpdd.modules import build_program

EXAMPLES = load_dataset("gsm8k", "train", limit=40, seed=7)
ANSWERS = {e.question: e.answer for e in EXAMPLES}
LATENCY_S = 0.05


def header():
    return {"method": "direct", "teacher": "openai/scripted", "dataset": "gsm8k", "split": "train", "meta": {}}


def fleet_teacher(urls, **lm_kwargs) -> LMTeacher:
    """The `direct` program on one LM spread over ``urls`` (a fresh model name: no cache entry answers for it)."""
    lm_kwargs = {"cache": False, **lm_kwargs}
    lm = routed_lm(f"openai/scripted-{uuid.uuid4().hex}", urls, **lm_kwargs)
    return LMTeacher(build_program("direct"), lm, "direct", backoff_s=0.01)


def closed_question_ids(path) -> list[str]:
    """Every block-closing line's question id, repeats included (a duplicate would show here)."""
    return [line["question_id"] for line in map(json.loads, path.read_text().splitlines()) if line["kind"] == "question"]


def gap_since_first(server) -> float:
    return server.request_times[-1] - server.request_times[0]


def test_read_endpoints_takes_repeats_commas_and_a_file(tmp_path):
    listing = tmp_path / "endpoints.txt"
    listing.write_text("# teacher fleet\nhttp://10.0.0.3:8000/v1\n\nhttp://10.0.0.1:8000/v1  # again\n")
    found = read_endpoints(["http://10.0.0.1:8000/v1", "http://10.0.0.2:8000/v1,http://10.0.0.1:8000/v1"], listing)
    assert found == ["http://10.0.0.1:8000/v1", "http://10.0.0.2:8000/v1", "http://10.0.0.3:8000/v1"]
    assert read_endpoints("http://a/v1") == ["http://a/v1"] and read_endpoints(None) == []
    listing.write_text("http://10.0.0.1:8000/v1\n10.0.0.2:8000\n")
    with pytest.raises(ConfigError, match=r"endpoints.txt line 2: expected an endpoint URL .* got '10.0.0.2:8000'"):
        read_endpoints([], listing)
    with pytest.raises(ConfigError, match="missing.txt does not exist"):
        read_endpoints([], tmp_path / "missing.txt")


def test_several_api_bases_make_a_routed_lm_and_one_does_not():
    assert isinstance(teacher_lm("openai/t", api_base=["http://a/v1", "http://b/v1"]).engine, RouterEngine)
    assert teacher_lm("openai/t", api_base=["http://a/v1"]).engine == "auto"


def test_api_base_options_repeat_and_split_commas(tmp_path):
    from kpdd.config import load_config
    from kpdd.run.compile import CompileConfig
    from kpdd.run.traces import TracesConfig

    config = load_config(TracesConfig, api_base=["http://a/v1", "http://b/v1,http://c/v1"])
    assert config.api_base == ["http://a/v1", "http://b/v1", "http://c/v1"]
    toml = tmp_path / "compile.toml"
    toml.write_text('[compile]\napi_base = ["http://a/v1", "http://b/v1"]\napi_bases_file = "fleet.txt"\n')
    config = load_config(CompileConfig, toml, section="compile")
    assert (config.api_base, config.api_bases_file) == (["http://a/v1", "http://b/v1"], "fleet.txt")


def test_eval_spreads_a_model_string_lm_over_several_servers():
    from kpdd.run.eval import EvalConfig, load_program_and_lm, references

    config = EvalConfig(program="direct", lm="openai/served-student", api_base=["http://a/v1", "http://b/v1"])
    program, _, local = load_program_and_lm(config, *references(config))
    engine = program.predictors()[0].lm.engine
    assert not local and isinstance(engine, RouterEngine) and engine.api_bases == ["http://a/v1", "http://b/v1"]


def test_calls_are_spread_over_every_server(tmp_path):
    servers = [ScriptedTeacher(ANSWERS, latency_s=LATENCY_S, capacity=1) for _ in range(3)]
    with servers[0], servers[1], servers[2]:
        teacher = fleet_teacher([s.url for s in servers])
        stats = generate_traces(teacher, EXAMPLES[:24], TraceStore(tmp_path / "t.jsonl"), header(), threads=6,
                                progress=False)
    assert (stats.questions, stats.traces, stats.failed) == (24, 24, 0)
    assert sum(s.requests for s in servers) == 24
    assert min(s.requests for s in servers) >= 4, [s.requests for s in servers]


def test_a_server_killed_mid_run_loses_and_repeats_nothing(tmp_path):
    store = TraceStore(tmp_path / "t.jsonl")
    healthy = [ScriptedTeacher(ANSWERS, latency_s=LATENCY_S, capacity=1) for _ in range(2)]
    with healthy[0], healthy[1], TeacherProcess(ANSWERS, latency_s=LATENCY_S, capacity=1) as doomed:
        teacher = fleet_teacher([doomed.url] + [s.url for s in healthy])
        run = threading.Thread(target=generate_traces, args=(teacher, EXAMPLES, store, header()),
                               kwargs={"threads": 6, "progress": False})
        run.start()
        deadline = time.time() + 60
        while time.time() < deadline and (not store.path.exists() or len(closed_question_ids(store.path)) < 10):
            time.sleep(0.01)
        doomed.kill()  # SIGKILL, with requests in flight
        run.join(timeout=120)
        assert not run.is_alive()
        stats = store.stats()
        assert sorted(closed_question_ids(store.path)) == sorted(e.id for e in EXAMPLES)  # each exactly once
        assert (stats.traces, stats.failed) == (40, 0)
        asked = sum(s.requests for s in healthy)
        generate_traces(teacher, EXAMPLES, store, header(), threads=6, progress=False)  # a rerun: nothing to do
        assert sum(s.requests for s in healthy) == asked
    assert len(closed_question_ids(store.path)) == 40 and len({t["id"] for t in store.traces()}) == 40


def test_a_faulty_server_is_cooled_down_while_the_others_answer(tmp_path):
    faults = itertools.cycle(["429", "500", "garbage"])
    with (ScriptedTeacher(ANSWERS, latency_s=LATENCY_S) as good, ScriptedTeacher(ANSWERS, latency_s=LATENCY_S) as also,
          ScriptedTeacher(ANSWERS, faults=faults, retry_after=5) as faulty):
        teacher = fleet_teacher([faulty.url, good.url, also.url], cooldown_s=5)
        stats = generate_traces(teacher, EXAMPLES, TraceStore(tmp_path / "t.jsonl"), header(), threads=6,
                                progress=False)
        assert (stats.traces, stats.failed, stats.errors) == (40, 0, {})
        assert good.requests + also.requests == 40
        # At most the first burst of the 6 threads reaches it before its first failure cools it down (for 5 s).
        assert faulty.requests <= 6, "a failing server should be cooled down, not asked again and again"


def test_a_server_that_hangs_times_out_and_its_questions_go_elsewhere(tmp_path):
    with (ScriptedTeacher(ANSWERS, faults=itertools.cycle(["slow"]), slow_s=3) as hung,
          ScriptedTeacher(ANSWERS, latency_s=LATENCY_S) as other):
        teacher = fleet_teacher([hung.url, other.url], timeout=0.5, cooldown_s=5)
        start = time.perf_counter()
        stats = generate_traces(teacher, EXAMPLES[:12], TraceStore(tmp_path / "t.jsonl"), header(), threads=4,
                                progress=False)
        assert time.perf_counter() - start < 3, "no question should wait for the hung server"
        assert (stats.traces, stats.failed, other.requests) == (12, 0, 12)
        assert hung.requests <= 4  # the first requests routed there, then it is cooled down


def test_a_429_keeps_its_server_idle_for_retry_after_seconds():
    """The cool-down after a 429 lasts as long as its Retry-After (1 s), though the configured one is 0.1 s."""
    # Every request that reaches the limited server in the first burst is refused, for 1 s each.
    with (ScriptedTeacher(ANSWERS, faults=["429"] * 4, retry_after=1) as limited,
          ScriptedTeacher(ANSWERS, latency_s=LATENCY_S) as other):
        teacher = fleet_teacher([limited.url, other.url], cooldown_s=0.1)
        with ThreadPoolExecutor(4) as pool:
            deadline = time.time() + 20
            while time.time() < deadline and (not limited.request_times or gap_since_first(limited) < 1):
                list(pool.map(teacher.sample, EXAMPLES[:8]))  # keep the pool busy until it is asked again
    first = limited.request_times[0]
    gaps = [t - first for t in limited.request_times]
    # Within its first second it sees only a few requests (those already on their way when a 429 came back); with
    # Retry-After ignored (cool-down 0.1 s) the busy pool would send it one every ~0.1 s.
    assert len([g for g in gaps if g < 0.95]) <= 4, f"asked again {gaps} s after the first 429"
    assert gaps[-1] >= 0.95


def test_the_response_cache_answers_a_rerun_on_other_servers(tmp_path):
    """DSPy's cache ignores the endpoint: answers received from one server serve a rerun over a fleet."""
    model = f"openai/scripted-{uuid.uuid4().hex}"
    with ScriptedTeacher(ANSWERS) as first, ScriptedTeacher(ANSWERS) as one, ScriptedTeacher(ANSWERS) as two:
        for run, endpoints in enumerate([first.url, [one.url, two.url]]):
            teacher = LMTeacher(build_program("direct"), teacher_lm(model, api_base=endpoints), "direct")
            generate_traces(teacher, EXAMPLES[:6], TraceStore(tmp_path / f"run{run}.jsonl"), header(), threads=2,
                            progress=False)
        assert (first.requests, one.requests + two.requests) == (6, 0)


def test_a_pool_that_fails_as_a_whole_is_recorded_then_resumed(tmp_path):
    store = TraceStore(tmp_path / "t.jsonl")
    with ScriptedTeacher(ANSWERS, faults=["500"] * 100) as one, ScriptedTeacher(ANSWERS, faults=["500"] * 100) as two:
        teacher = fleet_teacher([one.url, two.url], num_retries=0, cooldown_s=0.05)
        teacher.retries = 0
        stats = generate_traces(teacher, EXAMPLES[:2], store, header(), threads=1, progress=False)
    assert (stats.failed, stats.traces) == (2, 0)
    assert stats.errors == {"lm: LMServerError": 2}
    with ScriptedTeacher(ANSWERS) as one, ScriptedTeacher(ANSWERS) as two:
        stats = generate_traces(fleet_teacher([one.url, two.url]), EXAMPLES[:2], store, header(), threads=1,
                                progress=False)
        assert one.requests + two.requests == 2  # only the failed questions ran again
    assert (stats.failed, stats.traces, stats.questions) == (0, 2, 2)
    assert sorted(closed_question_ids(store.path)) == sorted([e.id for e in EXAMPLES[:2]] * 2)


@pytest.mark.slow  # two kpdd processes, each importing MLflow and LiteLLM
def test_kpdd_traces_over_a_fleet_killed_and_rerun_traces_every_question_once(tmp_path):
    """`kpdd traces` with --api-base twice and --api-bases-file, SIGKILLed mid-run, then rerun."""
    out, listing = tmp_path / "traces.jsonl", tmp_path / "endpoints.txt"
    examples = load_dataset("gsm8k", "train", limit=30, seed=2)
    answers = {e.question: e.answer for e in examples}
    servers = [ScriptedTeacher(answers, latency_s=LATENCY_S, capacity=1) for _ in range(3)]
    with servers[0], servers[1], servers[2]:
        listing.write_text(servers[2].url + "\n")
        command = [sys.executable, "-m", "kpdd", "traces", "--program", "direct", "--limit", "30", "--seed", "2",
                   "--teacher", f"openai/scripted-{uuid.uuid4().hex}", "--threads", "3", "--out", str(out),
                   "--api-base", servers[0].url, "--api-base", servers[1].url, "--api-bases-file", str(listing)]
        process = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.time() + 120
        while time.time() < deadline and (not out.exists() or len(closed_question_ids(out)) < 6):
            time.sleep(0.02)
        process.send_signal(signal.SIGKILL)
        process.wait()
        assert 6 <= len(TraceStore(out).done()) < 30, "the kill should land mid-run"
        done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        assert all(s.requests > 0 for s in servers), [s.requests for s in servers]
    assert sorted(closed_question_ids(out)) == sorted(e.id for e in examples)
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    trace_ids = [line["id"] for line in lines if line["kind"] == "trace"]
    kept = sum(line["kept"] for line in lines if line["kind"] == "question")
    assert len(trace_ids) == len(set(trace_ids)) == kept >= 29  # one question's scripted answer reads wrong
