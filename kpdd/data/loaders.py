"""Loaders for the benchmark sets (GSM8K, SVAMP, ASDiv, MultiArith) and for users' own JSON/JSONL files.

Every loader yields :class:`Record`s. A malformed row raises :class:`DataError` naming the file, the row and
the field; ASDiv rows whose answer is not a single number are skipped, counted by reason and logged.
"""

from __future__ import annotations

import json
import logging
import os
import re
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Callable, Iterator
from functools import lru_cache
from pathlib import Path
from typing import Any

import dspy

from kpdd import jsonl
from kpdd.data.records import LoadedSplit, Record, sample_records
from kpdd.errors import DataError, unknown_name

logger = logging.getLogger(__name__)

_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


def resolve_data_dir(path: str | Path | None = None) -> Path:
    """The dataset directory: ``path``, else ``$KPDD_DATA_DIR``, else ``../shared/data`` beside the project."""
    if path is not None or os.environ.get("KPDD_DATA_DIR"):
        chosen = Path(path if path is not None else os.environ["KPDD_DATA_DIR"]).expanduser()
        if not chosen.is_dir():
            raise DataError(f"dataset directory {chosen} does not exist")
        return chosen
    project_root = Path(__file__).resolve().parents[2]
    candidates = [project_root.parent / "shared" / "data", Path.cwd().parent / "shared" / "data",
                  Path.cwd() / "shared" / "data"]
    for candidate in candidates:
        if candidate.is_dir():
            return candidate
    looked = ", ".join(str(c) for c in candidates)
    raise DataError(f"no dataset directory found (looked in {looked}); set KPDD_DATA_DIR or pass data_dir")


def _number(text: Any, where: str, field: str) -> float:
    """A gold answer that must be one number ('1,234', '72', 5.0)."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        return float(text)
    cleaned = str(text).strip().replace(",", "")
    if not _NUMBER.fullmatch(cleaned):
        raise DataError(f"{where}: field {field!r}: expected a number, got {str(text)[:60]!r}")
    return float(cleaned)


def _field(row: dict, name: str, where: str) -> Any:
    if not isinstance(row, dict):
        raise DataError(f"{where}: expected a JSON object, got {type(row).__name__}")
    if row.get(name) in (None, ""):
        raise DataError(f"{where}: missing field {name!r} (fields present: {', '.join(row) or 'none'})")
    return row[name]


def _json_rows(path: Path) -> Iterator[tuple[str, dict]]:
    """(where, row) pairs of a JSONL file (one object per line) or a JSON file holding a list of objects."""
    if not path.is_file():
        raise DataError(f"dataset file {path} does not exist")
    if path.suffix == ".jsonl":
        for lineno, row in jsonl.numbered(path, skip_torn=False):
            yield f"{path} line {lineno}", row
        return
    try:
        rows = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from None
    if not isinstance(rows, list):
        raise DataError(f"{path}: expected a JSON list of objects, got {type(rows).__name__}")
    for index, row in enumerate(rows):
        yield f"{path} row {index}", row


# GSM8K ------------------------------------------------------------------------------------------------

def _gsm8k(path: Path, split: str) -> LoadedSplit:
    records = []
    for index, (where, row) in enumerate(_json_rows(path)):
        question = _field(row, "question", where)
        solution = _field(row, "answer", where)
        rationale, marker, final = solution.rpartition("####")
        if not marker:
            raise DataError(f"{where}: field 'answer': expected a rationale ending in '#### <number>'")
        lines = [line for line in rationale.strip().split("\n") if line.strip()]
        sub_questions = None
        if split.endswith("socratic"):
            # Each line is 'Sub-question? ** step'; keep the steps as the rationale.
            pairs = [line.partition(" ** ") for line in lines]
            if any(not sep for _, sep, _ in pairs):
                raise DataError(f"{where}: field 'answer': expected every line as 'sub-question ** step'")
            sub_questions = tuple(q.strip() for q, _, _ in pairs)
            lines = [step.strip() for _, _, step in pairs]
        records.append(Record(id=f"gsm8k-{split}-{index:05d}", dataset="gsm8k", split=split,
                              question=question.strip(), answer=_number(final, where, "answer"),
                              rationale="\n".join(lines), sub_questions=sub_questions))
    return LoadedSplit(records)


# SVAMP, MultiArith ------------------------------------------------------------------------------------

def _svamp(path: Path, split: str) -> LoadedSplit:
    records = []
    for where, row in _json_rows(path):
        body, question = _field(row, "Body", where).strip(), _field(row, "Question", where).strip()
        records.append(Record(id=f"svamp-{_field(row, 'ID', where)}", dataset="svamp", split=split,
                              question=f"{body} {question}", answer=_number(_field(row, "Answer", where), where, "Answer"),
                              equation=str(row.get("Equation", "")).strip() or None))
    return LoadedSplit(records)


def _multiarith(path: Path, split: str) -> LoadedSplit:
    records = []
    for where, row in _json_rows(path):
        solutions = _field(row, "lSolutions", where)
        if not isinstance(solutions, list) or len(solutions) != 1:
            raise DataError(f"{where}: field 'lSolutions': expected a list of one number, got {solutions!r}")
        equations = row.get("lEquations") or [None]
        records.append(Record(id=f"multiarith-{_field(row, 'iIndex', where)}", dataset="multiarith", split=split,
                              question=" ".join(_field(row, "sQuestion", where).split()),
                              answer=_number(solutions[0], where, "lSolutions"), equation=equations[0]))
    return LoadedSplit(records)


# ASDiv ------------------------------------------------------------------------------------------------

_ASDIV_NUMBER = re.compile(r"\s*-?\(?(-?\d+(?:\.\d+)?(?:/\d+)?)\)?\s*(?:\(.*\))?\s*")
_ASDIV_SKIP_REASONS = [  # (reason, pattern) tried in order on answers that are not one number
    ("multiple numbers", re.compile(r"^[\d\s.;-]+;[\d\s.;]+$")),
    ("clock time", re.compile(r"\d{1,2}:\d{2}(:\d{2})?\s*([ap]\.m\.)?", re.IGNORECASE)),
    ("ratio", re.compile(r"^\s*\d+\s*:\s*\d+\s*$")),
]


def asdiv_answer(text: str) -> tuple[float | None, str | None]:
    """ASDiv's '9 (apples)', '5/2', '-(1/3)' → a number; '3:2', 'Yes', '5:45' → (None, reason)."""
    match = _ASDIV_NUMBER.fullmatch(text or "")
    if match:
        numerator, _, denominator = match.group(1).partition("/")
        value = float(numerator) / float(denominator) if denominator else float(numerator)
        return (-value if text.strip().startswith("-(") else value), None
    for reason, pattern in _ASDIV_SKIP_REASONS:
        if pattern.search(text or ""):
            return None, reason
    return None, "not a number"


