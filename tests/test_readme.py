"""The Python of the README and of docs/PYTHON.md runs as written, with offline stand-ins: the scripted teacher on
127.0.0.1 for the API model, a tiny student for the shipped one, a few questions instead of 500."""

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
PYTHON_PAGE = README.parent / "docs" / "PYTHON.md"
BLOCK = re.compile(r"```python\n(.*?)```", re.DOTALL)
FILE_HEADER = re.compile(r"^# (\w+\.py)\n")


def python_blocks(page: Path = README) -> list[str]:
    return BLOCK.findall(page.read_text())


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
        stand_ins = {
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
        done = run_as_script("\n".join(script), stand_ins, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "my-student" / "compiled" / "source" / "my_pipeline.py").is_file()


@pytest.mark.slow
def test_the_python_page_runs_as_written(tmp_path):
    """docs/PYTHON.md: DSPy's BootstrapFinetune with kpdd's Provider, saved as a compiled program."""
    limit = 4
    questions = load_dataset("gsm8k", split="train", limit=limit)
    tiny = save_tiny_llama(tmp_path / "tiny")
    with ScriptedTeacher({e.question: e.answer for e in questions}) as server:
        stand_ins = {
            'dspy.LM("openai/gpt-4o-mini")': f'dspy.LM("openai/scripted", api_base="{server.url}", api_key="x", '
                                             'cache=False)',
            "limit=500": f"limit={limit}",
            "kpdd.TrainConfig(epochs=2)": 'kpdd.TrainConfig(max_steps=1, batch_size=1, grad_accum=1, device="cpu")',
            'kpdd.student_lm("smollm2-135m"': f'kpdd.student_lm("{tiny}"',
        }
        done = run_as_script("\n".join(python_blocks(PYTHON_PAGE)), stand_ins, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "my-bootstrapped" / "kpdd-program.json").is_file()


def run_as_script(code: str, stand_ins: dict[str, str], directory: Path) -> subprocess.CompletedProcess:
    """``code`` with each stand-in in place of what it stands for (each must be there, so a changed example cannot
    skip its stand-in silently), run as a script in ``directory``."""
    for original, stand_in in stand_ins.items():
        assert original in code, f"the example no longer shows {original!r}: update this test's stand-ins"
        code = code.replace(original, stand_in)
    (directory / "example.py").write_text(code)
    return subprocess.run([sys.executable, "example.py"], cwd=directory, capture_output=True, text=True,
                          env={**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{directory / 'mlflow.db'}"},
                          timeout=900)
