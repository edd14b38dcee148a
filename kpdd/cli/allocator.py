"""jemalloc for the commands that train, preloaded by re-executing the ``kpdd`` command once.

glibc's malloc fragments under a training's changing tensor shapes: over 35 minutes of full fine-tuning its heap
grew from 3.9 to 5.9 GiB while the bytes in use stayed flat; jemalloc's size classes reuse freed blocks across
shapes (docs/RESULTS.md). A process's allocator is fixed when it starts, so the installed ``kpdd`` command (not
``main([...])`` called in a process, nor the library) starts again with jemalloc in ``LD_PRELOAD`` before it
imports anything heavy. Where jemalloc is not installed, another malloc is preloaded already, or
``KPDD_ALLOCATOR=system``, nothing changes. ``demo`` and ``experiment`` are left as they are: the demo's trainings
last a minute, where the allocator buys nothing (jemalloc measured 0.90-0.96x malloc's speed over a minute of
training, 1.02x over four), and the experiment trains on a GPU.
"""

from __future__ import annotations

import ctypes.util
import os
import sys
from collections.abc import Mapping

TRAINING_COMMANDS = frozenset({"finetune", "compile", "improve"})
ALLOCATOR_ENV = "KPDD_ALLOCATOR"  # "system" keeps the C library's malloc
# Every size from jemalloc's own arenas (no separate path for large blocks), and freed pages kept for the next
# steps' tensors: the trainer hands them back itself every few steps (kpdd.finetune.trainer._ReturnFreedMemory).
# Returned as they aged (10 s), a full fine-tuning step page-faulted on 2 GB of fresh pages, a tenth of its time.
MALLOC_CONF = "oversize_threshold:0,dirty_decay_ms:-1,muzzy_decay_ms:-1"


def command_of(args: list[str]) -> str | None:
    """The subcommand in ``kpdd``'s arguments (the first that is not an option)."""
    return next((arg for arg in args if not arg.startswith("-")), None)


def jemalloc_environment(environ: Mapping[str, str]) -> dict[str, str] | None:
    """``environ`` with jemalloc preloaded, or None when it is turned off, not installed, or a malloc (jemalloc,
    tcmalloc, mimalloc...) is preloaded already."""
    if environ.get(ALLOCATOR_ENV, "jemalloc").lower() == "system" or "malloc" in environ.get("LD_PRELOAD", ""):
        return None
    library = ctypes.util.find_library("jemalloc")
    if library is None:
        return None
    preload = ":".join(filter(None, (library, environ.get("LD_PRELOAD"))))
    return {**environ, "LD_PRELOAD": preload, "MALLOC_CONF": environ.get("MALLOC_CONF", MALLOC_CONF)}


def preload_jemalloc_for_training(argv: list[str]) -> None:
    """Re-execute this command with jemalloc preloaded when it trains (``argv``: ``sys.argv``); else return.
    The interpreter starts again exactly as it was started (``sys.orig_argv``: its own options such as ``-u``,
    then the console script or ``-m kpdd``, then the arguments)."""
    if command_of(argv[1:]) not in TRAINING_COMMANDS:
        return
    environment = jemalloc_environment(os.environ)
    if environment is None:
        return
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], environment)
