"""``kpdd export``: a student or a compiled program as merged Hugging Face checkpoints that a server loads as is.

After ``vllm serve <out>/students/<name> --served-model-name <name>`` (or ``vllm serve <out>`` for a single
student), ``kpdd eval --program <out> --lm openai/<name> --api-base http://127.0.0.1:8000/v1`` evaluates the
served student with the program and prompt format it was trained with.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kpdd.config import option
from kpdd.errors import ConfigError


@dataclass(frozen=True)
class ExportConfig:
    lm: str = option("", "what to export (required): a compiled-program directory (every student in it) or a "
                         "student directory")
    out: str = option("", "output directory (required; a compiled program: the program files and students/<name>/ "
                          "checkpoints; a student: the checkpoint itself)")


def run_export(config: ExportConfig) -> dict[str, Any]:
    """Export and return ``{"out", "program" (a compiled program's registry name or None), "students"}``, where
    ``students`` maps each exported checkpoint to the model id to serve it under."""
    from kpdd.modules.saved import MANIFEST, manifest_program
    from kpdd.finetune.export import export_compiled, export_student
    from kpdd.finetune.student import read_student

    if not config.lm or not config.out:
        raise ConfigError("export needs --lm <compiled program or student directory> and --out <directory>")
    source, out = Path(config.lm), Path(config.out)
    if out.resolve() == source.resolve():
        raise ConfigError(f"--out {out} is the source itself: export into a new directory")
    if (source / MANIFEST).is_file():
        checkpoints, program = list(export_compiled(source, out).values()), manifest_program(source)
    else:
        checkpoints, program = [export_student(source, out)], None
    return {"out": str(out), "program": program,
            "students": {str(path): read_student(path).model_id for path in checkpoints}}
