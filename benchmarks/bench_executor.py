"""Executions per second of the sandbox pool vs a fresh `python -c` subprocess per program.

The programs are GSM8K-style: each test rationale's calculator annotations `<<a*b=c>>` become
`v1 = a*b` ... `ans = vK`. Both sides run the same programs with the same concurrency (one
thread per worker), and the script checks that they agree on the answers.

    python benchmarks/bench_executor.py --programs 1000 --baseline-programs 100 --workers 2
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

from kpdd.data import resolve_data_dir
from kpdd.sandbox.executor import ExecutorPool

_ANNOTATION = re.compile(r"<<([^=<>]+)=[^<>]*>>")


def gsm8k_programs(path, limit: int) -> list[str]:
    """One program per rationale with at least one calculator step that is valid Python."""
    programs = []
    with open(path, encoding="utf-8") as file:
        for line in file:
            steps = _ANNOTATION.findall(json.loads(line)["answer"])
            lines = [f"v{i} = {expression.strip()}" for i, expression in enumerate(steps, 1)]
            program = "\n".join([*lines, f"ans = v{len(lines)}"])
            if lines and _compiles(program):
                programs.append(program)
            if len(programs) == limit:
                break
    return programs


def _compiles(program: str) -> bool:
    try:
        compile(program, "<program>", "exec")
    except SyntaxError:
        return False
    return True


def fresh_interpreter(program: str) -> float | None:
    """The baseline: a new interpreter per program (`-I -S`: no site, so it starts as fast as it can)."""
    done = subprocess.run([sys.executable, "-I", "-S", "-c", program + "\nprint(float(ans))"],
                          capture_output=True, text=True, timeout=10)
    return float(done.stdout) if done.returncode == 0 else None


def timed(run, programs: list[str], workers: int) -> tuple[float, list]:
    start = time.perf_counter()
    with ThreadPoolExecutor(workers) as threads:
        values = list(threads.map(run, programs))
    return len(programs) / (time.perf_counter() - start), values


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=None, help="GSM8K test JSONL (default: <data dir>/gsm8k/test.jsonl)")
    parser.add_argument("--programs", type=int, default=1000, help="programs run by the pool")
    parser.add_argument("--baseline-programs", type=int, default=100, help="of those, run as fresh subprocesses")
    parser.add_argument("--workers", type=int, default=2, help="pool workers, and baseline threads")
    args = parser.parse_args(argv)

    programs = gsm8k_programs(args.data or resolve_data_dir() / "gsm8k" / "test.jsonl", args.programs)
    steps = sum(p.count("\n") for p in programs) / len(programs)
    print(f"{len(programs)} GSM8K programs, {steps:.1f} assignments each on average")
    with ExecutorPool(workers=args.workers) as pool:
        pool.execute_many(programs[: 4 * args.workers])  # warm-up: first forks, page cache
        pool_rate, results = timed(lambda p: pool.execute(p), programs, args.workers)
        isolation = pool.isolation
    baseline = programs[: args.baseline_programs]
    baseline_rate, baseline_values = timed(fresh_interpreter, baseline, args.workers)

    errors = sum(r.error is not None for r in results)
    agree = sum(r.value == v for r, v in zip(results, baseline_values))
    print(f"pool ({args.workers} workers, isolation={isolation}): {pool_rate:8.1f} programs/s "
          f"over {len(programs)} ({errors} errors)")
    print(f"fresh `python -I -S -c` per program ({args.workers} threads): {baseline_rate:8.1f} programs/s "
          f"over {len(baseline)}")
    print(f"ratio: {pool_rate / baseline_rate:.1f}x; answers agree on {agree}/{len(baseline)}")


if __name__ == "__main__":
    from kpdd.config import use_offline_defaults

    use_offline_defaults()  # before any library that reads them is imported
    main()
