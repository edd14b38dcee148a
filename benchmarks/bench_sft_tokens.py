"""SFT tokens per method and epoch from the gold traces of GSM8K train, and the GPU experiment's time plan.

For each method: the gold-annotation teacher's traces → the SFT records exactly as `kpdd finetune` builds them, in
each prompt format and call mode (DSPy's ChatAdapter per stage; the students' compact format per stage and in one
call) → every record tokenized with the student's tokenizer, per question, scaled to all 7,473 questions. Then each
run's time on a GPU from the throughputs `kpdd.run.experiment_plan.Rates.assumed("cuda")` assumes (the same
functions the experiment uses to decide what fits), in the experiment's order, cumulative, and against a time
budget where one is given (`kpdd experiment --budget-s`).

    python benchmarks/bench_sft_tokens.py [--questions 1000] [--budget-s SECONDS] [--setup-s 75]
"""

import argparse
import time

from kpdd.run.experiment_plan import METHOD_ORDER, Rates, Workload, mfu, new_tokens_cap


def gold_traces(method: str, examples: list) -> list[dict]:
    from kpdd.compile.gold import GoldTeacher

    results = GoldTeacher(method).sample_many(examples)
    return [{"id": e.id, "question_id": e.id, **t} for r, e in zip(results, examples) for t in r.traces]


def format_tokens(traces: list[dict], method: str, prompt_format: str, student_calls: str, tokenizer) -> dict:
    """Tokens of the SFT records `kpdd finetune` builds from these traces in one prompt format and call mode."""
    from kpdd.finetune.sft import build_sft_data, merge_tasks
    from kpdd.modules.one_call import OneCallProgram, repeated_predictors
    from kpdd.modules.saved import build_student_program

    program = build_student_program(method, student_calls, repeated_predictors(traces))
    records = merge_tasks(build_sft_data(traces, program.program if isinstance(program, OneCallProgram) else program,
                                         val_fraction=0.0, prompt_format=prompt_format,
                                         student_calls=student_calls))["train"]
    texts = [tokenizer.apply_chat_template(r["messages"], tokenize=False) for r in records]
    full = [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]
    done = [len(ids) for ids in tokenizer([r["messages"][-1]["content"] for r in records],
                                          add_special_tokens=False)["input_ids"]]
    return {"traces": len(traces), "records": len(records), "tokens": sum(full), "completion": sum(done),
            "p99_completion": sorted(done)[int(0.99 * (len(done) - 1))], "calls_per_question": len(records) / len(traces)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--questions", type=int, default=1000, help="seeded GSM8K train questions (0: all 7,473)")
    parser.add_argument("--methods", nargs="+", default=list(METHOD_ORDER))
    parser.add_argument("--budget-s", type=float, default=None, help="the experiment's budget (default: none)")
    parser.add_argument("--setup-s", type=float, default=75.0, help="assumed: wheels, model, imports, traces")
    parser.add_argument("--reserve-s", type=float, default=25.0, help="kept for writing the outputs")
    parser.add_argument("--max-tokens", type=int, default=512)
    parser.add_argument("--engine-batch", type=int, default=1024)
    parser.add_argument("--eval-size", type=int, default=500, help="questions per evaluation set (0: full sets)")
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--formats", nargs="+", default=["chat/per-stage", "student/per-stage", "student/one"],
                        help="prompt format/student calls to count; the plan uses the last")
    args = parser.parse_args()

    from transformers import AutoTokenizer

    from kpdd.data import EVAL_DATASETS, load_dataset
    from kpdd.finetune.student import ensure_base_model

    tokenizer = AutoTokenizer.from_pretrained(ensure_base_model())
    examples = load_dataset("gsm8k", "train", limit=args.questions or None, seed=0)
    eval_questions = sum(len(load_dataset(name, limit=args.eval_size or None)) for name in EVAL_DATASETS)
    rates = Rates.assumed("cuda")
    scale = 7473 / len(examples)  # figures per question, scaled to all of GSM8K train
    print(f"GSM8K train: {len(examples)} seeded questions (token figures scaled x{scale:.2f} to all 7,473); "
          f"evaluation: {eval_questions} questions ({', '.join(EVAL_DATASETS)})")
    print(f"assumed H200 rates: training {rates.train_tokens_per_s:,.0f} tokens/s "
          f"(MFU {mfu(rates.train_tokens_per_s):.0%}), decoding step {1000 * rates.decode_step_s:.0f} ms per "
          f"batch of {args.engine_batch}, {rates.fixed_s_per_run:.0f} s fixed per run\n")
    print(f"{'method':<9} {'format/calls':<17} {'traces':>6} {'records':>7} {'tokens/epoch':>12} {'/question':>9} "
          f"{'completion':>10} {'cap':>4} {'train s':>7} {'eval s':>6} {'run s':>6}")
    runs: dict[tuple[str, str], float] = {}
    for method in args.methods:
        start = time.perf_counter()
        traces = gold_traces(method, examples)
        for fmt in args.formats:
            prompt_format, student_calls = fmt.split("/")
            counts = format_tokens(traces, method, prompt_format, student_calls, tokenizer)
            counts = {**counts, **{k: round(counts[k] * scale) for k in ("traces", "records", "tokens", "completion")}}
            cap = new_tokens_cap(counts["p99_completion"], args.max_tokens)
            load = Workload(train_tokens=counts["tokens"], epochs=args.epochs,
                            eval_calls=round(eval_questions * counts["calls_per_question"]), max_new_tokens=cap,
                            engine_batch=args.engine_batch)
            runs[(method, fmt)] = load.total_s(rates) + counts["tokens"] / 1e6
            if method == "kpdd-pot" and fmt == args.formats[-1]:  # TRL's defaults on 512 records, twice as slow
                runs[("TRL vs kpdd", fmt)] = 2 * 15.0 + 3 * 512 * counts["tokens"] / counts["records"] / rates.train_tokens_per_s
            print(f"{method:<9} {fmt:<17} {counts['traces']:>6} {counts['records']:>7} {counts['tokens']:>12,} "
                  f"{counts['tokens'] / counts['traces']:>9.0f} {counts['completion']:>10,} {cap:>4} "
                  f"{load.train_s(rates):>7.0f} {load.eval_s(rates):>6.0f} {runs[(method, fmt)]:>6.0f}")
        print(f"  ({time.perf_counter() - start:.0f} s to count {method})")
    plan(runs, args)


