"""What each stage logs to the active MLflow run: trace stats, training figures, evaluation results.

Every function here is a no-op without an active run, so the library works the same with tracking off.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from kpdd.compile.store import AugmentStats, TraceStats
from kpdd.references import MANIFEST
from kpdd.tracking import runs


def mlflow_active() -> bool:
    import mlflow

    return mlflow.active_run() is not None


@contextlib.contextmanager
def maybe_stage(stage: str, **params: Any) -> Iterator[Any]:
    """A child run for ``stage`` under the active command run; nothing when tracking is off."""
    if not mlflow_active():
        yield None
        return
    with runs.stage_run(stage, **params) as run:
        yield run


def _metric_name(text: str) -> str:
    """MLflow metric names allow letters, digits, '_-./ ' only."""
    return "".join(c if c.isalnum() or c in "_-./ " else "_" for c in text)


def log_traces(stats: TraceStats) -> None:
    """Trace-store stats: coverage, counts, drop reasons; the summary as ``traces/summary.json``."""
    if not mlflow_active():
        return
    import mlflow

    mlflow.log_metrics({runs.TRACES_COVERAGE: stats.coverage, runs.TRACES_COUNT: stats.traces,
                        "traces/questions": stats.questions, "traces/failed": stats.failed,
                        "traces/per_question": stats.traces_per_question,
                        "traces/sample_accuracy": stats.sample_accuracy,
                        **{_metric_name(f"traces/dropped/{k}"): v for k, v in stats.errors.items()}})
    mlflow.log_dict(stats.as_dict(), "traces/summary.json")


def log_augment(stats: AugmentStats) -> None:
    """``kpdd augment``: the store's stats as for traces (coverage = questions with a variant, rejection
    reasons as ``traces/dropped/...``), plus this run's throughput."""
    if not mlflow_active():
        return
    import mlflow

    log_traces(stats)
    mlflow.log_metrics({"augment/variants_per_s": stats.variants_per_s, "augment/new_variants": stats.new_variants,
                        "augment/seconds": stats.seconds, "augment/candidates": stats.samples})


ROUND_METRICS = ("drawn", "correct", "kept", "new_questions", "training_traces", "val_accuracy")


def log_round(figures: dict[str, Any]) -> None:
    """One ``kpdd improve`` round's figures as ``rft/<name>``, on the active run and, with the round as step, on
    its parent (the command's run), whose curves ``kpdd compare`` plots against rounds."""
    if not mlflow_active():
        return
    import mlflow

    metrics = {f"rft/{name}": float(figures[name]) for name in ROUND_METRICS if name in figures}
    mlflow.log_metrics(metrics, step=figures["round"])
    if "dropped" in figures:
        mlflow.log_metrics({_metric_name(f"rft/dropped/{k}"): v for k, v in figures["dropped"].items()})
    client = mlflow.MlflowClient()
    parent = client.get_run(mlflow.active_run().info.run_id).data.tags.get("mlflow.parentRunId")
    for name, value in metrics.items():
        if parent:
            client.log_metric(parent, name, value, step=figures["round"])


def metrics_logger() -> Callable[[dict, int], None] | None:
    """A trainer ``on_log`` that sends loss curves to the active run (None without one)."""
    if not mlflow_active():
        return None
    import mlflow

    return lambda metrics, step: mlflow.log_metrics(metrics, step=step)


def log_finetune(result: Any) -> None:
    """A ``kpdd.run.finetune.FinetuneResult``: each student's final figures, its ``kpdd.json`` and adapter (small)
    as artifacts."""
    if not mlflow_active():
        return
    import mlflow

    mlflow.log_metric(runs.TRACES_COUNT, result.traces)
    for task, trained in result.students.items():
        prefix = "" if len(result.students) == 1 else f"{task}/"
        # At the last step, so the final figures extend the loss curves instead of drawing a point at step 0.
        mlflow.log_metrics({f"{prefix}{k}": v for k, v in trained.figures().items()}, step=trained.steps)
        student = Path(trained.student_dir)
        for part in ("kpdd.json", "adapter"):
            path = student / part
            if path.is_file():
                mlflow.log_artifact(str(path), f"students/{task}")
            elif path.is_dir():
                mlflow.log_artifacts(str(path), f"students/{task}/{part}")
    if len(result.students) > 1:  # per-stage students: the totals `kpdd compare` reads
        students = result.students.values()
        time_s, tokens = sum(t.train_time_s for t in students), sum(t.tokens for t in students)
        mlflow.log_metrics({runs.TRAIN_TIME: time_s, "train/tokens": tokens,
                            runs.TOKENS_PER_S: tokens / time_s if time_s else 0.0})
    mlflow.log_artifact(str(Path(result.out) / MANIFEST))
    mlflow.set_tag("kpdd.compiled_program", str(Path(result.out).resolve()))


def eval_metrics(scores: dict) -> dict[str | None, dict[str, float]]:
    """The evaluation's metrics by dataset (accuracy, its interval bounds, n, error counts); under None the totals
    over datasets: error counts and the average accuracy."""
    by_dataset: dict[str | None, dict[str, float]] = {}
    totals: dict[str, float] = {}
    for dataset, score in scores.items():
        low, high = score.interval
        metrics = {runs.accuracy_key(dataset): score.accuracy, f"{runs.CI_LOW_PREFIX}{dataset}": low,
                   f"{runs.CI_HIGH_PREFIX}{dataset}": high, f"eval/n/{dataset}": score.total}
        for error, count in score.errors.items():
            metrics[_metric_name(f"{runs.error_key(error)}/{dataset}")] = count
            total = _metric_name(runs.error_key(error))
            totals[total] = totals.get(total, 0) + count
        by_dataset[dataset] = metrics
    if scores:
        totals[runs.ACCURACY_AVERAGE] = sum(score.accuracy for score in scores.values()) / len(scores)
    by_dataset[None] = totals
    return by_dataset


