"""What `kpdd finetune` prints about each student it trained."""

from pathlib import Path

# Every command registered first, in the CLI's own order (docs/CLI.md lists the commands in that order).
from kpdd.cli import commands  # noqa: F401
from kpdd.cli.finetune_cmd import student_line
from kpdd.finetune.trainer import TrainResult


def result(**figures) -> TrainResult:
    return TrainResult(Path("students/all"), "all", tokens=1000, train_time_s=10.0, **figures)


def test_student_line_shows_the_loss_going_from_first_to_last():
    line = student_line("all", result(steps=20, first_loss=2.5, train_loss=1.25, val_loss=1.5))
    assert line == "  student all: 20 steps, loss 2.5000 → 1.2500, val loss 1.5000, 100 tokens/s, 10 s"


def test_student_line_after_one_logged_loss_shows_it_once():
    line = student_line("all", result(steps=1, first_loss=2.3962, train_loss=2.3962))
    assert line == "  student all: 1 steps, loss 2.3962, val loss n/a, 100 tokens/s, 10 s"


def test_student_line_says_where_the_student_trained():
    setup = {"device": "cpu", "torch_threads": 1, "precision": "bf16", "allocator": "jemalloc"}
    line = student_line("all", result(steps=2, first_loss=2.0, train_loss=1.0, setup=setup))
    assert line == ("  student all: 2 steps, loss 2.0000 → 1.0000, val loss n/a, 100 tokens/s (cpu, 1 threads, bf16, "
                    "jemalloc), 10 s")
