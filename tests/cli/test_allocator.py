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

# What a command sees after the re-execution: its allocator, as the trainer logs it, and the settings.
PROBE = """import os, sys
from kpdd.cli.allocator import preload_jemalloc_for_training
preload_jemalloc_for_training(sys.argv)
from kpdd.finetune.hardware import allocator_in_use
print(allocator_in_use().split(" ")[0], os.environ.get("MALLOC_CONF"), sys.argv[1:])
"""


def run_probe(tmp_path: Path, *args: str, **env: str) -> str:
    script = tmp_path / "probe.py"
    script.write_text(PROBE)
    environment = {key: value for key, value in os.environ.items() if key not in ("LD_PRELOAD", "MALLOC_CONF")}
    done = subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True, check=True,
                          env={**environment, **env}, timeout=120)
    return done.stdout.strip()


def test_the_command_is_the_first_argument_that_is_not_an_option():
    assert command_of(["--debug", "finetune", "--no-lora"]) == "finetune"
    assert command_of(["--help"]) is None


def test_no_preload_when_turned_off_already_there_or_not_installed(monkeypatch):
    assert jemalloc_environment({"KPDD_ALLOCATOR": "system"}) is None
    assert jemalloc_environment({"LD_PRELOAD": "/usr/lib/libjemalloc.so.2"}) is None
    monkeypatch.setattr(ctypes.util, "find_library", lambda name: None)
    assert jemalloc_environment({}) is None


def test_the_preload_keeps_the_users_own_settings(monkeypatch):
    monkeypatch.setattr(ctypes.util, "find_library", lambda name: "libjemalloc.so.2")
    environment = jemalloc_environment({"LD_PRELOAD": "libother.so", "MALLOC_CONF": "narenas:1", "HOME": "/h"})
    assert environment == {"LD_PRELOAD": "libjemalloc.so.2:libother.so", "MALLOC_CONF": "narenas:1", "HOME": "/h"}
    assert jemalloc_environment({})["MALLOC_CONF"] == MALLOC_CONF


@needs_jemalloc
def test_a_training_command_runs_on_jemalloc(tmp_path):
    assert run_probe(tmp_path, "finetune", "--no-lora") == f"jemalloc {MALLOC_CONF} ['finetune', '--no-lora']"


@needs_jemalloc
def test_other_commands_and_a_user_who_turned_it_off_keep_malloc(tmp_path):
    assert run_probe(tmp_path, "eval", "--lm", "x").startswith("malloc None")
    assert run_probe(tmp_path, "finetune", KPDD_ALLOCATOR="system").startswith("malloc None")


def test_the_installed_command_still_answers_as_kpdd():
    kpdd = Path(sys.executable).with_name("kpdd")
    done = subprocess.run([str(kpdd), "finetune", "--help"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "Usage: kpdd finetune" in done.stdout
