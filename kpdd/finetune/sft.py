"""Traces → fine-tuning data, in the exact chat messages the DSPy adapter will send at inference.

Each stage call of a trace becomes one ``{"messages": [system, user, assistant]}`` record, formatted by the
students' adapter's ``format_finetune_data`` (kpdd's compact format by default, DSPy's ``ChatAdapter`` for
comparison) with the student program's own signature for that predictor, so the student is trained on precisely
the prompts it will see; a one-call student gets one record per trace instead. The train/validation split is by
question, so no question's stages leak across it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import dspy

from kpdd import jsonl
from kpdd.compile.store import source_question_id
from kpdd.errors import DataError
from kpdd.modules.one_call import (
    ONE,
    ONE_CALL_PREDICTOR,
    PER_STAGE,
    STUDENT_CALLS,
    one_call_example,
    one_call_names,
    one_call_signature,
    repeated_predictors,
)
from kpdd.modules.saved import student_adapter
from kpdd.modules.student_format import STUDENT


def is_validation(key: str, val_fraction: float, seed: int = 0) -> bool:
    """The one validation split: a stable, seeded coin per key (a question id; for DSPy's records, which carry
    none, their messages), so the same question always lands on the same side, and a variant of a question
    (``kpdd augment``) on its source's side, so no variant of a held-out question is trained on."""
    digest = hashlib.sha256(f"{seed}:{source_question_id(key)}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < val_fraction


def format_stage(signature: type[dspy.Signature], stage: dict[str, Any], adapter: dspy.ChatAdapter) -> dict:
    record = adapter.format_finetune_data(signature=signature, demos=[], inputs=stage["inputs"],
                                          outputs=stage["outputs"])
    return {"messages": record["messages"]}


def build_sft_data(traces: Iterable[dict], program: dspy.Module, val_fraction: float = 0.1, seed: int = 0,
                   predictors: list[str] | None = None, prompt_format: str = STUDENT,
                   student_calls: str = PER_STAGE) -> dict[str, dict[str, list[dict]]]:
    """``{predictor: {"train": [...], "validation": [...]}}`` for the program's predictors (or a chosen few).

    Multitask training concatenates every predictor's records (:func:`merge_tasks`); per-stage training uses
    one entry each. ``student_calls="one"`` gives one record per trace under ``one_call``: every stage's outputs
    in one completion (:mod:`kpdd.modules.one_call`).
    """
    adapter = student_adapter(prompt_format)
    if student_calls == ONE:
        return _one_call_data(list(traces), program, adapter, val_fraction, seed)
    if student_calls != PER_STAGE:
        raise DataError(f"student calls {student_calls!r}: expected {' or '.join(STUDENT_CALLS)}")
    signatures = {name: predictor.signature for name, predictor in program.named_predictors()}
    wanted = predictors or list(signatures)
    unknown = [p for p in wanted if p not in signatures]
    if unknown:
        raise DataError(f"predictor {unknown[0]!r} is not in the program (it has {', '.join(signatures)})")
    data = {name: {"train": [], "validation": []} for name in wanted}
    for trace in traces:
        side = "validation" if is_validation(trace["question_id"], val_fraction, seed) else "train"
        for stage in trace["stages"]:
            name = stage["predictor"]
            if name not in signatures:
                raise DataError(f"trace {trace['id']} (question {trace['question_id']}): stage {name!r} is not a "
                                f"predictor of the student program ({', '.join(signatures)}); wrong --program?")
            if name in data:
                data[name][side].append(format_stage(signatures[name], stage, adapter))
    return data


def _one_call_data(traces: list[dict], program: dspy.Module, adapter: dspy.ChatAdapter, val_fraction: float,
                   seed: int) -> dict[str, dict[str, list[dict]]]:
    repeated = repeated_predictors(traces)
    signature, names = one_call_signature(program, repeated), one_call_names(program)
    data = {"train": [], "validation": []}
    for trace in traces:
        inputs, outputs = one_call_example(trace, signature, repeated, names)
        side = "validation" if is_validation(trace["question_id"], val_fraction, seed) else "train"
        data[side].append(format_stage(signature, {"inputs": inputs, "outputs": outputs}, adapter))
    return {ONE_CALL_PREDICTOR: data}


def merge_tasks(data: dict[str, dict[str, list[dict]]]) -> dict[str, list[dict]]:
    """All predictors' records in one set: one multitask student for every stage."""
    return {side: [record for task in data.values() for record in task[side]] for side in ("train", "validation")}


def write_jsonl(records: list[dict], path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    return path


def read_jsonl(path: str | Path) -> list[dict]:
    """Chat records from a JSONL file; a line without a 'messages' list is an error naming the line."""
    records = []
    for lineno, record in jsonl.numbered(path, skip_torn=False):
        if not isinstance(record.get("messages"), list) or record["messages"][-1].get("role") != "assistant":
            raise DataError(f"{path} line {lineno}: field 'messages': expected a list ending with an assistant message")
        records.append(record)
    return records
