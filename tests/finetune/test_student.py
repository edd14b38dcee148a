"""The shipped student's conversion, the student directory format, and the LMs built over students."""

import json
import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import dspy
import pytest

import kpdd.references as references
from kpdd.engines.lm import server_lm, student_lm
from kpdd.errors import KpddError
from kpdd.finetune import student as student_module
from kpdd.finetune.student import (
    DEFAULT_BASE,
    STUDENT_FILE,
    StudentRef,
    ensure_base_model,
    read_student,
    write_student,
)


@pytest.fixture
def checkpoint(tmp_path) -> Path:
    """A directory that looks like a Hugging Face checkpoint (enough for path handling; no weights)."""
    path = tmp_path / "ckpt"
    path.mkdir()
    (path / "config.json").write_text("{}")
    return path


@pytest.mark.slow
def test_ensure_base_model_converts_the_shipped_gguf_once(monkeypatch):
    base = ensure_base_model()  # the real cache: the first run converts, later runs reuse
    assert (base / "model.safetensors").is_file()
    assert json.loads((base / "config.json").read_text())["dtype"] == "bfloat16"
    assert "quantization_config" not in json.loads((base / "config.json").read_text())
    assert "<|im_start|>" in (base / "chat_template.jinja").read_text()

    def reconvert(*_):
        raise AssertionError("the cached checkpoint should be reused")

    monkeypatch.setattr(student_module, "_convert_gguf", reconvert)
    assert ensure_base_model(DEFAULT_BASE) == base


@pytest.mark.slow
def test_ensure_base_model_checkpoint_loads_with_its_chat_template():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base = ensure_base_model()
    tokenizer = AutoTokenizer.from_pretrained(base)
    model = AutoModelForCausalLM.from_pretrained(base)
    hello = [{"role": "user", "content": "hi"}]
    text = tokenizer.apply_chat_template(hello, tokenize=False, add_generation_prompt=True)
    assert text.endswith("<|im_start|>assistant\n")
    assert model.num_parameters() == 134_515_008


def test_ensure_base_model_conversion_is_atomic(monkeypatch, tmp_path):
    monkeypatch.setenv("KPDD_CACHE", str(tmp_path))
    models = tmp_path / "models"
    stale = models / ".SmolLM2-135M-Instruct.tmp-1"  # left by a killed conversion
    stale.mkdir(parents=True)

    def killed(gguf, out):
        out.mkdir()
        (out / "model.safetensors").write_text("half")
        raise KeyboardInterrupt

    monkeypatch.setattr(student_module, "_convert_gguf", killed)
    with pytest.raises(KeyboardInterrupt):
        ensure_base_model()
    assert not (models / "SmolLM2-135M-Instruct").exists()

    def converts(gguf, out):
        out.mkdir()
        (out / "config.json").write_text(json.dumps({"from": gguf.name}))

    monkeypatch.setattr(student_module, "_convert_gguf", converts)
    base = ensure_base_model()
    assert base == models / "SmolLM2-135M-Instruct"
    assert json.loads((base / "config.json").read_text()) == {"from": "SmolLM2-135M-Instruct.Q4_1.gguf"}
    assert [p.name for p in models.iterdir() if p.name.startswith(".")] == []


def test_ensure_base_model_converts_once_when_called_concurrently(monkeypatch, tmp_path):
    monkeypatch.setenv("KPDD_CACHE", str(tmp_path))
    conversions = []

    def slow_convert(gguf, out):
        conversions.append(out)
        time.sleep(0.2)  # long enough for the other callers to reach the lock
        out.mkdir()
        (out / "config.json").write_text("{}")

    monkeypatch.setattr(student_module, "_convert_gguf", slow_convert)
    with ThreadPoolExecutor(3) as pool:
        bases = list(pool.map(lambda _: ensure_base_model(), range(3)))
    assert len(conversions) == 1 and len(set(bases)) == 1


def test_ensure_base_model_returns_a_checkpoint_dir_as_is(checkpoint):
    assert ensure_base_model(checkpoint) == checkpoint.resolve()


def test_ensure_base_model_rejects_a_missing_dir(tmp_path):
    with pytest.raises(KpddError, match=r"^--student .*nowhere: no such directory.*config\.json"):
        ensure_base_model(tmp_path / "nowhere")


def test_ensure_base_model_rejects_an_adapter_only_student(tmp_path):
    student = tmp_path / "lora-student"
    student.mkdir()
    (student / "kpdd.json").write_text("{}")
    with pytest.raises(KpddError, match=r"^--student .*lora-student: a student without its own weights.*alias"):
        ensure_base_model(student)


def test_ensure_base_model_names_the_alias_a_typo_is_close_to():
    with pytest.raises(KpddError, match=r"^--student 'smollm2-135': .*Did you mean 'smollm2-135m'"):
        ensure_base_model("smollm2-135")


def test_write_student_round_trips(tmp_path, checkpoint):
    student_dir = tmp_path / "students" / "s1"
    (student_dir / "adapter").mkdir(parents=True)
    (student_dir / "adapter" / "adapter_config.json").write_text("{}")
    train = {"epochs": 2, "train/loss": 0.5}
    write_student(student_dir, checkpoint, "adapter", "kpdd_cot", "s1-abc", train)

    ref = read_student(student_dir)
    assert (ref.model_id, ref.program, ref.adapter, ref.train) == ("s1-abc", "kpdd_cot", "adapter", train)
    assert ref.base_path == checkpoint.resolve()  # outside the directory: kept absolute
    assert ref.adapter_path == student_dir / "adapter"


