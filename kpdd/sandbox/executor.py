"""Run model-written Python outside our process and return the value of its `ans`, or a typed error.

`execute(program)` uses a process-wide pool started on first use; `ExecutorPool` gives control
over its size and limits. Each pool worker is a separate interpreter that has left our world
(see `kpdd.sandbox._worker` and docs/ARCHITECTURE.md, "Isolation"): as root on Linux it has no
network, no view of the host's files, no environment and an unprivileged uid of its own, and
every program runs in a fresh fork of it under a memory, CPU, file-size and process limit.
Without root it falls back to a user namespace, then to resource limits alone, with a warning.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import queue
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from kpdd.errors import ConfigError, KpddError
from kpdd.sandbox._worker import ERROR_TYPES, ISOLATION_LEVELS, read_frame, write_frame

__all__ = ["ERROR_TYPES", "ISOLATION_LEVELS", "ExecutionResult", "ExecutorPool", "default_pool",
           "execute", "execute_many"]

logger = logging.getLogger(__name__)
DEFAULT_WORKERS = min(4, os.cpu_count() or 1)
DEFAULT_MEMORY_MB = 256
START_TIMEOUT = 10.0  # seconds for a worker to report ready
REPLY_SLACK = 2.0  # the parent's backstop: a worker silent this long past a program's timeout is replaced
_SANDBOX_SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_worker.py")


@dataclass(frozen=True)
class ExecutionResult:
    """The value of a program's `ans` as a float, or else an error type and a short detail."""

    value: float | None
    error: str | None = None  # one of ERROR_TYPES
    detail: str = ""


