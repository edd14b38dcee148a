"""The README's main command: its first table (the shipped student beside its untrained base model), and the whole
loop reduced in size, which runs, prints the comparison table and fills MLflow."""

import json
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest

from kpdd.errors import ConfigError
from kpdd.eval.harness import score_records
from kpdd.finetune.student import read_student
from kpdd.run.demo import (DemoConfig, ShippedComparison, run_shipped_comparison, solved_by_student_only,
                           untrained_student)

SHIPPED = "shipped:kpdd-pot"


def record(qid, correct, answer=None, error=None, program=None, raw_output=None, gold=8.0):
    stages = {"program": program} if program else {"raw_output": raw_output} if raw_output else {}
    return {"question_id": qid, "dataset": "multiarith", "question": f"question {qid}?", "gold": gold,
            "answer": answer, "correct": correct, "score": float(correct), "error": error, "stages": stages}


def test_untrained_student_prompts_the_base_model_as_the_shipped_student_is_prompted(tmp_path):
    from kpdd.engines.compiled import program_with_student

    shipped = read_student(SHIPPED)
    base = read_student(untrained_student(shipped, tmp_path / "base"))
    assert (base.base, base.adapter, base.program) == (shipped.base, None, shipped.program)
    assert (base.prompt_format, base.student_calls, base.repeated) == (
        shipped.prompt_format, shipped.student_calls, shipped.repeated)
    assert base.model_id != shipped.model_id

    messages = []
    for lm in (SHIPPED, str(tmp_path / "base")):  # builds the programs; no weights are loaded before a call
        program = program_with_student(shipped.program, lm, engine="transformers")
        (_, predictor), = program.named_predictors()
        messages.append(program.prompt_adapter.format(predictor.signature, predictor.demos, {"question": "2+3?"}))
    assert messages[0] == messages[1]


def test_solved_by_student_only_keeps_what_the_base_missed_shortest_solution_first():
    student = {"a": record("a", True, 8.0, program="x = 4\ny = 4\nans = x + y"), "b": record("b", True, 8.0),
               "c": record("c", True, 8.0, program="ans = 8"), "d": record("d", False, 7.0, "wrong answer")}
    base = {"a": record("a", False, error="parse: core_question"), "b": record("b", True, 8.0),
            "c": record("c", False, 3.0, "wrong answer"), "d": record("d", False, error="parse: core_question")}
    assert solved_by_student_only(student, base) == ["c", "a"]
    assert solved_by_student_only(student, {}) == ["b", "c", "a"]  # a question the base has no record of: missed


def test_shipped_comparison_prints_accuracy_interval_n_errors_and_examples():
    student = [record(f"s{i}", i < 4, 8.0 if i < 4 else 5.0, None if i < 4 else "wrong answer",
                      program="boys = 11\ngirls = 45\nans = (boys + girls) / 7") for i in range(30)]
    base = [record(f"s{i}", False, error="parse: core_question", raw_output="To solve this problem, " * 9)
            for i in range(30)]
    scores = {"student": score_records(student), "base": score_records(base)}
    examples = [{"student": student[0], "base": base[0]}]
    table = ShippedComparison(SHIPPED, "smollm2-135m", "kpdd-pot", "vllm", scores, {}, examples, 4).format()
    lines = table.splitlines()
    assert lines[0].split() == ["dataset", "model", "n", "accuracy", "95%", "interval"]
    assert lines[1].split() == ["multiarith", SHIPPED, "(distilled)", "30", "13.3%", "[5.3%,", "29.7%]"]
    assert lines[2].split() == ["multiarith", "smollm2-135m", "(untrained)", "30", "0.0%", "[0.0%,", "11.4%]"]
    assert "wrong, by first cause (student): wrong answer 26" in table
    assert "wrong, by first cause (base): parse: core_question 30" in table
    assert "Solved by the student and not by its base model: 4 questions; the 1 shortest solutions:" in table
    assert "  s0 (gold 8): question s0?" in lines
    assert "    student → 8: boys = 11; girls = 45; ans = (boys + girls) / 7" in lines
    assert "    base    → no answer (parse: core_question); it wrote 'To solve this problem, To solve" in table
    assert max(len(line) for line in lines) <= 120


def test_shipped_comparison_options_are_checked_and_size_zero_skips_it(tmp_path, monkeypatch):
    import importlib.util

    with pytest.raises(ConfigError, match="--shipped-size: expected a whole number >= 0, got -1"):
        DemoConfig(shipped_size=-1)
    with pytest.raises(ConfigError, match="--shipped-engine: expected one of transformers, vllm, vllm-burst"):
        DemoConfig(shipped_engine="vlm")
    assert run_shipped_comparison(DemoConfig(shipped_size=0, out=str(tmp_path))) is None
    with pytest.raises(ConfigError, match="--shipped smollm2-135m: not a trained student"):
        run_shipped_comparison(DemoConfig(shipped="smollm2-135m", out=str(tmp_path)))
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "vllm" else real_find_spec(name, *a))
    with pytest.raises(ConfigError, match="--shipped-engine vllm: vLLM is not installed here"):
        run_shipped_comparison(DemoConfig(out=str(tmp_path)))
    assert not (tmp_path / "shipped-vs-base").exists()  # each failed before anything was written


@pytest.mark.slow
def test_shipped_comparison_on_vllm_runs_both_models_on_the_same_questions(tmp_path, monkeypatch):
    """Two questions on the real weights: the distilled student writes the program's format, its base model does
    not; the vLLM engine is closed afterwards, since the loop evaluates on another."""
    pytest.importorskip("vllm")
    from kpdd.engines.batching import shared_engine

    monkeypatch.setenv("VLLM_CPU_KVCACHE_SPACE", "1")
    echoed = []
    config = DemoConfig(shipped_size=2, threads=4, torch_threads=1, out=str(tmp_path))
    comparison = run_shipped_comparison(config, progress=False, echo=echoed.append)
    records = {who: [json.loads(line) for line in Path(path).read_text().splitlines()]
               for who, path in comparison.predictions.items()}
    # the same questions (lines are written as answers complete, so their order may differ)
    assert sorted(r["question_id"] for r in records["student"]) == sorted(r["question_id"] for r in records["base"])
    assert len(records["student"]) == 2
    assert not any((r["error"] or "").startswith("parse") for r in records["student"])
    assert all((r["error"] or "").startswith("parse") for r in records["base"])
    assert f"{SHIPPED} (distilled)" in echoed[-1] and "smollm2-135m (untrained)" in echoed[-1]
    assert not shared_engine("vllm", device=config.device)._running  # closed: its memory is the training's


@pytest.mark.slow
def test_demo_end_to_end_reduced(tmp_path, mlflow_store):
    command = [sys.executable, "-m", "kpdd", "demo", "--programs", "kpdd-pot,direct", "--train-size", "6",
               "--eval-size", "1", "--max-steps", "2", "--max-length", "512", "--max-tokens", "24",
               "--shipped-size", "1", "--shipped-engine", "transformers", "--register-as", "demo-student"]
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    first = out.index("== the distilled student beside its untrained base model ==")
    assert first < out.index("== kpdd-pot: gold traces") < out.index("== comparison")
    assert "shipped:kpdd-pot (distilled)    1" in out and "smollm2-135m (untrained)        1" in out
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
    for who in ("student", "base"):  # the first table, on the demo run (no row of the comparison table)
        assert 0 <= demo[f"metrics.shipped-{who}/accuracy/multiarith"] <= 1
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
