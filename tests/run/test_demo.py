"""The README's main command, reduced in size: the whole loop runs, prints the table, and fills MLflow."""

import json
import subprocess
import sys

import mlflow
import pytest

pytestmark = pytest.mark.slow


def test_demo_end_to_end_reduced(tmp_path, mlflow_store):
    command = [sys.executable, "-m", "kpdd", "demo", "--programs", "kpdd-pot,direct", "--train-size", "6",
               "--eval-size", "1", "--max-steps", "2", "--max-length", "512", "--max-tokens", "24"]
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

    for program in ("kpdd-pot", "direct"):
        predictions = tmp_path / "kpdd-runs" / "demo" / program / "predictions.jsonl"
        rows = [json.loads(line) for line in predictions.read_text().splitlines()]
        assert sorted(r["dataset"] for r in rows) == ["asdiv", "gsm8k", "multiarith", "svamp"]
