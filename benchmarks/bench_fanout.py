"""Teacher traces/s with 1 server vs 4 servers of the same fixed latency (goal ≥ 3.5×), and with 1 of the 4 killed
halfway (every question still traced exactly once), side by side from one run.

Each server is a scripted OpenAI-compatible teacher (``tests/scripted_teacher.py``) in its own process on 127.0.0.1:
every answer takes ``--latency`` seconds and it serves ``--capacity`` requests at once (the others wait, as on a
GPU server at its batch limit), so one server's throughput is capacity / latency. ``kpdd``'s own trace loop
(``generate_traces`` with an ``LMTeacher``) runs the ``direct`` program over ``--questions`` GSM8K training
questions in ``--threads`` threads; one server is reached as a single ``--api-base`` is, four through the
LiteLLM Router (``kpdd.engines.router``). The killed server gets SIGKILL once half of the questions are in the
store, with requests in flight. Lost = questions with no closing line in the store; duplicated = closing lines
or trace ids beyond one per question.

    python benchmarks/bench_fanout.py [--questions 120] [--latency 0.5] [--capacity 2] [--threads 32]

The client's own cost per call (DSPy's adapter, LiteLLM) must stay well below latency / (4 × capacity), or the
client, not the servers, sets the pace: on a busy 2-core machine keep ``--latency`` at 0.5 s or more.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from contextlib import ExitStack
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the scripted teacher server

from scripted_teacher import TeacherProcess  # noqa: E402

from kpdd.compile.store import TraceStore  # noqa: E402
from kpdd.compile.teachers import LMTeacher  # noqa: E402
from kpdd.compile.traces import generate_traces  # noqa: E402
from kpdd.data import load_dataset  # noqa: E402
from kpdd.engines.lm import teacher_lm  # noqa: E402
from kpdd.modules import build_program  # noqa: E402


def closing_lines(path: Path) -> tuple[Counter, Counter]:
    """How many closing lines each question has, and how many lines each trace id has."""
    lines = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
    return (Counter(line["question_id"] for line in lines if line["kind"] == "question"),
            Counter(line["id"] for line in lines if line["kind"] == "trace"))


def run(examples, servers: int, args, kill_one_at: int | None = None) -> dict:
    """Trace every question on ``servers`` fresh servers; kill one of them once ``kill_one_at`` are stored."""
    answers = {e.question: e.answer for e in examples}
    store = TraceStore(Path(tempfile.mkdtemp(prefix="bench-fanout-")) / "traces.jsonl")
    header = {"method": "direct", "teacher": "openai/scripted", "dataset": "gsm8k", "split": "train", "meta": {}}
    with ExitStack() as stack:
        fleet = [stack.enter_context(TeacherProcess(answers, args.latency, args.capacity)) for _ in range(servers)]
        lm = teacher_lm(f"openai/scripted-{uuid.uuid4().hex}", api_base=[s.url for s in fleet], cache=False)
        teacher = LMTeacher(build_program("direct"), lm, "direct")
        teacher.sample(examples[0])  # warm-up: imports and connections, outside the clock
        killer = None
        if kill_one_at is not None:
            killer = threading.Thread(target=kill_when_stored, args=(fleet[0], store, kill_one_at), daemon=True)
            killer.start()
        start = time.perf_counter()
        stats = generate_traces(teacher, examples, store, header, threads=args.threads, progress=False)
        seconds = time.perf_counter() - start
    closed, trace_lines = closing_lines(store.path)
    return {"seconds": seconds, "rate": len(examples) / seconds, "traces": stats.traces,
            "failed": stats.failed, "lost": sum(1 for e in examples if closed[e.id] == 0),
            "duplicated": sum(n - 1 for n in closed.values() if n > 1) + sum(n - 1 for n in trace_lines.values()),
            "killed": killer is not None and not killer.is_alive()}


def kill_when_stored(server: TeacherProcess, store: TraceStore, count: int) -> None:
    while sum(closing_lines(store.path)[0].values()) < count:
        time.sleep(0.01)
    server.kill()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--questions", type=int, default=120, help="GSM8K training questions traced per run")
    parser.add_argument("--latency", type=float, default=0.5, help="seconds every server answer takes")
    parser.add_argument("--capacity", type=int, default=2, help="requests one server answers at once")
    parser.add_argument("--threads", type=int, default=32, help="questions in flight (kpdd traces --threads)")
    args = parser.parse_args()
    examples = load_dataset("gsm8k", "train", limit=args.questions, seed=1)
    ideal = args.capacity / args.latency
    print(f"{args.questions} questions, latency {args.latency} s, capacity {args.capacity} per server "
          f"(≤ {ideal:.1f} q/s each), {args.threads} threads")

    one = run(examples, 1, args)
    four = run(examples, 4, args)
    killed = run(examples, 4, args, kill_one_at=args.questions // 2)
    for name, result in (("1 server", one), ("4 servers", four), ("4 servers, 1 killed halfway", killed)):
        print(f"{name:28s} {result['rate']:6.2f} traces/s  ({result['seconds']:.1f} s; traces {result['traces']}, "
              f"failed {result['failed']}, lost {result['lost']}, duplicated {result['duplicated']})")
    print(f"4 vs 1 server:               {four['rate'] / one['rate']:.2f}x  (goal ≥ 3.5x)")
    print(f"4 with 1 killed vs 1 server: {killed['rate'] / one['rate']:.2f}x  (server killed: {killed['killed']})")


if __name__ == "__main__":
    main()
