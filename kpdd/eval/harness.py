"""The evaluation harness: a program and its LM over benchmark questions → predictions JSONL → accuracy.

Questions run in parallel threads, so a local engine receives them concurrently and generates them in batches.
Every finished question is appended to the predictions file at once; rerunning resumes after the last one and
retries the questions whose LM call failed (a server or engine failure says nothing about the program).
Accuracy comes with a 95 % Wilson interval, and each wrong prediction gets a type from
:mod:`kpdd.eval.taxonomy`. With ``samples > 1`` the answer is the majority vote of k sampled runs
(self-consistency). The score of a prediction is the numeric-answer match by default, or any DSPy metric
(``metric(example, prediction) -> bool | float``); the report gives its mean with a 95 % interval. A run whose LM fails for good (a dead server, a refused key: see
:mod:`kpdd.eval.lm_guard`) stops with one line and keeps every record it wrote.
"""

from __future__ import annotations

import copy
import math
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dspy

from kpdd import jsonl
from kpdd.eval.answers import is_correct
from kpdd.eval.lm_guard import FailureGuard
from kpdd.eval.taxonomy import LM_ERROR, classify, parse_error

RAW_OUTPUT = "raw_output"  # a stage whose output did not parse: the LM's text, so a reader sees what it wrote


def wilson_interval(correct: int, total: int, z: float = 1.96) -> tuple[float, float]:
    """95 % confidence interval of a proportion (Wilson score: sane at 0 %, 100 % and small n)."""
    if total == 0:
        return 0.0, 0.0
    p = correct / total
    centre = (p + z * z / (2 * total)) / (1 + z * z / total)
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / (1 + z * z / total)
    return max(0.0, centre - half), min(1.0, centre + half)


