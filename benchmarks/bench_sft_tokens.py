"""SFT tokens per method and epoch from the gold traces of GSM8K train, and the GPU experiment's time plan.

For each method: the gold-annotation teacher's traces → the SFT records exactly as the student is trained on them
(the current prompt format, DSPy's ChatAdapter) → every record tokenized with the student's tokenizer. Then each
run's minutes on the H200 from the throughputs `kpdd.run.experiment_plan.Rates.assumed("cuda")` assumes (the
same functions the experiment uses to decide what fits), in the experiment's order, against the 540 s call.

    python benchmarks/bench_sft_tokens.py [--questions 0] [--budget-s 540] [--setup-s 75]
"""

import argparse
import time

from kpdd.run.experiment_plan import METHOD_ORDER, Rates, Workload, mfu


def method_tokens(method: str, examples: list, tokenizer) -> dict:
    from kpdd.compile.gold import GoldTeacher
    from kpdd.compile.sft import build_sft_data, merge_tasks
    from kpdd.modules import build_program

    traces = [{"id": e.id, "question_id": e.id, **t} for r, e in zip(GoldTeacher(method).sample_many(examples),
                                                                      examples) for t in r.traces]
    records = merge_tasks(build_sft_data(traces, build_program(method), val_fraction=0.0))["train"]
    texts = [tokenizer.apply_chat_template(r["messages"], tokenize=False) for r in records]
    full = [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]
    done = [len(ids) for ids in tokenizer([r["messages"][-1]["content"] for r in records],
                                          add_special_tokens=False)["input_ids"]]
    return {"traces": len(traces), "records": len(records), "tokens": sum(full), "completion": sum(done),
            "max_completion": max(done), "calls_per_question": len(records) / len(traces)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--questions", type=int, default=0, help="GSM8K train questions (0: all 7,473)")
    parser.add_argument("--methods", nargs="+", default=list(METHOD_ORDER))
    parser.add_argument("--budget-s", type=float, default=540.0)
    parser.add_argument("--setup-s", type=float, default=75.0, help="assumed: wheels, model, imports, traces")
    parser.add_argument("--reserve-s", type=float, default=25.0, help="kept for writing the outputs")
    parser.add_argument("--max-tokens", type=int, default=256)
    parser.add_argument("--engine-batch", type=int, default=1024)
    parser.add_argument("--eval-size", type=int, default=500, help="questions per evaluation set (0: full sets)")
    parser.add_argument("--epochs", type=float, default=1.0)
    args = parser.parse_args()

    from transformers import AutoTokenizer

    from kpdd.data import EVAL_DATASETS, load_dataset
    from kpdd.finetune.student import ensure_base_model

    tokenizer = AutoTokenizer.from_pretrained(ensure_base_model())
    examples = load_dataset("gsm8k", "train", limit=args.questions or None, seed=0)
    eval_questions = sum(len(load_dataset(name, limit=args.eval_size or None)) for name in EVAL_DATASETS)
    rates = Rates.assumed("cuda")
    print(f"GSM8K train: {len(examples)} questions; evaluation: {eval_questions} questions "
          f"({', '.join(EVAL_DATASETS)}); prompt format: ChatAdapter")
    print(f"assumed H200 rates: training {rates.train_tokens_per_s:,.0f} tokens/s "
          f"(MFU {mfu(rates.train_tokens_per_s):.0%}), decoding step {1000 * rates.decode_step_s:.0f} ms per "
          f"batch of {args.engine_batch}, {rates.fixed_s_per_run:.0f} s fixed per run\n")
    print(f"{'method':<9} {'traces':>6} {'records':>7} {'tokens/epoch':>12} {'/question':>9} {'completion':>10} "
          f"{'cap':>4} {'train s':>7} {'eval s':>6} {'run s':>6} {'cum. s':>6}  fits")
    used = args.setup_s
    for method in args.methods:
        start = time.perf_counter()
        counts = method_tokens(method, examples, tokenizer)
        cap = min(args.max_tokens, max(32, 2 * counts["max_completion"]))
        load = Workload(train_tokens=counts["tokens"], epochs=args.epochs,
                        eval_calls=round(eval_questions * counts["calls_per_question"]), max_new_tokens=cap,
                        engine_batch=args.engine_batch)
        run_s = load.total_s(rates) + counts["tokens"] / 1e6
        fits = used + run_s <= args.budget_s - args.reserve_s
        used += run_s if fits else 0.0
        print(f"{method:<9} {counts['traces']:>6} {counts['records']:>7} {counts['tokens']:>12,} "
              f"{counts['tokens'] / counts['traces']:>9.0f} {counts['completion']:>10,} {cap:>4} "
              f"{load.train_s(rates):>7.0f} {load.eval_s(rates):>6.0f} {run_s:>6.0f} {used:>6.0f}  "
              f"{'yes' if fits else 'no'}   ({time.perf_counter() - start:.0f} s to count)")
        if method == "kpdd-pot":  # the experiment times TRL's defaults, then trains the LoRA student, here
            trl_s = 2 * 15.0 + 3 * 512 * counts["tokens"] / counts["records"] / rates.train_tokens_per_s
            for name, extra_s in (("TRL vs kpdd", trl_s), ("kpdd-pot LoRA", run_s)):
                fits = used + extra_s <= args.budget_s - args.reserve_s
                used += extra_s if fits else 0.0
                print(f"{name:<65} {extra_s:>6.0f} {used:>6.0f}  {'yes' if fits else 'no'}")
    print(f"\nsetup {args.setup_s:.0f} s + runs that fit = {used:.0f} s of {args.budget_s - args.reserve_s:.0f} s")


if __name__ == "__main__":
    main()
