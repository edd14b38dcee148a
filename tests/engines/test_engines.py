"""Local engines on the real shipped student: batching of concurrent DSPy calls, routing, saving."""

import json
import time
from concurrent.futures import ThreadPoolExecutor

import dspy
import pytest

from kpdd.engines.batching import shared_engine
from kpdd.engines.hf import TransformersEngine
from kpdd.engines.lm import student_lm
from kpdd.errors import ConfigError, EngineError, RegistryError
from kpdd.finetune.registry import registered_student
from kpdd.finetune.student import DEFAULT_BASE, ensure_base_model, write_student

QUESTIONS = [
    "Tom has 3 apples and buys 5 more. How many apples does he have?",
    "What is 12 times 4?",
    "A train travels 60 km in 1 hour. How far does it go in 3 hours?",
    "Sara had 20 sweets and gave away 7. How many are left?",
    "What is 100 divided by 4?",
    "Name a prime number larger than 10.",
]


def chat(question: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": question}]


class Solve(dspy.Signature):
    """Solve the maths word problem."""

    question: str = dspy.InputField()
    answer: str = dspy.OutputField()


@pytest.fixture(scope="module")
def engine():
    ensure_base_model()
    # float32: these tests compare greedy outputs of different batchings token for token; in bf16 the
    # rounding of a mixed-adapter batch and a single-adapter batch differs enough to flip a random LoRA's tokens.
    engine = shared_engine("transformers", device="cpu", dtype="float32", max_batch_size=8, batch_wait_s=0.05)
    engine.register(DEFAULT_BASE, DEFAULT_BASE)
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def lora_student(tmp_path_factory):
    """A student whose LoRA adapter is randomly initialised, so its outputs differ from the base's."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    directory = tmp_path_factory.mktemp("lora-student")
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(ensure_base_model())
    config = LoraConfig(r=8, lora_alpha=32, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    get_peft_model(model, config).save_pretrained(directory / "adapter")
    write_student(directory, DEFAULT_BASE, "adapter", None, f"lora-{directory.name}", {})
    return directory


def run_concurrently(fn, items, threads=6):
    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(fn, items))


@pytest.mark.slow
def test_transformers_engine_batches_concurrent_dspy_calls(engine):
    lm = student_lm(DEFAULT_BASE, engine=engine, max_tokens=16, cache=False)
    solve = dspy.Predict(Solve)
    solve.set_lm(lm)

    def ask(question):
        with dspy.context(adapter=dspy.ChatAdapter(use_json_adapter_fallback=False)):
            try:
                return solve(question=question).answer
            except dspy.utils.exceptions.AdapterParseError as exc:  # the untuned base rarely keeps the format
                return exc.lm_response

    calls_before = engine.generate_calls
    replies = run_concurrently(ask, QUESTIONS)
    assert len(lm.history) == len(QUESTIONS) and all(reply.strip() for reply in replies)
    assert engine.generate_calls - calls_before < len(QUESTIONS)
    assert all(entry["usage"]["completion_tokens"] <= 16 for entry in lm.history)


@pytest.mark.slow
def test_transformers_engine_batched_greedy_equals_one_at_a_time(engine):
    conversations = [chat(question) for question in QUESTIONS[:3]]  # prompts of different lengths: padded
    batched = engine.generate_batch(DEFAULT_BASE, conversations, max_tokens=16)
    alone = [engine.generate_batch(DEFAULT_BASE, [conversation], max_tokens=16)[0] for conversation in conversations]
    assert {generation.output_tokens for generation in batched} <= set(range(1, 17))
    assert batched == alone


@pytest.mark.slow
def test_transformers_engine_routes_by_model_id(engine, lora_student):
    lora_id = engine.register(f"lora-{lora_student.name}", lora_student).model_id
    conversation = chat(QUESTIONS[0])
    # Interleaved concurrent requests for both models share batches, and each gets its own model's answer.
    calls_before = engine.generate_calls
    mixed = run_concurrently(lambda model_id: engine.generate_batch(model_id, [conversation], max_tokens=16)[0].text,
                             [DEFAULT_BASE, lora_id] * 2)
    assert engine.generate_calls - calls_before < 4
    base_alone = engine.generate_batch(DEFAULT_BASE, [conversation], max_tokens=16)[0].text
    lora_alone = engine.generate_batch(lora_id, [conversation], max_tokens=16)[0].text
    assert base_alone != lora_alone
    assert mixed == [base_alone, lora_alone] * 2


@pytest.mark.slow
def test_transformers_engine_stops_at_stop_strings_and_max_tokens(engine):
    from dspy.lm15 import Config, Message, Request

    def complete(**config):
        story = Message.user("Write a long story about a dragon who learns arithmetic.")
        return engine.complete(Request(model=f"local/{DEFAULT_BASE}", messages=(story,), config=Config(**config)))

    free = complete(max_tokens=12)
    assert free.finish_reason == "length" and free.usage.output_tokens == 12
    stop = free.text.split()[2]
    cut = complete(max_tokens=12, stop=(stop,))
    assert cut.finish_reason == "stop" and cut.text == free.text[: free.text.index(stop)]
    # Stops look at the completion only: the prompt ends in a newline, and "\n<first word>" must not fire at once.
    across = "\n" + free.text.split()[0]
    assert across not in free.text
    assert complete(max_tokens=12, stop=(across,)).text == free.text


@pytest.mark.slow
def test_transformers_engine_names_unknown_model_ids(engine):
    with pytest.raises(RegistryError, match="unknown local model id 'no-such-student'"):
        engine.generate_batch("no-such-student", [chat("hello")])
    lm = dspy.LM("local/no-such-student", engine=engine, provider=dspy.Provider(), cache=False, num_retries=0)
    with pytest.raises(dspy.utils.exceptions.LMUnexpectedError, match="unknown local model id 'no-such-student'"):
        lm("hello")


def test_transformers_engine_rejects_unknown_device():
    with pytest.raises(ConfigError, match="device='tpu'"):
        TransformersEngine(device="tpu")


def test_shared_engine_is_one_per_kind_and_options():
    engine = shared_engine("transformers", device="cpu", batch_wait_s=0.02)
    assert shared_engine("transformers", batch_wait_s=0.02, device="cpu", dtype=None) is engine
    assert shared_engine("transformers", device="cpu") is not engine


def test_shared_engine_names_bad_kinds_and_options():
    with pytest.raises(RegistryError, match="unknown engine 'vlm'. Did you mean 'vllm'"):
        shared_engine("vlm")
    with pytest.raises(ConfigError, match="engine 'transformers'.*max_batch"):
        shared_engine("transformers", max_batch=4)


def test_a_vllm_engine_without_vllm_installed_is_one_line(monkeypatch):
    """vLLM is an optional extra: asking for it where it is not installed names the option and how to install it."""
    import importlib.util

    from kpdd.engines.batching import check_engine

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "vllm" else real_find_spec(name, *a))
    for kind in ("vllm", "vllm-burst"):
        with pytest.raises(ConfigError, match=f"--engine {kind}: vLLM is not installed here.*transformers"):
            check_engine(kind)
    check_engine("transformers")


def test_engine_load_state_skips_a_deleted_student(tmp_path, caplog):
    (tmp_path / "kept").mkdir()
    write_student(tmp_path / "kept", DEFAULT_BASE, None, None, "kept-student", {})
    state = {"options": {"device": "cpu"}, "students": {"kept-student": str(tmp_path / "kept"),
                                                        "gone-student": str(tmp_path / "gone")}}
    engine = TransformersEngine.load_state(state)
    assert engine is shared_engine("transformers", device="cpu")
    assert registered_student("kept-student").root == tmp_path / "kept"
    assert "local/gone-student will not be served" in caplog.text
    with pytest.raises(RegistryError, match="gone-student"):
        registered_student("gone-student")


@pytest.mark.slow
def test_engine_state_round_trips_to_the_shared_engine(engine, lora_student):
    lora_id = engine.register(f"lora-{lora_student.name}", lora_student).model_id
    state = json.loads(json.dumps(engine.dump_state()))
    assert state["students"][lora_id] == str(lora_student)
    assert TransformersEngine.load_state(state) is engine


@pytest.mark.slow
def test_program_save_and_load_keep_the_engine(engine, tmp_path):
    solve = dspy.Predict(Solve)
    solve.set_lm(student_lm(DEFAULT_BASE, engine=engine, max_tokens=8, cache=False))
    solve.save(tmp_path / "solve.json")
    restored = dspy.Predict(Solve)
    restored.load(tmp_path / "solve.json", allow_unsafe_lm_state=True)
    assert restored.lm.engine is engine and restored.lm.model == f"local/{DEFAULT_BASE}"

    solve.save(tmp_path / "program", save_program=True)  # cloudpickle: the engine pickles as its state
    loaded = dspy.load(tmp_path / "program", allow_pickle=True)
    assert loaded.lm.engine is engine
    assert loaded.lm.forward(messages=chat("What is 2+2?")).choices[0].message.content.strip()


VLLM_KINDS = {"vllm-burst": True, "vllm": False}  # kind: whether it gathers bursts (else continuous batching)


@pytest.mark.slow
@pytest.mark.parametrize("kind", list(VLLM_KINDS))
def test_vllm_engine_serves_dspy_calls_and_a_lora_adapter(engine, lora_student, caplog, kind):
    pytest.importorskip("vllm")
    vllm = shared_engine(kind, gpu_memory_utilization=0.2, max_model_len=1024, max_lora_rank=8)
    bursts = VLLM_KINDS[kind]
    solve = dspy.Predict(Solve)

    def ask(lm_and_question):
        lm, question = lm_and_question
        with dspy.context(lm=lm, adapter=dspy.ChatAdapter(use_json_adapter_fallback=False)):
            try:
                return solve(question=question).answer
            except dspy.utils.exceptions.AdapterParseError as exc:
                return exc.lm_response

    try:
        base_lm = student_lm(DEFAULT_BASE, engine=vllm, max_tokens=24, cache=False)
        base_replies = run_concurrently(ask, [(base_lm, q) for q in QUESTIONS[:3]])  # starts vLLM without LoRA
        assert all(reply.strip() for reply in base_replies)
        assert vllm.generate_calls < 3 if bursts else vllm.generate_calls == 3  # bursts, or one call each
        assert 3 <= vllm.output_tokens <= 3 * 24

        # A short call that arrives while a long one generates: a burst engine answers it after the long one,
        # continuous batching adds it to the running batch and answers it first.
        with ThreadPoolExecutor(1) as pool:
            story = [{"role": "user", "content": "Write a long story about a dragon who learns to count."}]
            long_call = pool.submit(vllm.generate_batch, DEFAULT_BASE, [story], max_tokens=256)
            time.sleep(0.2)
            short = vllm.generate_batch(DEFAULT_BASE, [chat(QUESTIONS[1])], max_tokens=2)[0]
            assert long_call.done() == bursts and short.output_tokens == 2
            assert long_call.result()[0].output_tokens > 32

        # What BootstrapFinetune does with a trained id: the same engine, another model. vLLM restarts with LoRA.
        lora_id = vllm.register(f"lora-{lora_student.name}", lora_student).model_id
        lora_lm = base_lm.copy(model=f"local/{lora_id}")
        calls_before = vllm.generate_calls
        with caplog.at_level("INFO", logger=type(vllm).__module__):
            work = [(base_lm, q) for q in QUESTIONS[:3]] + [(lora_lm, q) for q in QUESTIONS[:3]]
            replies = run_concurrently(ask, work)
        assert "restarting vLLM" in caplog.text
        assert vllm.generate_calls - calls_before < 6 if bursts else vllm.generate_calls - calls_before == 6
        # The adapter applies per row: in one batch, the base rows and the adapter's rows for the same questions
        # differ. (Comparing with the first run instead is not sound: vLLM is not batch-invariant, and a batch
        # with LoRA rows runs other kernels, so greedy near-ties of the untrained base can flip.)
        assert replies[:3] != replies[3:]
        assert replies[3:] != base_replies
    finally:
        vllm.close()


@pytest.mark.slow
def test_vllm_engine_checks_the_device_against_its_build():
    platforms = pytest.importorskip("vllm.platforms")
    other = "cuda" if platforms.current_platform.device_type == "cpu" else "cpu"
    engine = shared_engine("vllm", device=other)
    engine.register(DEFAULT_BASE, DEFAULT_BASE)
    with pytest.raises(ConfigError, match=f"device='{other}', but the installed vLLM build runs on"):
        engine.generate_batch(DEFAULT_BASE, [chat("hi")], max_tokens=2)


@pytest.mark.slow
def test_vllm_engine_that_cannot_start_says_why_once_and_fails_fast():
    pytest.importorskip("vllm")
    engine = shared_engine("vllm", gpu_memory_utilization=0.99)  # more RAM than any machine leaves free
    engine.register(DEFAULT_BASE, DEFAULT_BASE)
    try:
        with pytest.raises(EngineError, match="vLLM failed to start"):
            engine.generate_batch(DEFAULT_BASE, [chat("hi")], max_tokens=2)
        start = time.perf_counter()
        with pytest.raises(EngineError, match="vLLM failed to start"):
            engine.generate_batch(DEFAULT_BASE, [chat("hi")], max_tokens=2)
        assert time.perf_counter() - start < 5  # not a second start attempt
    finally:
        engine.close()


@pytest.mark.slow
def test_kpdd_eval_on_vllm_exits_when_done(tmp_path):
    """Reproduces a hang: at interpreter exit, multiprocessing's hook joined vLLM's engine process (busy, it ignores
    SIGTERM) before vLLM's own clean-up ran. kpdd now closes every engine at exit, first."""
    pytest.importorskip("vllm")
    import os
    import subprocess
    import sys

    command = [sys.executable, "-m", "kpdd", "eval", "--program", "direct", "--lm", DEFAULT_BASE, "--engine", "vllm",
               "--datasets", "gsm8k", "--limit", "2", "--max-tokens", "4", "--out", str(tmp_path / "p.jsonl")]
    env = {**os.environ, "DSPY_CACHEDIR": str(tmp_path / "dspy-cache")}  # a cache hit would never start vLLM
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    output = done.stdout + done.stderr  # vLLM logs to stdout
    assert "EngineCore" in output and "accuracy" in output
    # A clean shutdown: no traceback from vLLM's output handler or from a second shutdown at interpreter exit.
    assert "Traceback" not in output and "Exception ignored" not in output, output[-3000:]
