"""Trace generation: every training question through a teacher, k samples each, correct traces kept, resumable.

``kpdd traces`` = :func:`run_traces` (config → teacher → :func:`generate_traces` → store). Questions run in
parallel threads with a progress bar; each question's block lands in the store as soon as it is done, so a
kill loses at most the questions in flight, and rerunning the same command picks up where it stopped.
"""

from __future__ import annotations

import contextvars
import logging
import threading
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import dspy

from kpdd.compile.store import QuestionResult, TraceStore
from kpdd.config import option
from kpdd.errors import ConfigError

logger = logging.getLogger(__name__)


class Teacher(Protocol):
    name: str

    def sample(self, example: dspy.Example, samples: int = 1) -> QuestionResult: ...


@dataclass(frozen=True)
class TracesConfig:
    program: str = option("kpdd-pot", "program (registry name): kpdd-cot, kpdd-pot, socratic, cot, pot, direct")
    teacher: str = option("gold", "'gold' (dataset annotations, no LM), 'local:<model dir>', or a model string "
                                  "such as 'openai/gpt-4o-mini'")
    api_base: str | None = option(None, "OpenAI-compatible server URL for the teacher (e.g. a vLLM server)")
    api_key_env: str = option("OPENAI_API_KEY", "environment variable holding the teacher's API key")
    teacher_program: str | None = option(None, "a saved, optimised teacher program (program.save JSON) to sample")
    dataset: str = option("gsm8k", "dataset name or a JSON/JSONL file")
    split: str = option("train", "dataset split")
    limit: int | None = option(None, "use a seeded random subset of this many questions")
    seed: int = option(0, "seed for the subset")
    samples: int = option(1, "samples per question (k); > 1 needs temperature > 0")
    temperature: float = option(0.7, "sampling temperature when samples > 1")
    max_tokens: int = option(1024, "max tokens per teacher call")
    threads: int = option(8, "questions processed in parallel")
    out: str = option("", "trace store path (default kpdd-runs/traces/<program>-<teacher>-<dataset>-<split>.jsonl)")

    def store_path(self) -> Path:
        if self.out:
            return Path(self.out)
        teacher = self.teacher.replace("/", "_").replace(":", "_")
        return Path("kpdd-runs") / "traces" / f"{self.program}-{teacher}-{Path(self.dataset).stem}-{self.split}.jsonl"


def check_store_matches(store: TraceStore, header: dict[str, Any]) -> None:
    """Resuming into a store written for another program or teacher would mix traces: refuse."""
    for line in store.lines():
        for key in ("method", "teacher"):
            if line.get(key) != header[key]:
                raise ConfigError(f"{store.path} holds traces of {key} {line.get(key)!r}, not {header[key]!r}; "
                                  "pass another --out or remove the file")
        return


def generate_traces(teacher: Teacher, examples: list[dspy.Example], store: TraceStore, header: dict[str, Any],
                    samples: int = 1, threads: int = 8, progress: bool = True) -> dict[str, Any]:
    """Run the pending questions through ``teacher`` and append their blocks; returns the store's stats."""
    from tqdm import tqdm

    store.repair()
    check_store_matches(store, header)
    pending_ids = set(store.pending(e.id for e in examples))
    pending = [e for e in examples if e.id in pending_ids]
    if len(pending) < len(examples):
        logger.info("resuming %s: %d of %d questions already done", store.path, len(examples) - len(pending),
                    len(examples))
    lock = threading.Lock()
    bar = tqdm(total=len(examples), initial=len(examples) - len(pending), desc=f"traces {header['method']}",
               unit="q", disable=not progress, dynamic_ncols=True)
    kept = 0
    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        # Each task runs in a copy of this thread's context, so DSPy settings set by the caller reach it.
        futures = [pool.submit(contextvars.copy_context().run, teacher.sample, example, samples) for example in pending]
        for future in as_completed(futures):
            result = future.result()
            with lock:
                store.append(result, header)
            kept += bool(result.traces)
            bar.update(1)
            bar.set_postfix(kept=kept, failed=int(bool(result.failed)), refresh=False)
    bar.close()
    return store.stats()


def build_teacher(config: TracesConfig, program: dspy.Module) -> Teacher:
    """The teacher a config names: gold annotations, or the program on a teacher LM."""
    import os

    if config.teacher == "gold":
        from kpdd.compile.gold import GoldTeacher

        return GoldTeacher(config.program)
    from kpdd.compile.teachers import LMTeacher, teacher_lm

    if config.samples > 1 and config.temperature <= 0:
        raise ConfigError(f"samples={config.samples} needs temperature > 0 (got {config.temperature}): "
                          "greedy samples would all be the same")
    lm = teacher_lm(config.teacher, api_base=config.api_base, api_key=os.environ.get(config.api_key_env),
                    max_tokens=config.max_tokens)
    return LMTeacher(program, lm, config.program, temperature=config.temperature, name=config.teacher)


def run_traces(config: TracesConfig, progress: bool = True) -> dict[str, Any]:
    """``kpdd traces``: load the questions, build the teacher, generate into the store; returns the stats."""
    from kpdd.compile.optimize import load_program
    from kpdd.data import load_dataset
    from kpdd.modules import build_program

    if config.samples < 1:
        raise ConfigError(f"samples must be >= 1, got {config.samples}")
    program = load_program(config.teacher_program, config.program) if config.teacher_program else build_program(config.program)
    examples = load_dataset(config.dataset, config.split, limit=config.limit, seed=config.seed)
    teacher = build_teacher(config, program)
    header = {"method": config.program, "teacher": teacher.name, "dataset": Path(config.dataset).stem,
              "split": config.split, "meta": {"samples": config.samples, "temperature": config.temperature,
                                              "teacher_program": config.teacher_program}}
    store = TraceStore(config.store_path())
    stats = generate_traces(teacher, examples, store, header, config.samples, config.threads, progress)
    return {"path": str(store.path), **stats}
