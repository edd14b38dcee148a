"""The functions that build a `dspy.LM`: for a student on a local engine, a model behind a server, or a teacher.

`student_lm` serves a student through a process-wide local engine; `server_lm` points DSPy at any
OpenAI-compatible server (`vllm serve`, llama.cpp, TGI, ...), for which no engine is needed; `teacher_lm` turns
one string into either. A string that looks like a path (`./`, `../`, `/`, `~`, or the name of a directory that
exists) is a model directory, checked by `check_model_dir`; `check_teacher` fails fast, before a run writes
anything, on a path that holds no model or a remote LM that cannot answer (`kpdd.engines.remote.probe_lm`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import dspy

from kpdd.engines.batching import shared_engine
from kpdd.engines.remote import probe_lm
from kpdd.errors import ConfigError
from kpdd.eval.lm_guard import RETRIES
from kpdd.finetune.provider import KpddProvider
from kpdd.finetune.registry import LOCAL_PREFIX
from kpdd.finetune.student import DEFAULT_BASE, SHIPPED_MODELS, SHIPPED_PREFIX, STUDENT_FILE, StudentRef, read_student
from kpdd.modules.saved import MANIFEST

__all__ = ["LOCAL_PREFIX", "check_model_dir", "check_teacher", "looks_like_path", "server_lm", "student_lm",
           "teacher_lm"]

LOCAL = "local:"
PATH_PREFIXES = ("./", "../", "/", "~")


def student_lm(student: str | Path | StudentRef = DEFAULT_BASE, engine: Any = "transformers", **lm_kwargs):
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


def looks_like_path(spec: str) -> bool:
    """A model argument meant as a directory: it starts with ./, ../, / or ~, or names a directory that exists.
    A shipped alias ('smollm2-135m') and ``shipped:<name>`` always mean the shipped model, even where a folder of
    that name exists (``./smollm2-135m`` names the folder)."""
    if spec in SHIPPED_MODELS or spec.startswith(SHIPPED_PREFIX):
        return False
    return spec.startswith(PATH_PREFIXES) or spec in (".", "..") or Path(spec).expanduser().is_dir()


def check_model_dir(spec: str, option: str, compiled: bool = True) -> str:
    """What the directory ``spec`` holds: 'compiled' (a compiled program), 'student' or 'checkpoint'. Anything else
    is one error line naming the path and what was expected there."""
    path = Path(spec).expanduser()
    kinds = [f"a kpdd student directory (with {STUDENT_FILE})", "a Hugging Face checkpoint (with config.json)"]
    if compiled:
        kinds.insert(1, f"a compiled program (with {MANIFEST})")
    expected = ", ".join(kinds[:-1]) + f"{',' if compiled else ''} or {kinds[-1]}"
    if not path.is_dir():
        found = "not a directory" if path.exists() else "no such directory"
        raise ConfigError(f"{option} {spec}: {found} ({path.resolve()}); expected {expected}")
    if (path / MANIFEST).is_file():
        if not compiled:
            students = sorted(p for p in (path / "students").glob("*") if p.is_dir())
            example = f": pass one of its students, e.g. {option} {students[0]}" if students else ""
            raise ConfigError(f"{option} {spec} is a compiled program, and a teacher is one LM{example}")
        return "compiled"
    if (path / STUDENT_FILE).is_file():
        return "student"
    if (path / "config.json").is_file():
        return "checkpoint"
    raise ConfigError(f"{option} {spec}: {path.resolve()} holds no model; expected {expected}")


def local_model(spec: str) -> str | None:
    """The local model a teacher string names (``local:<dir or alias>``, or a path), or None for a model string."""
    if spec.startswith(LOCAL):
        return spec.removeprefix(LOCAL)
    return spec if looks_like_path(spec) else None


def teacher_lm(spec: str, api_base: str | Sequence[str] | None = None, api_key: str | None = None,
               temperature: float = 0.0, max_tokens: int = 1024, num_retries: int = RETRIES,
               timeout: float | None = None, option: str = "--teacher", **kwargs) -> dspy.LM:
    """A ``dspy.LM`` from one string: a LiteLLM model (``openai/gpt-4o-mini``, key from the environment), an
    OpenAI-compatible server (``openai/<served-name>`` with ``api_base``, e.g. ``vllm serve``), many such servers
    of one model (several ``api_base`` URLs: LiteLLM's Router spreads the calls, see :mod:`kpdd.engines.router`),
    or a local Hugging Face model through our engine (``local:<student dir, checkpoint or alias>``, or a path). An
    explicit provider is always passed; ``timeout`` (seconds a request may take) applies to servers, None keeps the
    client's default; ``option`` names the string in error messages."""
    local = local_model(spec)
    if local is not None:
        if looks_like_path(local):
            check_model_dir(local, option, compiled=False)
        return student_lm(local, temperature=temperature, max_tokens=max_tokens, **kwargs)
    if "/" not in spec:
        raise ConfigError(f"{option} {spec!r}: expected 'gold', a model directory ('./my-student' or "
                          "'local:<path>'), or a model string such as 'openai/gpt-4o-mini' (with --api-base for an "
                          "OpenAI-compatible server)")
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


def check_teacher(spec: str | None, option: str = "--teacher", api_base: str | Sequence[str] | None = None,
                  api_key_env: str | None = "OPENAI_API_KEY") -> None:
    """Fail fast, before a run writes anything: a path that holds no model, an unknown alias, or a remote LM that
    cannot answer (one 1-token call) is one error line. Local models are not loaded here. ``api_key_env`` None:
    the LM finds its key itself, as GEPA's reflection LM does."""
    if spec is None or spec == "gold":
        return
    local = local_model(spec)
    if local is not None:
        if looks_like_path(local):
            check_model_dir(local, option, compiled=False)
        read_student(local)
        return
    api_key = os.environ.get(api_key_env) if api_key_env else None
    endpoints = [api_base] if isinstance(api_base, str) or api_base is None else list(api_base) or [None]
    for endpoint in endpoints:  # every server of a fan-out must answer: a dead one is a typo or a stopped replica
        probe_lm(teacher_lm(spec, api_base=endpoint, api_key=api_key, option=option), option, api_key_env)
