"""The functions that build a `dspy.LM`: for a student on a local engine, a model behind a server, or a teacher.

`student_lm` serves a student through a process-wide local engine; `server_lm` points DSPy at any
OpenAI-compatible server (`vllm serve`, llama.cpp, TGI, ...), for which no engine is needed; `teacher_lm` turns
an LM reference (:class:`kpdd.references.LMRef`, or a string it parses) into either. `check_teacher` fails fast,
before a run writes anything, on a remote LM that cannot answer (`kpdd.engines.remote.probe_lm`); a path that
holds no model already failed its parse.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import dspy

from kpdd.engines.batching import shared_engine
from kpdd.engines.remote import probe_lm
from kpdd.eval.lm_guard import RETRIES
from kpdd.finetune.provider import KpddProvider
from kpdd.finetune.registry import LOCAL_PREFIX
from kpdd.finetune.student import StudentRef, read_student
from kpdd.references import DEFAULT_BASE, LMRef, parse_lm

__all__ = ["LOCAL_PREFIX", "check_teacher", "server_lm", "student_lm", "teacher_lm"]


def student_lm(student: str | Path | StudentRef | LMRef = DEFAULT_BASE, engine: Any = "transformers", **lm_kwargs):
    """A `dspy.LM("local/<model_id>")` that runs `student` on this process's shared local engine.

    `engine` is a kind (`"transformers"`, `"vllm"`, `"vllm-burst"`) or an engine object; `lm_kwargs` go to `dspy.LM`
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


def teacher_lm(lm: str | LMRef, api_base: str | Sequence[str] | None = None, api_key: str | None = None,
               temperature: float = 0.0, max_tokens: int = 1024, num_retries: int = RETRIES,
               timeout: float | None = None, option: str = "--teacher", **kwargs) -> dspy.LM:
    """A ``dspy.LM`` for one LM reference (a string is parsed by :func:`kpdd.references.parse_lm`, a compiled
    program refused): a LiteLLM model (``openai/gpt-4o-mini``, key from the environment), an OpenAI-compatible
    server (``openai/<served-name>`` at a server, e.g. ``vllm serve``), many such servers of one model (LiteLLM's
    Router spreads the calls, see :mod:`kpdd.engines.router`), or a local model through our engine (a student
    directory, a checkpoint, an alias). ``api_base`` (one URL or several) replaces the reference's servers. An
    explicit provider is always passed; ``timeout`` (seconds a request may take) applies to servers, None keeps the
    client's default; ``option`` names the reference in error messages."""
    ref = parse_lm(lm, option, compiled=False)
    if not ref.is_remote:
        return student_lm(ref, temperature=temperature, max_tokens=max_tokens, **kwargs)
    from dspy.clients.openai import OpenAIProvider

    provider = OpenAIProvider() if ref.model.startswith("openai/") else dspy.Provider()
    endpoints = [api_base] if isinstance(api_base, str) else list(api_base or ref.servers)
    if len(endpoints) > 1:
        from kpdd.engines.router import routed_lm

        return routed_lm(ref.model, endpoints, api_key=api_key, timeout=timeout, temperature=temperature,
                         max_tokens=max_tokens, num_retries=num_retries, provider=provider, **kwargs)
    api_base = endpoints[0] if endpoints else None
    connection = {"api_base": api_base, "api_key": api_key or ("EMPTY" if api_base else None), "timeout": timeout}
    return dspy.LM(ref.model, temperature=temperature, max_tokens=max_tokens, num_retries=num_retries,
                   provider=provider, **{k: v for k, v in connection.items() if v is not None}, **kwargs)


def check_teacher(lm: LMRef, option: str = "--teacher", api_key_env: str | None = "OPENAI_API_KEY") -> None:
    """Fail fast, before a run writes anything: a local model without weights' description (``kpdd.json`` or an
    alias it does not know) or a remote LM that cannot answer (one 1-token call per server) is one error line.
    Local models are not loaded here. ``api_key_env`` None: the LM finds its key itself, as GEPA's reflection LM
    does."""
    if not lm.is_remote:
        read_student(lm)
        return
    api_key = os.environ.get(api_key_env) if api_key_env else None
    # Every server of a fan-out must answer: a dead one is a typo or a stopped replica.
    for endpoint in lm.servers or [None]:
        probe_lm(teacher_lm(lm, api_base=endpoint, api_key=api_key, option=option), option, api_key_env)
