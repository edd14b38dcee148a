"""`AsyncVLLMEngine`: vLLM's own continuous batching (`AsyncLLM`) behind kpdd's engine contract.

`VLLMEngine` gathers a burst of concurrent calls and hands it to one `LLM.chat`: the burst ends with its slowest
member, and a call that arrives meanwhile waits for the next burst. Here each call goes to vLLM when it arrives
(`AsyncLLM.generate`, on an event loop in one background thread) and vLLM's scheduler adds it to the running batch
at its next step, so the calls of a multi-stage program, which arrive at different times, never wait for each
other. Options, LoRA handling and the device check are `VLLMBase`'s; a base started without LoRA restarts with it
for the first adapter once the calls in flight on it are done. `generate_calls` counts calls here, not batches.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kpdd.engines.batching import Generation, Job
from kpdd.engines.vllm import VLLMBase, _lora_rank, generation
from kpdd.finetune.registry import registered_student

logger = logging.getLogger(__name__)


@dataclass
class _RunningAsync:
    llm: Any  # vllm AsyncLLM
    lora_rank: int  # the largest adapter rank it can serve; 0 when started without LoRA
    in_flight: int = 0  # calls generating on it now (a restart waits for them)


class AsyncVLLMEngine(VLLMBase):
    """Local engine over vLLM's `AsyncLLM`: every call joins the running batch when it arrives."""

    kind = "vllm"

    _loop: asyncio.AbstractEventLoop | None = None
    _loop_thread: threading.Thread | None = None
    _start_lock: asyncio.Lock | None = None  # made on the loop: one start or restart at a time

    def _submit(self, job: Job) -> Job:
        registered_student(job.model_id)  # fail in the caller's thread, with the known ids
        job.future = asyncio.run_coroutine_threadsafe(self._answer(job), self._event_loop())
        return job

    def _event_loop(self) -> asyncio.AbstractEventLoop:
        with self._worker_lock:
            if self._loop is None:
                self._loop = asyncio.new_event_loop()
                self._start_lock = asyncio.Lock()
                self._loop_thread = threading.Thread(target=self._loop.run_forever, name="kpdd-vllm-async-loop",
                                                     daemon=True)
                self._loop_thread.start()
            return self._loop

    async def _answer(self, job: Job) -> Generation:
        from vllm.inputs import TokensPrompt
        from vllm.sampling_params import RequestOutputKind

        ref = registered_student(job.model_id)
        running = await self._engine(ref.base_path, _lora_rank(ref))
        # The prompt LLM.chat would make: the chat template's text, tokenised without adding special tokens.
        tokenizer = running.llm.get_tokenizer()
        text = tokenizer.apply_chat_template(job.messages, tokenize=False, add_generation_prompt=True)
        prompt = TokensPrompt(prompt_token_ids=tokenizer.encode(text, add_special_tokens=False))
        params = self._sampling_params(job, output_kind=RequestOutputKind.FINAL_ONLY)
        running.in_flight += 1  # no await since _engine returned: a restart cannot slip in between
        try:
            async for final in running.llm.generate(prompt, params, request_id=uuid.uuid4().hex,
                                                    lora_request=self._lora(job.model_id, ref)):
                pass
        finally:
            running.in_flight -= 1
        answer = generation(final)
        self.generate_calls += 1
        self.output_tokens += answer.output_tokens
        return answer

    async def _engine(self, base: Path, adapter_rank: int) -> _RunningAsync:
        """The AsyncLLM for `base`, (re)started if it cannot serve an adapter of `adapter_rank` (0: none)."""
        async with self._start_lock:
            running = self._running.get(base)
            if running is not None and adapter_rank <= running.lora_rank:
                return running
            lora_rank = self._lora_rank_to_start(base, adapter_rank)
            if running is not None:
                logger.info("restarting vLLM for %s with LoRA rank %d once its %d calls in flight are done",
                            base, lora_rank, running.in_flight)
                while running.in_flight:
                    await asyncio.sleep(0.05)
                self._running.pop(base).llm.shutdown()
            # Started on the loop (it blocks it meanwhile), so AsyncLLM's output handler runs on this loop.
            self._running[base] = _RunningAsync(self._start(base, lora_rank, _start_async_llm), lora_rank)
            return self._running[base]

    def _unload(self) -> None:
        with self._worker_lock:
            loop, thread = self._loop, self._loop_thread
            self._loop = self._loop_thread = self._start_lock = None
        if loop is None:
            return
        asyncio.run_coroutine_threadsafe(self._shutdown_engines(), loop).result()
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
        loop.close()

    async def _shutdown_engines(self) -> None:
        for running in self._running.values():
            # The output handler first: it would otherwise see the engine process go and log it as a crash.
            handler = getattr(running.llm, "output_handler", None)
            if handler is not None:
                handler.cancel()
                await asyncio.gather(handler, return_exceptions=True)
            running.llm.shutdown()  # stops vLLM's engine process now, not at exit
            # AsyncLLM.__del__ shuts down again, and at interpreter exit vLLM's module globals are gone by then
            # (a TypeError printed as "Exception ignored"): once is enough.
            running.llm.shutdown = lambda *args, **kwargs: None
        self._running.clear()


def _start_async_llm(**options) -> Any:
    from vllm.engine.arg_utils import AsyncEngineArgs
    from vllm.v1.engine.async_llm import AsyncLLM

    # disable_log_stats: as vllm.LLM does; otherwise AsyncLLM logs throughput every few seconds.
    return AsyncLLM.from_engine_args(AsyncEngineArgs(disable_log_stats=True, **options))
