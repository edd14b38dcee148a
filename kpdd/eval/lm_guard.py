"""LM errors during a run: transient or permanent, and the :class:`FailureGuard` that stops a run that cannot go on.

Transient errors (rate limits, 5xx, timeouts, dropped connections) are retried by DSPy with backoff; a question
that still fails is recorded and retried by the next run. Permanent errors (auth, billing, bad request, unknown
model, missing configuration) would fail the same way again. The guard sees the outcome of every LM call of a run
(it is a DSPy callback) and stops the run after a few permanent errors in a row, or when a server has not answered
for a set time. What the run wrote is kept, and rerunning the same command resumes.
"""

from __future__ import annotations

import contextlib
import contextvars
import http
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import TypeVar

import dspy
from dspy.utils.callback import BaseCallback
from dspy.utils.exceptions import (
    ContextWindowExceededError,
    LMAuthError,
    LMBillingError,
    LMConfigurationError,
    LMError,
    LMInvalidRequestError,
    LMTimeoutError,
    LMTransportError,
    LMUnsupportedModelError,
)

from kpdd.errors import LMUnavailableError

T, R = TypeVar("T"), TypeVar("R")

RETRIES = 5  # DSPy waits 1, 2, 4, 8, 16 s between tries: a server that died is given up on ~31 s later
SERVER_GONE_S = 20.0  # no answer for this long, and the next call cannot connect: the run stops
STOP_AFTER_PERMANENT = 3  # permanent errors in a row that stop a run (one alone may be one odd question)

PERMANENT = (LMAuthError, LMBillingError, LMConfigurationError, LMInvalidRequestError)
UNREACHABLE = (LMTransportError, LMTimeoutError)
FIXES = ((LMAuthError, "check its API key"), (LMBillingError, "check the account's billing"),
         (LMUnsupportedModelError, "check the model name"), (LMConfigurationError, "fix its configuration"),
         (LMInvalidRequestError, "check the model and the options"))


def is_permanent(error: BaseException) -> bool:
    """An error the same call would meet again. A prompt too long for the model belongs to one question, not the run."""
    return isinstance(error, PERMANENT) and not isinstance(error, ContextWindowExceededError)


def detail(error: BaseException) -> str:
    """The error's first line, without DSPy's '[model] ' prefix."""
    text = (getattr(error, "message", None) or str(error)).strip()
    return text.splitlines()[0][:160] if text else type(error).__name__


def status(error: LMError) -> str:
    """'401 Unauthorized', or the error type when no HTTP status came back."""
    code = getattr(error, "status", None)
    with contextlib.suppress(ValueError, TypeError):
        return f"{code} {http.HTTPStatus(code).phrase}"
    return type(error).__name__


class FailureGuard(BaseCallback):
    """Decides when a run must stop. As a DSPy callback it sees every LM call's outcome (after DSPy's retries).

    It stops the run after ``stop_after`` permanent errors in a row, or at a failed connection or a timeout when no
    call has been answered for ``server_gone_s`` seconds. A run's loop starts no new question once :attr:`stopped`
    and ends with :meth:`check`, which raises the one line that says why, what was kept and how to resume.
    """

    def __init__(self, server_gone_s: float = SERVER_GONE_S, stop_after: int = STOP_AFTER_PERMANENT):
        self.server_gone_s, self.stop_after = server_gone_s, stop_after
        self.reason: str | None = None
        self.fix = ""
        self._lock = threading.Lock()
        self._last_answer = time.monotonic()
        self._permanent_in_a_row = 0

    @property
    def stopped(self) -> bool:
        return self.reason is not None

    @contextlib.contextmanager
    def watching(self) -> Iterator[FailureGuard]:
        """See every LM call made in this block (and in the threads that copy its context)."""
        with dspy.context(callbacks=[*dspy.settings.callbacks, self]):
            yield self

    def map(self, work: Callable[[T], R], items: list[T], threads: int) -> Iterator[R]:
        """``work(item)`` for each item on ``threads`` threads while watching, yielded as each is done. Each task runs
        in a copy of the caller's context, so DSPy settings set by the caller reach it; once :attr:`stopped`, the
        items not started yet are left out."""
        def guarded(item: T) -> tuple[bool, R | None]:
            return (False, None) if self.stopped else (True, work(item))

        with self.watching(), ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
            futures = [pool.submit(contextvars.copy_context().run, guarded, item) for item in items]
            for future in as_completed(futures):
                started, result = future.result()
                if started:
                    yield result

    def on_lm_end(self, call_id, outputs, exception=None):
        with self._lock:
            if exception is None:
                self._last_answer, self._permanent_in_a_row = time.monotonic(), 0
            elif isinstance(exception, UNREACHABLE):
                silent = time.monotonic() - self._last_answer
                if silent > self.server_gone_s:
                    self._stop(f"{_model(exception)} has not answered for {silent:.1f} s ({detail(exception)})",
                               "start its server again")
            elif is_permanent(exception):
                self._permanent_in_a_row += 1
                if self._permanent_in_a_row >= self.stop_after:
                    fix = next(fix for kind, fix in FIXES if isinstance(exception, kind))
                    self._stop(f"{self._permanent_in_a_row} calls to {_model(exception)} in a row failed for good "
                               f"({status(exception)}: {detail(exception)})", fix)

    def _stop(self, reason: str, fix: str) -> None:
        if self.reason is None:  # the first cause is the one to report
            self.reason, self.fix = reason, fix

    def check(self, kept: str) -> None:
        """Raise the one line that ends a stopped run; ``kept`` says what was written, e.g. '12 of 40 ... in f'."""
        if self.reason is not None:
            raise LMUnavailableError(f"{self.reason}; stopped with {kept}: {self.fix}, then rerun the same command "
                                     "to resume")


def _model(error: BaseException) -> str:
    return getattr(error, "model", None) or "the LM"
