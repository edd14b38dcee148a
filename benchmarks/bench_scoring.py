"""Time to score the GSM8K test set's 1,319 gold answer texts (goal ≤ 0.5 s), vectorised vs one by one.

    python benchmarks/bench_scoring.py [--repeat 5]
"""

import argparse
import json
import time

from kpdd.config import use_offline_defaults

use_offline_defaults()  # before dspy, litellm and mlflow read them at import

from kpdd.data import resolve_data_dir  # noqa: E402
from kpdd.eval.answers import is_correct, score_answers  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="timed repetitions; the best is reported")
    args = parser.parse_args()
    lines = (resolve_data_dir() / "gsm8k" / "test.jsonl").read_text().splitlines()
    texts = [json.loads(line)["answer"] for line in lines]
    golds = [text.rpartition("####")[2] for text in texts]

    def best(fn) -> float:
        times = []
        for _ in range(args.repeat):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        return min(times)

    vectorised = best(lambda: score_answers(texts, golds))
    one_by_one = best(lambda: [is_correct(t, g) for t, g in zip(texts, golds)])
    accuracy = sum(score_answers(texts, golds)) / len(texts)
    print(f"answers scored:             {len(texts)} (agreement with '####' answers: {accuracy:.1%})")
    print(f"score_answers (vectorised): {vectorised:.3f} s  ({len(texts) / vectorised:,.0f} answers/s; goal ≤ 0.5 s)")
    print(f"is_correct one by one:      {one_by_one:.3f} s  (ratio {one_by_one / vectorised:.2f}x)")


if __name__ == "__main__":
    main()
