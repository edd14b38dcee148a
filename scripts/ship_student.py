"""Ship a trained LoRA student with the package: ``kpdd/students/<name>``, served as ``shipped:<name>``.

Copies the student's ``kpdd.json`` and its adapter, the adapter's weights stored in bf16 (half the size; the engines
compute in bf16 or upcast on load), and records how it was made.

    python scripts/ship_student.py STUDENT_DIR NAME --how "what it is and the command that made it" [--max-mb 16]
"""

import argparse
import json
import shutil
from pathlib import Path


def ship(student_dir: Path, name: str, how: str, max_mb: float) -> Path:
    import torch
    from safetensors.torch import load_file, save_file

    from kpdd.finetune.student import read_student
    from kpdd.references import SHIPPED_STUDENTS_DIR, STUDENT_FILE

    ref = read_student(student_dir)
    if ref.adapter_path is None:
        raise SystemExit(f"{student_dir}: a full fine-tune; only a LoRA adapter is shipped")
    target = SHIPPED_STUDENTS_DIR / name
    if target.exists():
        shutil.rmtree(target)
    (target / "adapter").mkdir(parents=True)
    shutil.copy(ref.adapter_path / "adapter_config.json", target / "adapter")
    weights = load_file(ref.adapter_path / "adapter_model.safetensors")
    save_file({key: value.to(torch.bfloat16) for key, value in weights.items()},
              target / "adapter" / "adapter_model.safetensors")
    record = json.loads((Path(student_dir) / STUDENT_FILE).read_text())
    record["adapter"] = "adapter"
    record["train"] = {**record.get("train", {}), "shipped": how}
    (target / STUDENT_FILE).write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    size = sum(f.stat().st_size for f in target.rglob("*") if f.is_file()) / 1e6
    if size > max_mb:
        shutil.rmtree(target)
        raise SystemExit(f"{target}: {size:.1f} MB, more than --max-mb {max_mb:g}; train a smaller rank")
    print(f"shipped {student_dir} as shipped:{name} ({target}, {size:.1f} MB)")
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("student_dir", type=Path)
    parser.add_argument("name")
    parser.add_argument("--how", required=True, help="what the student is and the command that made it")
    parser.add_argument("--max-mb", type=float, default=16.0, help="refuse a student larger than this")
    args = parser.parse_args()
    ship(args.student_dir, args.name, args.how, args.max_mb)


if __name__ == "__main__":
    main()
