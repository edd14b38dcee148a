"""kpdd's ``dspy.Provider``: DSPy's fine-tuning path (``BootstrapFinetune``, ``BetterTogether``) on our trainer.

``dspy.LM("local/<id>", engine=..., provider=KpddProvider())`` is fine-tunable: DSPy hands ``finetune`` chat
records, we train a student with :func:`kpdd.finetune.trainer.train_student` from the LM's base model,
register the new weights with the local engines, and return the new model id, which DSPy turns into
``lm.copy(model=...)`` on the same engine.

:class:`BootstrapFinetune` is DSPy's optimizer with one fix: traces whose teacher output failed to parse get
score -1 in DSPy 3.4 (truthy, so they pass the metric filter) and crash compile; we drop them first.
"""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path
from typing import Any

import dspy
from dspy.clients.provider import TrainingJob

from kpdd.config import build_config
from kpdd.finetune.registry import LOCAL_PREFIX, register_student, registered_student
from kpdd.finetune.sft import is_validation
from kpdd.finetune.student import new_model_id
from kpdd.finetune.trainer import TrainConfig

logger = logging.getLogger(__name__)

class KpddTrainingJob(TrainingJob):
    """A fine-tuning job running in DSPy's thread; ``status()`` says where it is."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.state = "pending"
        self.student_dir: Path | None = None

    def status(self) -> str:
        return self.state


class KpddProvider(dspy.Provider):
    """Fine-tunes local students with TRL/PEFT; one training at a time (they would fight for the cores)."""

    _lock = threading.Lock()

    def __init__(self, root: str | Path = "kpdd-runs/students", defaults: TrainConfig | None = None,
                 val_fraction: float = 0.05, progress: bool = True):
        super().__init__()
        self.finetunable = True  # Provider.__init__ sets both as instance attributes
        self.TrainingJob = KpddTrainingJob
        self.root = Path(root)
        self.defaults = defaults or TrainConfig()
        self.val_fraction = val_fraction
        self.progress = progress

    def finetune(self, job: KpddTrainingJob, model: str, train_data: list[dict[str, Any]],
                 train_data_format, train_kwargs: dict[str, Any] | None = None) -> str:
        from kpdd.finetune.trainer import train_student

        base = registered_student(model.removeprefix(LOCAL_PREFIX))
        if base.adapter is not None:
            logger.warning("fine-tuning %s starts from its base model %s: a new adapter replaces the old one",
                           model, base.base)
        overrides = {"student": str(base.base_path), **(train_kwargs or {})}
        config = build_config(TrainConfig, {**self.defaults.__dict__, **overrides}, source="train_kwargs")
        train, validation = split_records(train_data, self.val_fraction)
        model_id = new_model_id(base.model_id.split("-ft-")[0] + "-ft")
        job.student_dir = self.root / model_id
        with self._lock:
            job.state = "training"
            result = train_student(config, train, validation, job.student_dir, program=base.program,
                                   model_id=model_id, progress=self.progress)
        register_student(model_id, str(result.student_dir))
        job.state = "done"
        logger.info("fine-tuned %s → local/%s (%s)", model, model_id, result.student_dir)
        return LOCAL_PREFIX + model_id

    def kill(self, lm, launch_kwargs=None) -> None:  # nothing runs outside our process
        return None

    def launch(self, lm, launch_kwargs=None) -> None:
        return None


def split_records(records: list[dict], val_fraction: float) -> tuple[list[dict], list[dict]]:
    """A stable split by content hash (DSPy's records carry no question id)."""
    train, validation = [], []
    for record in records:
        key = json.dumps(record["messages"], sort_keys=True)
        (validation if is_validation(key, val_fraction) else train).append(record)
    return (train, validation) if train else (validation, [])


def _kept(item: dict) -> bool:
    """A bootstrapped trace worth training on: a real success, not DSPy's -1 for a failed parse."""
    from dspy.teleprompt.bootstrap_trace import FailedPrediction

    score = item.get("score")
    scored = score is not False if score is None or isinstance(score, bool) else score > 0
    failed = isinstance(item.get("prediction"), FailedPrediction) or any(
        isinstance(outputs, FailedPrediction) for _, _, outputs in item.get("trace", []))
    return scored and not failed


class BootstrapFinetune(dspy.BootstrapFinetune):
    """``dspy.BootstrapFinetune`` that never hands failed traces to the trainer."""

    def _prepare_finetune_data(self, trace_data, lm, pred_ind=None):
        kept = [item for item in trace_data if _kept(item)]
        if len(kept) < len(trace_data):
            logger.info("dropped %d failed teacher traces before fine-tuning", len(trace_data) - len(kept))
        return super()._prepare_finetune_data(kept, lm, pred_ind)
