"""The one JSONL reader, and append-only JSONL files that survive a kill: whole-block appends, repair of a torn
last line."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from kpdd.errors import DataError


def repair(path: str | Path) -> int:
    """Cut off a torn last line left by a kill mid-write; returns the bytes removed."""
    path = Path(path)
    if not path.exists() or path.stat().st_size == 0:
        return 0
    data = path.read_bytes()
    if data.endswith(b"\n"):
        return 0
    keep = data.rfind(b"\n") + 1
    with path.open("rb+") as f:
        f.truncate(keep)
    return len(data) - keep


def append(path: str | Path, records: Iterable[dict]) -> None:
    """Append records with one ``write`` call, so a kill leaves at most a torn last line."""
    path = Path(path)
    payload = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, payload)
    finally:
        os.close(fd)


def read(path: str | Path) -> Iterator[dict]:
    """Every complete line of an append-only file; a torn last line (a kill mid-write) is skipped."""
    for _, record in numbered(path):
        yield record


def numbered(path: str | Path, skip_torn: bool = True) -> Iterator[tuple[int, dict]]:
    """(line number, record) for every non-blank line; a malformed line is an error naming it.

    ``skip_torn`` drops a last line without its newline (what a kill leaves in an append-only file); for a file
    written by hand, pass False, so that its last line counts whether or not it ends the file with a newline.
    """
    path = Path(path)
    if not path.exists():
        return
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if skip_torn and not line.endswith("\n"):
                return
            if not line.strip():
                continue
            try:
                yield lineno, json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{path} line {lineno}: not valid JSON ({e.msg})") from None


def plain(value: Any) -> Any:
    """A value as JSON can hold it: pydantic models as their dicts, tuples as lists (the rest as it is)."""
    if hasattr(value, "model_dump"):
        return value.model_dump()
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    return value
