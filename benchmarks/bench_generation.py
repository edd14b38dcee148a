"""Generation throughput of the shipped student: one prompt at a time vs kpdd's batching engines.

A batch of GSM8K test questions, each formatted with the model's chat template, is answered greedily by
  (1) plain transformers `generate`, one prompt after another (the baseline),
  (2) `TransformersEngine.generate_batch` (one left-padded batched `generate`),
  (3) `VLLMEngine.generate_batch` (one `vllm.LLM.chat` call; its start-up time is reported in its own column).
Throughput counts the tokens each reply really generated (up to its end token), over the wall time of the
generation alone; models are loaded and warmed up first. Each engine's replies are compared with the baseline's.

    python benchmarks/bench_generation.py --device cpu --batch 16 --new-tokens 96 --engines single,transformers,vllm
"""

from __future__ import annotations

import argparse
import time

ENGINES = ("single", "transformers", "vllm")
SYSTEM = "Solve the maths word problem. Think step by step, then give the final number."


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", help="cpu, cuda or auto (transformers; vLLM uses its build's)")
    parser.add_argument("--batch", type=int, default=16, help="number of GSM8K questions")
    parser.add_argument("--new-tokens", type=int, default=96, help="max new tokens per reply (greedy)")
    parser.add_argument("--engines", default=",".join(ENGINES), help=f"comma-separated subset of {ENGINES}")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--vllm-lora", action="store_true",
                        help="start vLLM with LoRA support on (by default kpdd turns it on only for adapters)")
    parser.add_argument("--vllm-dtype", default="bfloat16", help="vLLM weights and activations dtype")
    return parser


def conversations(batch: int) -> list[list[dict[str, str]]]:
    from kpdd.data import load_dataset

    questions = [example.question for example in load_dataset("gsm8k", "test", limit=batch)]
    return [[{"role": "system", "content": SYSTEM}, {"role": "user", "content": q}] for q in questions]


def one_at_a_time(base, chats, new_tokens: int, device: str) -> tuple[list[str], int, float]:
    """The baseline: transformers `generate` on each prompt in turn. Returns (replies, tokens, seconds)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    device = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
    tokenizer = AutoTokenizer.from_pretrained(base)
    dtype = torch.float32 if device == "cpu" else torch.bfloat16
    model = AutoModelForCausalLM.from_pretrained(base, dtype=dtype).to(device).eval()
    end = model.generation_config.eos_token_id

    def generate(chat, max_new_tokens):
        encoded = tokenizer.apply_chat_template(chat, add_generation_prompt=True, return_dict=True,
                                                return_tensors="pt").to(device)
        with torch.inference_mode():
            output = model.generate(**encoded, max_new_tokens=max_new_tokens, do_sample=False)
        new = output[0, encoded["input_ids"].shape[1]:].tolist()
        new = new[: new.index(end) + 1] if end in new else new
        return tokenizer.decode(new, skip_special_tokens=True), len(new)

    generate(chats[0], 4)  # warm-up
    start = time.perf_counter()
    results = [generate(chat, new_tokens) for chat in chats]
    seconds = time.perf_counter() - start
    return [text for text, _ in results], sum(n for _, n in results), seconds


def batched(engine, chats, new_tokens: int) -> tuple[list[str], int, float, float]:
    """An engine's batched path. Returns (replies, tokens, seconds, start-up seconds)."""
    from kpdd.finetune.student import DEFAULT_BASE

    engine.register(DEFAULT_BASE, DEFAULT_BASE)
    start = time.perf_counter()
    engine.generate_batch(DEFAULT_BASE, chats[:1], max_tokens=4)  # loads (or starts) the model, warms up
    startup = time.perf_counter() - start
    start = time.perf_counter()
    generations = engine.generate_batch(DEFAULT_BASE, chats, max_tokens=new_tokens)
    seconds = time.perf_counter() - start
    return [g.text for g in generations], sum(g.output_tokens for g in generations), seconds, startup


def main(argv: list[str] | None = None) -> None:
    args = make_parser().parse_args(argv)
    chosen = [name.strip() for name in args.engines.split(",") if name.strip()]
    unknown = sorted(set(chosen) - set(ENGINES))
    if unknown:
        raise SystemExit(f"--engines: unknown {unknown}; choose from {ENGINES}")

    import torch

    from kpdd.engines.hf import TransformersEngine
    from kpdd.engines.vllm import VLLMEngine
    from kpdd.finetune.student import ensure_base_model

    if args.threads:
        torch.set_num_threads(args.threads)
    base, chats = ensure_base_model(), conversations(args.batch)
    print(f"SmolLM2-135M-Instruct | {len(chats)} GSM8K prompts | {args.new_tokens} new tokens, greedy | "
          f"device={args.device} | torch threads={torch.get_num_threads()}")

    rows, reference = [], None
    if "single" in chosen:
        texts, tokens, seconds = one_at_a_time(base, chats, args.new_tokens, args.device)
        rows.append(("transformers, one prompt at a time", tokens, seconds, None, texts))
        reference = texts
    if "transformers" in chosen:
        engine = TransformersEngine(device=args.device, max_batch_size=len(chats))
        texts, tokens, seconds, startup = batched(engine, chats, args.new_tokens)
        rows.append(("TransformersEngine, batched", tokens, seconds, startup, texts))
        engine.close()
    if "vllm" in chosen:
        engine = VLLMEngine(dtype=args.vllm_dtype, max_batch_size=len(chats), enable_lora=args.vllm_lora or None)
        texts, tokens, seconds, startup = batched(engine, chats, args.new_tokens)
        label = f"VLLMEngine, batched ({args.vllm_dtype}{', LoRA on' if args.vllm_lora else ''})"
        rows.append((label, tokens, seconds, startup, texts))
        engine.close()

    baseline = rows[0][1] / rows[0][2]
    print(f"{'path':<38} {'tokens':>7} {'seconds':>8} {'tok/s':>8} {'vs first':>9} {'start s':>8} {'same text':>10}")
    for name, tokens, seconds, startup, texts in rows:
        same = f"{sum(a == b for a, b in zip(texts, reference))}/{len(texts)}" if reference else "-"
        start = f"{startup:8.1f}" if startup is not None else f"{'-':>8}"
        print(f"{name:<38} {tokens:>7} {seconds:>8.1f} {tokens / seconds:>8.1f} "
              f"{tokens / seconds / baseline:>8.2f}x {start} {same:>10}")


if __name__ == "__main__":  # vLLM starts worker processes, which re-import this file
    from kpdd.config import use_offline_defaults

    use_offline_defaults()  # before any library that reads them is imported
    main()
