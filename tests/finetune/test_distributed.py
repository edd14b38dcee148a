"""`accelerate launch -m kpdd finetune` with 2 CPU processes (gloo, the shipped DDP config): the same loss curve
as one process with the same global batch, one student directory, one MLflow run, and checkpoints that resume
the curve."""

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest
from tiny_model import save_tiny_llama

from kpdd.config import flag
from kpdd.finetune.student import read_student
from kpdd.run.finetune import FinetuneConfig, run_finetune
from kpdd.run.traces import TracesConfig, run_traces

pytestmark = pytest.mark.slow
DDP_CONFIG = Path(__file__).resolve().parents[2] / "configs" / "accelerate" / "ddp.yaml"
STEPS = 3
# Dropout off: each process draws its own masks, so with dropout the curves agree in distribution only.
TRAIN = dict(program="direct", max_steps=STEPS, batch_size=1, warmup_ratio=0.0, lora_dropout=0.0,
             precision="fp32", learning_rate=1e-2, logging_steps=1, save_steps=2, val_fraction=0.0, device="cpu",
             keep_checkpoints=True)
# fp32 on both sides; two processes only change the order in which gloo sums the gradients.
LOSS_TOLERANCE = 1e-4


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_two_processes(root: Path, traces: Path, student: Path, out: Path, experiment: str):
    """`accelerate launch --config_file configs/accelerate/ddp.yaml --num_processes 2 -m kpdd finetune ...`;
    per-process batch 1, no accumulation: a global batch of 2 sequences per step."""
    options = {"traces": traces, "student": student, "grad_accum": 1, "out": out, **TRAIN}
    # a bool as the commands spell it: --keep-checkpoints, --no-keep-checkpoints
    args = [(flag(key) if value else f"--no-{flag(key)[2:]}") if isinstance(value, bool) else f"{flag(key)}={value}"
            for key, value in options.items()]
    command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(DDP_CONFIG),
               "--num_processes", "2", "--main_process_port", str(free_port()), "-m", "kpdd", "finetune", *args,
               "--experiment", experiment, "--tracking-uri", f"sqlite:///{root / 'mlflow.db'}"]
    done = subprocess.run(command, cwd=root, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def the_run(root: Path, experiment: str):
    """The experiment's only run (the test fails if a second process logged one too)."""
    client = mlflow.MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
    assert len(runs) == 1, [r.info.run_name for r in runs]
    losses = {m.step: m.value for m in client.get_metric_history(runs[0].info.run_id, "train/loss")}
    return runs[0], losses


@pytest.fixture(scope="module")
def launched(tmp_path_factory):
    """Gold traces of 6 questions, a tiny Llama, and one 2-process training of 3 steps."""
    root = tmp_path_factory.mktemp("ddp")
    traces = root / "traces.jsonl"
    run_traces(TracesConfig(program="direct", teacher="gold", limit=6, out=str(traces)), progress=False)
    student = save_tiny_llama(root / "tiny")
    done = launch_two_processes(root, traces, student, root / "two", experiment="two")
    return root, traces, student, done


def test_two_processes_train_like_one_with_the_same_global_batch(launched):
    root, traces, student, done = launched
    one = run_finetune(FinetuneConfig(traces=[str(traces)], student=str(student), grad_accum=2,
                                      out=str(root / "one"), **TRAIN), progress=False)
    one_losses = {h["step"]: h["train/loss"] for h in one.students["all"].history if "train/loss" in h}

    run, two_losses = the_run(root, "two")
    assert run.info.status == "FINISHED"
    assert sorted(one_losses) == list(range(1, STEPS + 1))
    for step, loss in one_losses.items():
        assert two_losses[step] == pytest.approx(loss, rel=LOSS_TOLERANCE), (step, one_losses, two_losses)
    assert one_losses[STEPS] < one_losses[1]  # it trained: equal curves are not two flat lines

    ref = read_student(root / "two" / "students" / "all")  # one student, written once, by the main process
    assert (ref.adapter_path / "adapter_model.safetensors").is_file()
    assert ref.train["train/steps"] == STEPS
    assert json.loads((root / "two" / "kpdd-program.json").read_text())["students"] == {"solve": "students/all"}
    assert done.stdout.count("compiled program:") == 1


def test_a_two_process_checkpoint_resumes_the_same_curve(launched, tmp_path):
    """Checkpoints written under the launch resume (here in one process with the same global batch, as after
    moving from 8 GPUs to 1; a 2-process resume takes another launch, too slow for CI on 2 cores)."""
    root, traces, student, _ = launched
    out = tmp_path / "two"
    shutil.copytree(root / "two", out)
    # As if killed after the step-2 checkpoint: no step-3 checkpoint, no finished student or program.
    shutil.rmtree(out / "students" / "all" / "checkpoints" / f"checkpoint-{STEPS}")
    (out / "students" / "all" / "kpdd.json").unlink()
    (out / "kpdd-program.json").unlink()

    resumed = run_finetune(FinetuneConfig(traces=[str(traces)], student=str(student), grad_accum=2, out=str(out),
                                          **TRAIN), progress=False)
    losses = {h["step"]: h["train/loss"] for h in resumed.students["all"].history if "train/loss" in h}
    _, first = the_run(root, "two")
    assert sorted(losses) == [STEPS]  # steps 1-2 came from the checkpoint, not trained again
    assert losses[STEPS] == pytest.approx(first[STEPS], rel=LOSS_TOLERANCE)
    assert read_student(out / "students" / "all").train["train/steps"] == STEPS
