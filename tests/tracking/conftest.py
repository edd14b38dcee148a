"""Point MLflow at a fresh store in tmp_path for every test, and leave no MLflow state behind."""

import shutil

import mlflow
import mlflow.tracking.fluent
import pytest


@pytest.fixture(scope="session")
def empty_store(tmp_path_factory):
    """One SQLite store with MLflow's tables; creating them takes about a second, copying the file does not."""
    database = tmp_path_factory.mktemp("mlflow-template") / "mlflow.db"
    mlflow.MlflowClient(f"sqlite:///{database}").search_experiments()
    return database


@pytest.fixture(autouse=True)
def mlflow_store(tmp_path, monkeypatch, empty_store):
    """``MLFLOW_TRACKING_URI`` → ``tmp_path/mlflow.db`` and the working directory → tmp_path; yields the URI."""
    shutil.copy(empty_store, tmp_path / "mlflow.db")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    for name in ("MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_TRACE_SAMPLING_RATIO"):
        monkeypatch.delenv(name, raising=False)
    # MLflow keeps the active experiment in a module global that has no public reset.
    monkeypatch.setattr(mlflow.tracking.fluent, "_active_experiment_id", None)
    yield uri
    while mlflow.active_run() is not None:
        mlflow.end_run()
    mlflow.set_tracking_uri(None)  # also unsets MLFLOW_TRACKING_URI; monkeypatch then restores the original
