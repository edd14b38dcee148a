"""kpdd: distil maths reasoning pipelines written as DSPy modules into a small model's weights.

The public API, flat as DSPy's and TRL's::

    import kpdd
    student = kpdd.distill(kpdd.KPDDPoT(), trainset, teacher=lm, out="my-student")  # traces → fine-tune
    student = kpdd.load("my-student/compiled")                                      # a compiled program
    scores = kpdd.evaluate(student, testset, "predictions.jsonl")                    # accuracy, 95 % intervals

Each name is imported on first use, so ``import kpdd`` loads neither DSPy nor torch. Importing kpdd changes
nothing in the environment; the CLI and the scripts set the offline defaults
(:func:`kpdd.config.use_offline_defaults`).
"""

import importlib

from kpdd.references import BUILTIN_PROGRAMS

__version__ = "0.1.0"

# Public name → "module:attribute" where it lives (looked up by string, so this package imports none of them).
_PUBLIC = {
    "distill": "kpdd.run.distill:distill",
    "load": "kpdd.engines.compiled:load_compiled",
    "save": "kpdd.engines.compiled:save_compiled",
    "evaluate": "kpdd.eval.harness:evaluate",
    "load_dataset": "kpdd.data:load_dataset",
    "answer_metric": "kpdd.modules.metric:answer_metric",
    "TrainConfig": "kpdd.finetune.trainer:TrainConfig",
    "KpddProvider": "kpdd.finetune.provider:KpddProvider",
    "BootstrapFinetune": "kpdd.finetune.provider:BootstrapFinetune",
    "student_lm": "kpdd.engines.lm:student_lm",
    # the built-in programs by class (KPDDPoT, ...; by name: kpdd-cot, kpdd-pot, socratic, cot, pot, direct)
    **{target.rpartition(":")[2]: target for target in BUILTIN_PROGRAMS.values()},
}

__all__ = ["__version__", *_PUBLIC]


def __getattr__(name: str):
    if name not in _PUBLIC:
        raise AttributeError(f"module 'kpdd' has no attribute {name!r}")
    module, _, attribute = _PUBLIC[name].partition(":")
    value = getattr(importlib.import_module(module), attribute)
    globals()[name] = value  # the next look-up is a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_PUBLIC})
