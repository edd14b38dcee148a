"""Teacher optimisation: compile a program on a teacher LM with any DSPy optimizer, metric = answer correctness.

Whatever the LMs answer, :func:`optimize` returns the optimised program or raises one :class:`OptimizerError` line
naming the optimizer, the step that failed and what to change. Answers, proposals and trials that cannot be
parsed are skipped and counted in the :class:`~kpdd.compile.optimize_log.OptimizeLog`, which also writes the
optimizer's work (demonstrations, proposals, trials) as it is made, so a rerun resumes. The budget follows the
number of questions (:func:`budget`) unless ``trials`` is given. The optimised program is saved with
:func:`kpdd.modules.saved.save_program` (DSPy JSON state, no pickle).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import dspy

from kpdd.compile.mipro import KpddMIPROv2
from kpdd.compile.optimize_log import OptimizeLog, OptimizerError, StopOptimizing, reason
from kpdd.errors import ConfigError, KpddError, unknown_name
from kpdd.eval.lm_guard import detail
from kpdd.modules import answer_metric
from kpdd.modules.metric import answer_feedback_metric

BOOTSTRAP = "bootstrap-fewshot"
# What to change when a step fails, per optimizer.
ADVICE = {
    BOOTSTRAP: "pass a stronger --teacher, or --optimizer none",
    "bootstrap-random-search": "pass a stronger --teacher, or --optimizer bootstrap-fewshot",
    "mipro": "pass a stronger --prompt-model, or --optimizer bootstrap-fewshot",
    "gepa": "pass a stronger --reflection-lm, or --optimizer bootstrap-fewshot",
}


@dataclass(frozen=True)
class Budget:
    """How much an optimizer may do: demo sets / instructions to choose from, and trials (MIPROv2: candidate
    programs evaluated; GEPA: proposals, each evaluated on a minibatch and, if better, on the val set)."""

    candidates: int
    instructions: int
    trials: int


def budget(questions: int, trials: int | None = None) -> Budget:
    """A budget that grows with the number of questions, so a small run is small: at 50 questions it is about
    MIPROv2's ``light`` preset (6 candidate sets, 3 instructions); at 8, 3 sets, 2 instructions and 4 trials."""
    if trials is not None and trials < 1:
        raise ConfigError(f"--trials {trials}: expected at least 1 trial")
    candidates = max(3, min(6, questions // 4 + 1))
    return Budget(candidates=candidates, instructions=max(2, candidates // 2),
                  trials=trials if trials is not None else max(2, min(30, questions // 2)))


def _bootstrap(metric, log: OptimizeLog, trainset, **kw):
    # Every training question may fail to parse: each is skipped and counted, the rest still bootstrap.
    return dspy.BootstrapFewShot(metric=metric, max_bootstrapped_demos=kw.get("demos", 4),
                                 max_labeled_demos=kw.get("demos", 4), max_errors=len(trainset) + 1)


def _random_search(metric, log: OptimizeLog, trainset, **kw):
    return dspy.BootstrapFewShotWithRandomSearch(metric=metric, max_bootstrapped_demos=kw.get("demos", 4),
                                                 max_labeled_demos=kw.get("demos", 4),
                                                 num_candidate_programs=kw.get("candidates", 8),
                                                 num_threads=kw.get("threads", 8), max_errors=len(trainset) + 1)


def _mipro(metric, log: OptimizeLog, trainset, **kw):
    plan = budget(len(trainset), kw.get("trials"))
    # ``auto`` (light, medium, heavy) picks DSPy's presets instead of the budget.
    # At the smallest budget the proposer goes without DSPy's description of the program and of each module: two
    # of its three calls per instruction.
    sized = {"auto": None, "num_candidates": plan.candidates, "num_instruct_candidates": plan.instructions,
             "num_trials": plan.trials, "program_aware": plan.candidates > 3} if kw.get("auto") is None else \
        {"auto": kw["auto"]}
    return KpddMIPROv2(metric, log, prompt_model=kw.get("prompt_model"), **sized, num_threads=kw.get("threads", 8),
                       seed=kw.get("seed", 0), max_bootstrapped_demos=kw.get("demos", 4),
                       max_labeled_demos=kw.get("demos", 4), max_errors=len(trainset) + 1)


def _gepa(metric, log: OptimizeLog, trainset, **kw):
    from kpdd.compile.gepa import gepa_optimizer

    reflection_lm = kw.get("reflection_lm") or dspy.settings.lm  # default: the teacher (optimize sets it)
    return gepa_optimizer(answer_feedback_metric, log, reflection_lm, budget(len(trainset), kw.get("trials")),
                          valset_size=kw["valset_size"], threads=kw.get("threads", 8), seed=kw.get("seed", 0))


OPTIMIZERS: dict[str, Callable] = {
    BOOTSTRAP: _bootstrap,
    "bootstrap-random-search": _random_search,
    "mipro": _mipro,
    "gepa": _gepa,
}


def optimize(program: dspy.Module, teacher: dspy.LM, trainset: list[dspy.Example], optimizer: str = BOOTSTRAP,
             valset: list[dspy.Example] | None = None, log: OptimizeLog | None = None,
             **optimizer_kwargs) -> dspy.Module:
    """A new program compiled on ``teacher``; ``program`` itself is left unchanged.

    ``log`` receives the optimizer's work and its skip counts (default: in memory). ``optimizer_kwargs``:
    ``prompt_model`` (MIPROv2's proposer, default the teacher), ``reflection_lm`` (GEPA's, default the teacher),
    ``trials``, ``demos``, ``threads``, ``seed``.
    """
    if optimizer not in OPTIMIZERS:
        raise unknown_name("optimizer", optimizer, OPTIMIZERS)
    log = log or OptimizeLog()
    if optimizer == "gepa" and valset is None:  # GEPA reflects on the train part and keeps a Pareto front on val
        trainset, valset = trainset[: math.ceil(len(trainset) / 2)], trainset[math.ceil(len(trainset) / 2):] or None
    student = program.deepcopy()
    with dspy.context(lm=teacher), log.watching():  # some optimizers read the LM when they are built (MIPROv2)
        try:
            teleprompter = OPTIMIZERS[optimizer](answer_metric, log, trainset,
                                                 valset_size=len(valset or trainset), **optimizer_kwargs)
            if optimizer == BOOTSTRAP:
                return _bootstrapped(teleprompter, student, trainset, log)
            if optimizer in ("mipro", "gepa"):
                log.step = "evaluation" if optimizer == "gepa" else log.step  # MIPROv2 names its own steps
                return teleprompter.compile(student, trainset=trainset, valset=valset)
            return teleprompter.compile(student, trainset=trainset)
        except StopOptimizing as stop:
            raise stop.error from None
        except KpddError:
            raise
        except Exception as error:
            raise _gave_up(optimizer, log, error) from error


def _gave_up(optimizer: str, log: OptimizeLog, error: Exception) -> KpddError:
    """The one line for an optimizer that raised: a server that is gone, else the step, the cause and the fix."""
    try:
        log.check_fatal()
    except StopOptimizing as stop:
        return stop.error
    kept = f"; its work so far is kept in {log.directory} (a rerun resumes)" if log.directory else ""
    return OptimizerError(f"optimizer {optimizer}: the {log.step} step failed ({reason(error)}: {detail(error)})"
                          f"{kept}: {ADVICE[optimizer]}")


def _bootstrapped(teleprompter: dspy.BootstrapFewShot, student: dspy.Module, trainset: list, log: OptimizeLog):
    """BootstrapFewShot with its demonstrations written when made and read back by a rerun."""
    log.step = "bootstrap"
    saved = log.demo_sets(BOOTSTRAP)
    if saved is not None:
        for i, predictor in enumerate(student.predictors()):
            predictor.demos = [dspy.Example(**d) for d in saved["sets"][str(i)][0]]
        return student
    compiled = teleprompter.compile(student, trainset=trainset)
    log.check_fatal()
    failed = teleprompter.error_count if hasattr(teleprompter, "error_count") else 0
    if failed:
        log.count("bootstrap/failed questions", failed)
    log.save_demo_sets(BOOTSTRAP, {i: [p.demos] for i, p in enumerate(compiled.predictors())})
    log.add_trial({"key": "bootstrap", "demo_sets": [0] * len(compiled.predictors()),
                   "demos": [len(p.demos) for p in compiled.predictors()], "failed_examples": failed,
                   "n": len(trainset)})
    return compiled


__all__ = ["ADVICE", "OPTIMIZERS", "Budget", "OptimizerError", "budget", "optimize"]
