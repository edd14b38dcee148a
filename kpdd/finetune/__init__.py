"""Students and their weights: the shipped model, student directories, SFT data, the trainer, kpdd's DSPy Provider.

Nothing here imports torch, transformers or peft until a model is loaded or trained. The engines that serve
students and the `dspy.LM`s over them are in :mod:`kpdd.engines`.
"""

from kpdd.finetune.provider import BootstrapFinetune, KpddProvider
from kpdd.finetune.registry import LOCAL_PREFIX, register_student, registered_student
from kpdd.finetune.student import StudentRef, ensure_base_model, new_model_id, read_student, write_student
from kpdd.finetune.trainer import TrainConfig, TrainResult, train_student

__all__ = [
    "LOCAL_PREFIX", "BootstrapFinetune", "KpddProvider", "StudentRef", "TrainConfig", "TrainResult",
    "ensure_base_model", "new_model_id", "read_student", "register_student", "registered_student",
    "train_student", "write_student",
]
