"""CPU training throughput, side by side in one run: kpdd's trainer, a plain PyTorch loop, TRL's defaults.

Every variant trains SmolLM2-135M on the same one-call KPDD-PoT records (gold traces of GSM8K train, the students'
compact format, built once by this revision's code and handed to every variant, the before ones included), each in
its own process (so each peak resident memory is its own):

- ``kpdd``: ``kpdd finetune``'s trainer with its defaults (LoRA and full), on the allocator the ``kpdd`` command
  gives a training (jemalloc where it is installed);
- ``kpdd-malloc``: the same on the C library's malloc;
- ``kpdd-sdpa``: the same with every packed sequence on SDPA's fused CPU kernel instead of the two matmuls that
  attend a bf16 sequence of up to 1,024 tokens (``kpdd.finetune.attention``);
- ``kpdd-decay``: the same on jemalloc returning freed pages 10 s after they were freed (each step's tensors then
  page-fault afresh) instead of keeping them for the trainer to hand back every 25 steps;
- ``kpdd-padded``: the same trainer without packing: 8 right-padded rows a step in 2 passes of balanced cost (its
  CPU default before rows were packed);
- ``kpdd-1pass``: the same trainer without packing, all 8 rows of a step in one pass, grouped by length (its
  default before the passes were balanced by cost);
- ``kpdd-1row``: the same trainer with one unpadded row per pass, 8 accumulated;
- ``before``: kpdd's trainer as a git revision had it (``--before``, default the last one before rows were batched
  without a mask), with its defaults, imported from that revision's files: the before/after ratio;
- ``loop``: a plain PyTorch loop: AdamW, bf16 autocast where the CPU has native bf16, 8 rows grouped by length,
  right-padded to a multiple of 64, no attention mask, loss on the completion only;
- ``trl``: TRL's ``SFTTrainer`` as its documentation starts it (defaults but the output, reporting and CPU).

Throughput counts real (non-padding) tokens; page faults are the minor ones of the variant's whole process (its
model loading included), each a fresh page the kernel had to map and zero. The FLOP bound is a measured bf16 (or
fp32) matmul rate over 6N FLOPs a token for full fine-tuning and 4N for LoRA (no weight gradients), N the model's
parameters.

    python benchmarks/bench_train.py [--rows 96] [--threads 0] [--busy] [--repeat 1] [--variants kpdd-lora ...]

``--busy`` runs each variant beside one other CPU-bound process, to see what a thread count does under sharing.
A CPU without native bf16 can be stood in for by limiting PyTorch and oneDNN to AVX2 (every variant then trains in
fp32, as it would there): ``ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 python benchmarks/bench_train.py``.
``--repeat N`` runs the variants N times in turn (so a slow spell of the machine touches every variant alike) and
takes each variant's median speed for the ratios.
"""

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

VARIANTS = ("before-lora", "kpdd-lora", "kpdd-malloc-lora", "kpdd-sdpa-lora", "kpdd-decay-lora", "kpdd-padded-lora",
            "kpdd-1pass-lora", "kpdd-1row-lora", "loop-lora", "before-full", "kpdd-full", "kpdd-malloc-full",
            "kpdd-sdpa-full", "kpdd-decay-full", "kpdd-padded-full", "kpdd-1pass-full", "kpdd-1row-full", "loop-full",
            "trl-lora")
RETURNED_AFTER_10_S = "oversize_threshold:0,dirty_decay_ms:10000,muzzy_decay_ms:0"  # the kpdd-decay variants
BEFORE = "89fa5c8"  # the trainer before CPU rows were batched without a mask


def records(rows: int) -> list[dict]:
    """One-call KPDD-PoT chat records of the first gold-traced GSM8K train questions (a seeded order)."""
    from kpdd.compile.gold import GoldTeacher
    from kpdd.data import load_dataset
    from kpdd.finetune.sft import build_sft_data
    from kpdd.modules.one_call import ONE, repeated_predictors
    from kpdd.modules.saved import build_student_program

    examples = load_dataset("gsm8k", "train", limit=2 * rows + 16, seed=0)
    results = GoldTeacher("kpdd-pot").sample_many(examples)
    traces = [{"id": e.id, "question_id": e.id, **t} for r, e in zip(results, examples) for t in r.traces]
    program = build_student_program("kpdd-pot", ONE, repeated_predictors(traces))
    data = build_sft_data(traces, program.program, val_fraction=0.0, student_calls=ONE)
    chat = next(iter(data.values()))["train"]
    if len(chat) < rows:
        raise SystemExit(f"only {len(chat)} gold records for {rows} rows")
    return chat[:rows]


