"""Shared fixtures: every test starts from clean DSPy settings, in its own directory, with its own MLflow store."""

import shutil

from kpdd.config import use_offline_defaults

use_offline_defaults()  # before dspy, litellm and mlflow are imported, as the CLI does

import dspy  # noqa: E402
import mlflow  # noqa: E402
import mlflow.tracking.fluent  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def clean_dspy_settings():
    """DSPy's settings are process-wide: a test that configures an LM must not leak it into the next."""
    with dspy.context(lm=None, adapter=None, trace=None):
        yield


@pytest.fixture(scope="session")
def empty_store(tmp_path_factory):
    """One SQLite store with MLflow's tables; creating them takes about a second, copying the file does not."""
    database = tmp_path_factory.mktemp("mlflow-template") / "mlflow.db"
    mlflow.MlflowClient(f"sqlite:///{database}").search_experiments()
    return database


@pytest.fixture(autouse=True)
def mlflow_store(tmp_path, monkeypatch, empty_store):
    """``MLFLOW_TRACKING_URI`` → ``tmp_path/mlflow.db`` (subprocesses inherit it) and the working directory →
    tmp_path, so runs, ``mlruns/`` and ``kpdd-runs/`` land there; yields the URI."""
    shutil.copy(empty_store, tmp_path / "mlflow.db")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    for name in ("MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_TRACE_SAMPLING_RATIO"):
        monkeypatch.delenv(name, raising=False)
    # MLflow keeps the active experiment in a module global that has no public reset.
    monkeypatch.setattr(mlflow.tracking.fluent, "_active_experiment_id", None)
    yield uri
    while mlflow.active_run() is not None:  # a failing test's open run must not become the next test's parent
        mlflow.end_run("FAILED")
    mlflow.set_tracking_uri(None)
