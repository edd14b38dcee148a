"""A tiny, randomly initialised Llama with the shipped student's tokenizer and chat template, for tests that
need real weights to train, merge, launch or serve but not the 135M student's speed (about 6.6M parameters,
almost all of them the 49,152-token embedding)."""

from __future__ import annotations

from pathlib import Path


def save_tiny_llama(directory: Path, seed: int = 0) -> Path:
    """Write a Hugging Face checkpoint directory (weights, config, tokenizer, chat template) and return it."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from kpdd.finetune.student import ensure_base_model

    tokenizer = AutoTokenizer.from_pretrained(ensure_base_model("smollm2-135m"))
    torch.manual_seed(seed)
    # head_dim 64: a size every attention backend has a kernel for (vLLM's CPU backend included).
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=2048,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=True)
    LlamaForCausalLM(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return Path(directory)


def train_tiny_student(root: Path, program: str, **train) -> tuple[Path, Path]:
    """A tiny Llama LoRA-trained 2 steps on gold traces of 4 questions of ``program``: returns the compiled-program
    directory and the trace store (``train`` overrides the fine-tune's settings)."""
    from kpdd.run.finetune import FinetuneConfig, run_finetune
    from kpdd.run.traces import TracesConfig, run_traces

    traces = root / "traces.jsonl"
    run_traces(TracesConfig(program=program, teacher="gold", limit=4, out=str(traces)), progress=False)
    settings = {"max_steps": 2, "batch_size": 1, "grad_accum": 1, "learning_rate": 1e-4, "warmup_ratio": 0.0,
                "val_fraction": 0.0, "device": "cpu", **train}
    run_finetune(FinetuneConfig(traces=[str(traces)], program=program, student=str(save_tiny_llama(root / "tiny")),
                                out=str(root / "compiled"), **settings), progress=False)
    return root / "compiled", traces