def test_write_student_directory_can_move(tmp_path):
    student_dir = tmp_path / "s2"
    (student_dir / "weights").mkdir(parents=True)  # a full fine-tune is its own base
    (student_dir / "weights" / "config.json").write_text("{}")
    write_student(student_dir, student_dir / "weights", None, None, "s2-abc", {})
    assert json.loads((student_dir / STUDENT_FILE).read_text())["base"] == "weights"

    shutil.move(student_dir, tmp_path / "moved")
    assert read_student(tmp_path / "moved").base_path == (tmp_path / "moved" / "weights").resolve()


def test_write_student_names_the_shipped_checkpoint_by_its_alias(monkeypatch, tmp_path):
    monkeypatch.setenv("KPDD_CACHE", str(tmp_path / "cache"))
    converted = tmp_path / "cache" / "models" / "SmolLM2-135M-Instruct"
    converted.mkdir(parents=True)
    (converted / "config.json").write_text("{}")
    write_student(tmp_path, converted, None, None, "s3", {})
    assert read_student(tmp_path).base == DEFAULT_BASE


def test_write_student_keeps_a_shipped_alias(tmp_path):
    write_student(tmp_path, DEFAULT_BASE, None, None, "plain", {})
    ref = read_student(tmp_path)
    assert (ref.base, ref.adapter, ref.adapter_path) == (DEFAULT_BASE, None, None)


def test_write_student_requires_the_adapter_config(tmp_path):
    (tmp_path / "adapter").mkdir()
    with pytest.raises(KpddError, match="adapter_config.json"):
        write_student(tmp_path, DEFAULT_BASE, "adapter", None, "x", {})


def test_read_student_accepts_a_checkpoint_or_an_alias(checkpoint):
    ref = read_student(checkpoint)
    assert ref.base_path == checkpoint.resolve() and ref.adapter is None
    assert ref.model_id.startswith("ckpt-")
    assert read_student(DEFAULT_BASE) == StudentRef(model_id=DEFAULT_BASE, base=DEFAULT_BASE)


def test_read_student_rejects_another_format(tmp_path):
    (tmp_path / STUDENT_FILE).write_text(json.dumps({"format": "other/9", "base": "x", "model_id": "y"}))
    with pytest.raises(KpddError, match=r"'format' is 'other/9', expected 'kpdd-student/1'"):
        read_student(tmp_path)


def test_read_student_names_what_it_expected(tmp_path):
    with pytest.raises(KpddError, match=r"holds no model; expected .*kpdd\.json.*config\.json"):
        read_student(tmp_path)
    with pytest.raises(KpddError, match=r"expected .* a shipped alias \(smollm2-135m\)"):
        read_student("smollm2")


def test_student_lm_shares_one_engine_per_kind(tmp_path):
    write_student(tmp_path, DEFAULT_BASE, None, None, "shared-engine-test", {})
    first, second = student_lm(tmp_path), student_lm(DEFAULT_BASE, max_tokens=64)
    assert first.model == "local/shared-engine-test" and second.model == f"local/{DEFAULT_BASE}"
    assert first.engine is second.engine
    assert first.kwargs["temperature"] == 0.0 and second.kwargs["max_tokens"] == 64
    assert isinstance(first.provider, dspy.Provider)


class _ChatCompletions(BaseHTTPRequestHandler):
    """An OpenAI-compatible /chat/completions endpoint that echoes the model name and records requests."""

    seen: list = []

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        _ChatCompletions.seen.append((self.path, self.headers.get("Authorization"), body))
        reply = {
            "id": "c1",
            "object": "chat.completion",
            "created": 0,
            "model": body["model"],
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": f"served by {body['model']}"}}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 3, "total_tokens": 6},
        }
        data = json.dumps(reply).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


def test_server_lm_calls_an_openai_compatible_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _ChatCompletions)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        lm = server_lm(f"http://127.0.0.1:{server.server_port}/v1", "my-student", api_key="k", cache=False)
        assert lm("2+2?") == ["served by my-student"]
    finally:
        server.shutdown()
    path, auth, body = _ChatCompletions.seen[-1]
    assert path == "/v1/chat/completions" and auth == "Bearer k"
    assert body["model"] == "my-student" and body["messages"][-1]["content"] == "2+2?"
    assert not lm.provider.finetunable


def test_read_student_resolves_a_shipped_student(monkeypatch, tmp_path):
    monkeypatch.setattr(references, "SHIPPED_STUDENTS_DIR", tmp_path)
    (tmp_path / "kpdd-pot").mkdir()
    write_student(tmp_path / "kpdd-pot", base="smollm2-135m", adapter_subdir=None, program="kpdd-pot",
                  model_id="shipped-kpdd-pot", train={})
    ref = read_student("shipped:kpdd-pot")
    assert (ref.root, ref.model_id, ref.program) == (tmp_path / "kpdd-pot", "shipped-kpdd-pot", "kpdd-pot")


def test_eval_of_a_student_not_shipped_yet_is_one_clear_error(monkeypatch, tmp_path):
    from kpdd.run.eval import EvalConfig, check_lms

    monkeypatch.setattr(references, "SHIPPED_STUDENTS_DIR", tmp_path)
    with pytest.raises(KpddError, match=r"no shipped student 'kpdd-pot'.*shipped students: none yet.*student-kpdd-pot"):
        check_lms(EvalConfig(program="kpdd-pot", lm="shipped:kpdd-pot"))
