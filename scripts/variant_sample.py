"""Print a seeded sample of a trace store's traces as Markdown (question, key points, substitution for a variant,
program, answer), for a reader to judge them: `python scripts/variant_sample.py <store.jsonl> --n 50 --seed 0`
(a `kpdd augment` store, or a gold store from `kpdd traces --teacher gold`)."""

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
        meta = trace.get("meta", {})
        changes = ", ".join(f"{c['old']} → {c['new']}" for c in meta.get("substitution", []))
        source = f", source answer {meta['source_answer']:g}" if "source_answer" in meta else ""
        program = next(s["outputs"]["program"] for s in trace["stages"] if "program" in s["outputs"])
        key_points = next((s["outputs"]["key_points"] for s in trace["stages"] if "key_points" in s["outputs"]), [])
        question = trace.get("question") or trace["stages"][0]["inputs"]["question"]
        print(f"**{number}. `{trace['question_id']}`** ({changes + '; ' if changes else ''}answer "
              f"{trace['answer']:g}{source})\n")
        print(f"> {question}\n")
        print("".join(f"- {point}\n" for point in key_points))
        print(f"```python\n{program}\n```\n")


if __name__ == "__main__":
    main()
