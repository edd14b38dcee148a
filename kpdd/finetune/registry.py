"""Which student `local/<model_id>` names, process-wide.

The local engines route each request by its model id through this registry; DSPy's fine-tuning path
(:class:`kpdd.finetune.provider.KpddProvider`) registers each freshly trained student here, so the
`lm.copy(model=...)` that DSPy makes is served by the engine the LM already holds.
"""

from __future__ import annotations

import threading

from kpdd.errors import KpddError, unknown_name
from kpdd.finetune.student import StudentRef, read_student

LOCAL_PREFIX = "local/"  # a dspy.LM("local/<model_id>") runs on a local engine

_students: dict[str, StudentRef] = {}
_students_lock = threading.Lock()


def register_student(model_id: str, student: str | StudentRef) -> StudentRef:
    """Make `local/<model_id>` servable by every local engine in this process."""
    ref = read_student(student)
    with _students_lock:
        known = _students.get(model_id)
        if known is not None and known.location != ref.location and known.train == ref.train:
            return known  # a copy of the same trained student (e.g. saved with a compiled program): same weights
        if known is not None and known.location != ref.location:
            raise KpddError(
                f"model id {model_id!r} is already registered for {known.location}; "
                f"give the student at {ref.location} its own id (kpdd.finetune.student.new_model_id)."
            )
        _students[model_id] = ref
    return ref


def registered_student(model_id: str) -> StudentRef:
    """The student served as `local/<model_id>` (RegistryError, with close matches, if none is)."""
    with _students_lock:
        ref = _students.get(model_id)
    if ref is None:
        raise unknown_name("local model id", model_id, _students) from None
    return ref


def registered_students() -> dict[str, StudentRef]:
    """Every student this process serves, by model id (a copy)."""
    with _students_lock:
        return dict(_students)
