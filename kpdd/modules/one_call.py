"""One-call students: every stage of a multi-stage program written in one completion.

The teacher runs KPDD's (or Socratic's) stages as separate calls; a distilled student may instead write each
stage's outputs in stage order, from one prompt that holds the question once (the papers' unified student). Nothing
here is written per method: the one call's signature is built from the program's predictors — its inputs are what
the program's ``forward`` takes, its outputs every predictor's outputs in order (a predictor called several times,
like Socratic's sub-question solver, gives a list of its outputs). The program's own ``forward`` then runs as it
always does, with each predictor replaying its part of the completion, so the non-LM steps (the sandboxed program
run, answer extraction) are unchanged and the prediction holds each stage's fields under their own names. A stage
missing from the completion fails as that stage's parse error, so the error taxonomy still names it.
"""

from __future__ import annotations

import inspect
from collections import Counter
from collections.abc import Iterable
from typing import Any

import dspy
from dspy.utils.exceptions import AdapterParseError

from kpdd.modules.programs import KpddProgram
from kpdd.modules.student_format import is_list

ONE, PER_STAGE = "one", "per-stage"
STUDENT_CALLS = (ONE, PER_STAGE)
ONE_CALL_PREDICTOR = "one_call"


def program_inputs(program: dspy.Module) -> list[str]:
    """The keyword arguments of the program's ``forward`` (the question, for every built-in program)."""
    if isinstance(program, OneCallProgram):
        program = program.program
    forward = type(program).forward  # the class's: DSPy warns when .forward is read off an instance
    return [p for p in inspect.signature(forward).parameters if p not in ("self", "args", "kwargs")]


def one_call_names(program: dspy.Module) -> dict[tuple[str, str], str]:
    """(predictor, output field) → the field's name in the one call: its own name, or, where two predictors write a
    field of the same name (two ``ChainOfThought``s' ``reasoning``), ``<predictor>_<field>`` for the later ones."""
    taken = set(program_inputs(program))
    names: dict[tuple[str, str], str] = {}
    for predictor_name, predictor in program.named_predictors():
        for name in predictor.signature.output_fields:
            unique = name if name not in taken else f"{predictor_name.replace('.', '_')}_{name}"
            if unique in taken:
                raise dspy.utils.exceptions.DSPyError(f"output {name!r} of {predictor_name!r} repeats another field")
            taken.add(unique)
            names[predictor_name, name] = unique
    return names


def one_call_signature(program: dspy.Module, repeated: Iterable[str] = ()) -> type[dspy.Signature]:
    """The program's inputs → every predictor's outputs in stage order; ``repeated`` predictors' outputs become
    lists."""
    repeated = set(repeated)
    predictors = program.named_predictors()
    names = one_call_names(program)
    fields: dict[str, tuple[Any, Any]] = {}
    for name in program_inputs(program):
        source = next((p.signature.input_fields[name] for _, p in predictors if name in p.signature.input_fields), None)
        fields[name] = (str if source is None else source.annotation, dspy.InputField(desc=getattr(source, "description", "")))
    for predictor_name, predictor in predictors:
        for name, field in predictor.signature.output_fields.items():
            annotation = list[field.annotation] if predictor_name in repeated else field.annotation
            fields[names[predictor_name, name]] = (annotation, dspy.OutputField(desc=field.json_schema_extra.get("desc", "")))
    return dspy.Signature(fields, "Every stage's outputs, in stage order.")


def repeated_predictors(traces: Iterable[dict]) -> list[str]:
    """Predictors that some trace calls more than once (their one-call outputs are lists)."""
    repeated: set[str] = set()
    for trace in traces:
        counts = Counter(stage["predictor"] for stage in trace["stages"])
        repeated |= {name for name, count in counts.items() if count > 1}
    return sorted(repeated)


def one_call_example(trace: dict, signature: type[dspy.Signature], repeated: Iterable[str],
                     names: dict[tuple[str, str], str] | None = None) -> tuple[dict, dict]:
    """(inputs, outputs) of the one call equivalent to a trace's stage calls (``names``: :func:`one_call_names`)."""
    repeated, names = set(repeated), names or {}
    inputs = {}
    for name in signature.input_fields:
        inputs[name] = next(s["inputs"][name] for s in trace["stages"] if name in s["inputs"])
    outputs: dict[str, Any] = {}
    for stage in trace["stages"]:
        for name, value in stage["outputs"].items():
            name = names.get((stage["predictor"], name), name)
            if stage["predictor"] in repeated:
                outputs.setdefault(name, []).append(value)
            else:
                outputs.setdefault(name, value)
    for name, field in signature.output_fields.items():  # a repeated stage the trace never called: an empty list
        if name not in outputs and is_list(field.annotation):
            outputs[name] = []
    return inputs, outputs


class _Replay(dspy.Module):
    """Stands in for one predictor: returns its fields from the one-call completion, call by call."""

    def __init__(self, signature: type[dspy.Signature], fields: dict[str, Any], repeated: bool, completion: str,
                 names: dict[str, str]):
        super().__init__()
        self.signature, self.fields, self.repeated, self.completion = signature, fields, repeated, completion
        self.names = names  # the predictor's field → its name in the one call
        self.calls = 0

    def forward(self, **kwargs):
        index, self.calls = self.calls, self.calls + 1
        names = {n: self.names.get(n, n) for n in self.signature.output_fields}
        present = all(n in self.fields and (not self.repeated or index < len(self.fields[n])) for n in names.values())
        if not present:
            # parsed_result keeps every stage that did parse, so the predictions record shows them
            raise AdapterParseError(adapter_name="one call", signature=self.signature, lm_response=self.completion,
                                    parsed_result=dict(self.fields))
        return dspy.Prediction(**{n: self.fields[c][index] if self.repeated else self.fields[c] for n, c in names.items()})


class _Stages:
    """Holds the per-stage program out of DSPy's sight: its predictors never call an LM here."""

    def __init__(self, program: dspy.Module):
        self.program = program


class OneCallProgram(KpddProgram):
    """``program`` (a multi-stage registry program) run by one student call per question."""

    def __init__(self, program: dspy.Module, repeated: Iterable[str] = ()):
        super().__init__()
        self.repeated = sorted(repeated)
        self.stages = _Stages(program)
        self.one_call = dspy.Predict(one_call_signature(program, self.repeated))

    @property
    def program(self) -> dspy.Module:
        return self.stages.program

    def forward(self, **inputs):
        try:
            fields, completion = dict(self.one_call(**inputs)), ""
        except AdapterParseError as e:  # keep what parsed: the first missing stage reports the failure
            fields, completion = dict(e.parsed_result or {}), e.lm_response
        replaying = self.program.deepcopy()
        names = one_call_names(self.program)
        for name, predictor in self.program.named_predictors():
            parent, _, attribute = name.rpartition(".")
            owner = replaying if not parent else _attribute(replaying, parent)
            own = {field: called for (p, field), called in names.items() if p == name}
            setattr(owner, attribute, _Replay(predictor.signature, fields, name in self.repeated, completion, own))
        return replaying(**inputs)


def _attribute(module: dspy.Module, dotted: str) -> Any:
    for part in dotted.split("."):
        module = getattr(module, part)
    return module
