"""Which device and number format to use: one answer for the trainer and the engines."""

from __future__ import annotations

from dataclasses import dataclass

from kpdd.config import Checked, option
from kpdd.errors import ConfigError


@dataclass(frozen=True)
class CpuThreads(Checked):
    """How many cores the CPU work of a command (training, a local engine) uses."""

    torch_threads: int = option(0, "CPU threads for training and local inference (0: the cores this process may "
                                   "use); beside another busy process, give each its share of the cores",
                                at_least=0)


def available_cores() -> list[int]:
    """The cores this process may run on (its affinity mask), not all the machine's."""
    import os

    return sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))


def use_torch_threads(threads: int = 0) -> int:
    """Set torch's intra-op threads for this process, and the cores a vLLM CPU engine it starts binds to (unless
    ``VLLM_CPU_OMP_THREADS_BIND`` says otherwise); 0: the cores this process may use. Returns the count. Threads
    beyond the free cores wait on each other at every parallel region, so a run beside another busy process on a
    2-core machine keeps more of its speed with 1 thread than with 2 (docs/RESULTS.md)."""
    import os

    import torch

    cores = available_cores()
    threads = min(threads, len(cores)) if threads else len(cores)
    torch.set_num_threads(threads)
    if threads < len(cores):
        os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", ",".join(map(str, cores[:threads])))
    return threads


def resolve_device(device: str) -> str:
    """'auto' → 'cuda' when torch sees a GPU, else 'cpu'; an unavailable 'cuda' is a clear error."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} was asked for, but torch sees no CUDA device; use --device cpu")
    if device != "cpu" and not device.startswith("cuda"):
        raise ConfigError(f"device {device!r}: expected auto, cpu or cuda")
    return device


def cpu_has_bf16() -> bool:
    """Whether this CPU multiplies bf16 natively (AVX512-BF16 / AMX). On a 2-core AVX512-BF16 CPU bf16 runs
    1.5-1.7x faster than fp32 for training (autocast), prefill and batched decoding."""
    import torch

    return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())


def fast_bf16(device: str) -> bool:
    """bf16 is the fast format on GPUs and on CPUs with native bf16."""
    return device != "cpu" or cpu_has_bf16()


def allocator_in_use() -> str:
    """The memory allocator this process runs on: ``jemalloc`` when it is loaded (the ``kpdd`` command preloads it
    for the commands that train, :mod:`kpdd.cli.allocator`), else ``malloc`` (the C library's, whose heap fragments
    over a long training)."""
    from pathlib import Path

    maps = Path("/proc/self/maps")
    return "jemalloc" if maps.is_file() and "libjemalloc" in maps.read_text() else "malloc"
