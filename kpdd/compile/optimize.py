"""Teacher optimisation: compile a program on a teacher LM with any DSPy optimizer, metric = answer correctness.

The optimised program is saved with :func:`kpdd.modules.saved.save_program` (DSPy JSON state, no pickle).
"""

from __future__ import annotations

from collections.abc import Callable

import dspy

from kpdd.errors import ConfigError, unknown_name
from kpdd.modules import answer_metric
from kpdd.modules.metric import answer_feedback_metric


def _bootstrap(metric, **kw):
    return dspy.BootstrapFewShot(metric=metric, max_bootstrapped_demos=kw.get("demos", 4),
                                 max_labeled_demos=kw.get("demos", 4))


def _random_search(metric, **kw):
    return dspy.BootstrapFewShotWithRandomSearch(metric=metric, max_bootstrapped_demos=kw.get("demos", 4),
                                                 max_labeled_demos=kw.get("demos", 4),
                                                 num_candidate_programs=kw.get("candidates", 8),
                                                 num_threads=kw.get("threads", 8))


def _mipro(metric, **kw):
    return dspy.MIPROv2(metric=metric, auto=kw.get("auto", "light"), num_threads=kw.get("threads", 8),
                        seed=kw.get("seed", 0))


def _gepa(metric, **kw):
    if kw.get("reflection_lm") is None:
        raise ConfigError("optimizer 'gepa' needs a reflection LM (--reflection-lm, e.g. a strong model string)")
    return dspy.GEPA(metric=answer_feedback_metric, reflection_lm=kw["reflection_lm"], auto=kw.get("auto", "light"),
                     num_threads=kw.get("threads", 8), seed=kw.get("seed", 0))


OPTIMIZERS: dict[str, Callable] = {
    "bootstrap-fewshot": _bootstrap,
    "bootstrap-random-search": _random_search,
    "mipro": _mipro,
    "gepa": _gepa,
}


def optimize(program: dspy.Module, teacher: dspy.LM, trainset: list[dspy.Example], optimizer: str = "bootstrap-fewshot",
             valset: list[dspy.Example] | None = None, **optimizer_kwargs) -> dspy.Module:
    """A new program compiled on ``teacher``; ``program`` itself is left unchanged."""
    if optimizer not in OPTIMIZERS:
        raise unknown_name("optimizer", optimizer, OPTIMIZERS)
    student = program.deepcopy()
    with dspy.context(lm=teacher):  # some optimizers read the LM when they are built (MIPROv2)
        teleprompter = OPTIMIZERS[optimizer](answer_metric, **optimizer_kwargs)
        if optimizer in ("mipro", "gepa"):
            return teleprompter.compile(student, trainset=trainset, valset=valset)
        return teleprompter.compile(student, trainset=trainset)
