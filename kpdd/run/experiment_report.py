"""The experiment's report in its output folder (``--out``):

    results.md, results.json  the results table (accuracy with 95 % intervals, throughput, MFU) and every figure
    student-kpdd-pot.tar.gz   the LoRA student (kpdd.json + bf16 adapter): the shipped student, once committed
    mlflow.db                 the MLflow store (runs, params, metrics, tags) as one SQLite file, where it is one
    predictions.tar.xz        each run's per-question predictions (JSONL)

The archives are built in ``<work>/report`` and moved in that order while they fit ``--max-files`` (counting files
already in the folder, such as a wrapper's log) and ``--max-file-mb``; one that does not fit stays there, and the
results say so. The results files always go.
"""

from __future__ import annotations

import io
import json
import logging
import shutil
import sqlite3
import tarfile
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

RESULT_FILES = ("results.md", "results.json")
STUDENT_ARCHIVE = "student-kpdd-pot.tar.gz"
ARCHIVES = (STUDENT_ARCHIVE, "mlflow.db", "predictions.tar.xz")  # in the order they claim the folder's room
SHIPPED_NAME = "kpdd-pot"
MB = 10**6

# The papers' averages over the four sets, for the table.
ANCHORS = {"Socratic CoT, GPT-2-large": 21.1, "KPDD-CoT, FlanT5-Large": 24.7, "PoTD, CodeT5+-770M": 44.9,
           "KPDD-PoT, FlanT5-Large": 63.8}
DATASETS = ("gsm8k", "svamp", "asdiv", "multiarith")


def write_outputs(results: dict[str, Any], work: Path, out: Path, store: Path | None = None,
                  max_files: int | None = None, max_file_mb: float | None = None) -> None:
    """The report in ``out`` (see the module docstring); ``store`` is the SQLite file of the MLflow store, if any."""
    built = work / "report"
    built.mkdir(parents=True, exist_ok=True)
    write_predictions(results["runs"], built / "predictions.tar.xz")
    shipped = next((r for r in results["runs"] if r.get("lora") and r.get("status") == "done"), None)
    if shipped:
        write_student_archive(Path(shipped["student_dir"]) / "all", built / STUDENT_ARCHIVE)
    else:
        (built / STUDENT_ARCHIVE).unlink(missing_ok=True)
        results["notes"].append("no LoRA student was trained: no student archive")
    (built / "mlflow.db").unlink(missing_ok=True)
    if store is not None:
        copy_sqlite(store, built / "mlflow.db")
    results["notes"] += place_archives(built, out, max_files, max_file_mb)
    results["files"] = {}
    (out / "results.md").write_text(results_markdown(results))
    (out / "results.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    results["files"] = {path.name: path.stat().st_size for path in sorted(out.iterdir()) if path.is_file()}
    (out / "results.json").write_text(json.dumps(results, indent=2, default=str) + "\n")


def place_archives(built: Path, out: Path, max_files: int | None, max_file_mb: float | None) -> list[str]:
    """Move the archives from ``built`` into ``out`` in :data:`ARCHIVES` order while they fit the caps; returns a
    note for each one left behind. The results files are counted as written; an earlier report's archives go."""
    out.mkdir(parents=True, exist_ok=True)
    for name in ARCHIVES:
        (out / name).unlink(missing_ok=True)
    others = [p for p in out.iterdir() if p.name not in RESULT_FILES]
    room = None if max_files is None else max_files - len(RESULT_FILES) - len(others)
    notes = []
    for name in ARCHIVES:
        path = built / name
        if not path.is_file():
            continue
        size = path.stat().st_size
        if max_file_mb is not None and size > max_file_mb * MB:
            notes.append(f"{name} ({size / MB:.1f} MB) is over --max-file-mb {max_file_mb:g}: left in {path}")
        elif room is not None and room <= 0:
            notes.append(f"{name} does not fit --max-files {max_files}: left in {path}")
        else:
            shutil.move(path, out / name)
            room = None if room is None else room - 1
    for note in notes:
        logger.warning("%s", note)
    return notes


def write_predictions(runs: list[dict], target: Path) -> None:
    with tarfile.open(target, "w:xz", preset=3) as archive:
        for run in runs:
            path = Path(run.get("eval", {}).get("predictions", ""))
            if run.get("status") == "done" and path.is_file():
                archive.add(path, arcname=f"{run['name']}.jsonl")


def write_student_archive(student: Path, target: Path) -> None:
    """kpdd.json and the adapter, its weights cast to bf16 (half the size; the base computes in bf16 on GPUs)."""
    import torch
    from safetensors.torch import load_file, save

    weights = load_file(student / "adapter" / "adapter_model.safetensors")
    buffer = io.BytesIO(save({k: v.to(torch.bfloat16) for k, v in weights.items()}))
    with tarfile.open(target, "w:gz") as archive:
        archive.add(student / "kpdd.json", arcname=f"{SHIPPED_NAME}/kpdd.json")
        archive.add(student / "adapter" / "adapter_config.json", arcname=f"{SHIPPED_NAME}/adapter/adapter_config.json")
        info = tarfile.TarInfo(f"{SHIPPED_NAME}/adapter/adapter_model.safetensors")
        info.size = len(buffer.getvalue())
        archive.addfile(info, buffer)


def sqlite_file(tracking_uri: str) -> Path | None:
    """The file of a ``sqlite:///`` tracking URI (``sqlite:////abs/path`` or a relative path); None for others."""
    prefix = "sqlite:///"
    return Path(tracking_uri[len(prefix):]) if tracking_uri.startswith(prefix) else None


def copy_sqlite(source: Path, target: Path) -> None:
    """A consistent copy of the store (SQLite's backup API), compacted."""
    if not source.is_file():
        return
    target.unlink(missing_ok=True)
    with sqlite3.connect(source) as src, sqlite3.connect(target) as dst:
        src.backup(dst)
    with sqlite3.connect(target) as db:
        db.execute("VACUUM")


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f}"