def run_before(chat: list[dict], lora: bool, out: Path, threads: int) -> dict:
    """The trainer of the ``--before`` revision (its files come first on ``sys.path``), with its defaults."""
    from kpdd.finetune.trainer import TrainConfig, train_student

    import torch

    if Path(__import__("kpdd").__file__).parent.parent == Path(__file__).resolve().parent.parent:
        raise SystemExit("the before variants import kpdd from the --before revision (run them from main())")

    torch.set_num_threads(threads or torch.get_num_threads())
    config = TrainConfig(lora=lora, epochs=1.0, save_steps=10_000, logging_steps=10_000, val_fraction=0.0)
    result = train_student(config, chat, [], out, progress=False)
    return {"tokens": result.tokens, "seconds": result.train_time_s}


BATCHING = {"padded": {"packing": False},
            "1row": {"packing": False, "batch_size": 1, "grad_accum": 8, "pad_to_multiple": 1},
            "1pass": {"packing": False, "batch_size": 8, "grad_accum": 1}}


def run_kpdd(chat: list[dict], lora: bool, batching: str, out: Path, threads: int) -> dict:
    from kpdd.finetune.trainer import TrainConfig, train_student

    if batching == "sdpa":
        import kpdd.finetune.attention

        kpdd.finetune.attention.MATMUL_MAX_LENGTH = 0
    extra = BATCHING.get(batching, {})
    config = TrainConfig(lora=lora, epochs=1.0, save_steps=10_000, logging_steps=10_000, val_fraction=0.0,
                         torch_threads=threads, **extra)
    result = train_student(config, chat, [], out, progress=False)
    return {"tokens": result.tokens, "seconds": result.train_time_s}


def tokenized(chat: list[dict], tokenizer) -> list[tuple[list[int], int]]:
    """(token ids, prompt length) per record, as the chat template renders it."""
    rows = []
    for record in chat:
        prompt = tokenizer.apply_chat_template(record["messages"][:-1], add_generation_prompt=True, return_dict=False)
        full = tokenizer.apply_chat_template(record["messages"], return_dict=False)
        rows.append((full, len(prompt)))
    return rows


def token_count(chat: list[dict]) -> int:
    from transformers import AutoTokenizer

    from kpdd.finetune.student import ensure_base_model

    return sum(len(full) for full, _ in tokenized(chat, AutoTokenizer.from_pretrained(ensure_base_model())))


