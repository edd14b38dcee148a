"""The flat public API: ``import kpdd`` gives what a DSPy user calls, and stays cheap until a name is used."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import kpdd

HEAVY = ("dspy", "mlflow", "litellm", "torch", "trl", "transformers", "peft", "vllm")


def imported_after(code: str) -> list[str]:
    """The heavy packages a fresh interpreter has imported after running ``code``."""
    script = f"import sys\n{code}\nimport json; print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))"
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_api_import_kpdd_imports_no_heavy_package():
    assert imported_after("import kpdd") == []


def test_api_every_public_name_resolves_without_torch_or_trl():
    assert imported_after("import kpdd\nfor name in kpdd.__all__: getattr(kpdd, name)") == ["dspy"]


def test_api_names_are_the_library_objects():
    from kpdd.engines.compiled import load_compiled
    from kpdd.eval.harness import evaluate
    from kpdd.finetune import KpddProvider, TrainConfig
    from kpdd.modules.registry import PROGRAMS
    from kpdd.run.distill import distill

    assert (kpdd.distill, kpdd.load, kpdd.evaluate) == (distill, load_compiled, evaluate)
    assert (kpdd.TrainConfig, kpdd.KpddProvider) == (TrainConfig, KpddProvider)
    assert {getattr(kpdd, cls.__name__) for cls in PROGRAMS.values()} == set(PROGRAMS.values())
    assert {cls.__name__ for cls in PROGRAMS.values()} <= set(kpdd.__all__) <= set(dir(kpdd))


def test_api_an_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="module 'kpdd' has no attribute 'distil'"):
        kpdd.distil  # noqa: B018
