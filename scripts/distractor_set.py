"""GSM8K questions with one irrelevant sentence that carries a number, inserted before the question sentence (the
way GSM-IC builds its set), and the share of a trace store's key-point lists that repeat it.

    python scripts/distractor_set.py build --split train --limit 2000 --seed 0 --out distractors.jsonl
    kpdd traces --program kpdd-pot --teacher gold --dataset distractors.jsonl --out traces.jsonl
    python scripts/distractor_set.py measure distractors.jsonl traces.jsonl

The sentence is built from a template with a person (a new name, or a relative of a name in the problem) and a
number drawn from 2-99; in half the draws it is on the problem's topic (it counts a noun the problem counts). The
file is GSM8K's own format plus the field ``inserted``; it is data, so it stays out of the repository.
"""

import argparse
import json
import random
import re
from pathlib import Path

from kpdd import jsonl
from kpdd.compile.gold.calculations import format_number
from kpdd.compile.gold.language import split_sentences
from kpdd.compile.store import TraceStore
from kpdd.data import load_dataset

NAMES = "Ada Ivo Mila Omar Priya Lars Keiko Tomas Zara Felix Nadia Hugo Ines Ravi Sofia Bruno Leila Ezra".split()
RELATIVES = "brother sister neighbor cousin father mother uncle aunt friend classmate".split()
OFF_TOPIC = [
    "{who} has read {n} books this year.",
    "The height of {who} is {n} inches.",
    "{who} is {n} years old.",
    "{who} lives {n} miles from the city.",
    "The shoe size of {who} is {n}.",
    "{who} has {n} stamps in a collection.",
]
IN_TOPIC = ["{who} has {n} {noun}.", "{who} bought {n} {noun} last week.", "{who} gave away {n} {noun}."]
_COUNTED = re.compile(r"\b\d+ ([a-z]{3,}s)\b")
_MEASURES = set("""seconds minutes hours days weeks months years times dollars cents miles inches feet yards meters
pounds ounces grams liters gallons cups percent points degrees""".split())


def distractor(question: str, rng: random.Random) -> str:
    names = [n for n in dict.fromkeys(re.findall(r"\b[A-Z][a-z]+\b", question))
             if n not in {"If", "How", "What", "The", "She", "He", "They", "In", "On", "At", "Each", "Every"}]
    who = f"{rng.choice(names)}'s {rng.choice(RELATIVES)}" if names and rng.random() < 0.5 else \
        rng.choice([n for n in NAMES if n not in question])
    nouns = [n for n in _COUNTED.findall(question) if n not in _MEASURES]
    template = rng.choice(IN_TOPIC) if nouns and rng.random() < 0.5 else rng.choice(OFF_TOPIC)
    sentence = template.format(who=who, n=rng.randint(2, 99), noun=rng.choice(nouns) if nouns else "")
    return sentence[0].upper() + sentence[1:]


def with_distractor(question: str, sentence: str) -> str:
    """``sentence`` inserted before the question sentence (the last with a '?', else the last)."""
    sentences = split_sentences(question)
    index = max((i for i, s in enumerate(sentences) if "?" in s), default=len(sentences) - 1)
    return " ".join([*sentences[:index], sentence, *sentences[index:]])


def build(args) -> None:
    rng = random.Random(args.seed)
    rows = []
    for example in load_dataset("gsm8k", args.split, limit=args.limit, seed=args.seed):
        sentence = distractor(example.question, rng)
        rows.append({"id": example.id, "question": with_distractor(example.question, sentence),
                     "answer": f"{example.rationale}\n#### {format_number(example.answer)}", "inserted": sentence})
    Path(args.out).write_text("".join(json.dumps(row) + "\n" for row in rows))
    print(f"{len(rows)} questions -> {args.out}")


def measure(args) -> None:
    inserted = {row["question"]: row["inserted"] for _, row in jsonl.numbered(Path(args.set))}
    traces = [t for t in TraceStore(args.traces).traces()]
    with_it = 0
    for trace in traces:
        key_points = next(s["outputs"]["key_points"] for s in trace["stages"] if "key_points" in s["outputs"])
        sentence = inserted[trace["stages"][0]["inputs"]["question"]].rstrip(".")
        with_it += any(sentence in point or point.rstrip(".") in sentence for point in key_points)
    print(f"kept traces: {len(traces)} of {len(inserted)} questions; key points with the inserted sentence: "
          f"{with_it} ({with_it / max(1, len(traces)):.2%})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    make = sub.add_parser("build")
    make.add_argument("--split", default="train")
    make.add_argument("--limit", type=int, default=2000)
    make.add_argument("--seed", type=int, default=0)
    make.add_argument("--out", required=True)
    check = sub.add_parser("measure")
    check.add_argument("set")
    check.add_argument("traces")
    args = parser.parse_args()
    build(args) if args.command == "build" else measure(args)


if __name__ == "__main__":
    main()
