"""MLflow tracking: the store, a parent run per ``kpdd`` command with child runs per stage, sampled DSPy traces,
and ``compare``.

Importing this package imports neither mlflow nor torch (dspy, yes); mlflow loads on the first call.
"""

from kpdd.tracking.compare import CompareResult, compare
from kpdd.tracking.dspy_traces import dspy_tracing
from kpdd.tracking.rows import CompareRow
from kpdd.tracking.runs import (
    ACCURACY_PREFIX,
    COMMAND,
    DEFAULT_EXPERIMENT,
    ERRORS_PREFIX,
    METHOD,
    STAGE,
    STUDENT,
    TEACHER,
    TOKENS_PER_S,
    TRACES_COUNT,
    TRACES_COVERAGE,
    TRAIN_LOSS,
    TRAIN_TIME,
    VAL_LOSS,
    accuracy_key,
    command_run,
    error_key,
    log_dataset_input,
    log_records_table,
    resolve_tracking_uri,
    setup_tracking,
    stage_run,
)

__all__ = [
    "ACCURACY_PREFIX", "COMMAND", "DEFAULT_EXPERIMENT", "ERRORS_PREFIX", "METHOD", "STAGE", "STUDENT", "TEACHER",
    "TOKENS_PER_S", "TRACES_COUNT", "TRACES_COVERAGE", "TRAIN_LOSS", "TRAIN_TIME", "VAL_LOSS",
    "CompareResult", "CompareRow", "accuracy_key", "command_run", "compare", "dspy_tracing", "error_key",
    "log_dataset_input", "log_records_table", "resolve_tracking_uri", "setup_tracking", "stage_run",
]
