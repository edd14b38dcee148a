"""`kpdd experiment`: its options, its plan and its report (fast), and `bash scripts/gpu-experiment --dry-run` end
to end (slow)."""

import json
import os
import sqlite3
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kpdd.cli import commands  # noqa: F401  (registers the commands, `kpdd experiment` among them)
from kpdd.cli import main
from kpdd.cli.options import CONFIGS
from kpdd.cli.root import app
from kpdd.config import load_config
from kpdd.errors import ConfigError
from kpdd.run.experiment import Clock, ExperimentConfig, best_kpdd_pot, run_experiment
from kpdd.run.experiment_plan import H200_BF16_PEAK_FLOPS, Rates, Recipe, Workload, mfu, plan_recipes
from kpdd.run.experiment_report import (ARCHIVES, DATASETS, RESULT_FILES, STUDENT_ARCHIVE, place_archives,
                                        results_markdown, sqlite_file, write_outputs)

ROOT = Path(__file__).resolve().parents[2]
DRY = ROOT / "configs" / "experiment-dry.toml"


def dry_config(**options) -> ExperimentConfig:
    return load_config(ExperimentConfig, DRY, section="experiment", **options)


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


def test_measure_reads_the_drivers_results_into_json_figures(tmp_path):
    from kpdd.eval.harness import DatasetScore
    from kpdd.finetune.trainer import TrainResult
    from kpdd.run.eval import EvalResult
    from kpdd.run.experiment import Experiment
    from kpdd.run.finetune import FinetuneResult

    compiled, predictions = tmp_path / "compiled", tmp_path / "predictions.jsonl"
    student = TrainResult(compiled / "students" / "all", "all", steps=2, train_loss=1.5, first_loss=2.0,
                          tokens=1000, train_time_s=4.0)
    trained = FinetuneResult(out=compiled, traces=3, students={"all": student})
    evaluated = EvalResult(program="kpdd-pot", predictions=predictions, report="", examples=[],
                           scores={"gsm8k": DatasetScore("gsm8k", total=4, correct=1)})
    experiment = Experiment(dry_config(out=str(tmp_path / "out")), Clock(None, 0.0))
    figures = experiment.measure(trained, evaluated, {"s": 2.0, "output_tokens": 64, "batches": 2},
                                 Workload(train_tokens=1000, epochs=1.0, eval_calls=4, max_new_tokens=16, engine_batch=2))
    assert json.loads(json.dumps(figures)) == figures  # paths as strings: results.json takes it as it is
    assert figures["student_dir"] == str(compiled / "students")
    assert figures["eval"]["predictions"] == str(predictions)
    assert figures["train"]["tokens_per_s"] == 250.0 and figures["average"] == 0.25
    assert experiment.rates.train_tokens_per_s == 250.0


def test_experiment_is_a_command_with_the_config_options():
    assert CONFIGS["experiment"] is ExperimentConfig
    text = CliRunner().invoke(app, ["experiment", "--help"], terminal_width=200).output
    for option in ("--out", "--budget-s", "--max-files", "--max-file-mb", "--methods", "--peak-tflops", "--config",
                   "--tracking-uri"):
        assert option in text


def test_experiment_has_no_caps_unless_given():
    config = ExperimentConfig(out="x")
    assert (config.budget_s, config.max_files, config.max_file_mb) == (None, None, None)
    assert Clock.of(config).left() == float("inf")


def test_experiment_options_parse_into_the_config(monkeypatch, tmp_path):
    seen = {}
    monkeypatch.setattr("kpdd.run.experiment.run_experiment",
                        lambda config, clock, **mlflow: seen.update(config=config, clock=clock, mlflow=mlflow)
                        or {"runs": [], "notes": []})
    main(["experiment", "--out", str(tmp_path), "--budget-s", "300", "--max-files", "5", "--max-file-mb", "2.5",
          "--methods", "pot,cot", "--experiment", "exp"])
    config = seen["config"]
    assert (config.budget_s, config.max_files, config.max_file_mb, config.methods) == (300.0, 5, 2.5, ["pot", "cot"])
    assert seen["clock"].budget_s == 300.0 and seen["mlflow"] == {"experiment": "exp", "tracking_uri": None}


def test_experiment_budget_counts_from_a_wrappers_start(monkeypatch):
    monkeypatch.setenv("KPDD_EXPERIMENT_T0", "1000.5")
    clock = Clock.of(ExperimentConfig(out="x", budget_s=100.0, reserve_s=10.0))
    assert clock.start == 1000.5 and clock.left() < 0  # 1970 is long past
    monkeypatch.setenv("KPDD_EXPERIMENT_T0", "yesterday")
    with pytest.raises(ConfigError, match="KPDD_EXPERIMENT_T0: expected Unix seconds"):
        Clock.of(ExperimentConfig(out="x"))


