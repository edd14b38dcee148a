"""Print a seeded sample of a `kpdd augment` store's variants as Markdown (question, substitution, program, answer),
for a reader to judge them: `python scripts/variant_sample.py <store.jsonl> --n 50 --seed 0`."""

import argparse
import random

from kpdd.compile.store import TraceStore


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("store")
    parser.add_argument("--n", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    traces = sorted(TraceStore(args.store).traces(), key=lambda t: t["question_id"])
    for number, trace in enumerate(sorted(random.Random(args.seed).sample(traces, min(args.n, len(traces))),
                                          key=lambda t: t["question_id"]), 1):
        changes = ", ".join(f"{c['old']} → {c['new']}" for c in trace["meta"]["substitution"])
        program = next(s["outputs"]["program"] for s in trace["stages"] if "program" in s["outputs"])
        print(f"**{number}. `{trace['question_id']}`** ({changes}; answer {trace['answer']:g}, "
              f"source answer {trace['meta']['source_answer']:g})\n")
        print(f"> {trace['question']}\n")
        print(f"```python\n{program}\n```\n")


if __name__ == "__main__":
    main()