class _Worker:
    """One slot of the pool: a sandboxed worker process, or None after it died (restarted on use)."""

    def __init__(self, level: str, memory_mb: int):
        self.level, self.memory_mb = level, memory_mb
        self.process: subprocess.Popen | None = None
        self.jail = ""

    def launch(self) -> None:
        self.jail = tempfile.mkdtemp(prefix="kpdd-sandbox-")
        uid = _sandbox_uid() if os.geteuid() == 0 else None
        config = {"level": self.level, "uid": uid, "jail": self.jail, "memory_mb": self.memory_mb}
        self.process = subprocess.Popen(
            [sys.executable, "-I", "-S", _SANDBOX_SCRIPT, json.dumps(config)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env={}, cwd=self.jail)

    def wait_ready(self) -> str | None:
        """None once the worker is serving; otherwise why it could not start (and it is stopped)."""
        try:
            reply = read_frame(self.process.stdout.fileno(), time.monotonic() + START_TIMEOUT)
        except (EOFError, TimeoutError, ValueError) as exc:
            reply = {"failed": f"the worker exited or stalled before it was ready ({type(exc).__name__})"}
        if "ready" in reply:
            return None
        self.stop(kill=True)
        return str(reply.get("failed"))

    def start(self) -> None:
        self.launch()
        failure = self.wait_ready()
        if failure:
            raise KpddError(f"could not start a sandbox worker with {self.level!r} isolation: {failure}")

    def run(self, program: str, timeout: float) -> dict:
        if self.process is None:  # the last program killed or dirtied it
            self.start()
        try:
            write_frame(self.process.stdin.fileno(), {"program": program, "timeout": timeout})
            reply = read_frame(self.process.stdout.fileno(), time.monotonic() + timeout + REPLY_SLACK)
        except TimeoutError:
            self.stop(kill=True)
            return {"error": "timeout", "detail": "the sandbox worker stopped answering and was replaced"}
        except (EOFError, OSError, ValueError) as exc:
            self.stop(kill=True)
            return {"error": "runtime", "detail": f"the sandbox worker died and was replaced ({type(exc).__name__})"}
        if reply.pop("recycle", False):  # the program left files behind in the worker's jail
            self.stop()
        return reply

    def stop(self, kill: bool = False) -> None:
        """End the worker: at end of input a healthy one exits; `kill` is for one that failed."""
        if self.process is None:
            return
        self.process.stdin.close()
        if kill:
            self.process.kill()  # in the namespace levels its pid 1 and every program die with it
        try:
            self.process.wait(timeout=1.0)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process.stdout.close()
        self.process = None
        shutil.rmtree(self.jail, ignore_errors=True)  # a program may have made parts unremovable


class ExecutorPool:
    """A thread-safe pool of pre-started sandbox workers.

    `isolation=None` picks the strongest level this machine allows ("full", "userns", then
    "rlimits", warning once below "full"); naming a level requires it. `pool.isolation` says which
    level is active. A worker that a program crashes, stalls or dirties is replaced on its next use.
    """

    def __init__(self, workers: int = DEFAULT_WORKERS, memory_mb: int = DEFAULT_MEMORY_MB,
                 isolation: str | None = None):
        if workers < 1:
            raise ConfigError(f"ExecutorPool workers must be at least 1, got {workers}")
        if memory_mb < 32:
            raise ConfigError(f"ExecutorPool memory_mb must be at least 32 (an interpreter needs it), got {memory_mb}")
        if isolation is not None and isolation not in ISOLATION_LEVELS:
            raise ConfigError(f"ExecutorPool isolation must be one of {', '.join(ISOLATION_LEVELS)} or None, "
                              f"got {isolation!r}")
        self.workers, self.memory_mb = workers, memory_mb
        first = self._first_worker(isolation)
        self.isolation = first.level
        others = [_Worker(self.isolation, memory_mb) for _ in range(workers - 1)]
        for worker in others:
            worker.launch()
        self._idle: queue.Queue[_Worker | None] = queue.Queue()
        self._idle.put(first)
        for worker in others:
            failure = worker.wait_ready()
            if failure:  # the slot stays; its worker is started again on first use
                logger.warning("a sandbox worker failed to start (retried on use): %s", failure)
            self._idle.put(worker)
        self._closed = False
        self._close_lock = threading.Lock()

    def _first_worker(self, isolation: str | None) -> _Worker:
        failures = []
        for level in (isolation,) if isolation else ISOLATION_LEVELS:
            worker = _Worker(level, self.memory_mb)
            worker.launch()
            failure = worker.wait_ready()
            if failure is None:
                if failures:
                    _warn_weak_isolation(level, failures)
                return worker
            failures.append(f"{level}: {failure}")
        wanted = f"{isolation!r} isolation is" if isolation else "no isolation level is"
        raise KpddError(f"{wanted} available on this machine ({'; '.join(failures)})")

    def execute(self, program: str, timeout: float = 2.0) -> ExecutionResult:
        """Run `program` and return its `ans` as a float, or the error type and a short detail."""
        if not timeout > 0:
            raise ConfigError(f"execute timeout must be a positive number of seconds, got {timeout!r}")
        worker = self._idle.get()
        if worker is None:
            self._idle.put(None)  # let other waiting threads see it too
            raise KpddError("this ExecutorPool is closed; create a new one")
        try:
            reply = worker.run(program, float(timeout))
        finally:
            self._idle.put(worker)
        return ExecutionResult(reply.get("value"), reply.get("error"), reply.get("detail", ""))

    def execute_many(self, programs: list[str], timeout: float = 2.0) -> list[ExecutionResult]:
        """Run many programs, one thread per worker; results are in the programs' order."""
        with ThreadPoolExecutor(self.workers) as threads:
            return list(threads.map(lambda program: self.execute(program, timeout), programs))

    def close(self) -> None:
        """Stop every worker, after the programs running now have finished."""
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
        for _ in range(self.workers):
            worker = self._idle.get()
            worker.stop()
        self._idle.put(None)

    def __enter__(self) -> ExecutorPool:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


_default_pool: ExecutorPool | None = None
_default_lock = threading.Lock()
_warned = False


def default_pool() -> ExecutorPool:
    """The process-wide pool behind `execute`, started on first use and closed at exit."""
    global _default_pool
    with _default_lock:
        if _default_pool is None:
            _default_pool = ExecutorPool()
            atexit.register(_default_pool.close)
        return _default_pool


def _forget_default_pool() -> None:  # a forked child must not share its parent's workers
    global _default_pool, _default_lock
    _default_pool, _default_lock = None, threading.Lock()


os.register_at_fork(after_in_child=_forget_default_pool)


def execute(program: str, timeout: float = 2.0) -> ExecutionResult:
    """Run a model-written program in the default sandbox pool; see `ExecutorPool.execute`."""
    return default_pool().execute(program, timeout)


def execute_many(programs: list[str], timeout: float = 2.0) -> list[ExecutionResult]:
    """Run many programs in the default sandbox pool; results are in the programs' order."""
    return default_pool().execute_many(programs, timeout)


def _warn_weak_isolation(level: str, failures: list[str]) -> None:
    global _warned
    if not _warned:
        _warned = True
        logger.warning("model-written code runs with %r isolation only (%s); full isolation needs root on Linux",
                       level, "; ".join(failures))


def _sandbox_uid() -> int | None:
    """A random unprivileged uid for one worker, from the upper half of the widest uid range this
    process can map, so that it is no real user's and (almost surely) no other worker's."""
    with open("/proc/self/uid_map") as file:
        ranges = [tuple(map(int, line.split())) for line in file]
    inside, _, count = max(ranges, key=lambda r: r[2])
    high = min(inside + count - 1, 1 << 31)  # the last uid of a range is often the overflow uid
    low = inside + (high - inside) // 2
    return random.SystemRandom().randrange(low, high) if high - low >= 1 else None