def log_eval(scores: dict, predictions_path: str | Path, examples: list) -> None:
    """Accuracy (with interval bounds) and error counts per dataset, the eval set, the predictions table."""
    if not mlflow_active():
        return
    import mlflow

    from kpdd.eval.harness import read_predictions

    mlflow.log_metrics({key: value for metrics in eval_metrics(scores).values() for key, value in metrics.items()})
    log_eval_inputs(examples)
    records = read_predictions(predictions_path)
    flat = [{k: v for k, v in r.items() if k != "stages"} | {"stages": str(r.get("stages"))} for r in records]
    runs.log_records_table(flat, "predictions.json")
    mlflow.log_artifact(str(predictions_path))


def log_eval_inputs(examples: list) -> None:
    for name in sorted({e.get("dataset") for e in examples}):
        runs.log_dataset_input([e for e in examples if e.get("dataset") == name], name=name, context="eval")


ACCURACY_KEYS = (runs.ACCURACY_PREFIX, runs.CI_LOW_PREFIX, runs.CI_HIGH_PREFIX)


def log_headline(scores: dict, examples: list, model_id: str | None = None, prefix: str = "") -> None:
    """The figures a runs table compares students by, on the active run (a student's command run, which holds the
    stages): accuracy per dataset with its interval, the average, error counts, and the evaluation sets as inputs.
    ``model_id``: the student's MLflow model, to which they are linked, each dataset's with that dataset (the
    Models tab shows them per dataset). ``prefix`` (e.g. ``kpdd-pot/``) names the method on a run above several
    (``demo``): the accuracies only, no inputs."""
    if not mlflow_active():
        return
    import mlflow

    by_dataset = eval_metrics(scores)
    headline = {dataset: {key: value for key, value in metrics.items() if dataset is None
                          or key.startswith(ACCURACY_KEYS)} for dataset, metrics in by_dataset.items()}
    if prefix:
        mlflow.log_metrics({f"{prefix}{key}": value for metrics in headline.values() for key, value in metrics.items()
                            if key.startswith(runs.ACCURACY_PREFIX)})
        return
    for dataset, metrics in headline.items():
        examples_of = [e for e in examples if e.get("dataset") == dataset]
        linked = runs.examples_dataset(examples_of, dataset) if model_id and examples_of else None
        # An explicit model id: MLflow would otherwise link a run's step-0 metrics to its models, without datasets.
        mlflow.log_metrics(metrics, model_id=model_id, dataset=linked)
    log_eval_inputs(examples)


def trial_logger() -> Callable[[dict], None] | None:
    """An optimizer's ``on_trial``: each trial as a point of ``optimize/trial_score`` on the active (optimise)
    run, and as a child run holding the candidate (instruction and demo set per predictor) and its score."""
    if not mlflow_active():
        return None
    import mlflow

    stage = mlflow.active_run()
    client = mlflow.MlflowClient()
    stage_tags = client.get_run(stage.info.run_id).data.tags
    tags = {key: stage_tags[key] for key in runs.INHERITED_TAGS if key in stage_tags}

    def log_trial(trial: dict[str, Any]) -> None:
        step = int(trial["trial"])
        if "score" in trial:
            client.log_metric(stage.info.run_id, runs.OPTIMIZE_TRIAL, float(trial["score"]), step=step)
        run = client.create_run(stage.info.experiment_id, run_name=f"trial {step}",
                                tags={**tags, "mlflow.parentRunId": stage.info.run_id, runs.STAGE: "optimise-trial"})
        params = {"trial": step, "reused": bool(trial.get("reused"))}
        for i, (instruction, demo_set) in enumerate(zip(trial.get("instructions", []), trial.get("demo_sets", []),
                                                        strict=False)):
            params[f"predictor_{i}/instruction"] = instruction
            params[f"predictor_{i}/demo_set"] = demo_set
        for i, text in enumerate(trial.get("instruction_texts", [])):
            params[f"predictor_{i}/instruction_text"] = text
        client.log_batch(run.info.run_id, params=[mlflow.entities.Param(k, str(v)[: runs.PARAM_LIMIT])
                                                  for k, v in params.items()])
        for name in ("score", "correct", "n", "failed_examples"):
            if trial.get(name) is not None:
                client.log_metric(run.info.run_id, f"trial/{name}", float(trial[name]))
        client.set_terminated(run.info.run_id, "FAILED" if trial.get("failed") else "FINISHED")

    return log_trial


def log_optimize(summary: dict[str, Any], work_dir: str | Path | None, program_dir: str | Path | None) -> None:
    """The optimizer's figures (val scores before and after, trials, skip counts), its work files and the
    optimised program (None: it gave up) as artifacts."""
    if not mlflow_active():
        return
    import mlflow

    metrics = {"optimize/trials": summary["trials"],
               **{_metric_name(f"optimize/skipped/{k}"): v for k, v in summary["skipped"].items()}}
    if summary.get("score_optimized") is not None:
        metrics |= {runs.OPTIMIZE_BEFORE: summary["score_unoptimized"], runs.OPTIMIZE_AFTER: summary["score_optimized"],
                    "optimize/n": summary["n"]}
    mlflow.log_metrics(metrics)
    mlflow.log_dict(summary, "optimize/summary.json")
    if program_dir is not None:
        mlflow.log_artifacts(str(program_dir), "teacher-program")
    if work_dir is not None and Path(work_dir).is_dir():
        for path in sorted(Path(work_dir).glob("*.jsonl")):
            mlflow.log_artifact(str(path), "optimize")
