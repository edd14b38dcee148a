"""The kpdd command preloads jemalloc for the commands that train: real re-executions, real /proc/self/maps."""

import ctypes.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from kpdd.cli.allocator import MALLOC_CONF, command_of, jemalloc_environment

JEMALLOC = ctypes.util.find_library("jemalloc")
needs_jemalloc = pytest.mark.skipif(JEMALLOC is None, reason="libjemalloc is not installed")

# What a command sees after the re-execution: its allocator, as the trainer records it, the settings, its
# arguments, and the interpreter's own -X options (which must survive it).
PROBE = """import os, sys
from kpdd.cli.allocator import preload_jemalloc_for_training
preload_jemalloc_for_training(sys.argv)
from kpdd.finetune.hardware import allocator_in_use
print(allocator_in_use(), os.environ.get("MALLOC_CONF"), sys.argv[1:], sys._xoptions.get("probe"))
"""


def on_malloc(**env: str) -> dict[str, str]:
    """This process's environment without a preloaded allocator, plus ``env``."""
    return {**{key: value for key, value in os.environ.items() if key not in ("LD_PRELOAD", "MALLOC_CONF")}, **env}


def run_probe(tmp_path: Path, *args: str, python_options: tuple[str, ...] = (), **env: str) -> str:
    script = tmp_path / "probe.py"
    script.write_text(PROBE)
    done = subprocess.run([sys.executable, *python_options, str(script), *args], capture_output=True, text=True,
                          check=True, env=on_malloc(**env), timeout=120)
    return done.stdout.strip()


def test_the_command_is_the_first_argument_that_is_not_an_option():
    assert command_of(["--debug", "finetune", "--no-lora"]) == "finetune"
    assert command_of(["--help"]) is None


def test_no_preload_when_turned_off_already_there_or_not_installed(monkeypatch):
    assert jemalloc_environment({"KPDD_ALLOCATOR": "system"}) is None
    assert jemalloc_environment({"KPDD_ALLOCATOR": "System"}) is None
    assert jemalloc_environment({"LD_PRELOAD": "/usr/lib/libjemalloc.so.2"}) is None
    assert jemalloc_environment({"LD_PRELOAD": "libtcmalloc_minimal.so.4"}) is None  # the user's own malloc wins
    monkeypatch.setattr(ctypes.util, "find_library", lambda name: None)
    assert jemalloc_environment({}) is None


def test_the_preload_keeps_the_users_own_settings(monkeypatch):
    monkeypatch.setattr(ctypes.util, "find_library", lambda name: "libjemalloc.so.2")
    environment = jemalloc_environment({"LD_PRELOAD": "libother.so", "MALLOC_CONF": "narenas:1", "HOME": "/h"})
    assert environment == {"LD_PRELOAD": "libjemalloc.so.2:libother.so", "MALLOC_CONF": "narenas:1", "HOME": "/h"}
    assert jemalloc_environment({})["MALLOC_CONF"] == MALLOC_CONF


@needs_jemalloc
def test_a_training_command_runs_on_jemalloc_started_as_it_was(tmp_path):
    assert run_probe(tmp_path, "finetune", "--no-lora") == f"jemalloc {MALLOC_CONF} ['finetune', '--no-lora'] None"
    # the interpreter's own options survive the re-execution (as `accelerate launch`'s `python -u -m kpdd` does)
    assert run_probe(tmp_path, "finetune", python_options=("-X", "probe=kept")).endswith("['finetune'] kept")


@needs_jemalloc
def test_other_commands_and_a_user_who_turned_it_off_keep_malloc(tmp_path):
    assert run_probe(tmp_path, "eval", "--lm", "x") == "malloc None ['eval', '--lm', 'x'] None"
    assert run_probe(tmp_path, "finetune", KPDD_ALLOCATOR="system") == "malloc None ['finetune'] None"


# A training's freed memory under the command's jemalloc settings: kept for the next steps, then handed back by
# the trainer's callback. Resident sizes in MiB: before, after 512 MiB were written and freed, after the callback.
FREED = """import sys
from kpdd.cli.allocator import preload_jemalloc_for_training
preload_jemalloc_for_training(sys.argv)
from types import SimpleNamespace
from kpdd.finetune.trainer import _ReturnFreedMemory
def resident():
    return int(open("/proc/self/statm").read().split()[1]) * 4096 // 2**20
give_back = _ReturnFreedMemory(every=2)
before = resident()
block = bytearray(512 * 2**20)  # zeroed: every page touched
del block
kept = resident()
give_back.on_step_end(None, SimpleNamespace(global_step=1), None)  # not a step it returns memory at
early = resident()
give_back.on_step_end(None, SimpleNamespace(global_step=2), None)
print(before, kept, early, resident())
"""


@needs_jemalloc
def test_a_training_keeps_freed_pages_until_the_trainer_hands_them_back(tmp_path):
    script = tmp_path / "freed.py"
    script.write_text(FREED)
    done = subprocess.run([sys.executable, str(script), "finetune"], capture_output=True, text=True, check=True,
                          env=on_malloc(), timeout=120)
    before, kept, early, returned = map(int, done.stdout.split())
    assert kept - before > 400 and early - before > 400  # kept while the training goes on
    assert returned - before < 100


@pytest.mark.parametrize("start", [[str(Path(sys.executable).with_name("kpdd"))], [sys.executable, "-m", "kpdd"]],
                         ids=["console script", "python -m kpdd"])
def test_the_command_still_answers_as_itself_after_the_re_execution(start):
    done = subprocess.run([*start, "finetune", "--help"], capture_output=True, text=True, timeout=120,
                          env=on_malloc())
    assert done.returncode == 0, done.stderr
    assert "finetune [OPTIONS]" in done.stdout and "KPDD_ALLOCATOR=system" in done.stdout
