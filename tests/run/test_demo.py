"""The README's main command, reduced in size: the whole loop runs, prints the table, and fills MLflow."""

import json
import subprocess
import sys

import mlflow
import pytest

pytestmark = pytest.mark.slow


def test_demo_end_to_end_reduced(tmp_path, mlflow_store):
    command = [sys.executable, "-m", "kpdd", "demo", "--programs", "kpdd-pot,direct", "--train-size", "6",
               "--eval-size", "1", "--max-steps", "2", "--max-length", "512", "--max-tokens", "24",
               "--register-as", "demo-student"]
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    assert "== comparison" in out and "kpdd-pot" in out and "direct" in out and "multiarith" in out
    for plot in ("accuracy_by_dataset.png", "training_curves.png"):
        assert (tmp_path / "kpdd-runs" / "demo" / "compare" / plot).stat().st_size > 10_000

    mlflow.set_tracking_uri(mlflow_store)
    runs = mlflow.search_runs(experiment_names=["kpdd"])
    by_command = runs.groupby("tags.kpdd.command").size().to_dict()
    assert by_command["demo"] == 1 and by_command["compile"] == 2
    stages = runs["tags.kpdd.stage"].dropna().tolist()
    assert sorted(stages) == sorted(["traces", "finetune", "eval"] * 2)
    assert (runs["status"] == "FINISHED").all()
    evals = runs[runs["tags.kpdd.stage"] == "eval"]
    for dataset in ("gsm8k", "svamp", "asdiv", "multiarith"):
        assert evals[f"metrics.accuracy/{dataset}"].notna().all()
    finetunes = runs[runs["tags.kpdd.stage"] == "finetune"]
    assert (finetunes["metrics.train/steps"] == 2).all()

    # The runs table compares without expanding: each student's run, and the demo run above them, carry the accuracy.
    datasets = ("gsm8k", "svamp", "asdiv", "multiarith")
    compiles = runs[runs["tags.kpdd.command"] == "compile"].set_index("tags.kpdd.method")
    demo = runs[runs["tags.kpdd.command"] == "demo"].iloc[0]
    for program in ("kpdd-pot", "direct"):
        assert compiles.loc[program, "tags.mlflow.runName"] == f"compile {program}"
        for dataset in (*datasets, "average"):
            assert compiles.loc[program, f"metrics.accuracy/{dataset}"] >= 0
            assert demo[f"metrics.{program}/accuracy/{dataset}"] == compiles.loc[program, f"metrics.accuracy/{dataset}"]
        inputs = mlflow.get_run(compiles.loc[program, "run_id"]).inputs.dataset_inputs
        assert sorted(d.dataset.name for d in inputs) == sorted(f"{d}/test" for d in datasets)
    assert sorted(runs["tags.mlflow.runName"][runs["tags.kpdd.stage"].notna()]) == sorted(
        f"{program} · {stage}" for program in ("kpdd-pot", "direct") for stage in ("traces", "finetune", "eval"))
    assert compiles.loc["kpdd-pot", "run_id"][:8] in out  # the comparison row is that run

    # One MLflow model per trained student, its accuracy linked per dataset, registered under --register-as.
    experiment_id = runs["experiment_id"].iloc[0]
    models = {m.tags["kpdd.method"]: m for m in mlflow.search_logged_models(experiment_ids=[experiment_id],
                                                                            output_format="list")}
    assert sorted(models) == ["direct", "kpdd-pot"]
    for program, model in models.items():
        assert model.source_run_id == compiles.loc[program, "run_id"]
        assert {(m.key, m.dataset_name) for m in model.metrics} >= {
            *((f"accuracy/{d}", f"{d}/test") for d in datasets), ("accuracy/average", None)}
        assert (model.params["method"], model.params["steps"], model.params["data"]) == (program, "2", "gsm8k:train")
        version = mlflow.MlflowClient().get_model_version(f"demo-student-{program}", "1")
        assert version.source == model.model_uri
        assert f"models:/demo-student-{program}/1" in out

    for program in ("kpdd-pot", "direct"):
        predictions = tmp_path / "kpdd-runs" / "demo" / program / "predictions.jsonl"
        rows = [json.loads(line) for line in predictions.read_text().splitlines()]
        assert sorted(r["dataset"] for r in rows) == ["asdiv", "gsm8k", "multiarith", "svamp"]
