"""Whether the gold teacher's KPDD key points state every quantity its solution reads, on all of GSM8K train.

    python benchmarks/bench_gold_faithfulness.py [--methods kpdd-pot kpdd-cot] [--limit N]

For each method: questions kept (coverage), and the share of kept traces whose key points and core question state
every literal the solution reads (``kpdd.compile.gold.checks.trace_unstated``: a program's given and computed
literals, or a rationale's numbers that are no earlier result). Baseline, side by side: the same check with the
whole question as the key points (what no selection at all would state). Also the literals most often unstated.

A literal the question itself never writes cannot be stated by any choice of key points; the second line counts it
apart: the share of kept traces whose key points state every literal the question writes, and the traces reading a
literal the question does not write, split into world knowledge (a unit's size, 7 for 'a week', or a small count
the words imply, 2 for 'Ali and Leila': integers up to 12) and numbers worked out in prose (the rest: '100% - 20%'
read as 0.8, a sum written without a calculator annotation).
"""

import argparse
import time
from collections import Counter

from kpdd.config import use_offline_defaults

use_offline_defaults()  # before dspy, litellm and mlflow read them at import

from kpdd.compile.gold import GoldTeacher  # noqa: E402
from kpdd.compile.gold.checks import UNIT_SIZES, trace_unstated  # noqa: E402
from kpdd.data import load_dataset  # noqa: E402


def whole_question(stages: list[dict]) -> list[dict]:
    """The trace with the whole question as its one key point (the baseline)."""
    last = {**stages[-1], "inputs": {**stages[-1]["inputs"], "key_points": [stages[-1]["inputs"]["question"]]}}
    return [*stages[:-1], last]


def world_knowledge(literal: str) -> bool:
    value = float(literal)
    return value in UNIT_SIZES or value.is_integer() and 2 <= value <= 12


def faithfulness(method: str, examples: list) -> None:
    start = time.perf_counter()
    results = GoldTeacher(method).sample_many(examples)
    kept = [(example, result.traces[0]) for example, result in zip(examples, results) if result.traces]
    missing, baseline_ok, stated, stated_of_question, unwritten = Counter(), 0, 0, 0, Counter()
    for example, trace in kept:
        unstated = trace_unstated(trace["stages"], example.rationale)
        not_in_question = trace_unstated(whole_question(trace["stages"]), example.rationale)
        missing.update(set(unstated))
        stated += not unstated
        baseline_ok += not not_in_question
        stated_of_question += not [literal for literal in unstated if literal not in not_in_question]
        if not_in_question:
            unwritten["world knowledge" if all(map(world_knowledge, not_in_question)) else "worked out in prose"] += 1
    print(f"{method:<9} kept {len(kept):>5} / {len(examples)} ({len(kept) / len(examples):.2%})  "
          f"key points state every literal: {stated / len(kept):.2%}  "
          f"baseline (whole question): {baseline_ok / len(kept):.2%}  "
          f"ratio {stated / max(baseline_ok, 1):.3f}  {time.perf_counter() - start:.1f} s")
    print(f"          every literal the question writes: {stated_of_question / len(kept):.2%}  "
          f"traces reading a literal the question does not write: {sum(unwritten.values())} "
          f"({sum(unwritten.values()) / len(kept):.2%}; {', '.join(f'{k} {v}' for k, v in sorted(unwritten.items()))})")
    print(f"          literals most often unstated: {missing.most_common(8)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", nargs="+", default=["kpdd-pot", "kpdd-cot"])
    parser.add_argument("--limit", type=int, default=None, help="a seeded subset of GSM8K train (default: all)")
    args = parser.parse_args()
    examples = load_dataset("gsm8k", "train", limit=args.limit)
    for method in args.methods:
        faithfulness(method, examples)


if __name__ == "__main__":
    main()
