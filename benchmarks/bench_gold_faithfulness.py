"""Whether the gold teacher's KPDD key points state every quantity its solution reads, on all of GSM8K train.

    python benchmarks/bench_gold_faithfulness.py [--methods kpdd-pot kpdd-cot] [--limit N]

For each method: questions kept (coverage), and the share of kept traces whose key points and core question state
every literal the solution reads (``kpdd.compile.gold.checks.trace_unstated``: a program's given and computed
literals, or a rationale's numbers that are no earlier result). Baseline, side by side: the same check with the
whole question as the key points (what no selection at all would state). Also the literals most often unstated.
"""

import argparse
import time
from collections import Counter

from kpdd.config import use_offline_defaults

use_offline_defaults()  # before dspy, litellm and mlflow read them at import

from kpdd.compile.gold import GoldTeacher  # noqa: E402
from kpdd.compile.gold.checks import trace_unstated  # noqa: E402
from kpdd.data import load_dataset  # noqa: E402


def whole_question(stages: list[dict]) -> list[dict]:
    """The trace with the whole question as its one key point (the baseline)."""
    last = {**stages[-1], "inputs": {**stages[-1]["inputs"], "key_points": [stages[-1]["inputs"]["question"]]}}
    return [*stages[:-1], last]


def faithfulness(method: str, examples: list) -> None:
    start = time.perf_counter()
    results = GoldTeacher(method).sample_many(examples)
    kept = [(example, result.traces[0]) for example, result in zip(examples, results) if result.traces]
    missing, baseline_ok = Counter(), 0
    for example, trace in kept:
        missing.update(set(trace_unstated(trace["stages"], example.rationale)))
        baseline_ok += not trace_unstated(whole_question(trace["stages"]), example.rationale)
    stated = sum(not trace_unstated(t["stages"], e.rationale) for e, t in kept)
    print(f"{method:<9} kept {len(kept):>5} / {len(examples)} ({len(kept) / len(examples):.2%})  "
          f"key points state every literal: {stated / len(kept):.2%}  "
          f"baseline (whole question): {baseline_ok / len(kept):.2%}  "
          f"ratio {stated / max(baseline_ok, 1):.3f}  {time.perf_counter() - start:.1f} s")
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
