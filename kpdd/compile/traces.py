"""Trace generation: every training question through a teacher, k samples each, correct traces kept, resumable.

``kpdd traces`` (:func:`kpdd.run.traces.run_traces`) builds the teacher and calls :func:`generate_traces`.
Questions run in parallel threads with a progress bar; each question's block lands in the store as soon as it is
done, so a kill loses at most the questions in flight, and rerunning the same command picks up where it stopped.
A run whose teacher fails for good (a dead server, a refused key: :mod:`kpdd.eval.lm_guard`) stops with one line
and keeps what it wrote.
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Protocol

import dspy

from kpdd.compile.store import QuestionResult, TraceStats, TraceStore
from kpdd.errors import ConfigError
from kpdd.eval.lm_guard import FailureGuard

logger = logging.getLogger(__name__)


class Teacher(Protocol):
    name: str

    def sample(self, example: dspy.Example, samples: int = 1) -> QuestionResult: ...


def check_store_matches(store: TraceStore, header: dict[str, Any]) -> None:
    """Resuming into a store written for another program or teacher would mix traces: refuse."""
    for line in store.lines():
        for key in ("method", "teacher"):
            if line.get(key) != header[key]:
                raise ConfigError(f"{store.path} holds traces of {key} {line.get(key)!r}, not {header[key]!r}; "
                                  "pass another --out or remove the file")
        return


def generate_traces(teacher: Teacher, examples: list[dspy.Example], store: TraceStore, header: dict[str, Any],
                    samples: int = 1, threads: int = 8, progress: bool = True,
                    guard: FailureGuard | None = None) -> TraceStats:
    """Run the pending questions through ``teacher`` and append their blocks; returns the store's stats.
    ``guard`` stops the run when the teacher fails for good (:class:`kpdd.errors.LMUnavailableError`)."""
    from tqdm import tqdm

    guard = guard or FailureGuard()
    store.repair()
    check_store_matches(store, header)
    pending_ids = set(store.pending(e.id for e in examples))
    pending = [e for e in examples if e.id in pending_ids]
    if len(pending) < len(examples):
        logger.info("resuming %s: %d of %d questions already done", store.path, len(examples) - len(pending),
                    len(examples))
    lock = threading.Lock()
    bar = tqdm(total=len(examples), initial=len(examples) - len(pending), desc=f"traces {header['method']}",
               unit="q", disable=not progress, dynamic_ncols=True)
    kept = done = 0

    for result in guard.map(lambda example: teacher.sample(example, samples), pending, threads):
        done += not result.failed
        with lock:
            store.append(result, header)
        kept += bool(result.traces)
        bar.update(1)
        bar.set_postfix(kept=kept, failed=int(bool(result.failed)), refresh=False)
    bar.close()
    guard.check(f"{len(examples) - len(pending) + done} of {len(examples)} questions done, kept in {store.path}")
    return store.stats()
