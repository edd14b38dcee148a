"""The GPU experiment's output folder: at most 8 files of at most 16 MB each (``--out``).

    mlflow.db                 the MLflow store (runs, params, metrics, tags) as one SQLite file
    results.md, results.json  the results table (accuracy with 95 % intervals, throughput, MFU) and every figure
    predictions.tar.xz        each run's per-question predictions (JSONL)
    student-kpdd-pot.tar.gz   the LoRA student (kpdd.json + bf16 adapter): the shipped student, once committed
    experiment.log            the log (written by scripts/gpu-experiment)
"""

from __future__ import annotations

import io
import json
import logging
import sqlite3
import tarfile
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

MAX_FILE_BYTES = 16 * 10**6
OUTPUT_FILES = ("mlflow.db", "results.md", "results.json", "predictions.tar.xz", "student-kpdd-pot.tar.gz",
                "experiment.log")
STUDENT_ARCHIVE = "student-kpdd-pot.tar.gz"
SHIPPED_NAME = "kpdd-pot"

# The papers' averages over the four sets, for the table.
ANCHORS = {"Socratic CoT, GPT-2-large": 21.1, "KPDD-CoT, FlanT5-Large": 24.7, "PoTD, CodeT5+-770M": 44.9,
           "KPDD-PoT, FlanT5-Large": 63.8}
DATASETS = ("gsm8k", "svamp", "asdiv", "multiarith")


def write_outputs(results: dict[str, Any], work: Path, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    write_predictions(results["runs"], out / "predictions.tar.xz")
    shipped = next((r for r in results["runs"] if r.get("lora") and r.get("status") == "done"), None)
    if shipped:
        write_student_archive(Path(shipped["student_dir"]) / "all", out / STUDENT_ARCHIVE)
    else:
        results["notes"].append("no LoRA student was trained: no student archive")
    copy_sqlite(work / "mlflow.db", out / "mlflow.db")
    results["files"] = {}
    (out / "results.md").write_text(results_markdown(results))
    (out / "results.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    for path in sorted(out.iterdir()):
        results["files"][path.name] = path.stat().st_size
        if path.stat().st_size > MAX_FILE_BYTES:
            logger.error("%s is %d bytes, over the 16 MB an output file may have", path, path.stat().st_size)
    (out / "results.json").write_text(json.dumps(results, indent=2, default=str) + "\n")


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
    lines = ["# GPU experiment results", "",
             f"Device {results['config']['device']}, budget {results['config']['budget_s']:.0f} s, used "
             f"{results.get('used_s', 0):.0f} s. Accuracy in % with the 95 % Wilson interval; average = mean of the "
             "four sets.", "",
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
