"""Run helpers against a real SQLite MLflow store: what a command run records, how failures end, stages, inputs."""

import dataclasses
import json
import shutil

import dspy
import mlflow
import pytest

from kpdd.errors import ConfigError
from kpdd.tracking import runs as tracking


@dataclasses.dataclass(frozen=True)
class TinyConfig:
    program: str = "kpdd-cot"
    datasets: list = dataclasses.field(default_factory=lambda: ["gsm8k", "svamp"])
    limit: int | None = None
    note: str = "x" * 2000


def examples(answers=(72.0, 10.0, 5.5)):
    return [dspy.Example(id=f"gsm8k-test-{i:05d}", dataset="gsm8k", split="test", question=f"question {i}",
                         answer=answer, rationale="because").with_inputs("question")
            for i, answer in enumerate(answers)]


def test_command_run_records_config_tags_metrics_and_inputs(tmp_path):
    config = TinyConfig()
    with tracking.command_run("eval", config, tags={tracking.METHOD: "kpdd-cot", tracking.STUDENT: "smollm2"}) as run:
        mlflow.log_metrics({tracking.accuracy_key("gsm8k"): 0.25, tracking.error_key("parse"): 3})
        digest = tracking.log_dataset_input(examples(), "gsm8k", context="eval")
        tracking.log_records_table([{"question_id": "q1", "correct": True, "stages": {"solve": {"answer": "4"}}},
                                    {"question_id": "q2", "correct": False, "stages": {}}], "predictions.json")

    client = mlflow.MlflowClient()
    logged = client.get_run(run.info.run_id)
    assert logged.info.status == "FINISHED"
    assert logged.info.run_name == "eval kpdd-cot"
    assert logged.data.params == tracking.config_params(config)
    assert logged.data.params["datasets"] == '["gsm8k", "svamp"]'
    assert logged.data.params["limit"] == "None"
    assert len(logged.data.params["note"]) <= tracking.PARAM_LIMIT
    assert logged.data.metrics == {"accuracy/gsm8k": 0.25, "eval/errors/parse": 3}
    tags = logged.data.tags
    assert tags[tracking.COMMAND] == "eval" and tags[tracking.METHOD] == "kpdd-cot"
    assert tags["kpdd.version.mlflow"] == mlflow.__version__ and tags["kpdd.version.dspy"] == dspy.__version__

    config_file = client.download_artifacts(run.info.run_id, "config.json", str(tmp_path))
    assert json.loads(open(config_file).read()) == {"type": "TinyConfig", **dataclasses.asdict(config)}
    table = mlflow.load_table("predictions.json", run_ids=[run.info.run_id])
    assert list(table["question_id"]) == ["q1", "q2"] and list(table["correct"]) == [True, False]

    (dataset_input,) = logged.inputs.dataset_inputs
    assert dataset_input.dataset.name == "gsm8k/test" and dataset_input.dataset.digest == digest
    assert {t.key: t.value for t in dataset_input.tags}["mlflow.data.context"] == "eval"
    assert '"question"' in dataset_input.dataset.schema


def test_command_run_failure_ends_failed_with_the_error(tmp_path):
    with pytest.raises(ValueError, match="student directory is empty"):
        with tracking.command_run("finetune", TinyConfig()) as run:
            raise ValueError("student directory is empty")

    logged = mlflow.MlflowClient().get_run(run.info.run_id)
    assert logged.info.status == "FAILED"
    assert logged.data.tags[tracking.ERROR_TYPE] == "ValueError"
    assert logged.data.tags[tracking.ERROR] == "student directory is empty"
    error_file = mlflow.MlflowClient().download_artifacts(run.info.run_id, "error.txt", str(tmp_path))
    assert "Traceback" in open(error_file).read()
    assert mlflow.active_run() is None


def test_command_run_interrupted_ends_killed():
    with pytest.raises(KeyboardInterrupt):
        with tracking.command_run("traces") as run:
            raise KeyboardInterrupt
    assert mlflow.MlflowClient().get_run(run.info.run_id).info.status == "KILLED"


def test_command_run_logs_only_in_the_main_process_of_a_launch(monkeypatch):
    """Under `accelerate launch` every process runs the command; one MLflow run, from rank 0."""
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    with tracking.command_run("finetune", TinyConfig()) as run:
        assert run is None and mlflow.active_run() is None
    monkeypatch.setenv("RANK", "0")
    with tracking.command_run("finetune", TinyConfig()) as run:
        assert run is not None
    experiments = [e.experiment_id for e in mlflow.MlflowClient().search_experiments()]
    assert [r.info.run_id for r in mlflow.MlflowClient().search_runs(experiments)] == [run.info.run_id]


