"""``kpdd compile``'s optimise stage on a real HTTP teacher: its trials in a real MLflow store and in ``kpdd
compare``, a rerun that reuses its work, and a server dying mid-proposal ending the command in one line."""

import os
import subprocess
import sys
import uuid

import mlflow
import pytest
from scripted_teacher import ScriptedTeacher

from kpdd.compile.optimize_log import TRIALS
from kpdd.data import load_dataset
from kpdd.errors import KpddError
from kpdd.run.compile import CompileConfig, optimized_teacher_program
from kpdd.tracking import METHOD, TEACHER, command_run
from kpdd.tracking.compare import compare
from kpdd.tracking.runs import OPTIMIZE_AFTER, OPTIMIZE_BEFORE, OPTIMIZE_TRIAL, STAGE

OPTIMIZE_SIZE = 8
EXAMPLES = load_dataset("gsm8k", "train", limit=OPTIMIZE_SIZE, seed=1)  # what the optimise stage loads (seed + 1)
ANSWERS = {e.question: e.answer for e in EXAMPLES}


def test_optimise_stage_logs_each_trial_the_scores_and_the_program_and_compare_shows_them(tmp_path, mlflow_store):
    model = f"openai/scripted-{uuid.uuid4().hex}"
    faults = {"proposed_instruction": "off-format"}
    with ScriptedTeacher(ANSWERS, wrong={EXAMPLES[2].question}, field_faults=faults) as server:
        config = CompileConfig(program="direct", teacher=model, api_base=[server.url], optimizer="mipro",
                               optimize_size=OPTIMIZE_SIZE, trials=3, threads=2, out=str(tmp_path / "run"))
        lines = []
        with command_run("compile", config, tags={METHOD: "direct", TEACHER: model}) as run:
            target = optimized_teacher_program(config, echo=lines.append)
        assert (target / "kpdd-program.json").is_file()
        assert lines == [lines[0]] and "4 trials" in lines[0] and "skipped: instruction/unparseable 1" in lines[0]

        # A rerun reuses the saved program without asking the teacher anything.
        before = server.requests
        assert optimized_teacher_program(config, echo=lines.append) == target and server.requests == before

    client = mlflow.MlflowClient(mlflow_store)
    children = client.search_runs([run.info.experiment_id], f"tags.mlflow.parentRunId = '{run.info.run_id}'")
    (stage,) = [r for r in children if r.data.tags.get(STAGE) == "optimise"]
    history = client.get_metric_history(stage.info.run_id, OPTIMIZE_TRIAL)
    assert [m.step for m in sorted(history, key=lambda m: m.step)] == [1, 2, 3, 4]
    assert stage.data.metrics["optimize/skipped/instruction/unparseable"] == 1
    assert stage.data.metrics[OPTIMIZE_BEFORE] <= stage.data.metrics[OPTIMIZE_AFTER]
    trials = client.search_runs([run.info.experiment_id], f"tags.mlflow.parentRunId = '{stage.info.run_id}'")
    assert len(trials) == 4 and all(t.data.tags[METHOD] == "direct" for t in trials)
    first = next(t for t in trials if t.data.params["trial"] == "1")
    assert first.data.params["predictor_0/instruction"] == "0" and "trial/score" in first.data.metrics
    assert first.data.params["predictor_0/instruction_text"].startswith("Answer")  # the program's own instruction
    artifacts = {a.path for a in client.list_artifacts(stage.info.run_id, "teacher-program")}
    assert "teacher-program/program.json" in artifacts
    assert f"optimize/{TRIALS}" in {a.path for a in client.list_artifacts(stage.info.run_id, "optimize")}

    table = compare(out_dir=tmp_path / "compare").table
    assert f"optimise direct · {model} · mipro · {stage.info.run_id[:8]}: teacher program val score" in table
    assert "unoptimised" in table and "optimised (n=6, 4 trials)" in table


def test_cli_server_dying_while_proposing_ends_in_one_line_and_keeps_the_bootstrap(tmp_path):
    with ScriptedTeacher(ANSWERS, field_faults={"proposed_instruction": "die"}) as server:
        done = subprocess.run([sys.executable, "-m", "kpdd", "compile", "--program", "direct", "--teacher",
                               f"openai/scripted-{uuid.uuid4().hex}", "--api-base", server.url, "--optimizer", "mipro",
                               "--optimize-size", str(OPTIMIZE_SIZE), "--trials", "2", "--threads", "2",
                               "--retries", "0", "--server-gone-s", "0.01", "--out", str(tmp_path / "run")],
                              cwd=tmp_path, env=dict(os.environ), capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and "start its server again, then rerun the same command to resume" in last
    assert (tmp_path / "run" / "optimize" / "demos.jsonl").is_file()
    assert not (tmp_path / "run" / "teacher-program").exists()


def test_optimizer_that_gives_up_still_shows_its_trials_in_mlflow_and_compare(tmp_path, mlflow_store):
    model = f"openai/scripted-{uuid.uuid4().hex}"
    with ScriptedTeacher(ANSWERS, off_format=set(ANSWERS)) as server:  # no answer the adapters can parse
        config = CompileConfig(program="direct", teacher=model, api_base=[server.url], optimizer="mipro",
                               optimize_size=OPTIMIZE_SIZE, trials=2, threads=2, out=str(tmp_path / "run"))
        with pytest.raises(KpddError, match="the trials step got no usable answer from the teacher"):
            with command_run("compile", config, tags={METHOD: "direct", TEACHER: model}):
                optimized_teacher_program(config)

    client = mlflow.MlflowClient(mlflow_store)
    experiments = [e.experiment_id for e in client.search_experiments()]
    (stage,) = [r for r in client.search_runs(experiments) if r.data.tags.get(STAGE) == "optimise"]
    assert stage.info.status == "FAILED" and stage.data.metrics["optimize/trials"] == 3
    assert len(client.get_metric_history(stage.info.run_id, OPTIMIZE_TRIAL)) == 3
    table = compare(out_dir=tmp_path / "compare").table
    assert f"optimise direct · {model} · mipro · {stage.info.run_id[:8]}: teacher program val score 0.0%" in table
    assert "(n=6, 3 trials; the optimizer gave up)" in table