def _asdiv(path: Path, split: str) -> LoadedSplit:
    if not path.is_file():
        raise DataError(f"dataset file {path} does not exist")
    try:
        problems = ET.parse(path).getroot().iter("Problem")
    except ET.ParseError as e:
        raise DataError(f"{path}: not valid XML ({e})") from None
    records, skipped = [], Counter()
    for problem in problems:
        pid = problem.get("ID")
        where = f"{path} problem {pid}"
        if not pid:
            raise DataError(f"{path}: a <Problem> has no ID attribute")
        texts = {tag: (problem.findtext(tag) or "").strip() for tag in ("Body", "Question", "Answer", "Formula")}
        for tag in ("Body", "Question", "Answer"):
            if not texts[tag]:
                raise DataError(f"{where}: missing <{tag}>")
        answer, reason = asdiv_answer(texts["Answer"])
        if answer is None:
            skipped[reason] += 1
            continue
        records.append(Record(id=f"asdiv-{pid}", dataset="asdiv", split=split,
                              question=f"{texts['Body']} {texts['Question']}", answer=answer,
                              equation=texts["Formula"] or None))
    if skipped:
        detail = ", ".join(f"{reason}: {n}" for reason, n in skipped.most_common())
        logger.info("asdiv: skipped %d rows whose answer is not a single number (%s)", sum(skipped.values()), detail)
    return LoadedSplit(records, dict(skipped))


# Registry ---------------------------------------------------------------------------------------------

Parser = Callable[[Path, str], LoadedSplit]
# name → (default split, {split: (file relative to the data directory, parser)})
DATASETS: dict[str, tuple[str, dict[str, tuple[str, Parser]]]] = {
    "gsm8k": ("test", {"train": ("gsm8k/train.jsonl", _gsm8k), "test": ("gsm8k/test.jsonl", _gsm8k),
                       "test_socratic": ("gsm8k/test_socratic.jsonl", _gsm8k)}),
    "svamp": ("test", {"test": ("svamp/SVAMP.json", _svamp)}),
    "asdiv": ("test", {"test": ("asdiv/ASDiv.xml", _asdiv)}),
    "multiarith": ("test", {"test": ("multiarith/MultiArith.json", _multiarith)}),
}
EVAL_DATASETS = ("gsm8k", "svamp", "asdiv", "multiarith")


