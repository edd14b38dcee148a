"""Generation throughput of the shipped student: one prompt at a time vs kpdd's batching engines.

A batch of GSM8K test questions, each formatted with the model's chat template, is answered greedily by
  (1) plain transformers `generate`, one prompt after another (the baseline),
  (2) `TransformersEngine.generate_batch` (one left-padded batched `generate`),
  (3) `VLLMEngine.generate_batch` (one `vllm.LLM.chat` call; its start-up time is reported in its own column).
Throughput counts the tokens each reply really generated (up to its end token), over the wall time of the
generation alone; models are loaded and warmed up first. Each engine's replies are compared with the baseline's.

    python benchmarks/bench_generation.py --device cpu --batch 16 --new-tokens 96 --engines single,transformers,vllm

Program mode (``--program``) runs a whole DSPy program instead, per stage, e.g. KPDD-PoT's three calls and its
sandboxed run, on ``--questions`` GSM8K questions from ``--program-threads`` threads, as ``kpdd eval`` does, and
reports questions/s for each engine kind in ``--engines``, one engine after the other, side by side: the point is
that a question's calls arrive at different times, which a burst-gathering engine (`VLLMEngine`) and vLLM's
continuous batching (`AsyncVLLMEngine`) serve differently. Greedy, so the answers that agree are counted.

    VLLM_CPU_KVCACHE_SPACE=1 OMP_NUM_THREADS=1 python benchmarks/bench_generation.py --program kpdd-pot \\
        --questions 16 --program-threads 8 --new-tokens 96 --engines vllm,vllm-burst --rounds 2
"""

from __future__ import annotations

import argparse
import time

ENGINES = ("single", "transformers", "vllm")
SYSTEM = "Solve the maths word problem. Think step by step, then give the final number."


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", help="cpu, cuda or auto (transformers; vLLM uses its build's)")
    parser.add_argument("--batch", "--questions", type=int, default=16, help="number of GSM8K questions")
    parser.add_argument("--new-tokens", type=int, default=96, help="max new tokens per reply (greedy)")
    parser.add_argument("--engines", default=",".join(ENGINES), help=f"comma-separated subset of {ENGINES}")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--vllm-lora", action="store_true",
                        help="start vLLM with LoRA support on (by default kpdd turns it on only for adapters)")
    parser.add_argument("--vllm-dtype", default="bfloat16", help="vLLM weights and activations dtype")
    parser.add_argument("--program", default=None,
                        help="program mode: run this registry program (e.g. kpdd-pot) per stage; --engines then "
                             "names engine kinds (e.g. vllm,vllm-burst)")
    parser.add_argument("--program-threads", type=int, default=16, help="program mode: questions in flight at once")
    parser.add_argument("--vllm-memory", type=float, default=0.1,
                        help="program mode: vLLM gpu_memory_utilization (on CPU the share of RAM for the KV cache; "
                             "VLLM_CPU_KVCACHE_SPACE, in GiB, overrides it)")
    parser.add_argument("--vllm-max-len", type=int, default=2048, help="program mode: vLLM max_model_len")
    parser.add_argument("--rounds", type=int, default=1,
                        help="program mode: measure every engine this many times, in ABBA order, and print the means")
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


def pass_through_adapter():
    """The students' adapter, except that a stage whose reply does not parse hands its raw text on as each missing
    field. The untrained base rarely keeps the format; with this every question makes all its stage calls, with
    prompts of a realistic length, as a trained student's would."""
    from dspy.utils.exceptions import AdapterParseError

    from kpdd.modules.student_format import StudentAdapter, is_list, parse_list

    class PassThrough(StudentAdapter):
        def parse(self, signature, completion):
            try:
                return super().parse(signature, completion)
            except AdapterParseError as exc:
                parsed = dict(exc.parsed_result or {})
            return {name: parsed.get(name, parse_list(completion) if is_list(field.annotation) else completion)
                    for name, field in signature.output_fields.items()}

    return PassThrough()


