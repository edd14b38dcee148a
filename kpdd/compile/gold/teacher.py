"""The gold-annotation teacher: traces built from the datasets' own annotations, with no LM.

``GoldTeacher(method)`` writes, for one question, exactly the stage calls the method's DSPy program would make
(predictor names from ``program.named_predictors()``, inputs and outputs keyed and typed by each signature), so
the trace store, the SFT data and fine-tuning cannot tell its traces from an LM teacher's. It is deterministic:
at most one trace per question, kept only when verified; otherwise the question gets one countable reason.

Where each method's outputs come from (the text heuristics are documented in ``kpdd.compile.gold.calculations``,
``programs`` and ``language`` beside it):

=================  ==========================================================================================
``direct``         the gold answer as text ('72').
``cot``            reasoning = the GSM8K rationale without its calculator annotations (for SVAMP / ASDiv /
                   MultiArith: '76 - 25 = 51' from the equation); answer = the gold answer as text.
``pot``            a program with named variables written from the rationale's calculations (or the equation),
                   executed in the sandbox (``kpdd.sandbox.executor``); kept only when its ``ans`` equals the gold.
                   A question is dropped whose program would bind a number by coincidence ('ambiguous number',
                   see ``programs``) or keeps a literal the question does not state ('-18 / -2', solved for).
``kpdd-cot/-pot``  core question = the question sentence; key points = the facts (clauses) of the question that
                   state a quantity the gold solution reads or any other literal it reads (the program's, else
                   the rationale's: 'three times as much', 'the 9th floor', '22kg', ``kpdd.compile.gold.checks``),
                   or a relation without numbers; then the ``cot`` / ``pot`` solution. A question is dropped whose
                   solution reads a number the key points cannot state, because the question never writes it
                   (a count the words imply, a number worked out in prose).
``socratic``       one sub-question per rationale line, the last being the problem's core question; each
                   sub-answer is its line without annotations, ending with the line's result (the last line:
                   with the gold answer, when the line states it); the sub-solver's
                   ``previous`` input is built with the program's own ``format_previous``. Kept when the last
                   sub-answer's number equals the gold. Needs a rationale.
=================  ==========================================================================================

Verification uses the programs' own answer extraction (``extract_answer`` / ``is_correct``), so a kept trace
replayed through the real program gives the gold answer. :meth:`GoldTeacher.sample_many` runs many questions
with one batched sandbox call (``execute_many``): all of GSM8K train in well under a minute.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from kpdd.compile.gold import language as gold_language
from kpdd.compile.gold import programs as gold_programs
from kpdd.compile.gold.checks import (key_points_unstated, program_literals, rationale_literals, reads_stating,
                                      unstated)
from kpdd.compile.gold.calculations import HEURISTICS, NoTrace, format_number, rationale_lines, strip_annotations
from kpdd.compile.store import QuestionResult
from kpdd.eval.answers import extract_answer, is_correct
from kpdd.modules.programs import format_previous
from kpdd.modules.registry import build_program
from kpdd.sandbox.executor import ExecutionResult, execute, execute_many

__all__ = ["GoldTeacher", "HEURISTICS"]


@dataclass
class Draft:
    """A trace before verification; PoT drafts carry the program the sandbox must run."""

    stages: list[dict[str, Any]]
    answer: float | None  # the answer the stages claim (PoT: None until executed)
    program: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)


class GoldTeacher:
    """Traces from gold annotations for the registered program ``method`` (see the module docstring)."""

    name = "gold"

    def __init__(self, method: str, timeout: float = 2.0):
        program = build_program(method)  # an unknown name raises a RegistryError listing the known ones
        self.method, self.timeout = method, timeout
        self.signatures = {name: predictor.signature for name, predictor in program.named_predictors()}
        self.max_steps = getattr(program, "max_steps", None)  # Socratic: the program's cap on sub-questions

    def sample(self, example, samples: int = 1) -> QuestionResult:
        """One question's result; deterministic, so ``samples`` beyond one would only repeat the trace."""
        return self.sample_many([example])[0]

    def sample_many(self, examples: Iterable) -> list[QuestionResult]:
        """Results for many questions, their programs verified in one batched sandbox call."""
        examples = list(examples)
        drafts = [self._draft_or_reason(example) for example in examples]
        runs = iter(self._execute([d.program for d in drafts if isinstance(d, Draft) and d.program]))
        return [self._result(example, draft, next(runs) if isinstance(draft, Draft) and draft.program else None)
                for example, draft in zip(examples, drafts)]

    # Verification -------------------------------------------------------------------------------------

    def _execute(self, programs: list[str]) -> list[ExecutionResult]:
        """Run programs in the sandbox, all at once. Gold programs are a few assignments, so a timeout means a
        loaded machine: those run once more, patiently."""
        runs = execute_many(programs, self.timeout) if programs else []
        return [execute(p, 10 * self.timeout) if run.error == "timeout" else run for p, run in zip(programs, runs)]

    def _draft_or_reason(self, example) -> Draft | str:
        try:
            return self.draft(example)
        except NoTrace as reason:
            return f"{self.method}: {reason}"

    def _result(self, example, draft: Draft | str, execution: ExecutionResult | None) -> QuestionResult:
        result = QuestionResult(example.id, gold=example.answer, samples=1)
        if isinstance(draft, str):
            result.errors[draft] += 1
            return result
        answer = draft.answer
        if execution is not None:
            checked = "program" if answer is None else "equation"
            if execution.error is not None:
                result.errors[f"{self.method}: {checked} error ({execution.error})"] += 1
                if execution.error == "timeout":
                    result.failed = f"sandbox timeout: {execution.detail}"  # the machine, not the question: retried
                return result
            if not is_correct(execution.value, example.answer):
                result.errors[f"{self.method}: {checked} value != gold"] += 1
                return result
            answer = execution.value if answer is None else answer
        if not is_correct(answer, example.answer):
            result.errors[f"{self.method}: answer != gold"] += 1
            return result
        result.correct = 1
        result.traces.append({"stages": draft.stages, "answer": answer,
                              "meta": {"heuristics": HEURISTICS, **draft.meta}})
        return result

    # Drafts -------------------------------------------------------------------------------------------

    def draft(self, example) -> Draft:
        """The method's stage calls for one question (not yet verified); raises NoTrace with the reason."""
        question, gold = example.question, example.answer
        if self.method == "direct":
            answer = format_number(gold)
            return Draft([self._stage("solve", question=question, answer=answer)], extract_answer(answer),
                         meta={"source": "answer"})
        if self.method == "socratic":
            return self._socratic(example)
        solve, claimed, program, source = self._solution(example)
        if self.method in ("cot", "pot"):
            return Draft([self._stage("solve", question=question, **solve)], claimed, program, {"source": source})
        reads = gold_programs.solution_reads(question, example.answer, getattr(example, "rationale", None),
                                             getattr(example, "equation", None))
        literals = program_literals(program) if program and "program" in solve \
            else rationale_literals(getattr(example, "rationale", None) or "", question)
        reads = reads_stating(question, reads, literals)  # '3 * 4000' reads 'three times as much'
        core_question, key_points = gold_language.core_question_and_key_points(question, reads, literals)
        if missing := key_points_unstated(literals, key_points, core_question):  # '2' for 'Ali and Leila'
            raise NoTrace(f"solution reads a number the question does not state ({missing[0]})")
        shared = {"question": question, "core_question": core_question}
        stages = [self._stage("key_points.core", **shared),
                  self._stage("key_points.info", **shared, key_points=key_points),
                  self._stage("solve", **shared, key_points=key_points, **solve)]
        return Draft(stages, claimed, program, {"source": source})

    def _solution(self, example) -> tuple[dict[str, str], float | None, str | None, str]:
        """The solve stage's outputs of a CoT or PoT method: (outputs, claimed answer, program to verify, source).
        Reasoning written from an equation is verified by running the equation as a program."""
        rationale, equation = getattr(example, "rationale", None), getattr(example, "equation", None)
        if not rationale and not equation:
            raise NoTrace("no rationale or equation")
        answer = format_number(example.answer)
        if rationale and self.method.endswith("cot"):
            reasoning = "\n".join(map(strip_annotations, rationale_lines(rationale)))
            return {"reasoning": reasoning, "answer": answer}, extract_answer(answer), None, "rationale"
        if rationale:
            program = gold_programs.rationale_program(example.question, rationale, example.answer)
            if missing := unstated(program_literals(program), example.question):  # '-18 / -2', solved for
                raise NoTrace(f"program reads a number the question does not state ({missing[0]})")
            return {"program": program}, None, program, "rationale"
        program = gold_programs.equation_program(example.question, equation, example.answer)
        if self.method.endswith("pot"):
            return {"program": program}, None, program, "equation"
        reasoning = gold_programs.equation_reasoning(equation, example.answer)
        return {"reasoning": reasoning, "answer": answer}, extract_answer(answer), program, "equation"

    def _socratic(self, example) -> Draft:
        question = example.question
        lines = rationale_lines(getattr(example, "rationale", None) or "")
        if not lines:
            raise NoTrace("no rationale")
        if self.max_steps is not None and len(lines) > self.max_steps:
            raise NoTrace(f"more than {self.max_steps} steps")
        core_question, _ = gold_language.core_question_and_key_points(question)
        sub_questions = [*map(gold_language.sub_question, lines[:-1]), core_question]
        sub_answers = [*map(gold_language.sub_answer, lines[:-1]), gold_language.sub_answer(lines[-1], example.answer)]
        stages, steps = [self._stage("decompose", question=question, sub_questions=sub_questions)], []
        for sub_question, sub_answer in zip(sub_questions, sub_answers):
            stages.append(self._stage("answer_sub", question=question, previous=format_previous(steps),
                                      sub_question=sub_question, sub_answer=sub_answer))
            steps.append((sub_question, sub_answer))
        if not is_correct(sub_answers[-1], example.answer):
            raise NoTrace("last sub-answer != gold")
        return Draft(stages, extract_answer(sub_answers[-1]), meta={"source": "rationale"})

    def _stage(self, predictor: str, **values: Any) -> dict[str, Any]:
        """One stage record, keyed exactly by the predictor's signature (a mismatch is a bug here)."""
        signature = self.signatures[predictor]
        fields = {**signature.input_fields, **signature.output_fields}
        if set(values) != set(fields):
            raise TypeError(f"{predictor}: stage fields {sorted(values)} != signature fields {sorted(fields)}")
        return {"predictor": predictor, "inputs": {name: values[name] for name in signature.input_fields},
                "outputs": {name: values[name] for name in signature.output_fields}}
