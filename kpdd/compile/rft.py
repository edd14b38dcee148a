"""Rejection sampling from the student (RFT): k sampled runs per question, the verified-correct, new ones kept.

:class:`StudentSampler` is a teacher (``sample(example, samples) -> QuestionResult``, see
:mod:`kpdd.compile.traces`) whose LM is the student being improved: each of the k runs samples with its own DSPy
``rollout_id`` (else DSPy's cache would return the first run k times), a run is kept when its answer is right
(for PoT: the sandbox ran its program and the value matched), and a kept run whose solution is already known for
the question — the same program text, or the same normalised rationale, from this round, an earlier one or the
gold traces — is dropped as a duplicate. Traces are tagged with their round. A one-call student's run (every
stage in one completion, :mod:`kpdd.modules.one_call`) is recorded as the per-stage calls it stands for, the form
every trace store holds.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import dspy

from kpdd.compile.store import source_question_id
from kpdd.errors import ConfigError
from kpdd.compile.teachers import SamplingTeacher, stages_of
from kpdd.eval.harness import sampling_program
from kpdd.modules.one_call import OneCallProgram

_SOLUTION_FIELDS = ("program", "reasoning", "sub_answer")  # what a solution is, by the stage outputs that hold it


def solution_key(stages: list[dict]) -> str:
    """A solution's identity: its program text (each line stripped, blank lines dropped), else its rationale
    lower-cased with whitespace collapsed. Two traces with one key teach the same solution."""
    for name in _SOLUTION_FIELDS:
        parts = [str(s["outputs"][name]) for s in stages if name in s["outputs"]]
        if parts and name == "program":
            return "program:" + "\n".join(line.strip() for p in parts for line in p.splitlines() if line.strip())
        if parts:
            return f"{name}:" + re.sub(r"\s+", " ", " ".join(parts)).strip().lower()
    return "answer:" + " ".join(str(s["outputs"]) for s in stages)


def known_solutions(traces: Iterable[dict]) -> dict[str, set[str]]:
    """Question id → the solution keys its traces already hold (variants count for their own question)."""
    known: dict[str, set[str]] = {}
    for trace in traces:
        known.setdefault(trace["question_id"], set()).add(solution_key(trace["stages"]))
    return known


def per_stage(program: dspy.Module, stages: list[dict]) -> list[dict]:
    """The stage records of one run: as traced, or for a one-call student, the per-stage calls its completion
    stands for (each stage's inputs are the question and the earlier stages' outputs)."""
    if not isinstance(program, OneCallProgram):
        return stages
    if program.repeated:
        raise ConfigError(f"a one-call student of a program with repeated stages ({', '.join(program.repeated)}) "
                          "cannot be sampled into per-stage traces: sample a per-stage student")
    [call] = stages
    known, records = dict(call["inputs"]), []
    for name, predictor in program.program.named_predictors():
        outputs = {field: call["outputs"][field] for field in predictor.signature.output_fields}
        records.append({"predictor": name, "inputs": {field: known[field] for field in predictor.signature.input_fields},
                        "outputs": outputs})
        known.update(outputs)
    return records


class StudentSampler(SamplingTeacher):
    """Sample the student's program k times per question; keep right answers with solutions not yet known. A
    compiled student's program speaks its own prompt format; ``adapter`` serves a program that has none."""

    def __init__(self, program: dspy.Module, model_id: str, round_: int, temperature: float = 0.7,
                 known: dict[str, set[str]] | None = None, adapter: dspy.Adapter | None = None):
        if temperature <= 0:
            raise ValueError(f"rejection sampling needs temperature > 0, got {temperature}")
        self.program, self.round, self.temperature = program, round_, temperature
        self.name = f"student:{model_id}"
        self.known = known if known is not None else {}
        self.adapter = adapter

    def _run(self, inputs: dict, index: int, samples: int) -> tuple[dspy.Module, dspy.Prediction, list]:
        program = sampling_program(self.program, index, self.temperature)
        with dspy.context(trace=[], **({"adapter": self.adapter} if self.adapter else {})):
            prediction = program(**inputs)
            return program, prediction, list(dspy.settings.trace)

    def _stages(self, program: dspy.Module, calls: list) -> list[dict]:
        return per_stage(program, stages_of(program, calls))

    def _solution_key(self, question_id: str, stages: list[dict]) -> str:
        return solution_key(stages)

    def _known(self, question_id: str) -> set[str]:
        return self.known.setdefault(question_id, set())  # this round's, earlier rounds' and the gold solutions

    def _meta(self, index: int) -> dict:
        return {"round": self.round, "sample": index, "temperature": self.temperature}


def newly_covered(round_traces: Iterable[dict], earlier: Iterable[dict]) -> set[str]:
    """Questions that got a student solution this round and had none from earlier rounds."""
    before = {source_question_id(t["question_id"]) for t in earlier}
    return {source_question_id(t["question_id"]) for t in round_traces} - before
