"""``kpdd augment``: program-checked variants of every gold-traced question into an append-only trace store.

Questions go in batches: the gold teacher verifies the batch's traces, then each question draws candidates
(:mod:`kpdd.compile.gold.augment`) in rounds — 2 N, then twice as many, up to ``max_attempts`` — until it has N kept
variants; each round's programs run in one batched sandbox call. Every question's block (its kept variants, the
candidates drawn, each rejection's reason) is appended as soon as its batch is done, so a rerun skips the
questions already done. Variants carry ``teacher: "augment"`` and their question id is their source's id plus a
suffix, which puts them on their source's side of every train/validation split (``kpdd.finetune.sft.is_validation``).
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kpdd.compile.gold.augment import SUPPORTED_METHODS
from kpdd.compile.store import AugmentStats
from kpdd.config import option, redefault, save_config
from kpdd.errors import ConfigError
from kpdd.run.options import ProgramOptions, SeedOptions, TrainingQuestions
from kpdd.run.paths import default_out

logger = logging.getLogger(__name__)
TEACHER = "augment"


@dataclass(frozen=True)
class AugmentConfig(ProgramOptions, SeedOptions, TrainingQuestions):
    variants: int = option(4, "variants kept per question at most (N)", at_least=1)
    max_attempts: int = option(80, "candidates drawn per question at most (>= --variants)", at_least=1)
    batch_questions: int = option(512, "questions per batch (a kill loses at most the batch in flight)", at_least=1)
    timeout: float = option(2.0, "sandbox seconds per program", above=0)
    out: str = option("", "trace store (default kpdd-runs/traces/<program>-augment-<dataset>-<split>.jsonl)")
    program: str = redefault(ProgramOptions, "program", help="program whose gold traces are varied: kpdd-pot, pot or "
                                                              "direct", choices=SUPPORTED_METHODS)
    seed: int = redefault(SeedOptions, "seed", help="seed for the subset and the new values")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.max_attempts < self.variants:
            raise ConfigError(f"--max-attempts: expected at least --variants ({self.variants}), got {self.max_attempts}")

    def store_path(self) -> Path:
        if self.out:
            return Path(self.out)
        return default_out("traces", f"{self.program}-{TEACHER}-{Path(self.dataset).stem}-{self.split}.jsonl")


def _no_source(example, reasons: Counter) -> Any:
    from kpdd.compile.store import QuestionResult

    result = QuestionResult(example.id, gold=example.answer)
    for reason, count in reasons.items():
        result.errors[f"no gold trace: {reason.split(': ', 1)[-1]}"] += count
    return result


def _sources(teacher, examples: list) -> tuple[list, list]:
    """(sources to vary, finished results of questions that have none)."""
    from kpdd.compile.gold.augment import source_of, unchangeable
    from kpdd.compile.gold.calculations import NoTrace

    from kpdd.compile.store import QuestionResult

    sources, finished = [], []
    for example, result in zip(examples, teacher.sample_many(examples)):
        if result.failed:  # a sandbox timeout: the machine, not the question; retried on the next run
            finished.append(result)
            continue
        if not result.traces:
            finished.append(_no_source(example, result.errors))
            continue
        try:
            source = source_of(example, result.traces[0]["stages"])
        except NoTrace as reason:
            finished.append(_no_source(example, Counter({str(reason): 1})))
            continue
        if (reason := unchangeable(source)) is None:
            sources.append(source)
        else:  # one reason for the question, not one per candidate
            finished.append(QuestionResult(example.id, gold=example.answer, errors=Counter({reason: 1})))
    return sources, finished


def vary_batch(sources: list, variants: int, max_attempts: int, seed: int, timeout: float = 2.0) -> list:
    """Each source's QuestionResult: up to ``variants`` kept variants, every consumed candidate counted."""
    from kpdd.compile.gold import augment
    from kpdd.compile.store import QuestionResult
    from kpdd.sandbox.executor import execute_many

    results = {s.example.id: QuestionResult(s.example.id, gold=s.example.answer) for s in sources}
    seen = {s.example.id: {s.example.question} for s in sources}
    drawn, size = 0, 2 * variants
    while drawn < max_attempts:
        open_sources = [s for s in sources if len(results[s.example.id].traces) < variants]
        if not open_sources:
            break
        count = min(size, max_attempts - drawn)
        batch = [(s, v, augment.check_variant(s, v)) for s in open_sources
                 for v in augment.candidates(s, seed, drawn, count)]
        runs = iter(execute_many([v.program for _, v, problem in batch if problem is None], timeout))
        for source, variant, problem in batch:
            run = next(runs) if problem is None else None
            result = results[source.example.id]
            if len(result.traces) >= variants:
                continue  # candidates past the N-th kept one are not consumed
            result.samples += 1
            problem = problem or _run_problem(run, source, variant, seen[source.example.id])
            if problem:
                result.errors[problem] += 1
                continue
            variant.answer = augment.variant_answer(run.value, source.example.answer)
            variant.stages = augment.rewrite_stages(source, variant)
            seen[source.example.id].add(variant.question)
            result.correct += 1
            result.traces.append(augment.as_trace(source, variant))
        drawn, size = drawn + count, 2 * size
    return list(results.values())