@lru_cache(maxsize=32)
def _read_cached(name: str, split: str, path: Path, mtime: float) -> LoadedSplit:
    return DATASETS[name][1][split][1](path, split)


def read_split(name: str, split: str | None = None, data_dir: str | Path | None = None) -> LoadedSplit:
    """All records of a dataset split with the skip counts (parsed once per process and file version)."""
    if name not in DATASETS:
        raise unknown_name("dataset", name, DATASETS)
    default_split, splits = DATASETS[name]
    split = split or default_split
    if split not in splits:
        raise unknown_name(f"split of {name}", split, splits)
    path = resolve_data_dir(data_dir) / splits[split][0]
    if not path.is_file():
        raise DataError(f"dataset file {path} does not exist")
    return _read_cached(name, split, path, path.stat().st_mtime)


def load_file(path: str | Path, question_field: str = "question", answer_field: str = "answer",
              id_field: str | None = None, rationale_field: str | None = None, name: str | None = None) -> LoadedSplit:
    """A user's JSONL/JSON file with named fields. The answer is a number, or a GSM8K-style rationale
    ending in '#### <number>' (the text before the marker becomes the rationale)."""
    path = Path(path)
    name = name or path.stem
    records = []
    for index, (where, row) in enumerate(_json_rows(path)):
        answer = _field(row, answer_field, where)
        rationale = row.get(rationale_field) if rationale_field else None
        if isinstance(answer, str) and "####" in answer:
            rationale, _, answer = answer.rpartition("####")
            rationale = rationale.strip()
        rid = str(_field(row, id_field, where)) if id_field else f"{name}-{index:05d}"
        records.append(Record(id=rid, dataset=name, split="file", question=str(_field(row, question_field, where)).strip(),
                              answer=_number(answer, where, answer_field), rationale=rationale))
    return LoadedSplit(records)


def load_records(name: str, split: str | None = None, data_dir: str | Path | None = None,
                 limit: int | None = None, seed: int = 0) -> list[Record]:
    """Records of a shipped dataset (by name) or of a user file (by path), optionally a seeded subset."""
    if name not in DATASETS and Path(name).suffix in (".json", ".jsonl"):
        loaded = load_file(name)
    else:
        loaded = read_split(name, split, data_dir)
    return sample_records(loaded.records, limit, seed)


def load_examples(path: str | Path, inputs: list[str] | tuple[str, ...], numeric_answer: bool = False,
                  name: str | None = None) -> list[dspy.Example]:
    """A user program's JSONL/JSON file: each row holds the program's ``forward`` inputs under their own names;
    every other field is a label for the metric (``id``, when present, names the row). ``numeric_answer``: the
    ``answer`` label must be a number (the default metric's)."""
    path = Path(path)
    name = name or path.stem
    examples = []
    for index, (where, row) in enumerate(_json_rows(path)):
        fields = {field: _field(row, field, where) for field in inputs}
        labels = {k: v for k, v in row.items() if k not in fields}
        if numeric_answer:
            labels["answer"] = _number(_field(row, "answer", where), where, "answer")
        rid = str(labels.pop("id", None) or f"{name}-{index:05d}")
        examples.append(dspy.Example(id=rid, dataset=name, split="file", **labels, **fields).with_inputs(*inputs))
    return examples


def load_dataset(name: str, split: str | None = None, data_dir: str | Path | None = None,
                 limit: int | None = None, seed: int = 0, inputs: list[str] | tuple[str, ...] | None = None,
                 numeric_answer: bool = True) -> list:
    """``dspy.Example``s of a dataset split or a user file: see :func:`load_records` (input ``question``, numeric
    ``answer``). ``inputs``: the program's ``forward`` arguments; a file then gives them under their own names (and
    with ``numeric_answer`` False, any labels), see :func:`load_examples`."""
    inputs = tuple(inputs or ("question",))
    if inputs == ("question",) and (numeric_answer or name in DATASETS):
        return [record.to_example() for record in load_records(name, split, data_dir, limit, seed)]
    if name in DATASETS or Path(name).suffix not in (".json", ".jsonl"):
        raise DataError(f"dataset {name!r} gives an input 'question' and a numeric 'answer'; the program takes "
                        f"{', '.join(inputs)}: pass a JSON/JSONL file whose rows hold those fields")
    return sample_records(load_examples(name, inputs, numeric_answer), limit, seed)
