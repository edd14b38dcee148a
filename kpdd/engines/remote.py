"""Remote LMs (a LiteLLM provider, or an OpenAI-compatible server by URL): one probe call before a run.

:func:`probe_lm` makes one 1-token call. A server that is not there, a key it refuses, a model it does not serve or
a key that is not set stops the command with one line that names the URL, model or variable and the fix, before
any store is written. During the run, :class:`kpdd.eval.lm_guard.FailureGuard` takes over.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
import threading
import urllib.request
from collections.abc import Iterator

import dspy
from dspy.utils.exceptions import (
    LMAuthError,
    LMConfigurationError,
    LMError,
    LMInvalidRequestError,
    LMNotConfiguredError,
    LMUnsupportedModelError,
)

from kpdd.errors import LMUnavailableError
from kpdd.eval.lm_guard import UNREACHABLE, detail, status

NO_PROVIDER = "LLM Provider NOT provided"  # LiteLLM's words for a model string it cannot route

_answered: set[tuple[str, str | None]] = set()  # (model, api_base) that answered a probe in this process
_answered_lock = threading.Lock()


def is_remote(lm) -> bool:
    """An LM that DSPy reaches over the network, not one of our local engine objects."""
    return isinstance(lm, dspy.LM) and isinstance(lm.engine, str)


def probe_lm(lm, option: str, api_key_env: str | None = None) -> None:
    """One 1-token call to a remote LM; :class:`LMUnavailableError` if no retry can make it serve the run.

    A rate limit, a 5xx or a timeout lets the run start: the server is there, and the run retries those. A server
    and model that answered once are not asked again in this process (the CLI probes before it opens the MLflow
    run, the driver again before it writes).
    """
    key = (lm.model, lm.kwargs.get("api_base"))
    if not is_remote(lm) or key in _answered:
        return
    probe = lm.copy(num_retries=0, cache=False, callbacks=[])  # a cached answer would hide a dead server
    try:
        with dspy.context(callbacks=[]), _quiet_truncation():
            probe("Reply with OK.", max_tokens=1)
    except LMError as error:
        message = unavailable_message(error, lm, option, api_key_env)
        if message:
            raise LMUnavailableError(message) from None
        return
    with _answered_lock:
        _answered.add(key)


def unavailable_message(error: LMError, lm, option: str, api_key_env: str | None = None) -> str | None:
    """The one line for a probe failure that no retry fixes, naming the URL, model or variable and the fix;
    None for a failure a run may retry."""
    model, url = lm.model, lm.kwargs.get("api_base")
    name, where = f"{option} {model}", url or f"the {model.split('/', 1)[0]} API"
    missing = [] if url else missing_keys(error, lm)
    if missing:
        return f"{name}: no API key: set {' or '.join(missing)} (export {missing[0]}=...), or pass --api-base " \
               "for an OpenAI-compatible server"
    if isinstance(error, UNREACHABLE):
        fix = "start the server, or fix --api-base" if url else "check the network connection"
        return f"{name}: nothing answers at {where} ({detail(error)}): {fix}"
    if isinstance(error, LMAuthError):
        fix = (f"put the right key in {api_key_env}, or name the variable that holds it with --api-key-env"
               if api_key_env else "check the API key")
        return f"{name}: {where} refused the API key ({status(error)}): {fix}"
    if isinstance(error, LMUnsupportedModelError) or (isinstance(error, LMInvalidRequestError) and error.status == 404):
        provider, _, model_id = model.partition("/")
        served = [f"{provider}/{m}" for m in served_models(url, lm.kwargs.get("api_key"))]
        fix = f"it serves {', '.join(served[:5])}" if served else "check the model name"
        return f"{name}: {where} does not serve model {model_id!r} ({status(error)}): {fix}"
    if isinstance(error, LMInvalidRequestError) and NO_PROVIDER in str(error):
        # A relative path whose directory is not there yet reads as provider/model: say both.
        return (f"{name}: no such directory, and LiteLLM knows no provider {model.split('/', 1)[0]!r}: "
                "expected a model directory (./my-student; a student, compiled program or checkpoint) or "
                "provider/model such as openai/gpt-4o-mini (with --api-base for an OpenAI-compatible server)")
    if isinstance(error, LMConfigurationError):
        return f"{name}: {detail(error)}"
    return None


def missing_keys(error: LMError, lm) -> list[str]:
    """The environment variables the provider reads its key from, when no key was found.

    DSPy's own router names them for the providers it routes itself (openai, anthropic, ...). The others go through
    LiteLLM, which only fails at the network; for those, LiteLLM's ``validate_environment`` says what is missing
    (it is asked only once litellm is loaded anyway: importing it takes seconds).
    """
    cause: BaseException | None = error if isinstance(error, LMNotConfiguredError) else None
    while cause is not None:
        if getattr(cause, "env_keys", None):
            return list(cause.env_keys)
        cause = cause.__cause__
    if "litellm" in sys.modules and not lm.kwargs.get("api_key"):
        import litellm

        return list(litellm.validate_environment(model=lm.model).get("missing_keys") or [])
    return []


def served_models(url: str | None, api_key: str | None = None) -> list[str]:
    """The model ids an OpenAI-compatible server lists at ``<url>/models`` (empty when it lists none)."""
    if not url:
        return []
    request = urllib.request.Request(url.rstrip("/") + "/models", headers={"Authorization": f"Bearer {api_key}"})
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        with urllib.request.urlopen(request, timeout=3) as response:
            return [str(m["id"]) for m in json.load(response)["data"]]
    return []


class _DropTruncationWarning(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "truncated" not in record.getMessage()


@contextlib.contextmanager
def _quiet_truncation() -> Iterator[None]:
    """DSPy warns that a reply was cut at max_tokens; the probe asks for one token on purpose."""
    logger, quiet = logging.getLogger("dspy.clients.lm"), _DropTruncationWarning()
    logger.addFilter(quiet)
    try:
        yield
    finally:
        logger.removeFilter(quiet)
