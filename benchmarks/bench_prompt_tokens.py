"""Training tokens per question: DSPy's ChatAdapter vs the students' format, per stage and in one call.

For the same gold traces of GSM8K train questions, every program's SFT records are built three ways and tokenised
with the student's chat template (SmolLM2-135M-Instruct): DSPy's ``ChatAdapter`` with one call per stage (what
kpdd trained before), the students' format with one call per stage, and the students' format with one call for
all stages (multi-stage programs only). Printed: tokens per question, the completion's share of them (the only
tokens the loss is computed on), and the ratio to ChatAdapter.

    python benchmarks/bench_prompt_tokens.py --questions 300
"""

from __future__ import annotations

import argparse

FORMATS = [("chat", "per-stage"), ("student", "per-stage"), ("student", "one")]


def count_tokens(records: list[dict], tokenizer) -> tuple[int, int]:
    """(all tokens, completion tokens) of chat records under the tokenizer's chat template."""
    total = completion = 0
    for record in records:
        full = len(tokenizer.apply_chat_template(record["messages"], tokenize=True, return_dict=True)["input_ids"])
        prompt = len(tokenizer.apply_chat_template(record["messages"][:-1], tokenize=True, add_generation_prompt=True,
                                                   return_dict=True)["input_ids"])
        total, completion = total + full, completion + full - prompt
    return total, completion


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--questions", type=int, default=300, help="GSM8K train questions (a seeded subset)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    from transformers import AutoTokenizer

    from kpdd.compile.gold import GoldTeacher
    from kpdd.data import load_dataset
    from kpdd.finetune.sft import build_sft_data, merge_tasks
    from kpdd.finetune.student import ensure_base_model
    from kpdd.modules import PROGRAMS, build_program

    tokenizer = AutoTokenizer.from_pretrained(ensure_base_model())
    examples = load_dataset("gsm8k", "train", limit=args.questions, seed=args.seed)
    print(f"{args.questions} GSM8K train questions (seed {args.seed}), gold traces, SmolLM2 chat template\n")
    print(f"{'program':<10} {'traces':>6}  " + "  ".join(f"{f'{fmt}/{calls}':>26}" for fmt, calls in FORMATS))
    print(f"{'':<10} {'':>6}  " + "  ".join(f"{'tokens/q (compl.) ratio':>26}" for _ in FORMATS))
    for name in PROGRAMS:
        teacher = GoldTeacher(name)
        traces = [{"id": e.id, "question_id": e.id, **t} for e in examples for t in teacher.sample(e).traces]
        program = build_program(name)
        cells, baseline = [], None
        for prompt_format, calls in FORMATS:
            if calls == "one" and len(program.named_predictors()) == 1:
                cells.append(f"{'(one stage)':>26}")
                continue
            data = build_sft_data(traces, program, val_fraction=0.0, prompt_format=prompt_format, student_calls=calls)
            total, completion = count_tokens(merge_tasks(data)["train"], tokenizer)
            per_question = total / len(traces)
            baseline = baseline or per_question
            cells.append(f"{per_question:>8.0f} ({completion / total:>4.0%})  {baseline / per_question:>5.2f}x")
        print(f"{name:<10} {len(traces):>6}  " + "  ".join(f"{c:>26}" for c in cells))


if __name__ == "__main__":
    main()
