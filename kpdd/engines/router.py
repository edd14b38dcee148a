"""One teacher behind many OpenAI-compatible servers: a ``dspy.LM`` whose calls LiteLLM's ``Router`` spreads.

:func:`routed_lm` builds a ``dspy.LM`` with a custom engine (DSPy 3.4's contract: one attempt per
``complete(Request) -> Response``). The engine hands every request to a ``litellm.Router`` holding one deployment
per endpoint. The Router sends it to the least busy endpoint; a request that fails or times out is tried again on
another endpoint, and the failing one is cooled down (for as long as a 429's ``Retry-After`` asks, else
``cooldown_s``). DSPy keeps what it owns: the response cache (``api_base`` is not part of its key, so every
endpoint shares one cache with a single-server run), history, and its own retries with backoff, which take over
when the whole pool is failing at once.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import dspy
from dspy.clients.engines.litellm_engine import AsyncLiteLLMEngine, LiteLLMEngine
from dspy.clients.engines.litellm_errors import litellm_errors

from kpdd.errors import ConfigError

GROUP = "teacher"  # the Router's name for the pool; every endpoint serves the same model
COOLDOWN_S = 5.0


def read_endpoints(api_bases: Sequence[str] | str | None = None, file: str | Path | None = None) -> list[str]:
    """The endpoints from ``--api-base`` (repeated, or comma-separated) and ``--api-bases-file`` (one URL a line;
    blank lines and ``#`` comments are skipped), in order, without repeats."""
    given = [api_bases] if isinstance(api_bases, str) else list(api_bases or [])
    found = [(url.strip(), "--api-base") for text in given for url in text.split(",") if url.strip()]
    if file:
        path = Path(file)
        if not path.is_file():
            raise ConfigError(f"--api-bases-file {path} does not exist; expected a file with one endpoint URL a line")
        for lineno, line in enumerate(path.read_text().splitlines(), 1):
            url = line.split("#", 1)[0].strip()
            if url:
                found.append((url, f"{path} line {lineno}"))
    for url, where in found:
        if not url.startswith(("http://", "https://")):
            raise ConfigError(f"{where}: expected an endpoint URL such as http://127.0.0.1:8000/v1, got {url!r}")
    return list(dict.fromkeys(url for url, _ in found))


def build_router(model: str, api_bases: Sequence[str], api_key: str | None = None, timeout: float | None = None,
                 cooldown_s: float = COOLDOWN_S):
    """A Router with one deployment per endpoint, all serving ``model`` under the name :data:`GROUP`."""
    from litellm import Router

    deployments = [{"model_name": GROUP, "litellm_params": {"model": model, "api_base": url,
                                                            "api_key": api_key or "EMPTY"}} for url in api_bases]
    # A retry per endpoint lets one request try each of them; allowed_fails=0 cools an endpoint down on its
    # first failure, so the next requests go elsewhere at once.
    return Router(model_list=deployments, routing_strategy="least-busy", num_retries=len(api_bases),
                  allowed_fails=0, cooldown_time=cooldown_s, timeout=timeout)


class _RouterCalls:
    """What the sync and async engines share: the endpoints, their Router, and how a request is handed to it."""

    def __init__(self, model: str, api_bases: Sequence[str], api_key: str | None = None,
                 timeout: float | None = None, cooldown_s: float = COOLDOWN_S, router=None):
        super().__init__(model_type="chat")
        self.model, self.api_bases, self.api_key = model, list(api_bases), api_key
        self.timeout, self.cooldown_s = timeout, cooldown_s
        self.router = router or build_router(model, self.api_bases, api_key, timeout, cooldown_s)

    # DSPy would send messages-style calls through this LiteLLM shortcut, past the Router; without it,
    # every call arrives at complete() as a canonical Request.
    complete_legacy = None

    def _router_arguments(self, request) -> dict[str, Any]:
        data = self._arguments(request)
        data.pop("num_retries")  # 0 for a single attempt: the Router's own retries are the point here
        return {**data, "model": GROUP}

    def dump_state(self) -> dict[str, Any]:
        """Endpoints and settings, never the key (DSPy's rule for saved LMs)."""
        return {"model": self.model, "api_bases": self.api_bases, "timeout": self.timeout,
                "cooldown_s": self.cooldown_s}

    @classmethod
    def load_state(cls, state: dict[str, Any]):
        return cls(**state)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.model!r}, {len(self.api_bases)} endpoints)"


class RouterEngine(_RouterCalls, LiteLLMEngine):
    def complete(self, request: dspy.lm15.Request) -> dspy.lm15.Response:
        data = self._router_arguments(request)
        with litellm_errors(model=request.model):
            raw = self.router.completion(**data)
        return self._response(raw, request)

    def stream(self, request: dspy.lm15.Request) -> Iterator:
        # A whole answer as one burst of events: a teacher's calls are not streamed to anyone.
        yield from dspy.lm15.response_to_events(self.complete(request))


class AsyncRouterEngine(_RouterCalls, AsyncLiteLLMEngine):
    async def complete(self, request: dspy.lm15.Request) -> dspy.lm15.Response:
        data = self._router_arguments(request)
        with litellm_errors(model=request.model):
            raw = await self.router.acompletion(**data)
        return self._response(raw, request)

    async def stream(self, request: dspy.lm15.Request):
        for event in dspy.lm15.response_to_events(await self.complete(request)):
            yield event


def routed_lm(model: str, api_bases: Sequence[str], api_key: str | None = None, timeout: float | None = None,
              cooldown_s: float = COOLDOWN_S, **lm_kwargs) -> dspy.LM:
    """A ``dspy.LM`` for ``model`` served by every endpoint in ``api_bases`` (see the module docstring)."""
    if not api_bases:
        raise ConfigError("a routed teacher needs at least one endpoint (--api-base or --api-bases-file)")
    engine = RouterEngine(model, api_bases, api_key, timeout, cooldown_s)
    async_engine = AsyncRouterEngine(model, api_bases, api_key, timeout, cooldown_s, router=engine.router)
    return dspy.LM(model, engine=engine, async_engine=async_engine, **lm_kwargs)