def mean_interval(total: float, squares: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """95 % interval of the mean of scores in [0, 1] that are not all 0 or 1 (normal approximation)."""
    if n < 2:
        return 0.0, 1.0
    mean = total / n
    variance = max(0.0, (squares - n * mean * mean) / (n - 1))
    half = z * math.sqrt(variance / n)
    return max(0.0, mean - half), min(1.0, mean + half)


@dataclass
class DatasetScore:
    """One dataset's scores: ``correct`` counts the predictions that scored 1; the accuracy is the mean score."""

    dataset: str
    total: int = 0
    correct: int = 0
    errors: Counter = field(default_factory=Counter)
    score_sum: float | None = None  # None: every score was 0 or 1 (then the mean is correct / total)
    score_squares: float = 0.0

    def add(self, score: float) -> None:
        self.total += 1
        self.correct += score >= 1.0
        if score not in (0.0, 1.0) and self.score_sum is None:
            self.score_sum = float(self.correct - (score >= 1.0))
            self.score_squares = self.score_sum  # the earlier scores were 0 or 1
        if self.score_sum is not None:
            self.score_sum += score
            self.score_squares += score * score

    @property
    def accuracy(self) -> float:
        if not self.total:
            return 0.0
        return (self.correct if self.score_sum is None else self.score_sum) / self.total

    @property
    def interval(self) -> tuple[float, float]:
        if self.score_sum is None:
            return wilson_interval(self.correct, self.total)
        return mean_interval(self.score_sum, self.score_squares, self.total)


def _run_once(program: dspy.Module, inputs: dict[str, Any], settings: dict) -> dict[str, Any]:
    return run_program(program, inputs, settings)


def run_program(program: dspy.Module, inputs: dict[str, Any], settings: dict | None = None) -> dict[str, Any]:
    """One run of the program on ``inputs``: the answer and stage outputs, or the error that stopped it and what
    the stages before it said (a served student's ``predict`` runs the same)."""
    try:
        with dspy.context(**(settings or {}), trace=[]):
            try:
                prediction = program(**inputs)
            except dspy.utils.exceptions.AdapterParseError as e:
                # The stages that did answer (from DSPy's trace and the partial parse), and what the LM wrote.
                done = {k: v for _, _, outputs in dspy.settings.trace for k, v in outputs.items()}
                return {"answer": None, "error": parse_error(e), **done, **(e.parsed_result or {}),
                        RAW_OUTPUT: e.lm_response}
    except dspy.utils.exceptions.LMError as e:
        return {"answer": None, "error": LM_ERROR, "detail": f"{type(e).__name__}: {str(e)[:200]}"}
    return {k: jsonl.plain(v) for k, v in prediction.items() if v is not None}


def majority(answers: list[float | None]) -> float | None:
    """The most common answer (values equal to 6 significant digits vote together); ties go to the first."""
    votes = Counter(round(a, 6) for a in answers if a is not None)
    if not votes:
        return None
    top = max(votes.values())
    return next(a for a in answers if a is not None and votes[round(a, 6)] == top)


def gold_of(example: dspy.Example) -> Any:
    """What a record stores as the gold: the example's ``answer``, or (a user's data, labels named otherwise) all
    its labels by name."""
    labels = {k: v for k, v in example.labels().toDict().items() if k not in ("id", "dataset", "split")}
    return labels.get("answer", labels)


def score_of(metric: Callable | None, example: dspy.Example, fields: dict[str, Any]) -> float:
    """The metric's score of one run's fields (None: the numeric answer against the gold ``answer``)."""
    if metric is None:
        return float(is_correct(fields.get("answer"), example.answer))
    if fields.get("error"):
        return 0.0
    value = metric(example, dspy.Prediction(**fields))
    return float(getattr(value, "score", value))  # GEPA-style metrics return a Prediction with a score


def predict(program: dspy.Module, example: dspy.Example, samples: int = 1, temperature: float = 0.7,
            adapter: dspy.Adapter | None = None, metric: Callable | None = None) -> dict[str, Any]:
    """The predictions record of one question (``samples`` > 1: self-consistency over sampled runs)."""
    start = time.perf_counter()
    settings = {"adapter": adapter} if adapter is not None else {}
    inputs = example.inputs().toDict()
    if samples == 1:
        runs = [_run_once(program, inputs, settings)]
    else:
        runs = [_run_once(sampling_program(program, i, temperature), inputs, settings) for i in range(samples)]
    answer = majority([r.get("answer") for r in runs]) if samples > 1 else runs[0].get("answer")
    first = next((r for r in runs if r.get("answer") == answer), runs[0])
    score = score_of(metric, example, first)
    question = inputs.get("question")
    record = {"question_id": example.id, "dataset": example.get("dataset"),
              **({"question": question} if set(inputs) == {"question"} else {"inputs": inputs}),
              "gold": gold_of(example),
              "answer": answer, "correct": score >= 1.0, "score": score,
              "error": classify(question, first, score >= 1.0) if question is not None else first.get("error"),
              "stages": {k: v for k, v in first.items() if k not in ("answer", "error")},
              "latency_s": round(time.perf_counter() - start, 3)}
    if samples > 1:
        record["samples"] = [r.get("answer") for r in runs]
    return record


def sampling_program(program: dspy.Module, index: int, temperature: float) -> dspy.Module:
    """``program`` with every LM set to sample with rollout id ``index`` (else DSPy's cache would return the
    first sample k times). Shallow copies: the predictors' demos and the engines are shared, not copied."""
    def sampled(lm: dspy.LM | None) -> dspy.LM:
        return (lm or dspy.settings.lm).copy(rollout_id=index, temperature=temperature)

    def clone(module: dspy.Module) -> dspy.Module:
        copied = copy.copy(module)
        if isinstance(module, dspy.Predict):
            copied.lm = sampled(module.lm)
        for name, value in vars(module).items():
            if isinstance(value, dspy.Module):
                setattr(copied, name, clone(value))
        return copied

    return clone(program)


def evaluate(program: dspy.Module, examples: list[dspy.Example], predictions_path: str | Path,
             threads: int = 16, samples: int = 1, temperature: float = 0.7, adapter: dspy.Adapter | None = None,
             progress: bool = True, on_record: Callable[[dict], None] | None = None,
             guard: FailureGuard | None = None, metric: Callable | None = None) -> dict[str, DatasetScore]:
    """Evaluate ``program`` on ``examples``, appending to ``predictions_path`` (resumed if it exists).
    ``guard`` stops the run when its LM fails for good (:class:`kpdd.errors.LMUnavailableError`); ``metric``
    scores each prediction (default: the numeric answer)."""
    from tqdm import tqdm

    guard = guard or FailureGuard()
    path = Path(predictions_path)
    jsonl.repair(path)
    done = {(r["dataset"], r["question_id"]): r for r in read_predictions(path) if r.get("error") != LM_ERROR}
    pending = [e for e in examples if (e.get("dataset"), e.id) not in done]
    bar = tqdm(total=len(examples), initial=len(examples) - len(pending), desc="eval", unit="q",
               disable=not progress, dynamic_ncols=True)
    records = [done[(e.get("dataset"), e.id)] for e in examples if (e.get("dataset"), e.id) in done]

    # guard.map runs each question in a copy of this context, so DSPy settings (tracing callbacks) reach it.
    for record in guard.map(lambda e: predict(program, e, samples, temperature, adapter, metric), pending, threads):
        jsonl.append(path, [record])
        records.append(record)
        if on_record:
            on_record(record)
        bar.update(1)
        bar.set_postfix(acc=f"{sum(r.get('score', r['correct']) for r in records) / len(records):.1%}", refresh=False)
    bar.close()
    answered = sum(r.get("error") != LM_ERROR for r in records)
    guard.check(f"{answered} of {len(examples)} questions answered, kept in {path}")
    return score_records(records)


def read_predictions(path: str | Path) -> list[dict]:
    """The predictions file's records, the latest one per question (a retried question appends a new one)."""
    latest = {(r["dataset"], r["question_id"]): r for r in jsonl.read(path)}
    return list(latest.values())


def score_records(records: list[dict]) -> dict[str, DatasetScore]:
    """Accuracy and error counts per dataset from predictions records."""
    scores: dict[str, DatasetScore] = {}
    for record in records:
        score = scores.setdefault(record["dataset"], DatasetScore(record["dataset"]))
        score.add(float(record.get("score", record["correct"])))
        if record.get("error"):
            score.errors[record["error"]] += 1
    return scores


def combined(scores) -> DatasetScore:
    """All datasets' scores as one."""
    scores = list(scores)
    total = DatasetScore("all", sum(s.total for s in scores), sum(s.correct for s in scores))
    if any(s.score_sum is not None for s in scores):
        total.score_sum = sum(s.correct if s.score_sum is None else s.score_sum for s in scores)
        total.score_squares = sum(s.correct if s.score_sum is None else s.score_squares for s in scores)
    return total


def format_report(scores: dict[str, DatasetScore]) -> str:
    """Accuracy per dataset with its 95 % interval, then the error taxonomy per dataset."""
    lines = [f"{'dataset':<12} {'n':>5} {'accuracy':>9}  95% interval"]
    for score in scores.values():
        low, high = score.interval
        lines.append(f"{score.dataset:<12} {score.total:>5} {score.accuracy:>9.1%}  [{low:.1%}, {high:.1%}]")
    total = combined(scores.values())
    if len(scores) > 1:
        low, high = total.interval
        lines.append(f"{'all':<12} {total.total:>5} {total.accuracy:>9.1%}  [{low:.1%}, {high:.1%}]")
    errors = Counter()
    for score in scores.values():
        errors.update(score.errors)
    if errors:
        lines.append("\nerrors (wrong predictions by first cause):")
        width = max(len(e) for e in errors)
        lines += [f"  {error:<{width}}  {count:>5}  "
                  + ", ".join(f"{s.dataset} {s.errors[error]}" for s in scores.values() if s.errors[error])
                  for error, count in errors.most_common()]
    if errors[LM_ERROR]:
        lines.append(f"\n{errors[LM_ERROR]} questions failed on an LM call and count as wrong: "
                     "rerun the same command to retry them.")
    return "\n".join(lines)