def run_loop(chat: list[dict], lora: bool, threads: int) -> dict:
    """The reference: a plain loop over length-grouped, right-padded, unmasked batches of 8."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from kpdd.finetune.hardware import cpu_has_bf16
    from kpdd.finetune.student import ensure_base_model
    from kpdd.finetune.trainer import use_torch_threads

    use_torch_threads(threads)
    base = ensure_base_model()
    tokenizer = AutoTokenizer.from_pretrained(base)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32, attn_implementation="sdpa")
    if lora:
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules="all-linear",
                                                 task_type="CAUSAL_LM"))
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    rows = tokenized(chat, tokenizer)
    order = sorted(range(len(rows)), key=lambda i: len(rows[i][0]))
    batches = [order[i:i + 8] for i in range(0, len(order), 8)]
    bf16 = cpu_has_bf16()
    tokens, start = 0, time.perf_counter()
    for batch in batches:
        length = -(-max(len(rows[i][0]) for i in batch) // 64) * 64
        ids = torch.full((len(batch), length), tokenizer.pad_token_id)
        labels = torch.full((len(batch), length), -100)
        for row, i in enumerate(batch):
            full, prompt = rows[i]
            ids[row, :len(full)] = torch.tensor(full)
            labels[row, prompt:len(full)] = torch.tensor(full[prompt:])
            tokens += len(full)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = model(input_ids=ids, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return {"tokens": tokens, "seconds": time.perf_counter() - start}


def run_trl_defaults(chat: list[dict], lora: bool, out: Path, threads: int) -> dict:
    """TRL's SFTTrainer as its documentation starts it: defaults everywhere but the output, reporting and CPU."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    from kpdd.finetune.student import ensure_base_model
    from kpdd.finetune.trainer import to_prompt_completion, use_torch_threads

    use_torch_threads(threads)
    base = ensure_base_model()
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    peft_config = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05, target_modules="all-linear",
                             task_type="CAUSAL_LM") if lora else None
    args = SFTConfig(output_dir=str(out), report_to=[], save_strategy="no", num_train_epochs=1, use_cpu=True,
                     disable_tqdm=True, include_num_input_tokens_seen="non_padding")
    trainer = SFTTrainer(model=model, processing_class=AutoTokenizer.from_pretrained(base), args=args,
                         train_dataset=Dataset.from_list(to_prompt_completion(chat)), peft_config=peft_config)
    start = time.perf_counter()
    trainer.train()
    return {"tokens": int(trainer.state.num_input_tokens_seen), "seconds": time.perf_counter() - start}


def run_variant(name: str, records_file: Path, threads: int) -> dict:
    from kpdd.finetune.sft import read_jsonl  # the before revision has it too

    chat = read_jsonl(records_file)
    lora = name.endswith("lora")
    with tempfile.TemporaryDirectory() as tmp:
        if name.startswith("before"):
            figures = run_before(chat, lora, Path(tmp) / "before", threads)
        elif name.startswith("kpdd"):
            figures = run_kpdd(chat, lora, name.split("-")[1], Path(tmp) / "kpdd", threads)
        elif name.startswith("loop"):
            figures = run_loop(chat, lora, threads)
        else:
            figures = run_trl_defaults(chat, lora, Path(tmp) / "trl", threads)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    # read here, not from kpdd: the before variants import a revision that could not say
    allocator = "jemalloc" if "libjemalloc" in Path("/proc/self/maps").read_text() else "malloc"
    return {**figures, "peak_rss_gib": usage.ru_maxrss / 2**20, "page_faults": usage.ru_minflt, "allocator": allocator}


