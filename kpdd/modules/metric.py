"""The answer-correctness metric shared by every DSPy optimizer, dspy.Evaluate and trace filtering."""

import dspy

from kpdd.eval.answers import is_correct


def answer_metric(example, prediction, trace=None) -> bool:
    """True when the prediction's numeric ``answer`` matches the example's gold ``answer``."""
    return is_correct(getattr(prediction, "answer", None), example.answer)


def answer_feedback_metric(gold, prediction, trace=None, pred_name=None, pred_trace=None) -> dspy.Prediction:
    """GEPA's form of :func:`answer_metric`: the score plus feedback its reflection LM can act on."""
    answer = getattr(prediction, "answer", None)
    correct = is_correct(answer, gold.answer)
    if correct:
        feedback = f"Correct: the answer {answer:g} equals the gold answer."
    elif isinstance(getattr(prediction, "execution", None), str):
        feedback = f"The program failed to run ({prediction.execution}); the gold answer is {gold.answer:g}."
    elif answer is None:
        feedback = f"No numeric answer could be read from the output; the gold answer is {gold.answer:g}."
    else:
        feedback = f"Wrong: the answer {answer:g} differs from the gold answer {gold.answer:g}."
    if not correct and getattr(gold, "rationale", None):
        feedback += f" A correct solution: {gold.rationale}"
    return dspy.Prediction(score=float(correct), feedback=feedback)


def resolve_metric(reference: str | None):
    """The metric a ``--metric`` names: ``package.module:function`` or ``path/to/file.py:function`` (any DSPy
    metric, ``metric(example, prediction, trace=None) -> bool | float``); empty: :func:`answer_metric`."""
    from kpdd.errors import ConfigError
    from kpdd.modules.reference import resolve_object
    from kpdd.references import is_code_reference

    if not reference:
        return answer_metric
    if not is_code_reference(reference):
        raise ConfigError(f"metric {reference!r}: expected package.module:function or path/to/file.py:function")
    metric = resolve_object(reference, "metric")
    if not callable(metric):
        raise ConfigError(f"metric {reference}: {type(metric).__name__} is not callable")
    return metric
