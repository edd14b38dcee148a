"""Two programs that are not in kpdd's registry, the data they read and a teacher that answers their signatures,
for the tests of user pipelines: a maths solver whose input is ``problem`` (a ``ChainOfThought``, numeric answer,
the default metric) and a review tagger with typed and list outputs in two stages and a metric of its own."""

from __future__ import annotations

import json
import re
from pathlib import Path

PIPELINES = '''
from typing import Literal

import dspy


class Solve(dspy.Signature):
    """Solve the maths problem."""

    problem: str = dspy.InputField()
    answer: float = dspy.OutputField()


class MathsSolver(dspy.Module):
    def __init__(self):
        super().__init__()
        self.solve = dspy.ChainOfThought(Solve)

    def forward(self, problem):
        return self.solve(problem=problem)


class Tag(dspy.Signature):
    """Tag a product review."""

    review: str = dspy.InputField()
    sentiment: Literal["positive", "negative"] = dspy.OutputField()
    stars: int = dspy.OutputField()
    keywords: list[str] = dspy.OutputField()


class Summarise(dspy.Signature):
    """Summarise a review from its keywords."""

    review: str = dspy.InputField()
    keywords: list[str] = dspy.InputField()
    summary: str = dspy.OutputField()
    confident: bool = dspy.OutputField()


class ReviewTagger(dspy.Module):
    def __init__(self):
        super().__init__()
        self.tag = dspy.Predict(Tag)
        self.summarise = dspy.ChainOfThought(Summarise)

    def forward(self, review):
        tags = self.tag(review=review)
        summary = self.summarise(review=review, keywords=tags.keywords)
        return dspy.Prediction(sentiment=tags.sentiment, stars=tags.stars, keywords=tags.keywords,
                               summary=summary.summary, confident=summary.confident)


def sentiment_matches(example, prediction, trace=None):
    return prediction.sentiment == example.sentiment


tagger = ReviewTagger()
'''

PROBLEMS = [{"problem": f"Ann has {a} apples and buys {b} more. How many apples does she have?", "answer": a + b}
            for a, b in [(2, 3), (5, 4), (7, 1), (3, 3), (6, 2), (8, 5)]]
REVIEWS = [{"review": text, "sentiment": sentiment} for text, sentiment in [
    ("Good battery and a bright screen.", "positive"), ("Bad fit, the strap broke.", "negative"),
    ("Good sound for the price.", "positive"), ("Bad support and slow delivery.", "negative"),
    ("Good grip, good size.", "positive"), ("Bad smell that never went away.", "negative")]]


def write_pipelines(directory: Path) -> tuple[Path, Path, Path]:
    """The pipelines' file and their two datasets (JSONL) in ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    source = directory / "my_pipelines.py"
    source.write_text(PIPELINES)
    problems, reviews = directory / "problems.jsonl", directory / "reviews.jsonl"
    problems.write_text("".join(json.dumps(row) + "\n" for row in PROBLEMS))
    reviews.write_text("".join(json.dumps(row) + "\n" for row in REVIEWS))
    return source, problems, reviews


def _inputs(user: str) -> dict[str, str]:
    parts = re.split(r"\[\[ ## (\w+) ## \]\]\n", user)
    return {parts[i]: parts[i + 1].split("\n\n")[0].strip() for i in range(1, len(parts) - 1, 2)}


def respond(fields: list[str], user: str) -> dict[str, str]:
    """A right answer for each field the programs ask for (ChatAdapter's format)."""
    inputs = _inputs(user)
    numbers = [int(n) for n in re.findall(r"\d+", inputs.get("problem", ""))]
    review = inputs.get("review", "")
    words = [w.strip(".,").lower() for w in review.split()[:2]]
    values = {"reasoning": "Add the numbers." if numbers else "The review's words say it.",
              "answer": str(sum(numbers)), "sentiment": "positive" if review.startswith("Good") else "negative",
              "stars": "5" if review.startswith("Good") else "1", "keywords": json.dumps(words),
              "summary": review.split(",")[0], "confident": "true"}
    return {field: values.get(field, "ok") for field in fields}
