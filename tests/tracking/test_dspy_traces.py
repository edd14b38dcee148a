"""Sampled DSPy traces: which calls reach MLflow, whole, from threads too, and the state left afterwards."""

import json

import dspy
import mlflow
import pytest
from dspy.utils.dummies import DummyLM
from dspy.utils.parallelizer import ParallelExecutor
from mlflow.dspy.callback import MlflowCallback

from kpdd.errors import ConfigError
from kpdd.tracking import command_run, dspy_tracing


@pytest.fixture(autouse=True)
def restore_dspy_settings():
    saved = {key: dspy.settings.get(key) for key in ("callbacks", "track_usage")}
    yield
    dspy.settings.configure(**saved)


def traces_by_question(experiment_id: str) -> dict[str, object]:
    mlflow.flush_trace_async_logging()
    traces = mlflow.search_traces(locations=[experiment_id], return_type="list")
    return {json.loads(t.info.request_metadata["mlflow.traceInputs"])["question"]: t for t in traces}


def test_dspy_tracing_samples_whole_calls_in_threads_and_switches_off_after():
    program = dspy.Predict("question -> answer")
    calls = 60
    with command_run("eval") as run, dspy.context(lm=DummyLM([{"answer": "4"}] * (2 * calls))):
        with dspy_tracing(1.0):
            ParallelExecutor(num_threads=2).execute(lambda i: program(question=f"all {i}"), range(4))
        with dspy_tracing(0.5):
            for i in range(calls):
                program(question=f"sampled {i}")
            with dspy_tracing(0.0):
                program(question="off")
        program(question="after")
    assert not any(isinstance(c, MlflowCallback) for c in dspy.settings.callbacks)

    traces = traces_by_question(run.info.experiment_id)
    assert sorted(q for q in traces if q.startswith("all")) == ["all 0", "all 1", "all 2", "all 3"]
    sampled = [q for q in traces if q.startswith("sampled")]
    assert 0 < len(sampled) < calls  # fails with probability 2 * 0.5**60
    assert "off" not in traces and "after" not in traces
    span_counts = {len(mlflow.get_trace(traces[q].info.trace_id).data.spans) for q in [*sampled, "all 0"]}
    assert len(span_counts) == 1 and span_counts.pop() > 1  # a sampled call is traced whole


def test_dspy_tracing_leaves_dspy_evaluate_untraced():
    devset = [dspy.Example(question=f"evaluated {i}", answer="4").with_inputs("question") for i in range(3)]
    with command_run("eval") as run, dspy.context(lm=DummyLM([{"answer": "4"}] * 4)):
        with dspy_tracing(1.0):
            score = dspy.Evaluate(devset=devset, metric=lambda e, p, t=None: e.answer == p.answer)(
                dspy.Predict("question -> answer"))
            dspy.Predict("question -> answer")(question="direct")
    assert score.score == 100.0
    assert list(traces_by_question(run.info.experiment_id)) == ["direct"]


def test_dspy_tracing_rejects_a_rate_outside_zero_to_one():
    with pytest.raises(ConfigError, match="between 0 and 1, got 1.5"):
        with dspy_tracing(1.5):
            pass