def results_markdown(results: dict[str, Any]) -> str:
    budget = results["config"].get("budget_s")
    lines = ["# Experiment results", "",
             f"Device {results['config']['device']}, {'no budget' if budget is None else f'budget {budget:.0f} s'}, "
             f"used {results.get('used_s', 0):.0f} s. Accuracy in % with the 95 % Wilson interval; average = mean of "
             "the four sets.", "",
             "| run | status | traces | train tokens | train s | tokens/s | MFU | "
             + " | ".join(DATASETS) + " | average | eval s | output tokens/s |",
             "|" + "---|" * (10 + len(DATASETS))]
    for run in results["runs"]:
        acc, train, ev = run.get("accuracy", {}), run.get("train", {}), run.get("eval", {})
        cells = [f"{_pct(acc[d]['accuracy'])} [{_pct(acc[d]['ci95'][0])}, {_pct(acc[d]['ci95'][1])}] (n={acc[d]['n']})"
                 if d in acc else "–" for d in DATASETS]
        mfu = train.get("mfu")
        lines.append(" | ".join([
            f"| {run['name']}", run.get("status", "?").split(":")[0], str(run.get("data", {}).get("traces", "–")),
            str(train.get("tokens", "–")), str(train.get("s", "–")), str(train.get("tokens_per_s", "–")),
            "–" if mfu is None else f"{100 * mfu:.1f} %", *cells, _pct(run.get("average")), str(ev.get("s", "–")),
            str(ev.get("output_tokens_per_s", "–"))]) + " |")
    lines += ["", "Papers' averages over the four sets: "
              + "; ".join(f"{name} {value} %" for name, value in ANCHORS.items()) + ".", ""]
    skipped = [r for r in results["runs"] if r.get("status", "").startswith(("skipped", "failed"))]
    if skipped:
        lines += ["Not run:", *[f"- {r['name']}: {r['status']}" for r in skipped], ""]
    if trl := results.get("trl_comparison"):
        lines += [f"Training throughput on the same {trl['records']} {trl['program']} records ({trl['tokens']} "
                  f"tokens, full fine-tune): TRL SFTTrainer defaults {trl['trl_defaults_tokens_per_s']} tokens/s, "
                  f"kpdd's trainer {trl['kpdd_tokens_per_s']} tokens/s: {trl['speed_up']}x.", ""]
    if results["notes"]:
        lines += ["Notes:", *[f"- {note}" for note in results["notes"]], ""]
    return "\n".join(lines)
