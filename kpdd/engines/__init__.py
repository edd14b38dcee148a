"""Serving students: the local inference engines, and the functions that build a `dspy.LM` for a student, a
server or a teacher (one teacher over many servers: `kpdd.engines.router`, LiteLLM's Router behind a `dspy.LM`),
or load a compiled program with its students.

Nothing here imports torch, transformers or vllm until a model is loaded.
"""

from kpdd.engines.batching import shared_engine
from kpdd.engines.compiled import load_compiled, program_with_student, save_compiled
from kpdd.engines.lm import server_lm, student_lm, teacher_lm

__all__ = ["load_compiled", "program_with_student", "save_compiled", "server_lm", "shared_engine", "student_lm",
           "teacher_lm"]