def matmul_tflops(threads: int) -> dict[str, float]:
    """Measured matmul rates (TFLOP/s) at the model's shapes: hidden 576 → MLP 1536, 2,048 rows."""
    import torch

    from kpdd.finetune.trainer import use_torch_threads

    use_torch_threads(threads)
    rates = {}
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        a, b = torch.randn(2048, 576, dtype=dtype), torch.randn(576, 1536, dtype=dtype)
        for _ in range(3):
            a @ b
        start, n = time.perf_counter(), 30
        for _ in range(n):
            a @ b
        rates[name] = 2 * 2048 * 576 * 1536 * n / (time.perf_counter() - start) / 1e12
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=96, help="training rows per variant (12 steps of 8)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads per variant (0: every core)")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--before", default=BEFORE, help="git revision whose trainer the before-* variants run")
    parser.add_argument("--busy", action="store_true",
                        help="run every variant beside one other CPU-bound process (a Python busy loop)")
    parser.add_argument("--repeat", type=int, default=1, help="run the variants this many times in turn; the ratios "
                                                                  "use each variant's median speed")
    parser.add_argument("--variant", help=argparse.SUPPRESS)  # one variant in this process (the child's side)
    parser.add_argument("--records", type=Path, help=argparse.SUPPRESS)  # the parent's records (the child's side)
    args = parser.parse_args()
    if args.variant:
        print(json.dumps(run_variant(args.variant, args.records, args.threads)))
        return

    import platform

    from kpdd.cli.allocator import jemalloc_environment
    from kpdd.finetune.hardware import cpu_has_bf16
    from kpdd.finetune.sft import write_jsonl

    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    bf16 = cpu_has_bf16()
    rates = matmul_tflops(args.threads)
    params = 134.5e6
    rate = rates["bf16" if bf16 else "fp32"] * 1e12
    print(f"CPU: {cpu}; native bf16: {'yes' if bf16 else 'no'}; matmul fp32 {rates['fp32']:.3f}, "
          f"bf16 {rates['bf16']:.3f} TFLOP/s; FLOP bound {rate / (6 * params):.0f} tokens/s full, "
          f"{rate / (4 * params):.0f} LoRA")
    runs: dict[str, list[dict]] = {}
    before = Path(tempfile.mkdtemp(prefix="kpdd-before-"))
    # Built once, here, by this revision's code: a before variant imports that revision's kpdd, whose gold teacher
    # and students' format would build other records.
    chat = records(args.rows)
    records_file = write_jsonl(chat, before / "records.jsonl")
    print(f"{args.rows} records, {token_count(chat)} tokens (as the chat template renders them)")
    root = Path(__file__).resolve().parent.parent
    archive = subprocess.run(["git", "-C", str(root), "archive", args.before, "kpdd"], capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(before)], input=archive.stdout, check=True)
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if args.busy else None
    malloc = {key: value for key, value in os.environ.items() if key not in ("LD_PRELOAD", "MALLOC_CONF")}

    def environment(name: str) -> dict[str, str]:
        """The kpdd variants as the kpdd command starts a training (jemalloc where installed); others on malloc."""
        if name.startswith("before"):
            return {**malloc, "PYTHONPATH": str(before)}
        if "-decay-" in name:
            return jemalloc_environment({**malloc, "MALLOC_CONF": RETURNED_AFTER_10_S}) or malloc
        if name.startswith("kpdd") and "-malloc-" not in name:
            return jemalloc_environment(malloc) or malloc
        return malloc

    env = {name: environment(name) for name in args.variants}
    for _ in range(args.repeat):
        for name in args.variants:
            child = subprocess.run([sys.executable, __file__, "--variant", name, "--records", str(records_file),
                                    "--threads", str(args.threads)], capture_output=True, text=True, env=env[name])
            if child.returncode:
                print(f"{name}: failed\n{child.stderr[-2000:]}")
                continue
            f = json.loads(child.stdout.strip().splitlines()[-1])
            runs.setdefault(name, []).append(f)
            bound = rate / ((4 if name.endswith("lora") else 6) * params)
            print(f"{name:15s} {f['tokens']:7d} tokens {f['seconds']:7.1f} s {f['tokens'] / f['seconds']:7.1f} "
                  f"tokens/s ({f['tokens'] / f['seconds'] / bound:5.1%} of the bound)  peak RSS "
                  f"{f['peak_rss_gib']:.1f} GiB, {f['allocator']}, {f['page_faults'] / 1e6:.2f}M page faults",
                  flush=True)
    if busy:
        busy.kill()
    speed = {name: statistics.median(f["tokens"] / f["seconds"] for f in fs) for name, fs in runs.items()}
    if args.repeat > 1:
        for name, fs in runs.items():
            each = sorted(f["tokens"] / f["seconds"] for f in fs)
            print(f"{name:15s} median {speed[name]:7.1f} tokens/s of {len(each)} runs ({each[0]:.1f}-{each[-1]:.1f}), "
                  f"highest peak RSS {max(f['peak_rss_gib'] for f in fs):.1f} GiB")
    baselines = {"before": "before", "kpdd on malloc": "kpdd-malloc", "kpdd-sdpa": "kpdd-sdpa",
                 "kpdd-decay": "kpdd-decay", "kpdd-padded": "kpdd-padded",
                 "kpdd-1pass": "kpdd-1pass", "kpdd-1row": "kpdd-1row", "loop": "loop", "TRL defaults": "trl"}
    for mode in ("lora", "full"):
        for label, baseline in baselines.items():
            if f"kpdd-{mode}" in speed and f"{baseline}-{mode}" in speed:
                print(f"{f'kpdd / {label} ({mode})':32s} {speed[f'kpdd-{mode}'] / speed[f'{baseline}-{mode}']:.2f}x")


if __name__ == "__main__":
    from kpdd.config import use_offline_defaults

    use_offline_defaults()  # before any library that reads them is imported
    main()
