"""An optimizer's work as it is made, so a killed run loses none of it: append-only JSONL under the run directory.

``demos.jsonl`` holds the bootstrapped demonstration sets (one record per optimizer run that made them),
``proposals.jsonl`` the dataset summary and each proposed instruction (or why it was skipped), ``trials.jsonl``
each evaluated candidate with its score. :class:`OptimizeLog` writes and reads all three, counts what was skipped
(answers, proposals or trials that could not be parsed) and hands each trial to ``on_trial`` (MLflow).
A record carries what it depends on (the optimizer, the prompt model), so a rerun with other options makes anew
what those options change and reuses the rest.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dspy
from dspy.utils.callback import BaseCallback
from dspy.utils.exceptions import AdapterParseError, LMError, LMTimeoutError

from kpdd import jsonl
from kpdd.errors import KpddError
from kpdd.eval.lm_guard import FailureGuard, detail, is_permanent

logger = logging.getLogger(__name__)

DEMOS, PROPOSALS, TRIALS = "demos.jsonl", "proposals.jsonl", "trials.jsonl"
# Record keys shared by the writer and the reader.
OPTIMIZER, PROMPT_MODEL, KIND, TEXT, SKIPPED, RNG = "optimizer", "prompt_model", "kind", "text", "skipped", "rng"
SUMMARY, INSTRUCTION = "summary", "instruction"
ANSWER_STEPS = ("bootstrap", "trials")  # the steps where the teacher answers the program's questions


class OptimizerError(KpddError):
    """An optimizer gave up: the message names the optimizer, its step and what to change."""


class StopOptimizing(BaseException):  # noqa: N818  (a signal, like KeyboardInterrupt, not an error type)
    """Carries the one-line error that ends an optimizer run. DSPy's trial evaluation and GEPA's proposer catch
    every ``Exception`` and carry on, which would keep a run going against a dead server for hours."""

    def __init__(self, error: Exception):
        super().__init__(str(error))
        self.error = error


def reason(error: BaseException) -> str:
    """What a skip is counted under: an answer that could not be parsed, a timeout, or the error's type."""
    if isinstance(error, AdapterParseError):
        return "unparseable"
    if isinstance(error, LMTimeoutError) or "timed out" in str(error):  # a read timeout is a transport error
        return "timeout"
    return type(error).__name__


def as_record(demo: Any) -> dict[str, Any]:
    """A demonstration (an Example or a dict) as a JSON-ready dict."""
    data = demo.toDict() if hasattr(demo, "toDict") else dict(demo)
    return json.loads(json.dumps(data, default=str))


def digest(value: Any) -> str:
    return hashlib.sha1(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:12]


