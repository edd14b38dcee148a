"""How well the gold programs' variable names say what they hold, on GSM8K train: the share of names that share a
content word with the text they are named from (a given value: the clause of the question that states it; a
computed value: the rationale line that computes it), and a seeded sample of programs to read.

    python scripts/gold_names.py [--limit N] [--seed 0] [--show 20]
"""

import argparse
import random
import re

from kpdd.compile.gold.calculations import NoTrace, line_calculations, rationale_lines
from kpdd.compile.gold.programs import rationale_builder
from kpdd.data import load_dataset

_NOT_CONTENT = {"per", "in", "on", "of", "at", "for", "from", "with", "by", "to", "step", "quantity", "value"}


def _stems(words) -> set[str]:
    return {w.lower().removesuffix("s") for w in words}


def _source_words(text: str) -> set[str]:
    extra = ["dollars"] * ("$" in text) + ["percent"] * ("%" in text)
    return _stems(re.findall(r"[A-Za-z]+", text) + extra)


def named_sources(example) -> list[tuple[str, str]]:
    """(variable, the clause or line it is named from) for every assignment of the example's gold program."""
    builder, _ = rationale_builder(example.question, example.rationale, example.answer)
    pairs = []
    for index, name in builder.declared.items():
        q = builder.quantities[index]
        start = max(example.question.rfind(mark, 0, q.start) for mark in (". ", "? ", "! ", ", "))
        ends = [e for e in (example.question.find(mark, q.end) for mark in (". ", "?", ", ")) if e >= 0]
        pairs.append((name, example.question[start + 1: min(ends, default=len(example.question))]))
    calculations = [c for line in rationale_lines(example.rationale) for c in line_calculations(line) if c.tokens]
    for statement, calculation in zip(builder.statements, calculations):
        pairs.append((statement.split(" = ")[0], f"{calculation.before} {calculation.after}"))
    return pairs


def shares_a_word(name: str, source: str) -> bool:
    words = [w for w in name.split("_") if w and not w.isdigit() and w not in _NOT_CONTENT]
    return bool(_stems(words) & _source_words(source))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--show", type=int, default=0, help="print this many programs of a seeded sample")
    args = parser.parse_args()
    examples = load_dataset("gsm8k", "train", limit=args.limit, seed=args.seed)
    names = sharing = numbered = 0
    for example in examples:
        try:
            pairs = named_sources(example)
        except NoTrace:
            continue
        names += len(pairs)
        sharing += sum(shares_a_word(name, source) for name, source in pairs)
        numbered += sum(bool(re.search(r"_\d+$|^step_\d+$|^quantity_\d+$", name)) for name, _ in pairs)
    print(f"names: {names}; sharing a content word with their clause or line: {sharing} ({sharing / names:.2%}); "
          f"numbered or generic (_2, step_3): {numbered} ({numbered / names:.2%})")
    for example in random.Random(args.seed).sample(examples, args.show):
        try:
            builder, answer = rationale_builder(example.question, example.rationale, example.answer)
        except NoTrace:
            continue
        print(f"\n{example.id}: {example.question}\n" + builder.program(answer))


if __name__ == "__main__":
    main()
