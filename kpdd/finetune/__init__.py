"""Students and their weights: the shipped model, the trainer, kpdd's DSPy Provider, local engines.

Nothing here imports torch, transformers or vllm until a model is loaded or trained.
"""

from kpdd.finetune.compiled import load_compiled, program_with_student, save_compiled
from kpdd.finetune.engines import register_student, shared_engine
from kpdd.finetune.provider import BootstrapFinetune, KpddProvider
from kpdd.finetune.run import FinetuneConfig, run_finetune
from kpdd.finetune.student import (
    StudentRef,
    ensure_base_model,
    new_model_id,
    read_student,
    server_lm,
    student_lm,
    write_student,
)
from kpdd.finetune.trainer import TrainConfig, TrainResult, train_student

__all__ = [
    "BootstrapFinetune", "FinetuneConfig", "KpddProvider", "StudentRef", "TrainConfig", "TrainResult",
    "ensure_base_model", "load_compiled", "new_model_id", "program_with_student", "read_student",
    "register_student", "run_finetune", "save_compiled", "server_lm", "shared_engine", "student_lm",
    "train_student", "write_student",
]
