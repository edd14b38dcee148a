"""``kpdd export``: a student or a compiled program as merged Hugging Face checkpoints that a server loads as is.

After ``vllm serve <out>/students/<name> --served-model-name <name>`` (or ``vllm serve <out>`` for a single
student), ``kpdd eval --program <out> --lm openai/<name> --api-base http://127.0.0.1:8000/v1`` evaluates the
served student with the program and prompt format it was trained with.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from kpdd.config import Result, option
from kpdd.errors import ConfigError
from kpdd.references import parse_local_lm, parse_lm


@dataclass(frozen=True)
class ExportConfig:
    lm: str = option("", "what to export (required): a compiled-program directory (every student in it) or a "
                         "student directory")
    out: str = option("", "output directory (required; a compiled program: the program files and students/<name>/ "
                          "checkpoints; a student: the checkpoint itself)")


@dataclass(frozen=True)
class ExportResult(Result):
    """What ``kpdd export`` wrote: the output directory, the compiled program's reference (None for a student), and
    each exported checkpoint with the model id to serve it under."""

    out: Path
    program: str | None
    students: dict[Path, str]


def run_export(config: ExportConfig) -> ExportResult:
    """Export a compiled program (every student in it) or one local model as merged checkpoints."""
    from kpdd.finetune.export import export_compiled, export_student
    from kpdd.finetune.student import read_student
    from kpdd.modules.saved import manifest_program

    if not config.lm or not config.out:
        raise ConfigError("export needs --lm <compiled program or student directory> and --out <directory>")
    source, out = parse_lm(config.lm, "--lm"), Path(config.out)
    if source.path is not None and out.resolve() == source.path.resolve():
        raise ConfigError(f"--out {out} is the source itself: export into a new directory")
    if source.is_compiled:
        checkpoints, program = list(export_compiled(source.path, out).values()), manifest_program(source.path)
    else:
        checkpoints, program = [export_student(parse_local_lm(source, "--lm"), out)], None
    return ExportResult(out=out, program=program, students={path: read_student(path).model_id for path in checkpoints})