def plan(runs: dict[tuple[str, str], float], args) -> None:
    """The experiment's order (gold traces only, the students' format): cumulative time, and which runs fit the
    budget where one is given."""
    from kpdd.run.experiment_plan import plan_recipes

    fmt = args.formats[-1]
    recipes = [r for r in plan_recipes(augment=False, student_calls=True) if r.program in args.methods]
    kpdd_pot = [i for i, r in enumerate(recipes) if r.program == "kpdd-pot"]
    order: list[tuple[str, float]] = []
    for index, recipe in enumerate(recipes):
        calls = f"{fmt.split('/')[0]}/{'one' if recipe.student_calls == 'one' else 'per-stage'}"
        order.append((recipe.name, runs.get((recipe.program, calls), runs[(recipe.program, fmt)])))
        if kpdd_pot and index == kpdd_pot[0] and ("TRL vs kpdd", fmt) in runs:
            order.append(("TRL defaults vs kpdd trainer", runs[("TRL vs kpdd", fmt)]))
        if kpdd_pot and index == kpdd_pot[-1]:
            order.append(("kpdd-pot LoRA student", runs[("kpdd-pot", fmt)]))
    used = args.setup_s
    limit = float("inf") if args.budget_s is None else args.budget_s - args.reserve_s
    room = "no budget" if args.budget_s is None else f"a budget leaving {limit:.0f} s before the outputs"
    print(f"\nplan ({fmt}): set-up {args.setup_s:.0f} s, then in order; {room}")
    for name, seconds in order:
        fits = used + seconds <= limit
        used += seconds if fits else 0.0
        print(f"  {name:<36} {seconds:>5.0f} s  {'runs, done at' if fits else 'skipped, at'} {used:>4.0f} s")

if __name__ == "__main__":
    main()
