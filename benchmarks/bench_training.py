"""Training throughput of kpdd's trainer vs TRL's SFTTrainer with its defaults, on the same data, side by side.

Both train the shipped SmolLM2-135M with the same LoRA adapter for one epoch over the same chat records (gold
KPDD-PoT traces of GSM8K train questions). Throughput counts the real (non-padding) tokens of the data set,
so padding and recomputation cost what they cost. kpdd's trainer differs from TRL's defaults by its batching
(packed rows on GPUs; one unpadded sequence per pass on CPU, accumulated), no gradient checkpointing, and bf16
only where the hardware multiplies it natively.

    python benchmarks/bench_training.py [--questions 16] [--device auto] [--full]
"""

import argparse
import tempfile
import time
from pathlib import Path


def records(questions: int, program: str) -> list[dict]:
    from kpdd.compile.gold import GoldTeacher
    from kpdd.data import load_dataset
    from kpdd.finetune.sft import build_sft_data, merge_tasks
    from kpdd.modules import build_program

    teacher, traces = GoldTeacher(program), []
    for example in load_dataset("gsm8k", "train", limit=questions, seed=0):
        traces += [{"id": example.id, "question_id": example.id, **t} for t in teacher.sample(example).traces]
    return merge_tasks(build_sft_data(traces, build_program(program), val_fraction=0.0))["train"]


def real_tokens(chat: list[dict]) -> int:
    from transformers import AutoTokenizer

    from kpdd.finetune.student import ensure_base_model

    tokenizer = AutoTokenizer.from_pretrained(ensure_base_model())
    return sum(len(tokenizer.apply_chat_template(r["messages"], return_dict=False)) for r in chat)


def run_kpdd(chat: list[dict], device: str, lora: bool, out: Path) -> float:
    from kpdd.finetune.trainer import TrainConfig, train_student

    config = TrainConfig(lora=lora, epochs=1.0, device=device, save_steps=10_000, logging_steps=10_000)  # defaults
    start = time.perf_counter()
    train_student(config, chat, [], out, progress=False)
    return time.perf_counter() - start


def run_trl_defaults(chat: list[dict], device: str, lora: bool, out: Path) -> float:
    """TRL's SFTTrainer as its documentation starts it: defaults everywhere but the output and reporting."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    from kpdd.finetune.student import ensure_base_model
    from kpdd.finetune.trainer import to_prompt_completion

    base = ensure_base_model()
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32 if device == "cpu" else torch.bfloat16)
    peft_config = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05, target_modules="all-linear",
                             task_type="CAUSAL_LM") if lora else None
    args = SFTConfig(output_dir=str(out), report_to=[], save_strategy="no", num_train_epochs=1,
                     use_cpu=device == "cpu", disable_tqdm=True)
    trainer = SFTTrainer(model=model, processing_class=AutoTokenizer.from_pretrained(base), args=args,
                         train_dataset=Dataset.from_list(to_prompt_completion(chat)), peft_config=peft_config)
    start = time.perf_counter()
    trainer.train()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--questions", type=int, default=16, help="GSM8K train questions (3 records each)")
    parser.add_argument("--program", default="kpdd-pot")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--full", action="store_true", help="full fine-tuning instead of LoRA")
    args = parser.parse_args()

    from kpdd.finetune.hardware import resolve_device

    device = resolve_device(args.device)
    chat = records(args.questions, args.program)
    tokens = real_tokens(chat)
    with tempfile.TemporaryDirectory() as tmp:
        trl_s = run_trl_defaults(chat, device, not args.full, Path(tmp) / "trl")
        ours_s = run_kpdd(chat, device, not args.full, Path(tmp) / "kpdd")
    mode = "full" if args.full else "LoRA r=16"
    print(f"data: {len(chat)} records, {tokens} real tokens, one epoch, {mode}, device {device}")
    print(f"TRL SFTTrainer, defaults: {trl_s:7.1f} s  {tokens / trl_s:7.1f} tokens/s")
    print(f"kpdd trainer:             {ours_s:7.1f} s  {tokens / ours_s:7.1f} tokens/s")
    print(f"speed-up: {trl_s / ours_s:.2f}x")


if __name__ == "__main__":
    from kpdd.config import use_offline_defaults

    use_offline_defaults()  # before any library that reads them is imported
    main()