class OptimizeLog(BaseCallback):
    """Checkpoints and counters of one optimizer run. ``directory`` None keeps everything in memory.

    As a DSPy callback (inside :meth:`watching`) it counts the answers no adapter could parse, per step, and its
    :class:`FailureGuard` notices a server that stopped answering.
    """

    def __init__(self, directory: str | Path | None = None, on_trial: Callable[[dict], None] | None = None,
                 server_gone_s: float | None = None):
        self.directory = Path(directory) if directory else None
        self.on_trial = on_trial
        self.guard = FailureGuard() if server_gone_s is None else FailureGuard(server_gone_s)
        self.step = "set-up"  # the step running now, named in errors and in the counts
        self.skipped: Counter[str] = Counter()
        self.trials: list[dict] = []  # this run's trials, resumed ones included
        self._lock = threading.Lock()
        self._predict_calls: set[str] = set()

    # --- files ---------------------------------------------------------------------------------------------
    def read(self, name: str) -> list[dict]:
        if self.directory is None:
            return []
        path = self.directory / name
        jsonl.repair(path)
        return list(jsonl.read(path))

    def write(self, name: str, record: dict) -> None:
        if self.directory is not None:
            jsonl.append(self.directory / name, [record])

    def demo_sets(self, optimizer: str) -> dict | None:
        """The last demonstration sets ``optimizer`` wrote, or None; what was skipped while they were made is
        counted again."""
        found = [r for r in self.read(DEMOS) if r.get(OPTIMIZER) == optimizer]
        if found:
            self.recount(found[-1].get(SKIPPED, {}))
        return found[-1] if found else None

    def save_demo_sets(self, optimizer: str, sets: dict[str, list[list[Any]]], rng_state: Any = None) -> None:
        record = {OPTIMIZER: optimizer, "sets": {str(p): [[as_record(d) for d in demos] for demos in per_predictor]
                                                 for p, per_predictor in sets.items()},
                  SKIPPED: {k: v for k, v in self.counts().items() if k.startswith("bootstrap/")}}
        self.write(DEMOS, record | ({RNG: rng_state} if rng_state is not None else {}))

    def proposal(self, kind: str, slot: str, prompt_model: str, propose: Callable[[], str]) -> str | None:
        """A proposal's text: the written one, or ``propose()``'s (written as made); None when it was skipped
        (now or in an earlier run: the same call would fail again, from DSPy's cache)."""
        for record in self.read(PROPOSALS):
            if (record[KIND], record["slot"], record[PROMPT_MODEL]) == (kind, slot, prompt_model):
                if record.get(SKIPPED):
                    self.count(f"{kind}/{record[SKIPPED]}")
                return record.get(TEXT)
        try:
            text = propose()
        except Exception as error:
            self.check_fatal(error)
            self.skip(kind, error)
            self.write(PROPOSALS, {KIND: kind, "slot": slot, PROMPT_MODEL: prompt_model, SKIPPED: reason(error)})
            return None
        self.write(PROPOSALS, {KIND: kind, "slot": slot, PROMPT_MODEL: prompt_model, TEXT: text})
        return text

    def trial(self, key: str) -> dict | None:
        """An earlier run's trial of the candidate ``key``, if one was written."""
        return next((r for r in self.read(TRIALS) if r["key"] == key), None)

    def add_trial(self, record: dict, resumed: bool = False) -> None:
        """Keep a trial (written unless it was read back) and show it to ``on_trial``. A trial read back counts
        again the skips its record carries (``skipped``: what was skipped while it was evaluated)."""
        if resumed:
            self.recount(record.get(SKIPPED, {}))
        record = {**record, "trial": len(self.trials) + 1}  # a reused trial keeps its score, not its number
        self.trials.append(record)
        if not resumed:
            self.write(TRIALS, record)
        if self.on_trial is not None:
            self.on_trial(record)

    # --- failures ------------------------------------------------------------------------------------------
    def count(self, key: str, n: int = 1) -> None:
        with self._lock:
            self.skipped[key] += n

    def recount(self, counts: dict[str, int]) -> None:
        """Count again what an earlier run skipped in work this run reads back instead of redoing."""
        for key, n in counts.items():
            self.count(key, n)

    def counted_since(self, before: dict[str, int]) -> dict[str, int]:
        """The skips counted since ``before`` (an earlier :meth:`counts`)."""
        return {k: v - before.get(k, 0) for k, v in self.counts().items() if v > before.get(k, 0)}

    def skip(self, what: str, error: BaseException) -> None:
        self.count(f"{what}/{reason(error)}")
        logger.warning("%s: skipped one %s (%s: %s)", self.step, what, reason(error), detail(error))

    def check_fatal(self, error: BaseException | None = None) -> None:
        """Stop the run when the server is gone or refuses for good; a single odd answer is only skipped."""
        if self.guard.stopped:
            try:
                self.guard.check(f"the optimizer's work so far in {self.directory or 'memory'}")
            except Exception as stop:
                raise StopOptimizing(stop) from None
        if isinstance(error, LMError) and is_permanent(error):
            from kpdd.errors import LMUnavailableError

            raise StopOptimizing(LMUnavailableError(f"{self.step}: {detail(error)}")) from None

    def watching(self):
        """Count unparseable answers and watch the servers in this block (and the threads that copy its context)."""
        return dspy.context(callbacks=[*dspy.settings.callbacks, self, self.guard])

    def on_module_start(self, call_id, instance, inputs):
        if isinstance(instance, dspy.Predict):
            with self._lock:
                self._predict_calls.add(call_id)

    def on_module_end(self, call_id, outputs, exception=None):
        with self._lock:
            predict = call_id in self._predict_calls
            self._predict_calls.discard(call_id)
        # The teacher's answers to the program (a proposal that fails to parse is counted as a skipped proposal).
        if predict and isinstance(exception, AdapterParseError) and self.step in ANSWER_STEPS:
            self.count(f"{self.step}/unparseable answers")

    def counts(self) -> dict[str, int]:
        return dict(sorted(self.skipped.items()))

    def summary(self) -> dict[str, Any]:
        """The figures of the run: trials, the unoptimised program's val score (the first full evaluation),
        the best full evaluation's, the val set's size and the skip counts. Trials an earlier run wrote and this
        one did not see again (GEPA resumes past them) count too."""
        seen = {t["key"] for t in self.trials}
        every = [r for r in self.read(TRIALS) if r["key"] not in seen] + self.trials
        full = [t for t in every if t.get("full_eval") and "score" in t]
        best = max(full, key=lambda t: t["score"]) if full else {}
        return {"trials": len(every), "skipped": self.counts(), "n": full[0]["n"] if full else None,
                "score_unoptimized": full[0]["score"] if full else None, "score_optimized": best.get("score"),
                "correct_unoptimized": full[0].get("correct") if full else None,
                "correct_optimized": best.get("correct")}
