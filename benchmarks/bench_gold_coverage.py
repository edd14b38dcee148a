"""Coverage of the gold-annotation teacher on all of GSM8K train, per method, with drop reasons and runtime;
and how close its Socratic sub-questions come to the human ones of GSM8K test_socratic.

    python benchmarks/bench_gold_coverage.py [--methods kpdd-pot socratic ...] [--limit N]

Baselines, side by side:
- coverage: the share of questions whose *last* calculator annotation already equals the gold answer (a
  verbatim annotation program would cover at most these);
- sub-questions: the problem's own question sentence repeated for every step (a decomposition that knows nothing).
test_socratic's human sub-questions are used only here, to measure; the teacher never reads them.
"""

import argparse
import re
import time
from collections import Counter

from kpdd.config import use_offline_defaults

use_offline_defaults()  # before dspy, litellm and mlflow read them at import

from kpdd.compile.gold import GoldTeacher  # noqa: E402
from kpdd.compile.gold.calculations import line_calculations, rationale_lines  # noqa: E402
from kpdd.compile.gold.language import core_question_and_key_points, sub_question  # noqa: E402
from kpdd.data import load_dataset  # noqa: E402
from kpdd.eval.answers import is_correct  # noqa: E402
from kpdd.modules.registry import PROGRAMS  # noqa: E402


def last_annotation_reaches_gold(example) -> bool:
    calculations = [c for line in rationale_lines(example.rationale) if "<<" in line for c in line_calculations(line)]
    return bool(calculations) and is_correct(calculations[-1].result, example.answer)


def coverage(methods: list[str], examples: list) -> None:
    baseline = sum(map(last_annotation_reaches_gold, examples)) / len(examples)
    print(f"GSM8K train: {len(examples)} questions; baseline (last annotation = gold): {baseline:.2%}\n")
    print(f"{'method':<10} {'covered':>7} {'coverage':>9} {'vs baseline':>11} {'seconds':>8}  drop reasons")
    for method in methods:
        start = time.perf_counter()
        results = GoldTeacher(method).sample_many(examples)
        seconds = time.perf_counter() - start
        covered = sum(bool(r.traces) for r in results)
        reasons = Counter()
        for result in results:
            reasons.update(result.errors)
        share = covered / len(examples)
        drops = ", ".join(f"{reason.split(': ', 1)[1]} {n}" for reason, n in reasons.most_common()) or "none"
        print(f"{method:<10} {covered:>7} {share:>9.2%} {share / baseline:>10.3f}x {seconds:>8.1f}  {drops}")


def _tokens(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", text.lower())


def token_f1(predicted: str, reference: str) -> float:
    p, r = _tokens(predicted), _tokens(reference)
    common = sum((Counter(p) & Counter(r)).values())
    return 0.0 if not common else 2 * common / (len(p) + len(r))


def rouge_l(predicted: str, reference: str) -> float:
    p, r = _tokens(predicted), _tokens(reference)
    lengths = [0] * (len(r) + 1)  # longest common subsequence, one row at a time
    for word in p:
        previous = 0
        for j, other in enumerate(r, 1):
            previous, lengths[j] = lengths[j], previous + 1 if word == other else max(lengths[j], lengths[j - 1])
    lcs = lengths[-1]
    return 0.0 if not lcs else 2 * lcs / (len(p) + len(r))


def opening(text: str) -> str:
    """The wh-phrase a question opens with: 'how many', 'how much', 'what', ..."""
    words = _tokens(text)[:2]
    return " ".join(words) if words[:1] == ["how"] else " ".join(words[:1])


def _scores(pairs: list[tuple[str, str]]) -> dict[str, float]:
    return {"token F1": sum(token_f1(p, h) for p, h in pairs) / len(pairs),
            "ROUGE-L F": sum(rouge_l(p, h) for p, h in pairs) / len(pairs),
            "same opening": sum(opening(p) == opening(h) for p, h in pairs) / len(pairs)}


def sub_question_scores(examples: list) -> None:
    """Ours vs the baseline, on all sub-questions and on the intermediate ones (the last is the core question)."""
    ours, baseline, skipped = [], [], 0
    for example in examples:
        lines = rationale_lines(example.rationale)
        if len(lines) != len(example.sub_questions):
            skipped += 1
            continue
        core_question, _ = core_question_and_key_points(example.question)
        ours.append(list(zip([*map(sub_question, lines[:-1]), core_question], example.sub_questions)))
        baseline.append([(core_question, human) for human in example.sub_questions])
    print(f"\nSocratic sub-questions vs GSM8K test_socratic's human ones ({sum(map(len, ours))} sub-questions of "
          f"{len(ours)} problems, {skipped} skipped); baseline = the problem's question sentence for every step")
    for subset, pick in (("all", slice(None)), ("intermediate", slice(None, -1))):
        mine = _scores([pair for pairs in ours for pair in pairs[pick]])
        theirs = _scores([pair for pairs in baseline for pair in pairs[pick]])
        for metric in mine:
            print(f"  {subset:<12} {metric:<13} ours {mine[metric]:.3f}  baseline {theirs[metric]:.3f}  "
                  f"ratio {mine[metric] / theirs[metric]:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", nargs="+", default=list(PROGRAMS), choices=list(PROGRAMS))
    parser.add_argument("--limit", type=int, default=None, help="a seeded subset of GSM8K train (default: all)")
    args = parser.parse_args()
    start = time.perf_counter()
    coverage(args.methods, load_dataset("gsm8k", "train", limit=args.limit))
    sub_question_scores(load_dataset("gsm8k", "test_socratic"))
    print(f"\ntotal {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
