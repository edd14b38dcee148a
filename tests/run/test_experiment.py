"""The GPU experiment: its plan (fast) and `bash scripts/gpu-experiment --dry-run` end to end (slow)."""

import json
import os
import sqlite3
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from kpdd.run.experiment import ExperimentConfig, best_kpdd_pot, main
from kpdd.run.experiment_plan import H200_BF16_PEAK_FLOPS, Rates, Recipe, Workload, mfu, plan_recipes
from kpdd.run.experiment_report import DATASETS, MAX_FILE_BYTES, OUTPUT_FILES

ROOT = Path(__file__).resolve().parents[2]


def test_plan_recipes_falls_back_to_gold_without_augment():
    names = [r.name for r in plan_recipes(augment=False, student_calls=False)]
    assert names == ["kpdd-pot_gold_full", "pot_gold_full", "cot_gold_full", "kpdd-cot_gold_full",
                     "socratic_gold_full", "direct_gold_full"]


def test_plan_recipes_keeps_the_issue_order_with_augment_and_student_calls():
    recipes = plan_recipes(augment=True, student_calls=True)
    assert [(r.program, r.variants, r.student_calls) for r in recipes[:5]] == [
        ("kpdd-pot", True, "one"), ("pot", True, "one"), ("cot", True, "one"), ("kpdd-pot", False, "one"),
        ("kpdd-pot", True, "per-stage")]
    assert [r.program for r in recipes[5:]] == ["kpdd-cot", "socratic", "direct"]


def test_workload_estimate_counts_training_decoding_and_overhead():
    rates = Rates(train_tokens_per_s=1000.0, decode_step_s=0.01, fixed_s_per_run=5.0)
    load = Workload(train_tokens=20_000, epochs=2.0, eval_calls=1001, max_new_tokens=100, engine_batch=500)
    assert load.train_s(rates) == 40.0
    assert load.eval_s(rates) == pytest.approx(3 * 100 * 0.01)  # 1001 calls are 3 batches of at most 500
    assert load.total_s(rates) == pytest.approx(48.0)


def test_mfu_is_six_n_flops_per_token_over_the_peak():
    assert mfu(1e5, params=1e8) == pytest.approx(6e13 / H200_BF16_PEAK_FLOPS)


def test_best_kpdd_pot_picks_the_best_average_and_ships_one_student():
    runs = [{"program": "kpdd-pot", "variants": True, "student_calls": "per-stage", "lora": False,
             "status": "done", "average": 0.4},
            {"program": "kpdd-pot", "variants": False, "student_calls": "one", "lora": False,
             "status": "done", "average": 0.3},
            {"program": "pot", "variants": True, "student_calls": "one", "lora": False, "status": "done",
             "average": 0.9}]
    assert best_kpdd_pot(runs) == Recipe("kpdd-pot", variants=True, student_calls="one", lora=True)


def test_experiment_refuses_unknown_methods(tmp_path):
    with pytest.raises(Exception, match="--methods: expected one of kpdd-pot, pot"):
        main(["--dry-run", "--out", str(tmp_path / "out"), "--methods", "nope", "--work", str(tmp_path / "w")])


def test_dry_config_is_tiny_and_on_cpu():
    config = ExperimentConfig.dry(out="x")
    assert (config.device, config.max_steps, config.eval_size, config.methods) == ("cpu", 1, 1, ["kpdd-pot"])


@pytest.mark.slow
@pytest.mark.timeout(2400)
def test_gpu_experiment_dry_run_writes_every_output_file(tmp_path):
    out = tmp_path / "out"
    env = {**os.environ, "PYTHON": sys.executable, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "2"}
    done = subprocess.run(["bash", str(ROOT / "scripts" / "gpu-experiment"), "--dry-run", "--out", str(out),
                           "--work", str(tmp_path / "work")], env=env, capture_output=True, text=True, timeout=2350)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]

    assert sorted(p.name for p in out.iterdir()) == sorted(OUTPUT_FILES)
    assert all(p.stat().st_size <= MAX_FILE_BYTES for p in out.iterdir())
    results = json.loads((out / "results.json").read_text())
    full = [r for r in results["runs"] if r["program"] == "kpdd-pot" and not r["lora"]]
    shipped = [r for r in results["runs"] if r["lora"]]
    for run in (full[0], *shipped):
        assert run["status"] == "done", run["status"]
        assert set(run["accuracy"]) == set(DATASETS)
        assert run["train"]["tokens"] > 0 and run["eval"]["output_tokens"] > 0
    assert len(shipped) == 1
    assert results["trl_comparison"]["speed_up"] > 0
    assert full[0]["name"] in (out / "results.md").read_text()

    with tarfile.open(out / "predictions.tar.xz") as archive:
        lines = archive.extractfile(f"{full[0]['name']}.jsonl").read().decode().splitlines()
    assert len(lines) == len(DATASETS)  # one question per set
    with tarfile.open(out / "student-kpdd-pot.tar.gz") as archive:
        archive.extractall(tmp_path / "shipped", filter="data")
    student = json.loads((tmp_path / "shipped" / "kpdd-pot" / "kpdd.json").read_text())
    assert (student["base"], student["adapter"]) == ("smollm2-135m", "adapter")
    from safetensors import safe_open

    with safe_open(tmp_path / "shipped" / "kpdd-pot" / "adapter" / "adapter_model.safetensors", "pt") as weights:
        assert {str(weights.get_tensor(k).dtype) for k in weights.keys()} == {"torch.bfloat16"}
    with sqlite3.connect(out / "mlflow.db") as db:
        commands = {row[0] for row in db.execute("select value from tags where key = 'kpdd.command'")}
    assert {"experiment", "compile"} <= commands
    assert (out / "experiment.log").read_text().count("runs done") == 1