def _run_problem(run, source, variant, seen: set[str]) -> str | None:
    from kpdd.compile.gold.augment import variant_problem

    if variant.question in seen:
        return "duplicate variant"
    if run.error is not None:
        return f"program error ({run.error})"
    return variant_problem(source, variant, run.value)


def augment_examples(examples: list, method: str, store, header: dict[str, Any], variants: int = 4,
                     max_attempts: int = 80, seed: int = 0, batch_questions: int = 512, timeout: float = 2.0,
                     progress: bool = True) -> AugmentStats:
    """Vary the pending questions batch by batch into ``store``; returns its stats plus this run's throughput."""
    from tqdm import tqdm

    from kpdd.compile.gold.augment import check_method
    from kpdd.compile.gold import GoldTeacher
    from kpdd.compile.traces import check_store_matches

    check_method(method)
    if variants < 1 or max_attempts < variants:
        raise ConfigError(f"need 1 <= variants <= max_attempts, got variants={variants}, max_attempts={max_attempts}")
    store.repair()
    check_store_matches(store, header)
    pending_ids = set(store.pending(e.id for e in examples))
    pending = [e for e in examples if e.id in pending_ids]
    teacher = GoldTeacher(method, timeout=timeout)
    bar = tqdm(total=len(examples), initial=len(examples) - len(pending), desc=f"augment {method}", unit="q",
               disable=not progress, dynamic_ncols=True)
    start, made = time.perf_counter(), 0
    for offset in range(0, len(pending), max(1, batch_questions)):
        batch = pending[offset: offset + batch_questions]
        sources, finished = _sources(teacher, batch)
        for result in [*finished, *vary_batch(sources, variants, max_attempts, seed, timeout)]:
            store.append(result, header)
            made += len(result.traces)
        bar.update(len(batch))
        bar.set_postfix(variants=made, refresh=False)
    bar.close()
    elapsed = time.perf_counter() - start
    return AugmentStats(**vars(store.stats()), new_variants=made, seconds=round(elapsed, 2),
                        variants_per_s=made / elapsed if elapsed > 0 and made else 0.0)


def run_augment(config: AugmentConfig, progress: bool = True) -> AugmentStats:
    """``kpdd augment``: load the questions, vary them into the store; returns the store's stats and this run's
    throughput."""
    from kpdd.compile.gold.augment import AUGMENT_VERSION, check_method
    from kpdd.compile.store import TraceStore
    from kpdd.data import load_dataset

    check_method(config.program)
    examples = load_dataset(config.dataset, config.split, limit=config.limit, seed=config.seed)
    header = {"method": config.program, "teacher": TEACHER, "dataset": Path(config.dataset).stem,
              "split": config.split, "meta": {"variants": config.variants, "seed": config.seed,
                                              "version": AUGMENT_VERSION}}
    store = TraceStore(config.store_path())
    save_config(config, store.path)
    return augment_examples(examples, config.program, store, header, config.variants, config.max_attempts,
                            config.seed, config.batch_questions, config.timeout, progress)
