"""The stages of every method as DSPy signatures. A signature's docstring is its prompt."""

import dspy


class CoreQuestion(dspy.Signature):
    """Read the maths word problem and state its core question: the one quantity that must be
    found, as a single short question."""

    question: str = dspy.InputField(desc="a maths word problem")
    core_question: str = dspy.OutputField(desc="the single question the problem asks, e.g. 'How much does Janet make every day?'")


class ProblemInfo(dspy.Signature):
    """List the problem-solving information needed to answer the core question: every known
    quantity and every relation between quantities, one short fact per item, in the order given."""

    question: str = dspy.InputField(desc="a maths word problem")
    core_question: str = dspy.InputField(desc="the question to be answered")
    key_points: list[str] = dspy.OutputField(desc="one known quantity or relation per item")


class SolveCoT(dspy.Signature):
    """Solve the maths word problem step by step, using the key points. Write one calculation per
    line, then give the final answer as a number only."""

    question: str = dspy.InputField(desc="a maths word problem")
    core_question: str = dspy.InputField(desc="the question to be answered")
    key_points: list[str] = dspy.InputField(desc="the problem-solving information")
    reasoning: str = dspy.OutputField(desc="step-by-step solution, one calculation per line")
    answer: str = dspy.OutputField(desc="the final answer, a number only")


class SolvePoT(dspy.Signature):
    """Write a short Python program that solves the maths word problem, using the key points. Give
    each known quantity a descriptive variable name, compute step by step, and store the final
    numeric answer in a variable named `ans`. Use only plain Python (no imports, no input, no print)."""

    question: str = dspy.InputField(desc="a maths word problem")
    core_question: str = dspy.InputField(desc="the question to be answered")
    key_points: list[str] = dspy.InputField(desc="the problem-solving information")
    program: str = dspy.OutputField(desc="Python code that sets the variable `ans` to the answer")


class Decompose(dspy.Signature):
    """Break the maths word problem into the ordered sub-questions that lead to its answer. Each
    sub-question asks for one intermediate quantity; the last one asks for the final answer."""

    question: str = dspy.InputField(desc="a maths word problem")
    sub_questions: list[str] = dspy.OutputField(desc="ordered sub-questions, the last one is the problem's question")


class AnswerSubQuestion(dspy.Signature):
    """Answer the next sub-question of the maths word problem with one calculation, using the
    problem and the sub-questions already answered. End with the numeric result."""

    question: str = dspy.InputField(desc="a maths word problem")
    previous: str = dspy.InputField(desc="sub-questions already answered, one 'Q: ... A: ...' per line (may be empty)")
    sub_question: str = dspy.InputField(desc="the sub-question to answer now")
    sub_answer: str = dspy.OutputField(desc="one sentence with the calculation, ending with the numeric result")


class DirectAnswerSig(dspy.Signature):
    """Answer the maths word problem with the final number only."""

    question: str = dspy.InputField(desc="a maths word problem")
    answer: str = dspy.OutputField(desc="the final answer, a number only")


class ChainOfThoughtSig(dspy.Signature):
    """Solve the maths word problem step by step, one calculation per line, then give the final
    answer as a number only."""

    question: str = dspy.InputField(desc="a maths word problem")
    reasoning: str = dspy.OutputField(desc="step-by-step solution, one calculation per line")
    answer: str = dspy.OutputField(desc="the final answer, a number only")


class ProgramOfThoughtSig(dspy.Signature):
    """Write a short Python program that solves the maths word problem. Give each known quantity a
    descriptive variable name, compute step by step, and store the final numeric answer in a
    variable named `ans`. Use only plain Python (no imports, no input, no print)."""

    question: str = dspy.InputField(desc="a maths word problem")
    program: str = dspy.OutputField(desc="Python code that sets the variable `ans` to the answer")
