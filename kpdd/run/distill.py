"""``kpdd.distill``: one call from a user's DSPy program to a compiled student, the Python face of
``kpdd traces`` → ``kpdd finetune``.

The teacher program runs on the training examples (its predictors' LMs, or ``teacher``); the runs the metric
accepts are kept in an append-only trace store under ``out``; the student learns them in kpdd's students' format,
every stage in one call, and the compiled program (``out/compiled``) loads anywhere with ``kpdd.load``
(:func:`kpdd.engines.load_compiled`). ``prompt_format="chat", student_calls="per-stage"`` trains as DSPy's own
``BootstrapFinetune`` would (``kpdd.BootstrapFinetune`` with ``kpdd.KpddProvider`` stays available for that
path). A rerun with the same ``out`` resumes: traced questions are not asked again and training picks up its
checkpoint. ``import kpdd`` gives this function as ``kpdd.distill`` (see :mod:`kpdd`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import dspy

from kpdd.finetune.trainer import TrainConfig
from kpdd.modules.one_call import ONE
from kpdd.modules.student_format import STUDENT


def distill(program: dspy.Module, trainset: list[dspy.Example], teacher: dspy.LM | None = None,
            metric: Callable | None = None, out: str | Path | None = None, train: TrainConfig | None = None,
            prompt_format: str = STUDENT, student_calls: str = ONE, samples: int = 1, temperature: float = 0.7,
            threads: int = 8, progress: bool = True) -> dspy.Module:
    """Distil ``program`` into a student and return it, compiled (its predictors on the trained student).

    ``teacher`` (default: the LMs already set on ``program``'s predictors, else ``dspy.settings.lm``) runs the
    program on ``trainset``; ``metric`` (a DSPy metric, default the numeric-answer match) picks the runs to learn
    from; ``train`` sets the student (``TrainConfig(student=...)``) and its hyper-parameters."""
    from kpdd.compile.store import TraceStore
    from kpdd.compile.teachers import LMTeacher
    from kpdd.compile.traces import generate_traces
    from kpdd.engines.compiled import load_compiled
    from kpdd.errors import ConfigError
    from kpdd.modules.registry import program_name
    from kpdd.run.finetune import FinetuneConfig, run_finetune
    from kpdd.run.paths import default_out, program_slug

    if not trainset:
        raise ConfigError("distill: the trainset is empty")
    trainset = [_with_id(example) for example in trainset]
    reference = program_name(program)
    out = Path(out) if out else default_out("distill", program_slug(reference))
    lm = teacher or dspy.settings.lm
    name = getattr(lm, "model", None) or "program's own LMs"
    store = TraceStore(out / "traces.jsonl")
    header = {"method": reference, "teacher": name, "dataset": "trainset", "split": "train",
              "meta": {"samples": samples, "temperature": temperature}}
    lm_teacher = LMTeacher(program, lm, reference, temperature=temperature, name=name, metric=metric)
    stats = generate_traces(lm_teacher, trainset, store, header, samples, threads, progress)
    if not stats.traces:
        raise ConfigError(f"distill: the teacher got no example of {len(trainset)} right by the metric "
                          f"(see {store.path}); a stronger teacher or more examples are needed")
    fields = dataclasses.asdict(train or TrainConfig())
    config = FinetuneConfig(**fields, traces=[str(store.path)], program=reference, prompt_format=prompt_format,
                            student_calls=student_calls, out=str(out / "compiled"))
    run_finetune(config, progress=progress, program=program)
    return load_compiled(out / "compiled")


def _with_id(example: dspy.Example) -> dspy.Example:
    """The example with an ``id`` (the trace store's key): its own, or a hash of its inputs, stable across runs."""
    import hashlib
    import json

    if example.get("id"):
        return example
    inputs = json.dumps(example.inputs().toDict(), sort_keys=True, default=str)
    return example.copy(id=f"example-{hashlib.sha1(inputs.encode()).hexdigest()[:12]}")
