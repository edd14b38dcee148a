"""Teachers: where traces come from. A teacher has a ``name`` and ``sample(example, samples) -> QuestionResult``.

- :class:`LMTeacher` runs a (possibly optimised) program on any ``dspy.LM`` and keeps the samples whose final
  answer is correct (for PoT: the sandbox executed the program and its value matched).
- ``kpdd.compile.gold.GoldTeacher`` builds traces from the datasets' own annotations, with no LM.

The teacher's ``dspy.LM`` comes from :func:`kpdd.engines.lm.teacher_lm`.
"""

from __future__ import annotations

import time
from typing import Any

import dspy
from dspy.utils.exceptions import is_retryable_lm_error

from kpdd import jsonl
from kpdd.compile.store import QuestionResult, trace_id
from kpdd.eval.harness import gold_of
from kpdd.eval.lm_guard import UNREACHABLE, is_permanent
from kpdd.eval.taxonomy import parse_error
from kpdd.modules.metric import answer_metric


def predictor_names(program: dspy.Module) -> dict[int, str]:
    """Predictor object id → its name in the program ('key_points.core', 'solve', ...)."""
    return {id(predictor): name for name, predictor in program.named_predictors()}


def stages_of(program: dspy.Module, calls: list) -> list[dict[str, Any]]:
    """DSPy's trace of one run (predictor, inputs, outputs) → the trace store's stage records."""
    names = predictor_names(program)
    stages = []
    for predictor, inputs, outputs in calls:
        fields = predictor.signature.output_fields
        stages.append({"predictor": names.get(id(predictor), type(predictor).__name__),
                       "inputs": jsonl.plain(dict(inputs)), "outputs": {k: jsonl.plain(outputs[k]) for k in fields}})
    return stages


def wrong_answer_reason(prediction) -> str:
    """Why a prediction that ran to the end was not kept."""
    execution = getattr(prediction, "execution", None)
    if isinstance(execution, str):
        return f"execution: {execution}"
    if getattr(prediction, "answer", None) is None:
        return "no answer"
    return "wrong answer"


def _passes(value) -> bool:
    """A metric's verdict: a bool, a score (1 counts), or a Prediction with a ``score`` (GEPA's form)."""
    return float(getattr(value, "score", value)) >= 1.0


class SamplingTeacher:
    """What every LM teacher shares: k runs of a program per question, keeping the runs whose answer is right and
    whose solution is new. A subclass says how one run is made (:meth:`_run`), what identifies a solution
    (:meth:`_solution_key`), which solutions count as known already (:meth:`_known`) and what a trace's ``meta`` says."""

    name: str

    metric = staticmethod(answer_metric)  # which samples are right (a user's DSPy metric: ``metric=``)

    def _run(self, inputs: dict[str, Any], index: int, samples: int) -> tuple[dspy.Module, dspy.Prediction, list]:
        """One run on the example's inputs: the program that ran, its prediction and DSPy's trace of it."""
        raise NotImplementedError

    def _stages(self, program: dspy.Module, calls: list) -> list[dict[str, Any]]:
        return stages_of(program, calls)

    def _solution_key(self, question_id: str, stages: list[dict]) -> str:
        raise NotImplementedError

    def _known(self, question_id: str) -> set[str]:
        return set()  # only this question's own samples

    def _meta(self, index: int) -> dict[str, Any]:
        return {"sample": index}

    def sample(self, example: dspy.Example, samples: int = 1) -> QuestionResult:
        result = QuestionResult(example.id, gold=gold_of(example))
        known, lm_errors = self._known(example.id), []
        for index in range(samples):
            try:
                program, prediction, calls = self._run(example.inputs().toDict(), index, samples)
            except dspy.utils.exceptions.AdapterParseError as e:
                result.samples += 1
                result.errors[parse_error(e)] += 1
                continue
            except dspy.utils.exceptions.LMError as e:  # after the LM's own retries with backoff
                lm_errors.append(f"{type(e).__name__}: {str(e)[:200]}")
                result.errors[f"lm: {type(e).__name__}"] += 1
                if isinstance(e, UNREACHABLE) or is_permanent(e):
                    break  # the other samples would wait out the same dead server, or fail the same way
                continue
            result.samples += 1
            if not _passes(self.metric(example, prediction)):
                result.errors[wrong_answer_reason(prediction)] += 1
                continue
            result.correct += 1
            stages = self._stages(program, calls)
            key = self._solution_key(example.id, stages)
            if key in known:
                result.errors["duplicate"] += 1
                continue
            known.add(key)
            result.traces.append({"stages": stages, "answer": prediction.get("answer"), "meta": self._meta(index)})
        if lm_errors and result.samples == 0:
            result.failed = lm_errors[-1]  # nothing came back: retried on the next run
        return result


class LMTeacher(SamplingTeacher):
    """Sample a program on a teacher LM; keep correct, distinct traces with every stage's inputs and outputs."""

    def __init__(self, program: dspy.Module, lm: dspy.LM, method: str, temperature: float = 0.7,
                 adapter: dspy.Adapter | None = None, name: str | None = None, retries: int = 2,
                 backoff_s: float = 0.5, metric=None):
        self.program, self.lm, self.method = program, lm, method
        if metric is not None:
            self.metric = metric
        self.temperature = temperature
        # The LM retries rate limits, 5xx and timeouts itself; these cover what it does not (e.g. a garbled reply).
        self.retries, self.backoff_s = retries, backoff_s
        self.adapter = adapter or dspy.ChatAdapter()
        self.name = name or getattr(lm, "model", type(program).__name__)

    def _lm_for(self, sample: int, samples: int) -> dspy.LM:
        if samples == 1:
            return self.lm
        # Distinct rollout ids, or DSPy's cache would return the first sample k times.
        return self.lm.copy(rollout_id=sample, temperature=self.temperature)

    def _run(self, inputs: dict[str, Any], index: int, samples: int) -> tuple[dspy.Module, dspy.Prediction, list]:
        """One run of the program and DSPy's trace of it, retrying LM failures with exponential backoff."""
        lm = self._lm_for(index, samples)
        for attempt in range(self.retries + 1):
            try:
                with dspy.context(lm=lm, adapter=self.adapter, trace=[]):
                    prediction = self.program(**inputs)
                    return self.program, prediction, list(dspy.settings.trace)
            except dspy.utils.exceptions.LMError as e:
                # DSPy has already retried the transient ones, and a permanent one would fail again.
                if attempt == self.retries or is_retryable_lm_error(e) or is_permanent(e):
                    raise
                time.sleep(self.backoff_s * 2**attempt)
        raise AssertionError("unreachable")

    def _solution_key(self, question_id: str, stages: list[dict]) -> str:
        return trace_id(question_id, self.method, stages)
