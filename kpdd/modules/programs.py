"""The six reasoning programs. Each ``forward(question)`` returns a ``dspy.Prediction`` with
``answer`` (a float or None) and every stage's outputs under the signature's field names."""

import re

import dspy

from kpdd.eval.answers import extract_answer
from kpdd.modules.signatures import (
    AnswerSubQuestion,
    ChainOfThoughtSig,
    CoreQuestion,
    Decompose,
    DirectAnswerSig,
    ProblemInfo,
    ProgramOfThoughtSig,
    SolveCoT,
    SolvePoT,
)
from kpdd.sandbox.executor import execute

_FENCE = re.compile(r"```(?:python|py)?\s*\n(.*?)(?:```|$)", re.DOTALL)


def strip_code_fence(text: str) -> str:
    """Models often wrap programs in a markdown fence; keep only the code."""
    match = _FENCE.search(text or "")
    return match.group(1).strip() if match else (text or "").strip()


def run_program(program: str) -> dict:
    """Execute a model-written program in the sandbox; ``execution`` is the value or the error type."""
    result = execute(strip_code_fence(program))
    return {"execution": result.value if result.error is None else result.error, "answer": result.value}


class KpddProgram(dspy.Module):
    """A reasoning program that may carry the prompt format its student was trained on.

    DSPy takes the adapter from ``dspy.settings`` only; a compiled student's program sets ``prompt_adapter`` so it
    speaks its student's format wherever it runs, without the caller being told (it wins over the context's).
    """

    prompt_adapter: dspy.Adapter | None = None

    def __call__(self, *args, **kwargs):
        if self.prompt_adapter is None:
            return super().__call__(*args, **kwargs)
        with dspy.context(adapter=self.prompt_adapter):
            return super().__call__(*args, **kwargs)

    async def acall(self, *args, **kwargs):
        if self.prompt_adapter is None:
            return await super().acall(*args, **kwargs)
        with dspy.context(adapter=self.prompt_adapter):
            return await super().acall(*args, **kwargs)


def format_previous(steps: list[tuple[str, str]]) -> str:
    return "\n".join(f"Q: {q} A: {a}" for q, a in steps)


class KeyPoints(dspy.Module):
    """KPDD's first two stages: the core question, then the problem-solving information."""

    def __init__(self):
        super().__init__()
        self.core = dspy.Predict(CoreQuestion)
        self.info = dspy.Predict(ProblemInfo)

    def forward(self, question: str):
        core_question = self.core(question=question).core_question
        key_points = self.info(question=question, core_question=core_question).key_points
        return dspy.Prediction(core_question=core_question, key_points=key_points)


class KPDDCoT(KpddProgram):
    """Key-point-driven distillation, chain of thought: core question → key points → step-by-step solution."""

    def __init__(self):
        super().__init__()
        self.key_points = KeyPoints()
        self.solve = dspy.Predict(SolveCoT)

    def forward(self, question: str):
        kp = self.key_points(question=question)
        solved = self.solve(question=question, core_question=kp.core_question, key_points=kp.key_points)
        return dspy.Prediction(**kp, reasoning=solved.reasoning, raw_answer=solved.answer,
                               answer=extract_answer(solved.answer))


class KPDDPoT(KpddProgram):
    """Key-point-driven distillation, program of thought: core question → key points → a Python
    program, executed in the sandbox."""

    def __init__(self):
        super().__init__()
        self.key_points = KeyPoints()
        self.solve = dspy.Predict(SolvePoT)

    def forward(self, question: str):
        kp = self.key_points(question=question)
        program = self.solve(question=question, core_question=kp.core_question, key_points=kp.key_points).program
        return dspy.Prediction(**kp, program=program, **run_program(program))


class SocraticCoT(KpddProgram):
    """Socratic CoT: a decomposer writes sub-questions, a sub-problem solver answers them in turn;
    the last sub-answer is the answer."""

    def __init__(self, max_steps: int = 12):
        super().__init__()
        self.max_steps = max_steps  # bounds the calls a runaway decomposition can make
        self.decompose = dspy.Predict(Decompose)
        self.answer_sub = dspy.Predict(AnswerSubQuestion)

    def forward(self, question: str):
        sub_questions = self.decompose(question=question).sub_questions[: self.max_steps]
        steps = []
        for sub_question in sub_questions:
            sub_answer = self.answer_sub(question=question, previous=format_previous(steps),
                                         sub_question=sub_question).sub_answer
            steps.append((sub_question, sub_answer))
        sub_answers = [a for _, a in steps]
        answer = extract_answer(sub_answers[-1]) if sub_answers else None
        return dspy.Prediction(sub_questions=sub_questions, sub_answers=sub_answers, answer=answer)


class ChainOfThoughtBaseline(KpddProgram):
    """Plain chain of thought: reasoning, then the answer."""

    def __init__(self):
        super().__init__()
        self.solve = dspy.Predict(ChainOfThoughtSig)

    def forward(self, question: str):
        solved = self.solve(question=question)
        return dspy.Prediction(reasoning=solved.reasoning, raw_answer=solved.answer,
                               answer=extract_answer(solved.answer))


class ProgramOfThoughtBaseline(KpddProgram):
    """Plain program of thought: a Python program, executed in the sandbox."""

    def __init__(self):
        super().__init__()
        self.solve = dspy.Predict(ProgramOfThoughtSig)

    def forward(self, question: str):
        program = self.solve(question=question).program
        return dspy.Prediction(program=program, **run_program(program))


class DirectAnswer(KpddProgram):
    """The answer with no rationale."""

    def __init__(self):
        super().__init__()
        self.solve = dspy.Predict(DirectAnswerSig)

    def forward(self, question: str):
        solved = self.solve(question=question)
        return dspy.Prediction(raw_answer=solved.answer, answer=extract_answer(solved.answer))
