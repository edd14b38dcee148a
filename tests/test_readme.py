"""The README's Python runs as written, with offline stand-ins: the scripted teacher on 127.0.0.1 for the API
model, a tiny student for the shipped one, a few questions instead of 500."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from scripted_teacher import ScriptedTeacher
from tiny_model import save_tiny_llama

from kpdd.data import load_dataset

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCK = re.compile(r"```python\n(.*?)```", re.DOTALL)
FILE_HEADER = re.compile(r"^# (\w+\.py)\n")


def python_blocks() -> list[str]:
    return BLOCK.findall(README.read_text())


def test_the_readme_has_python_to_run():
    assert len(python_blocks()) >= 2


@pytest.mark.slow
def test_the_readme_python_runs_as_written(tmp_path):
    """Blocks headed `# <file>.py` are written to that file; the others run in order as one script."""
    limit = 4
    questions = load_dataset("gsm8k", split="train", limit=limit)
    tiny = save_tiny_llama(tmp_path / "tiny")
    script = []
    with ScriptedTeacher({e.question: e.answer for e in questions}) as server:
        stand_ins = {  # each must be in the README, so a changed example cannot skip its stand-in silently
            'dspy.LM("openai/gpt-4o-mini")': f'dspy.LM("openai/scripted", api_base="{server.url}", api_key="x", '
                                             'cache=False)',
            "limit=500": f"limit={limit}",
            'TrainConfig(student="smollm2-135m", epochs=2)': f'TrainConfig(student="{tiny}", max_steps=1, '
                                                              'batch_size=1, grad_accum=1, val_fraction=0.0, '
                                                              'device="cpu")',
        }
        for block in python_blocks():
            header = FILE_HEADER.match(block)
            if header:
                (tmp_path / header.group(1)).write_text(block)
            else:
                script.append(block)
        code = "\n".join(script)
        for original, stand_in in stand_ins.items():
            assert original in code, f"the README no longer shows {original!r}: update this test's stand-ins"
            code = code.replace(original, stand_in)
        (tmp_path / "readme_example.py").write_text(code)
        done = subprocess.run([sys.executable, "readme_example.py"], cwd=tmp_path, capture_output=True, text=True,
                              env={**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"},
                              timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "my-student" / "compiled" / "source" / "my_pipeline.py").is_file()