def program_run(kind: str, args, questions: list[str]) -> tuple[list, float, float, int]:
    """`args.program` on every question from `args.program_threads` threads, as `kpdd eval` runs it, through a
    fresh engine of `kind` that is closed afterwards. Returns (answers, seconds, start-up seconds, LM calls)."""
    from concurrent.futures import ThreadPoolExecutor

    import dspy

    from kpdd.engines.batching import engine_class
    from kpdd.engines.compiled import program_with_student
    from kpdd.finetune.student import DEFAULT_BASE

    options = {"max_batch_size": args.program_threads}
    if kind.startswith("vllm"):
        options |= {"dtype": args.vllm_dtype, "max_model_len": args.vllm_max_len,
                    "gpu_memory_utilization": args.vllm_memory}
    else:
        options |= {"device": args.device}
    engine = engine_class(kind)(**options)
    program = program_with_student(args.program, DEFAULT_BASE, engine=engine, max_tokens=args.new_tokens,
                                   cache=False)
    try:
        start = time.perf_counter()
        engine.generate_batch(DEFAULT_BASE, [[{"role": "user", "content": "Hi"}]], max_tokens=4)  # start, warm up
        startup = time.perf_counter() - start
        adapter = pass_through_adapter()

        def ask(question: str):
            with dspy.context(adapter=adapter):
                return program(question=question)

        lm = program.predictors()[0].lm
        calls_before = len(lm.history)
        start = time.perf_counter()
        with ThreadPoolExecutor(args.program_threads) as pool:
            predictions = list(pool.map(ask, questions))
        seconds = time.perf_counter() - start
        return [p.answer for p in predictions], seconds, startup, len(lm.history) - calls_before
    finally:
        engine.close()  # before the next engine starts: two vLLMs would not fit in RAM together


def program_mode(args) -> None:
    from kpdd.data import load_dataset
    from kpdd.engines.batching import ENGINE_KINDS, engine_class

    kinds = [name.strip() for name in args.engines.split(",") if name.strip()]
    unknown = sorted(set(kinds) - set(ENGINE_KINDS))
    if unknown:
        raise SystemExit(f"--engines: unknown {unknown} in program mode; choose from {sorted(ENGINE_KINDS)}")
    questions = [example.question for example in load_dataset("gsm8k", "test", limit=args.batch)]
    print(f"program {args.program} (per stage) | SmolLM2-135M-Instruct | {len(questions)} GSM8K test questions | "
          f"{args.program_threads} threads | max {args.new_tokens} new tokens per call, greedy")
    print(f"{'engine':<34} {'LM calls':>8} {'seconds':>8} {'questions/s':>12} {'vs first':>9} {'start s':>8} "
          f"{'same answers':>13}", flush=True)
    rates: dict[str, list[float]] = {kind: [] for kind in kinds}
    reference = None
    for round_ in range(args.rounds):
        # ABBA order over rounds, so that a change in the machine's load over time hits every engine alike.
        for kind in kinds if round_ % 2 == 0 else kinds[::-1]:  # each row as soon as it is measured
            answers, seconds, startup, calls = program_run(kind, args, questions)
            rates[kind].append(len(questions) / seconds)
            reference = reference or answers
            same = sum(a == b for a, b in zip(answers, reference, strict=True))
            name = f"{kind} ({engine_class(kind).__name__})"
            print(f"{name:<34} {calls:>8} {seconds:>8.1f} {rates[kind][-1]:>12.3f} "
                  f"{rates[kind][-1] / rates[kinds[0]][0]:>8.2f}x {startup:>8.1f} "
                  f"{f'{same}/{len(answers)}':>13}", flush=True)
    if args.rounds > 1:
        mean = {kind: sum(r) / len(r) for kind, r in rates.items()}
        print("mean over rounds: " + ", ".join(f"{kind} {mean[kind]:.3f} questions/s ({mean[kind] / mean[kinds[0]]:.2f}x)"
                                               for kind in kinds))


def main(argv: list[str] | None = None) -> None:
    args = make_parser().parse_args(argv)
    if args.program:
        program_mode(args)
        return
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
