"""The options every command with a remote LM shares (``kpdd traces``/``compile``'s teacher, ``kpdd eval``'s
``--lm``): where its servers are, its key, and what to do when they fail. One dataclass, inherited by each
command's config, so the options read and behave the same everywhere."""

from __future__ import annotations

import os
from dataclasses import dataclass

import dspy

from kpdd.config import Checked, option
from kpdd.eval.lm_guard import RETRIES, SERVER_GONE_S
from kpdd.references import LMRef


@dataclass(frozen=True)
class RemoteLMOptions(Checked):
    api_base: list[str] = option([], "OpenAI-compatible server URL for a remote LM (e.g. a vLLM server); repeat it "
                                     "(or separate URLs by commas) to spread the calls over several servers")
    api_bases_file: str | None = option(None, "a file of server URLs, one a line, added to --api-base")
    api_key_env: str = option("OPENAI_API_KEY", "environment variable holding the remote LM's API key")
    request_timeout: float | None = option(None, "seconds a request to the server may take before it is abandoned "
                                                 "and retried (on another server when there are several); "
                                                 "default: the client's own", above=0)
    retries: int = option(RETRIES, "retries of a remote LM call that failed transiently (rate limit, 5xx, timeout, "
                                   "lost connection), after 1, 2, 4, ... s", at_least=0)
    server_gone_s: float = option(SERVER_GONE_S, "stop the run when a remote LM has not answered for this many "
                                                 "seconds (what was written is kept; rerun to resume)", above=0)

    def endpoints(self) -> list[str]:
        from kpdd.engines.router import read_endpoints

        return read_endpoints(self.api_base, self.api_bases_file)

    def lm_reference(self, text: str, option_name: str, compiled: bool = False) -> LMRef:
        """``text`` (a config's LM string) as an LM reference, a model string on these servers
        (:func:`kpdd.references.parse_lm`; ``compiled``: a compiled program may stand for the LM)."""
        from kpdd.references import parse_lm

        return parse_lm(text, option_name, servers=self.endpoints(), compiled=compiled)

    def remote_lm(self, lm: LMRef, option_name: str, probe: bool = True, **lm_kwargs) -> dspy.LM:
        """The ``dspy.LM`` of a reference (:meth:`lm_reference`) with these options' key, timeout and retries; with
        ``probe``, after one 1-token call (a fan-out's servers are probed one by one in :meth:`check_remote`)."""
        from kpdd.engines.lm import teacher_lm
        from kpdd.engines.remote import probe_lm

        built = teacher_lm(lm, api_key=os.environ.get(self.api_key_env), timeout=self.request_timeout,
                           num_retries=self.retries, option=option_name, **lm_kwargs)
        if probe and len(lm.servers) <= 1:
            probe_lm(built, option_name, self.api_key_env)
        return built

    def check_remote(self, lm: LMRef, option_name: str) -> None:
        """Fail fast: a local model without a model there, or a server (each of a fan-out) that does not answer one
        probe."""
        from kpdd.engines.lm import check_teacher

        check_teacher(lm, option_name, self.api_key_env)
