"""MLflow tracking for every kpdd command: where the store lives, one parent run per command, a child run per stage.

The store is, in order: an explicit ``tracking_uri``, ``MLFLOW_TRACKING_URI``, or ``sqlite:///<cwd>/mlflow.db``.
A SQLite store keeps its artifacts in ``mlruns/<experiment>`` beside the database file (MLflow would otherwise
write them under whatever ``./mlruns`` the process happens to start in); a server decides for itself.

Inside a run, log with MLflow directly (``mlflow.log_metrics``, ``mlflow.log_dict``, ``mlflow.log_artifact(s)``,
``mlflow.log_table``) under the names below, which are what ``kpdd compare`` reads. This module adds only what
MLflow lacks: runs that record their failure, config params, dataset inputs from examples (sampled DSPy
traces are in ``kpdd.tracking.dspy_traces``).
mlflow is imported inside the functions, so importing kpdd stays fast.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import subprocess
import traceback
from collections.abc import Iterable, Iterator
from importlib import metadata
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from kpdd.config import config_document
from kpdd.distributed import is_main_process
from kpdd.errors import ConfigError

DEFAULT_EXPERIMENT = "kpdd"
DEFAULT_DATABASE = "mlflow.db"
ARTIFACT_DIR = "mlruns"

# Tags.
COMMAND = "kpdd.command"
METHOD = "kpdd.method"
TEACHER = "kpdd.teacher"
STUDENT = "kpdd.student"
STAGE = "kpdd.stage"
ERROR_TYPE = "kpdd.error.type"
ERROR = "kpdd.error"
GIT_COMMIT = "mlflow.source.git.commit"  # MLflow's own tag, so the UI shows it
VERSION_PREFIX = "kpdd.version."
INHERITED_TAGS = (METHOD, TEACHER, STUDENT)  # stage runs copy these from their parent, for filtering in the UI

# Metrics.
ACCURACY_PREFIX = "accuracy/"  # accuracy/<dataset>, a fraction in [0, 1]
CI_LOW_PREFIX, CI_HIGH_PREFIX = "accuracy_ci_low/", "accuracy_ci_high/"  # <prefix><dataset>: its 95 % interval
ACCURACY_AVERAGE = "accuracy/average"  # the mean over the datasets evaluated (not a dataset)
TRAIN_LOSS = "train/loss"
VAL_LOSS = "train/val_loss"
TOKENS_PER_S = "train/tokens_per_s"
TRAIN_TIME = "train/time_s"
TRACES_COUNT = "traces/count"  # verified traces the student was trained on
TRACES_COVERAGE = "traces/coverage"
ERRORS_PREFIX = "eval/errors/"  # eval/errors/<taxonomy type>, a count
TRAIN_SIZE_PARAM = "train_size"  # read when no traces/count metric was logged
OPTIMIZE_BEFORE, OPTIMIZE_AFTER = "optimize/score_unoptimized", "optimize/score_optimized"  # teacher val score, %
OPTIMIZE_TRIAL = "optimize/trial_score"  # one point per optimizer trial, step = trial number

VERSIONED_PACKAGES = ("dspy", "mlflow", "transformers", "torch", "trl", "peft", "vllm")
PARAM_LIMIT = 500  # longer config values are cut in the params table; config.json keeps them whole
CUT_MARK = " … [cut: see config.json]"
DATASET_COLUMNS = ("id", "dataset", "split", "question", "answer")


def accuracy_key(dataset: str) -> str:
    return f"{ACCURACY_PREFIX}{dataset}"


def error_key(error_type: str) -> str:
    return f"{ERRORS_PREFIX}{error_type}"


REGISTERED_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def check_registered_name(name: str | None, option: str = "--register-as") -> None:
    """A Model Registry name that ``models:/<name>/<version>`` URIs can carry; checked before any work starts."""
    if name is not None and not REGISTERED_NAME.fullmatch(name):
        raise ConfigError(f"{option} {name!r}: expected a model name of letters, digits, '.', '_' and '-' "
                          "(starting with a letter or digit), e.g. gsm8k-kpdd-pot")


def resolve_tracking_uri(tracking_uri: str | None = None) -> str:
    """The store to use: ``tracking_uri``, else ``MLFLOW_TRACKING_URI``, else ``mlflow.db`` in the working directory."""
    return tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path.cwd() / DEFAULT_DATABASE}"


def artifact_location(tracking_uri: str, experiment: str) -> str | None:
    """``mlruns/<experiment>`` beside a SQLite database; None (the server's choice) for any other store."""
    if not tracking_uri.startswith("sqlite:///"):
        return None
    database = Path(unquote(tracking_uri[len("sqlite:///"):])).resolve()
    folder = re.sub(r"[^A-Za-z0-9._-]+", "-", experiment).strip("-.") or "experiment"
    return (database.parent / ARTIFACT_DIR / folder).as_uri()


def setup_tracking(tracking_uri: str | None = None, experiment: str = DEFAULT_EXPERIMENT) -> str:
    """Point MLflow at the store and make ``experiment`` (created if missing) the active one; returns its id.

    This sets MLflow's process-wide state on purpose: DSPy traces from worker threads find the experiment there.
    """
    import mlflow

    uri = resolve_tracking_uri(tracking_uri)
    mlflow.set_tracking_uri(uri)
    client = mlflow.MlflowClient(uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        experiment_id = client.create_experiment(experiment, artifact_location=artifact_location(uri, experiment))
    elif found.lifecycle_stage == "deleted":
        raise ConfigError(
            f"MLflow experiment {experiment!r} in {uri} is deleted: restore it with "
            f"`mlflow experiments restore --experiment-id {found.experiment_id}` or pick another --experiment"
        )
    else:
        experiment_id = found.experiment_id
    if os.environ.get("MLFLOW_EXPERIMENT_ID") != experiment_id:  # set_experiment rebuilds MLflow's tracer: ~1 s
        mlflow.set_experiment(experiment_id=experiment_id)
    return experiment_id


def config_params(config: Any) -> dict[str, str]:
    """A config dataclass (or dict) as flat MLflow params: nested keys joined by '.', lists as JSON."""
    values = config if isinstance(config, dict) else dataclasses.asdict(config)
    params: dict[str, str] = {}

    def add(key: str, value: Any) -> None:
        if isinstance(value, dict) and value:
            for name, item in value.items():
                add(f"{key}.{name}", item)
            return
        text = json.dumps(value, default=str) if isinstance(value, (list, tuple, dict)) else str(value)
        params[key] = text if len(text) <= PARAM_LIMIT else text[: PARAM_LIMIT - len(CUT_MARK)] + CUT_MARK

    for name, value in values.items():
        add(name, value)
    return params


def environment_tags() -> dict[str, str]:
    """Installed versions of the libraries that shape results, and the git commit of this checkout."""
    import kpdd

    tags = {f"{VERSION_PREFIX}kpdd": kpdd.__version__}
    for package in VERSIONED_PACKAGES:
        with contextlib.suppress(metadata.PackageNotFoundError):  # an optional engine that is not installed
            tags[f"{VERSION_PREFIX}{package}"] = metadata.version(package)
    if commit := git_commit():
        tags[GIT_COMMIT] = commit
    return tags


def git_commit() -> str | None:
    """HEAD of the repository kpdd is imported from, or None for an installed wheel or a repo without commits."""
    root = Path(__file__).resolve().parents[2]
    if not (root / ".git").exists():
        return None
    try:
        done = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


@contextlib.contextmanager
def command_run(command: str, config: Any = None, *, tags: dict[str, Any] | None = None,
                experiment: str | None = None, tracking_uri: str | None = None) -> Iterator[Any]:
    """The parent run of one ``kpdd`` command, yielding MLflow's ``ActiveRun``.

    Logs the config as params and as ``config.json``, the library versions and git commit as tags, plus
    ``kpdd.command`` and ``tags`` (e.g. ``kpdd.method``). ``experiment`` and ``tracking_uri`` default to the
    config's fields of those names, then to ``kpdd`` and :func:`resolve_tracking_uri`. Inside another run (a
    command that drives others, like ``demo``) it becomes a child of that run, in the same store and experiment.
    An exception ends the run FAILED (KILLED for Ctrl-C) with the error in tags and ``error.txt``, then propagates.
    Under a multi-process launch only the main process tracks; the others yield None and log nothing.
    """
    import mlflow

    if not is_main_process():
        yield None
        return
    nested = mlflow.active_run() is not None
    if not nested:
        setup_tracking(tracking_uri or _config_field(config, "tracking_uri"),
                       experiment or _config_field(config, "experiment") or DEFAULT_EXPERIMENT)
    run_tags = {**environment_tags(), COMMAND: command, **(tags or {})}
    run_name = " ".join(str(part) for part in (command, run_tags.get(METHOD)) if part)
    try:
        with _tracked_run(run_name, run_tags, nested) as run:
            if config is not None:
                mlflow.log_params(config_params(config))
                mlflow.log_dict(config_document(config), "config.json")
            yield run
    finally:
        if not nested:  # MLflow exports DSPy traces in the background: store them before the command returns
            mlflow.flush_trace_async_logging()


def _config_field(config: Any, name: str) -> Any:
    return config.get(name) if isinstance(config, dict) else getattr(config, name, None)


@contextlib.contextmanager
def stage_run(stage: str, *, tags: dict[str, Any] | None = None, **params: Any) -> Iterator[Any]:
    """A child run for one stage (optimise, traces, finetune, eval) of the active command run, with ``params``.

    It carries ``kpdd.stage`` and the parent's method/teacher/student tags, and fails like :func:`command_run`.
    Without an active run it starts a top-level run in the active experiment.
    """
    import mlflow

    parent = mlflow.active_run()
    inherited = {}
    if parent is not None:
        parent_tags = mlflow.MlflowClient().get_run(parent.info.run_id).data.tags
        inherited = {key: parent_tags[key] for key in INHERITED_TAGS if key in parent_tags}
    run_tags = {**inherited, STAGE: stage, **(tags or {})}
    with _tracked_run(stage_run_name(stage, run_tags.get(METHOD)), run_tags, nested=parent is not None) as run:
        if params:
            mlflow.log_params(config_params(params))
        yield run


def stage_run_name(stage: str, method: str | None) -> str:
    """What a stage run is called in the runs table: its method and stage (``kpdd-pot · eval``), so runs of
    several methods under one command tell apart without reading their parents."""
    return f"{method} · {stage}" if method else stage


@contextlib.contextmanager
def _tracked_run(name: str, tags: dict[str, Any], nested: bool) -> Iterator[Any]:
    """Start a run and end it with the status the block earned; a crashed run never reads FINISHED."""
    import mlflow

    run = mlflow.start_run(run_name=name, nested=nested, tags={k: str(v) for k, v in tags.items() if v is not None})
    run_id = run.info.run_id
    try:
        yield run
    except BaseException as error:
        status = _status_for(error)
        try:
            if status != "FINISHED":
                _record_failure(run_id, error)
        finally:
            _end_run(run_id, status)
        raise
    _end_run(run_id, "FINISHED")


def _status_for(error: BaseException) -> str:
    if isinstance(error, KeyboardInterrupt):
        return "KILLED"
    if isinstance(error, SystemExit) and error.code in (0, None):  # sys.exit(0): a clean early exit
        return "FINISHED"
    return "FAILED"


def _record_failure(run_id: str, error: BaseException) -> None:
    import mlflow
    from mlflow.utils.validation import MAX_TAG_VAL_LENGTH

    client = mlflow.MlflowClient()
    client.set_tag(run_id, ERROR_TYPE, type(error).__name__)
    client.set_tag(run_id, ERROR, (str(error) or type(error).__name__)[:MAX_TAG_VAL_LENGTH])
    client.log_text(run_id, "".join(traceback.format_exception(error)), "error.txt")


def _end_run(run_id: str, status: str) -> None:
    import mlflow

    active = mlflow.active_run()
    if active is not None and active.info.run_id == run_id:
        mlflow.end_run(status)
    else:  # the block ended our run itself, or left another run open on top of it
        mlflow.MlflowClient().set_terminated(run_id, status)


def log_dataset_input(examples: Iterable[Any], name: str, context: str = "eval", split: str | None = None) -> str:
    """Log examples (``dspy.Example``, dicts or records) as an MLflow dataset input of the active run.

    The dataset holds their id, dataset, split, question and answer, so its digest changes whenever any of them
    does; ``split`` defaults to the examples' own when they share one. Returns the digest.
    """
    import mlflow

    dataset = examples_dataset(examples, name, split)
    mlflow.log_input(dataset, context=context)
    return dataset.digest


def examples_dataset(examples: Iterable[Any], name: str, split: str | None = None) -> Any:
    """Examples as an MLflow dataset (see :func:`log_dataset_input`), e.g. to link a model's metrics to it."""
    import mlflow
    import pandas as pd

    rows = [_as_dict(example) for example in examples]
    frame = pd.DataFrame([{column: row.get(column) for column in DATASET_COLUMNS} for row in rows],
                         columns=list(DATASET_COLUMNS))
    splits = set(frame["split"].dropna())
    split = split or (splits.pop() if len(splits) == 1 else None)
    return mlflow.data.from_pandas(frame, name=f"{name}/{split}" if split else name, targets="answer")


def _as_dict(example: Any) -> dict[str, Any]:
    if isinstance(example, dict):
        return example
    if hasattr(example, "toDict"):  # dspy.Example
        return example.toDict()
    if dataclasses.is_dataclass(example):
        return dataclasses.asdict(example)
    raise TypeError(f"expected a dspy.Example, a dict or a dataclass record, got {type(example).__name__}")


def log_records_table(records: Iterable[dict[str, Any]], artifact_file: str) -> None:
    """Log rows (e.g. per-example predictions) as one MLflow table, viewable in the UI's artifact tab.

    Call it once with all rows: ``mlflow.log_table`` re-reads and rewrites the artifact on every call.
    """
    import mlflow
    import pandas as pd

    mlflow.log_table(pd.DataFrame(list(records)), artifact_file)
