"""Sampled MLflow traces of DSPy program calls: ``with dspy_tracing(0.1): ...`` traces one call in ten.

MLflow's own sampler (``MLFLOW_TRACE_SAMPLING_RATIO``) still runs its DSPy callback for every call, about 9 spans
each, and drops the unsampled ones only at the end, which costs milliseconds per call; the ratio is also read once
per process, so changing it means rebuilding MLflow's tracer (up to a second). Here the choice is made once per
top-level call, and calls that are not sampled never reach MLflow.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator
from typing import Any

from dspy.utils.callback import BaseCallback

from kpdd.errors import ConfigError


@contextlib.contextmanager
def dspy_tracing(sample_rate: float = 1.0) -> Iterator[None]:
    """Inside the block, trace ``sample_rate`` of the top-level DSPy calls to the active MLflow experiment.

    0 switches tracing off for the block; compile should (``log_compiles`` does not reach ``BootstrapFinetune``).
    Traces are exported in the background and the top-level kpdd run flushes them when it ends. The block sets
    its callbacks with ``dspy.context``, which DSPy's own thread pools carry into their workers; the previous
    state returns afterwards.

    ``dspy.Evaluate`` runs untraced: MLflow's hook there logs each metric result onto the thread's last trace,
    which under sampling belongs to another example, and usually before that trace is stored (the write fails).
    kpdd's harness calls the program itself.
    """
    if not 0.0 <= sample_rate <= 1.0:
        raise ConfigError(f"trace sample rate must be between 0 and 1, got {sample_rate}")
    import dspy
    import mlflow
    from mlflow.dspy.callback import MlflowCallback

    tracers = (MlflowCallback, SampledCallback)
    others = [callback for callback in dspy.settings.callbacks if not isinstance(callback, tracers)]
    was_on = len(others) < len(dspy.settings.callbacks)
    if sample_rate > 0:
        # autolog enables MLflow's DSPy callback; ours, set below, is the one this block's calls see.
        mlflow.dspy.autolog(log_traces_from_eval=False, log_traces_from_compile=False, silent=True)
        tracer = MlflowCallback() if sample_rate == 1 else SampledCallback(MlflowCallback(), sample_rate)
        settings = {"callbacks": [*others, tracer], "track_usage": True}
    else:
        settings = {"callbacks": others}
    try:
        with dspy.context(**settings):
            yield
    finally:
        if sample_rate > 0 and not was_on:
            mlflow.dspy.autolog(disable=True, silent=True)


class SampledCallback(BaseCallback):
    """Forwards DSPy's callback events to ``inner`` for a random ``rate`` share of top-level calls, whole."""

    def __init__(self, inner: BaseCallback, rate: float, seed: int | None = None):
        self.inner = inner
        self.rate = rate
        self._random = random.Random(seed)
        self._sampled: set[str] = set()  # call ids inside a sampled top-level call

    def _start(self, event: str, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        from dspy.utils.callback_context import ACTIVE_CALL_ID

        parent = ACTIVE_CALL_ID.get()  # DSPy sets it after the start callbacks: None for a top-level call
        if (self._random.random() < self.rate) if parent is None else (parent in self._sampled):
            self._sampled.add(call_id)
            getattr(self.inner, event)(call_id, instance, inputs)

    def _end(self, event: str, call_id: str, outputs: Any, exception: BaseException | None) -> None:
        if call_id in self._sampled:
            self._sampled.discard(call_id)
            getattr(self.inner, event)(call_id, outputs, exception)

    def on_module_start(self, call_id, instance, inputs):
        self._start("on_module_start", call_id, instance, inputs)

    def on_module_end(self, call_id, outputs, exception=None):
        self._end("on_module_end", call_id, outputs, exception)

    def on_lm_start(self, call_id, instance, inputs):
        self._start("on_lm_start", call_id, instance, inputs)

    def on_lm_end(self, call_id, outputs, exception=None):
        self._end("on_lm_end", call_id, outputs, exception)

    def on_adapter_format_start(self, call_id, instance, inputs):
        self._start("on_adapter_format_start", call_id, instance, inputs)

    def on_adapter_format_end(self, call_id, outputs, exception=None):
        self._end("on_adapter_format_end", call_id, outputs, exception)

    def on_adapter_parse_start(self, call_id, instance, inputs):
        self._start("on_adapter_parse_start", call_id, instance, inputs)

    def on_adapter_parse_end(self, call_id, outputs, exception=None):
        self._end("on_adapter_parse_end", call_id, outputs, exception)

    def on_tool_start(self, call_id, instance, inputs):
        self._start("on_tool_start", call_id, instance, inputs)

    def on_tool_end(self, call_id, outputs, exception=None):
        self._end("on_tool_end", call_id, outputs, exception)
