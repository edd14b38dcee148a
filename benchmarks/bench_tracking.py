"""Overhead of MLflow tracking on an evaluation loop: the same loop with tracking on and off, side by side.

Tracking on = what a kpdd ``eval`` command records: a command run and an eval stage run, the dataset input,
sampled DSPy traces, the metrics and the per-example predictions table. The loop runs a two-stage program
(key points, then answer) on every example in DSPy's thread pool, as kpdd's harness does (``dspy.Evaluate``
is not traced: see ``kpdd.tracking.dspy_traces``); its LM is a deterministic fake engine that sleeps a fixed
time per call, like a small local model. To measure the real harness instead, replace ``evaluate`` below (it
takes the program, the examples, the LM and a thread count, and returns the predictions records).

Both variants run in one process after a warm-up (imports, store creation), alternating, and the median of
``--repeats`` runs is reported; one-time costs are printed separately.

    .venv/bin/python benchmarks/bench_tracking.py [--examples 100,400] [--latency-ms 20] [--threads 1]
        [--sample-rate 0.02] [--repeats 3]

Two loop sizes separate the fixed cost per command (mostly waiting for MLflow's background trace exporter,
which polls once a second, to drain) from the cost per example.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import tempfile
import time
from pathlib import Path

from kpdd.config import use_offline_defaults

use_offline_defaults()  # before dspy, litellm and mlflow read them at import

import dspy  # noqa: E402
from dspy.lm15 import Message, Response, TextPart, Usage, response_to_events  # noqa: E402
from dspy.utils.parallelizer import ParallelExecutor  # noqa: E402


class SlowFakeEngine:
    """A deterministic stand-in for a local model: answers 'a plus b' questions, wrong on every third one."""

    def __init__(self, latency_s: float):
        self.latency_s = latency_s

    def complete(self, request):
        time.sleep(self.latency_s)
        prompt = request.messages[-1].text or ""
        a, b = (int(n) for n in re.findall(r"What is (\d+) plus (\d+)", prompt)[-1])
        answer = a + b + (1 if a % 3 == 0 else 0)
        text = (f"[[ ## key_points ## ]]\nAdd {a} and {b}.\n\n[[ ## answer ## ]]\n{answer}\n\n"
                "[[ ## completed ## ]]")
        tokens = len(prompt) // 4
        return Response(id=None, model="fake", message=Message.assistant([TextPart(text)]), finish_reason="stop",
                        usage=Usage(input_tokens=tokens, output_tokens=20, total_tokens=tokens + 20))

    def stream(self, request):
        return response_to_events(self.complete(request))

    def close(self):
        pass


class KeyPointsProgram(dspy.Module):
    """Two stages, like KPDD: extract key points, then answer from them."""

    def __init__(self):
        super().__init__()
        self.key_points = dspy.Predict("question -> key_points")
        self.solve = dspy.Predict("question, key_points -> answer: float")

    def forward(self, question):
        key_points = self.key_points(question=question).key_points
        return self.solve(question=question, key_points=key_points)


def make_examples(count: int) -> list[dspy.Example]:
    return [dspy.Example(id=f"synthetic-test-{i:05d}", dataset="synthetic", split="test",
                         question=f"What is {i} plus {2 * i + 1}?", answer=float(3 * i + 1)).with_inputs("question")
            for i in range(count)]


def evaluate(program, examples, lm, threads: int) -> list[dict]:
    """The workload, shaped like kpdd's harness: run the program on every example in DSPy's thread pool and
    return one predictions record each. Swap this for the real harness to measure it instead."""

    def predict(example) -> dict:
        start = time.perf_counter()
        answer = program(question=example.question).answer
        return {"question_id": example.id, "dataset": example.dataset, "question": example.question,
                "gold": example.answer, "answer": answer, "correct": answer == example.answer,
                "latency_s": time.perf_counter() - start}

    with dspy.context(lm=lm):
        return ParallelExecutor(num_threads=threads, disable_progress_bar=True).execute(predict, examples)


def run_untracked(program, examples, lm, args) -> float:
    start = time.perf_counter()
    evaluate(program, examples, lm, args.threads)
    return time.perf_counter() - start


def run_tracked(program, examples, lm, args) -> float:
    import mlflow

    from kpdd.tracking import (
        METHOD,
        STUDENT,
        accuracy_key,
        command_run,
        dspy_tracing,
        error_key,
        log_dataset_input,
        log_records_table,
        stage_run,
    )

    start = time.perf_counter()
    config = {"program": "key-points", "examples": len(examples), "threads": args.threads}
    with command_run("eval", config, tags={METHOD: "key-points", STUDENT: "fake"}, experiment="bench"):
        with stage_run("eval", dataset="synthetic"):
            log_dataset_input(examples, "synthetic", context="eval")
            with dspy_tracing(args.sample_rate):
                records = evaluate(program, examples, lm, args.threads)
            accuracy = sum(r["correct"] for r in records) / len(records)
            mlflow.log_metrics({accuracy_key("synthetic"): accuracy, error_key("parse"): 0})
            log_records_table(records, "predictions.json")
    return time.perf_counter() - start


def measure(program, examples, lm, args) -> tuple[float, float]:
    """Median seconds of the loop untracked and tracked, alternating so that load changes hit both alike."""
    off, on = [], []
    for _ in range(args.repeats):
        off.append(run_untracked(program, examples, lm, args))
        on.append(run_tracked(program, examples, lm, args))
    return statistics.median(off), statistics.median(on)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--examples", default="100,400", help="comma-separated loop sizes")
    parser.add_argument("--latency-ms", type=float, default=20.0, help="fake LM time per call")
    parser.add_argument("--threads", type=int, default=1, help="worker threads of the loop")
    parser.add_argument("--sample-rate", type=float, default=0.02, help="share of program calls traced")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    sizes = [int(size) for size in args.examples.split(",")]

    store = Path(tempfile.mkdtemp(prefix="kpdd-bench-"))
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{store / 'mlflow.db'}"
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    import kpdd  # noqa: F401  (offline and no-telemetry defaults)

    program = KeyPointsProgram()
    lm = dspy.LM("openai/fake", engine=SlowFakeEngine(args.latency_ms / 1000), cache=False)
    start = time.perf_counter()
    import mlflow  # noqa: F401

    imported = time.perf_counter() - start
    warm_up = run_tracked(program, make_examples(5), lm, args)  # creates the store and the experiment

    print(f"workload: harness-like loop, 2 LM calls x {args.latency_ms:.0f} ms per example, {args.threads} "
          f"thread(s), trace sample rate {args.sample_rate}; median of {args.repeats} runs each")
    print(f"{'examples':>8}  {'tracking off':>12}  {'tracking on':>11}  {'on/off':>6}  overhead")
    results = []
    for size in sizes:
        off, on = measure(program, make_examples(size), lm, args)
        results.append((size, off, on))
        print(f"{size:>8}  {off:>10.3f} s  {on:>9.3f} s  {on / off:>6.3f}  "
              f"{on - off:+.3f} s = {100 * (on / off - 1):+.1f} %")
    if len(results) >= 2:
        (n0, off0, on0), (n1, off1, on1) = results[0], results[-1]
        per_example = ((on1 - off1) - (on0 - off0)) / (n1 - n0)
        fixed = (on0 - off0) - per_example * n0
        print(f"fit: fixed {fixed:+.3f} s per command, {1000 * per_example:+.2f} ms per example "
              f"({100 * per_example / ((off1 - off0) / (n1 - n0)):+.1f} % of an example's time)")
    print(f"one-time, not in the figures: import mlflow {imported:.2f} s; "
          f"first tracked run with store creation (5 examples) {warm_up:.2f} s")


if __name__ == "__main__":
    main()