def test_stage_run_is_a_child_with_the_parent_tags_and_fails_both():
    with pytest.raises(RuntimeError, match="out of memory"):
        with tracking.command_run("compile", tags={tracking.METHOD: "socratic", tracking.TEACHER: "gold"}) as parent:
            with tracking.stage_run("traces", limit=10) as done:
                mlflow.log_metric(tracking.TRACES_COUNT, 9)
            with tracking.stage_run("finetune") as crashed:
                raise RuntimeError("out of memory")

    client = mlflow.MlflowClient()
    done_run, crashed_run = client.get_run(done.info.run_id), client.get_run(crashed.info.run_id)
    for child in (done_run, crashed_run):
        assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert child.data.tags[tracking.METHOD] == "socratic" and child.data.tags[tracking.TEACHER] == "gold"
        assert tracking.COMMAND not in child.data.tags
    assert done_run.data.tags[tracking.STAGE] == "traces" and done_run.data.params == {"limit": "10"}
    assert (done_run.info.run_name, crashed_run.info.run_name) == ("socratic · traces", "socratic · finetune")
    assert done_run.info.status == "FINISHED"
    assert crashed_run.info.status == "FAILED" and crashed_run.data.tags[tracking.ERROR_TYPE] == "RuntimeError"
    assert client.get_run(parent.info.run_id).info.status == "FAILED"


def test_command_run_inside_another_becomes_its_child():
    with tracking.command_run("demo") as demo:
        with tracking.command_run("eval", tags={tracking.METHOD: "cot"}) as inner:
            pass
    inner_run = mlflow.MlflowClient().get_run(inner.info.run_id)
    assert inner_run.data.tags["mlflow.parentRunId"] == demo.info.run_id
    assert inner_run.data.tags[tracking.COMMAND] == "eval"


def test_setup_tracking_defaults_to_mlflow_db_and_mlruns_in_working_directory(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    experiment_id = tracking.setup_tracking(experiment="my runs")
    assert mlflow.get_tracking_uri() == f"sqlite:///{tmp_path / 'mlflow.db'}"
    experiment = mlflow.MlflowClient().get_experiment(experiment_id)
    assert experiment.name == "my runs"
    assert experiment.artifact_location == (tmp_path / "mlruns" / "my-runs").as_uri()
    with mlflow.start_run() as run:
        mlflow.log_text("hello", "note.txt")
    assert (tmp_path / "mlruns" / "my-runs" / run.info.run_id / "artifacts" / "note.txt").read_text() == "hello"
    assert tracking.setup_tracking(experiment="my runs") == experiment_id


def test_setup_tracking_explicit_uri_keeps_artifacts_beside_its_database(tmp_path, empty_store):
    (tmp_path / "elsewhere").mkdir()
    shutil.copy(empty_store, tmp_path / "elsewhere" / "runs.db")
    uri = f"sqlite:///{tmp_path / 'elsewhere' / 'runs.db'}"
    experiment_id = tracking.setup_tracking(uri, "kpdd")
    assert mlflow.get_tracking_uri() == uri
    location = mlflow.MlflowClient(uri).get_experiment(experiment_id).artifact_location
    assert location == (tmp_path / "elsewhere" / "mlruns" / "kpdd").as_uri()


def test_setup_tracking_deleted_experiment_names_the_fix():
    client = mlflow.MlflowClient()
    client.delete_experiment(client.create_experiment("old"))
    with pytest.raises(ConfigError, match="'old' .* is deleted: restore it"):
        tracking.setup_tracking(experiment="old")


def test_log_dataset_input_digest_follows_the_content():
    tracking.setup_tracking()
    with mlflow.start_run():
        same = tracking.log_dataset_input(examples(), "gsm8k")
        again = tracking.log_dataset_input([e.toDict() for e in examples()], "gsm8k")
        changed = tracking.log_dataset_input(examples(answers=(72.0, 10.0, 5.0)), "gsm8k")
    assert same == again != changed


def test_config_params_flattens_nested_values_and_cuts_long_ones():
    params = tracking.config_params({"trainer": {"lr": 1e-4, "epochs": 2}, "ids": [1, 2], "text": "y" * 9000})
    assert params["trainer.lr"] == "0.0001" and params["trainer.epochs"] == "2" and params["ids"] == "[1, 2]"
    assert len(params["text"]) == tracking.PARAM_LIMIT and params["text"].endswith("[cut: see config.json]")
