"""The functions that build a `dspy.LM`: for a student on a local engine, a model behind a server, or a teacher.

`student_lm` serves a student through a process-wide local engine; `server_lm` points DSPy at any
OpenAI-compatible server (`vllm serve`, llama.cpp, TGI, ...), for which no engine is needed; `teacher_lm` turns
one string into either.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import dspy

from kpdd.engines.batching import shared_engine
from kpdd.errors import ConfigError
from kpdd.finetune.provider import KpddProvider
from kpdd.finetune.registry import LOCAL_PREFIX
from kpdd.finetune.student import DEFAULT_BASE, StudentRef, read_student

__all__ = ["LOCAL_PREFIX", "server_lm", "student_lm", "teacher_lm"]


def student_lm(student: str | Path | StudentRef = DEFAULT_BASE, engine: Any = "transformers", **lm_kwargs):
    """A `dspy.LM("local/<model_id>")` that runs `student` on this process's shared local engine.

    `engine` is a kind (`"transformers"`, `"vllm"`) or an engine object; `lm_kwargs` go to `dspy.LM`
    (defaults: greedy, `max_tokens=512`, `provider=KpddProvider()`, so DSPy can fine-tune it).
    """
    ref = read_student(student)
    engine = shared_engine(engine) if isinstance(engine, str) else engine
    engine.register(ref.model_id, ref)
    lm_kwargs = {"temperature": 0.0, "max_tokens": 512, **lm_kwargs}
    provider = lm_kwargs.pop("provider", None) or KpddProvider()  # e.g. a KpddProvider with its own defaults
    return dspy.LM(f"{LOCAL_PREFIX}{ref.model_id}", engine=engine, provider=provider, **lm_kwargs)


def server_lm(url: str, model: str, api_key: str = "EMPTY", **lm_kwargs):
    """A `dspy.LM` for a model behind an OpenAI-compatible server, e.g. `vllm serve <dir>` at
    `http://127.0.0.1:8000/v1`. The provider is a plain `dspy.Provider`: DSPy cannot fine-tune through it.
    """
    return dspy.LM(f"openai/{model}", api_base=url, api_key=api_key, provider=dspy.Provider(), **lm_kwargs)


def teacher_lm(spec: str, api_base: str | Sequence[str] | None = None, api_key: str | None = None,
               temperature: float = 0.0, max_tokens: int = 1024, num_retries: int = 6, timeout: float | None = None,
               **kwargs) -> dspy.LM:
    """A ``dspy.LM`` from one string: a LiteLLM model (``openai/gpt-4o-mini``, key from the environment), an
    OpenAI-compatible server (``openai/<served-name>`` with ``api_base``, e.g. ``vllm serve``), many such servers
    of one model (several ``api_base`` URLs: LiteLLM's Router spreads the calls, see :mod:`kpdd.engines.router`),
    or a local Hugging Face model through our engine (``local:<student dir, checkpoint or alias>``). An explicit
    provider is always passed. ``timeout`` (seconds a request may take) applies to servers; None keeps the
    client's default."""
    if spec.startswith("local:"):
        return student_lm(spec.removeprefix("local:"), temperature=temperature, max_tokens=max_tokens, **kwargs)
    if "/" not in spec:
        raise ConfigError(f"teacher {spec!r}: expected 'gold', 'local:<path>', or a model string such as "
                          "'openai/gpt-4o-mini' (with --api-base for an OpenAI-compatible server)")
    from dspy.clients.openai import OpenAIProvider

    provider = OpenAIProvider() if spec.startswith("openai/") else dspy.Provider()
    endpoints = [api_base] if isinstance(api_base, str) else list(api_base or [])
    if len(endpoints) > 1:
        from kpdd.engines.router import routed_lm

        return routed_lm(spec, endpoints, api_key=api_key, timeout=timeout, temperature=temperature,
                         max_tokens=max_tokens, num_retries=num_retries, provider=provider, **kwargs)
    api_base = endpoints[0] if endpoints else None
    connection = {"api_base": api_base, "api_key": api_key or ("EMPTY" if api_base else None), "timeout": timeout}
    return dspy.LM(spec, temperature=temperature, max_tokens=max_tokens, num_retries=num_retries,
                   provider=provider, **{k: v for k, v in connection.items() if v is not None}, **kwargs)
