"""A student as one plain Hugging Face checkpoint, for servers that load a model directory as it is (`vllm serve`).

:func:`export_student` merges a LoRA student into its base (PEFT's ``merge_and_unload``), saves it in the base's
number format with its tokenizer, chat template and a generation config whose end tokens close an assistant turn,
and copies the student's ``kpdd.json`` (program, training figures, and whatever else it records about how the
student is prompted) with the base pointing at the directory itself. The export is therefore still a kpdd
student: ``kpdd eval --lm <export>`` runs it locally, ``vllm serve <export>`` serves it.
:func:`export_compiled` does this for every student of a compiled-program directory and copies the program (its
manifest, DSPy state and, for a program defined in a file, the copied ``source/``).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from kpdd.errors import ConfigError
from kpdd.finetune.student import (KEY_ADAPTER, KEY_BASE, KEY_FORMAT, KEY_MODEL_ID, KEY_PROGRAM, KEY_TRAIN,
                                   STUDENT_FILE, STUDENT_FORMAT, StudentRef, read_student)
from kpdd.modules.saved import MANIFEST, SOURCE

KEY_EXPORTED_FROM = "exported_from"
MERGED_SUFFIX = "-merged"  # a new model id: merged weights round differently, so DSPy's cache must not mix them


def export_student(student: str | Path | StudentRef, out: str | Path) -> Path:
    """Write ``student`` (a student directory, checkpoint or alias) as a merged checkpoint at ``out``."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    ref = read_student(student)
    out = Path(out)
    base = ref.base_path
    # Merge in fp32 (the adapter's update is small next to the weights), store in the base's own format.
    stored_dtype = AutoConfig.from_pretrained(base).dtype or torch.float32
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    if ref.adapter_path is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, ref.adapter_path).merge_and_unload()
    model.to(stored_dtype).save_pretrained(out)
    tokenizer = AutoTokenizer.from_pretrained(_tokenizer_dir(ref))
    tokenizer.save_pretrained(out)
    _generation_config(model, tokenizer).save_pretrained(out)
    _write_manifest(ref, out)
    return out


def _tokenizer_dir(ref: StudentRef) -> Path:
    """The trainer saves the tokenizer (and its chat template) beside the adapter; the base has one too."""
    if ref.adapter_path is not None and (ref.adapter_path / "tokenizer_config.json").is_file():
        return ref.adapter_path
    return ref.base_path


def _generation_config(model, tokenizer):
    """The base's generation config, ending at ChatML's ``<|im_end|>`` too (it closes every assistant turn):
    vLLM stops at the generation config's end tokens."""
    config = model.generation_config
    configured = config.eos_token_id
    ends = list(configured) if isinstance(configured, (list, tuple)) else [] if configured is None else [configured]
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    if isinstance(im_end, int) and im_end != tokenizer.unk_token_id and im_end not in ends:
        ends.append(im_end)
    if not ends and tokenizer.eos_token_id is not None:
        ends.append(tokenizer.eos_token_id)
    config.eos_token_id = ends if len(ends) > 1 else ends[0] if ends else None
    if config.pad_token_id is None:
        config.pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else ends[0]
    return config


def _write_manifest(ref: StudentRef, out: Path) -> Path:
    """The source's ``kpdd.json``, every field kept, now describing a self-contained checkpoint."""
    source = ref.root / STUDENT_FILE if ref.root is not None else None
    if source is not None and source.is_file():
        record = json.loads(source.read_text())
    else:  # a plain checkpoint or the shipped alias
        record = {KEY_FORMAT: STUDENT_FORMAT, KEY_PROGRAM: ref.program, KEY_TRAIN: ref.train}
    record[KEY_EXPORTED_FROM] = {KEY_BASE: str(ref.base_path), KEY_MODEL_ID: ref.model_id,
                                 KEY_ADAPTER: str(ref.adapter_path) if ref.adapter_path else None}
    record.update({KEY_BASE: ".", KEY_ADAPTER: None, KEY_MODEL_ID: ref.model_id + MERGED_SUFFIX})
    path = out / STUDENT_FILE
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)
    return path


def export_compiled(directory: str | Path, out: str | Path) -> dict[str, Path]:
    """Export every student of a compiled-program directory into ``out/students/<name>`` and copy the program
    (manifest and DSPy state) beside them; returns ``{student path in the manifest: exported checkpoint}``."""
    directory, out = Path(directory), Path(out)
    manifest_path = directory / MANIFEST
    if not manifest_path.is_file():
        raise ConfigError(f"{directory}: not a compiled kpdd program (no {MANIFEST})")
    manifest = json.loads(manifest_path.read_text())
    students = sorted(set(manifest.get("students", {}).values()))
    if not students:
        raise ConfigError(f"{manifest_path}: field 'students' names no student directory to export")
    out.mkdir(parents=True, exist_ok=True)
    exported = {relative: export_student(directory / relative, out / relative) for relative in students}
    shutil.copy2(directory / manifest["state"], out / manifest["state"])
    if manifest.get("source"):  # a file-defined program is rebuilt from its copied file
        shutil.copytree(directory / SOURCE, out / SOURCE, dirs_exist_ok=True)
    shutil.copy2(manifest_path, out / MANIFEST)  # the same relative student paths now name merged checkpoints
    return exported
