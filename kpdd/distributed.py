"""Commands launched once per process by ``accelerate launch`` (or ``torchrun``): which process is the main one.

Every process trains (data-parallel, through TRL and accelerate, on the same data split); only the main process
writes what the processes share: trace stores, the student directory and compiled program, predictions and
MLflow runs. The launcher tells each process its place through ``RANK`` and ``WORLD_SIZE``, so asking costs no
import; torch is imported only to wait for the main process.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from datetime import timedelta

# The other processes wait while the main one runs stages that do not train (a teacher's traces, an evaluation),
# which can take hours with a real teacher; the process group's default of 30 minutes would end them.
WAIT_TIMEOUT = timedelta(hours=24)


def world_size() -> int:
    """Processes in this launch (1 without a launcher)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main_process() -> bool:
    """True in the process that writes shared outputs: rank 0, or the only process."""
    return int(os.environ.get("RANK", "0")) == 0


@contextlib.contextmanager
def main_process_first() -> Iterator[None]:
    """Run the block in the main process first and in the others after it, so they find its results on disk."""
    if world_size() == 1:
        yield
        return
    import torch
    from accelerate import PartialState

    # Starting the process group here (once) sets its timeout; the trainer later joins this group. Without a
    # GPU, accelerate forms a group only when told the processes are CPU ones (gloo).
    with PartialState(cpu=not torch.cuda.is_available(), timeout=WAIT_TIMEOUT).main_process_first():
        yield


def any_process(flag: bool) -> bool:
    """True in every process when it is true in one. A collective: every process of the launch must call it."""
    if world_size() == 1:
        return flag
    import torch
    from accelerate import PartialState
    from accelerate.utils import reduce

    return bool(reduce(torch.tensor([float(flag)], device=PartialState().device), "sum").item())
