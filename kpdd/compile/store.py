"""The trace store: append-only JSONL, one verified trace per line, that survives a kill at any moment.

Lines come in blocks, one block per question and run: the question's kept traces, then one ``question``
line that closes the block (samples drawn, traces kept, errors; or ``failed`` with the error, which makes
the next run retry it). A block is written with one ``write`` call; a reader trusts only traces whose
block was closed, and a torn last line (a kill mid-write) is cut off before the next run appends. So
rerunning the same command resumes with no lost and no duplicated record.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kpdd import jsonl
from kpdd.config import Result
from kpdd.errors import DataError

SCHEMA = 1
TRACE, QUESTION = "trace", "question"  # the two kinds of line


VARIANT_MARK = "~"  # '<source question id>~<variant>': a derived question (kpdd augment) keeps its source's id


def source_question_id(question_id: str) -> str:
    """The question a trace's question derives from: itself, or the source of a variant ('gsm8k-train-00012~a1b2')."""
    return question_id.split(VARIANT_MARK, 1)[0]


@dataclass(frozen=True)
class TraceStats(Result):
    """What a trace store holds (:meth:`TraceStore.stats`): questions attempted and failed, kept traces, coverage
    (questions with at least one kept trace), samples drawn and the share the metric kept, and the drop reasons."""

    path: Path
    questions: int
    failed: int  # retried by the next run
    traces: int
    covered: int
    coverage: float
    traces_per_question: float  # per covered question
    samples: int
    sample_accuracy: float
    errors: dict[str, int]  # drop reason -> count, most common first


@dataclass(frozen=True)
class AugmentStats(TraceStats):
    """An augment store's stats (coverage: source questions with a kept variant; errors: rejection reasons) and
    this run's throughput."""

    new_variants: int
    seconds: float
    variants_per_s: float


def trace_id(question_id: str, method: str, stages: list[dict]) -> str:
    """Stable id of a trace: the same question, method and stage outputs give the same id (dedup key)."""
    outputs = json.dumps([[s["predictor"], s["outputs"]] for s in stages], sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(f"{question_id}\x00{method}\x00{outputs}".encode()).hexdigest()[:20]


@dataclass
class QuestionResult:
    """What one question's samples gave: the correct, distinct traces, and why the others were dropped."""

    question_id: str
    gold: float | None = None
    traces: list[dict] = field(default_factory=list)  # each: {"stages": [...], "answer": ..., "meta": {...}}
    samples: int = 0
    correct: int = 0  # samples whose answer was right (before dedup)
    errors: Counter = field(default_factory=Counter)  # reason (e.g. 'wrong answer', 'parse:solve') → count
    failed: str | None = None  # set when the question could not be processed at all (retried on resume)


class TraceStore:
    """Append-only JSONL of traces. ``header`` fields (method, teacher, dataset, split, meta) go on every line."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    # Writing -------------------------------------------------------------------------------------------

    def repair(self) -> int:
        """Cut off a torn last line left by a kill mid-write; returns the bytes removed."""
        return jsonl.repair(self.path)

    def append(self, result: QuestionResult, header: dict[str, Any]) -> None:
        """Write one question's block: its new traces, then the line that closes the block."""
        block, now = uuid.uuid4().hex[:12], time.strftime("%Y-%m-%dT%H:%M:%S")
        lines = []
        for trace in result.traces:
            # A trace may name its own question and gold (a variant of the block's question, kpdd augment).
            question_id = trace.get("question_id", result.question_id)
            record = {"schema": SCHEMA, "kind": TRACE, "block": block,
                      "id": trace_id(question_id, header["method"], trace["stages"]),
                      "question_id": question_id, **header, "gold": result.gold, **trace,
                      "meta": {**header.get("meta", {}), **trace.get("meta", {})}, "created": now}
            lines.append(record)
        lines.append({"schema": SCHEMA, "kind": QUESTION, "block": block, "question_id": result.question_id,
                      "method": header["method"], "teacher": header["teacher"], "samples": result.samples,
                      "correct": result.correct, "kept": len(result.traces), "errors": dict(result.errors), "failed": result.failed,
                      "created": now})
        jsonl.append(self.path, lines)  # one write per block: a kill leaves at most a torn last line

    # Reading -------------------------------------------------------------------------------------------

    def lines(self) -> Iterator[dict]:
        """Every complete line, in order; a line of another schema version is an error naming it."""
        for lineno, record in enumerate(jsonl.read(self.path), 1):
            if record.get("schema") != SCHEMA:
                raise DataError(f"{self.path} record {lineno}: field 'schema': expected {SCHEMA}, "
                                f"got {record.get('schema')!r} (written by another kpdd version?)")
            yield record

    def _scan(self) -> tuple[list[dict], dict[str, dict]]:
        """The closed, distinct traces and each question's latest closing line."""
        pending: dict[str, list[dict]] = {}
        traces, seen, latest = [], set(), {}
        for record in self.lines():
            if record["kind"] == TRACE:
                pending.setdefault(record["block"], []).append(record)
            else:
                latest[record["question_id"]] = record
                for trace in pending.pop(record["block"], []):
                    if trace["id"] not in seen:
                        seen.add(trace["id"])
                        traces.append(trace)
        return traces, latest

    def traces(self) -> list[dict]:
        return self._scan()[0]

    def done(self) -> set[str]:
        """Question ids that need no more work: their latest block closed without failing."""
        return {qid for qid, line in self._scan()[1].items() if not line.get("failed")}

    def pending(self, question_ids: Iterable[str]) -> list[str]:
        done = self.done()
        return [qid for qid in question_ids if qid not in done]

    def stats(self) -> TraceStats:
        """Coverage (questions with ≥ 1 kept trace), traces per question, drop reasons, failures."""
        traces, latest = self._scan()
        per_question = Counter(source_question_id(t["question_id"]) for t in traces)  # variants count for their source
        attempted = [q for q, line in latest.items() if not line.get("failed")]
        errors: Counter = Counter()
        samples = correct = 0
        for line in latest.values():
            errors.update(line.get("errors") or {})
            samples += line.get("samples") or 0
            correct += line.get("correct") or 0
        covered = sum(1 for q in attempted if per_question[q])
        return TraceStats(
            path=self.path, questions=len(attempted), failed=sum(1 for line in latest.values() if line.get("failed")),
            traces=len(traces), covered=covered, coverage=covered / len(attempted) if attempted else 0.0,
            traces_per_question=len(traces) / covered if covered else 0.0,
            samples=samples, sample_accuracy=correct / samples if samples else 0.0,
            errors=dict(errors.most_common()),
        )