@pytest.mark.parametrize("options, message", [(["--methods", "nope"], "--methods: expected one of kpdd-pot, pot"),
                                              (["--max-files", "1"], "--max-files: expected a whole number >= 2"),
                                              (["--budget-s", "0"], "--budget-s: expected a number > 0")])
def test_experiment_refuses_bad_options_before_it_runs(tmp_path, capsys, options, message):
    with pytest.raises(SystemExit) as exit_:
        main(["experiment", "--out", str(tmp_path / "out"), *options])
    assert exit_.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_experiment_needs_an_out_folder():
    with pytest.raises(ConfigError, match="needs --out"):
        run_experiment(ExperimentConfig())


def test_dry_config_is_tiny_and_on_cpu():
    config = dry_config(out="x", eval_size=2)  # options given win over the file
    assert (config.device, config.max_steps, config.eval_size, config.methods) == ("cpu", 1, 2, ["kpdd-pot"])


def built_report(tmp_path, sizes: dict[str, int]) -> Path:
    built = tmp_path / "work" / "report"
    built.mkdir(parents=True)
    for name, size in sizes.items():
        (built / name).write_bytes(b"x" * size)
    return built


def test_report_moves_every_archive_without_caps(tmp_path):
    built = built_report(tmp_path, dict.fromkeys(ARCHIVES, 10))
    assert place_archives(built, tmp_path / "out", None, None) == []
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(ARCHIVES)


def test_report_keeps_within_max_files_counting_a_wrappers_log(tmp_path):
    built, out = built_report(tmp_path, dict.fromkeys(ARCHIVES, 10)), tmp_path / "out"
    out.mkdir()
    (out / "experiment.log").write_text("log")
    notes = place_archives(built, out, max_files=5, max_file_mb=None)  # log + 2 results files + 2 archives
    assert sorted(p.name for p in out.iterdir()) == sorted(["experiment.log", *ARCHIVES[:2]])
    assert notes == [f"predictions.tar.xz does not fit --max-files 5: left in {built / 'predictions.tar.xz'}"]


def test_report_leaves_a_file_over_max_file_mb_in_the_work_folder(tmp_path):
    built, out = built_report(tmp_path, {STUDENT_ARCHIVE: 2_000_001, "mlflow.db": 10}), tmp_path / "out"
    notes = place_archives(built, out, max_files=None, max_file_mb=2)
    assert [p.name for p in out.iterdir()] == ["mlflow.db"] and (built / STUDENT_ARCHIVE).is_file()
    assert notes == [f"{STUDENT_ARCHIVE} (2.0 MB) is over --max-file-mb 2: left in {built / STUDENT_ARCHIVE}"]


def test_report_writes_the_results_and_names_what_stayed_behind(tmp_path):
    store = tmp_path / "store.db"
    sqlite3.connect(store).execute("create table t (x)").connection.commit()
    results = {"config": {"device": "cpu", "budget_s": None}, "runs": [], "notes": [], "used_s": 3.0}
    out = tmp_path / "out"
    write_outputs(results, tmp_path / "work", out, store=store, max_files=3)
    assert sorted(p.name for p in out.iterdir()) == sorted([*RESULT_FILES, "mlflow.db"])
    written = json.loads((out / "results.json").read_text())
    assert set(written["files"]) == {*RESULT_FILES, "mlflow.db"}
    assert any("predictions.tar.xz does not fit --max-files 3" in note for note in written["notes"])
    assert "no budget" in (out / "results.md").read_text()


def test_results_markdown_shows_the_budget_and_each_run():
    run = {"name": "pot_gold_full", "status": "skipped: needs ~90 s, 10 s left"}
    text = results_markdown({"config": {"device": "cuda", "budget_s": 600.0}, "runs": [run], "notes": []})
    assert "budget 600 s" in text and "- pot_gold_full: skipped: needs ~90 s, 10 s left" in text


def test_sqlite_file_reads_the_store_path_of_a_tracking_uri():
    assert sqlite_file("sqlite:////tmp/x/mlflow.db") == Path("/tmp/x/mlflow.db")
    assert sqlite_file("sqlite:///mlflow.db") == Path("mlflow.db")
    assert sqlite_file("http://127.0.0.1:5000") is None


@pytest.mark.slow
@pytest.mark.timeout(2400)
def test_gpu_experiment_dry_run_writes_every_output_file(tmp_path):
    out = tmp_path / "out"
    env = {**os.environ, "PYTHON": sys.executable, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "2"}
    done = subprocess.run(["bash", str(ROOT / "scripts" / "gpu-experiment"), "--dry-run", "--out", str(out),
                           "--work", str(tmp_path / "work")], env=env, capture_output=True, text=True, timeout=2350)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]

    assert sorted(p.name for p in out.iterdir()) == sorted([*RESULT_FILES, *ARCHIVES, "experiment.log"])
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
