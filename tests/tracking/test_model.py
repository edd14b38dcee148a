"""A trained student as an MLflow model: logged from its compiled-program directory, registered, loaded with
``mlflow.pyfunc`` in a fresh process (the same predictions as ``kpdd eval``) and served by ``mlflow models serve``
over real HTTP; its evaluation metrics linked to it. A tiny Llama stands in for the student, so its answers are
garbage, but deterministic garbage: equal outputs across processes mean the same program ran the same weights."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import warnings
from pathlib import Path

import mlflow
import pytest
from tiny_model import train_tiny_student

from kpdd.cli import main as kpdd_main
from kpdd.errors import ConfigError
from kpdd.eval.harness import read_predictions
from kpdd.tracking.model import BUNDLED_BASE, MAX_TOKENS, THREADS, input_rows, log_student_model
from kpdd.tracking.runs import check_registered_name

NAME = "tiny-kpdd-pot"
LOADED = {THREADS: 1, MAX_TOKENS: 48}  # the load-time settings, as the evaluation below runs


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny Llama, LoRA-trained 2 steps on gold KPDD-PoT traces: a compiled program and its traces."""
    # Its checkpoints kept: the model must leave them out.
    return train_tiny_student(tmp_path_factory.mktemp("student"), "kpdd-pot", keep_checkpoints=True)


def register(trained, name=NAME):
    """`kpdd finetune --register-as`: the student is trained already, so this logs and registers it."""
    compiled, traces = trained
    assert kpdd_main(["finetune", "--traces", str(traces), "--program", "kpdd-pot", "--student",
                      str(compiled.parent / "tiny"), "--max-steps", "2", "--val-fraction", "0", "--device", "cpu",
                      "--out", str(compiled), "--register-as", name]) in (0, None)


def evaluate(compiled, out):
    assert kpdd_main(["eval", "--lm", str(compiled), "--datasets", "multiarith", "--limit", "3", "--threads", "1",
                      "--max-tokens", str(LOADED[MAX_TOKENS]), "--out", str(out)]) in (0, None)
    return sorted(read_predictions(out), key=lambda r: r["question_id"])


def kpdd_env(**extra):
    """The test's environment for a subprocess, with this interpreter's bin first (`mlflow models serve` execs
    uvicorn through bash)."""
    return {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}", **extra}


@pytest.mark.slow
def test_a_registered_student_loads_in_a_fresh_process_and_predicts_what_kpdd_eval_does(trained, tmp_path):
    register(trained)
    records = evaluate(trained[0], tmp_path / "predictions.jsonl")
    questions = [r["question"] for r in records]
    script = ("import json, sys, mlflow\n"
              f"model = mlflow.pyfunc.load_model('models:/{NAME}/1', model_config={LOADED!r})\n"
              "print(json.dumps(model.predict([{'question': q} for q in json.loads(sys.argv[1])])))\n")
    done = subprocess.run([sys.executable, "-c", script, json.dumps(questions)], capture_output=True, text=True,
                          timeout=300, env=kpdd_env())
    assert done.returncode == 0, done.stderr[-3000:]
    predictions = json.loads(done.stdout.strip().splitlines()[-1])
    assert len(predictions) == len(records) == 3
    for record, predicted in zip(records, predictions, strict=True):
        assert predicted["answer"] == record["answer"] and predicted["error"] == record["error"]
        assert {k: v for k, v in predicted.items() if k not in ("answer", "error")} == record["stages"]
    assert len({json.dumps(p, sort_keys=True) for p in predictions}) > 1  # the outputs depend on the question


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_mlflow_models_serve_answers_a_question_over_http(trained, tmp_path):
    register(trained)
    question = "Tom had 3 apples and bought 4 more. How many apples does he have?"
    expected = mlflow.pyfunc.load_model(f"models:/{NAME}/1").predict([{"question": question}])
    port = free_port()
    server = subprocess.Popen(["mlflow", "models", "serve", "-m", f"models:/{NAME}/1", "--env-manager", "local",
                               "-h", "127.0.0.1", "-p", str(port)], env=kpdd_env(), stdout=subprocess.DEVNULL,
                              stderr=open(tmp_path / "serve.log", "w"), start_new_session=True)
    try:
        deadline = time.monotonic() + 180
        while True:
            assert server.poll() is None, (tmp_path / "serve.log").read_text()[-3000:]
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2) as ping:
                    if ping.status == 200:
                        break
            except OSError:
                assert time.monotonic() < deadline, (tmp_path / "serve.log").read_text()[-3000:]
                time.sleep(0.5)
        request = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", method="POST",
                                         data=json.dumps({"inputs": [{"question": question}]}).encode(),
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=120) as response:
            answered = json.loads(response.read())
    finally:
        os.killpg(server.pid, signal.SIGTERM)  # the CLI and the uvicorn it started
        server.wait(timeout=30)
    assert answered == {"predictions": expected}
    assert set(expected[0]) >= {"answer", "error"}


@pytest.mark.slow
def test_the_model_carries_the_program_its_students_and_a_base_from_outside(trained, mlflow_store):
    compiled, _ = trained
    mlflow.set_experiment("models")
    with mlflow.start_run(), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        info = log_student_model(compiled, params={"data": "gsm8k:train"}, max_tokens=32)
        loaded = mlflow.pyfunc.load_model(info.model_uri)
    assert not [str(w.message) for w in caught if "mlflow" in w.filename]  # the signature is explicit: no advice
    model = mlflow.get_logged_model(info.model_id)
    assert model.params | {"data": "gsm8k:train"} == model.params
    assert (model.params["method"], model.params["prompt_format"], model.params["student_calls"],
            model.params["steps"]) == ("kpdd-pot", "student", "one", "2")
    local = Path(mlflow.artifacts.download_artifacts(f"{info.model_uri}"))
    student = local / "artifacts" / "program" / "students" / "all"
    assert json.loads((student / "kpdd.json").read_text())["base"] == BUNDLED_BASE  # the tiny base lives in tmp
    assert (student / BUNDLED_BASE / "config.json").is_file() and (student / "adapter").is_dir()
    assert not (student / "checkpoints").exists()
    assert not list(local.rglob("*.pkl"))  # models-from-code: nothing pickled
    assert loaded.metadata.get_input_schema().to_dict() == [{"type": "string", "required": True}]
    assert {"answer", "error", "core_question", "key_points", "program"} <= set(
        loaded.metadata.get_output_schema().input_names())
    assert loaded.model_config[MAX_TOKENS] == 32


@pytest.mark.slow
def test_the_evaluation_headline_is_linked_to_the_model_once_per_dataset(trained, tmp_path):
    from kpdd.run.eval import EvalConfig, run_eval
    from kpdd.tracking.results import log_headline

    compiled, _ = trained
    experiment_id = mlflow.set_experiment("linked").experiment_id
    with mlflow.start_run() as run:
        info = log_student_model(compiled)
        evaluated = run_eval(EvalConfig(lm=str(compiled), datasets=["multiarith", "svamp"], limit=1, max_tokens=16,
                                        threads=1, out=str(tmp_path / "p.jsonl")), progress=False, log=False)
        log_headline(evaluated.scores, evaluated.examples, model_id=info.model_id)
    [model] = mlflow.search_logged_models(experiment_ids=[experiment_id], output_format="list")
    linked = [(m.key, m.dataset_name) for m in model.metrics]
    assert len(linked) == len(set(linked))  # not also linked a second time, without the dataset
    assert {("accuracy/multiarith", "multiarith/test"), ("accuracy/svamp", "svamp/test"),
            ("accuracy_ci_high/svamp", "svamp/test"), ("accuracy/average", None)} <= set(linked)
    assert {key for key, _ in linked} == set(mlflow.get_run(run.info.run_id).data.metrics)
    assert sorted(d.dataset.name for d in mlflow.get_run(run.info.run_id).inputs.dataset_inputs) == [
        "multiarith/test", "svamp/test"]


def test_predict_runs_every_stage_and_the_program_in_the_sandbox():
    """``predict`` on a program whose LM is scripted (the tests above load real weights, whose programs do not run)."""
    import pandas as pd
    from dspy.utils import DummyLM

    from kpdd.modules import build_program
    from kpdd.tracking.model import StudentModel

    model = StudentModel()
    model.program, model.inputs, model.threads = build_program("kpdd-pot"), ["question"], 1
    model.program.set_lm(DummyLM([
        {"core_question": "How many apples?"}, {"key_points": ["3 apples", "4 more"]},
        {"program": "```python\napples = 3\nbought = 4\nans = apples + bought\n```"},
        {"core_question": "How many?"}, {"key_points": ["1 apple"]}, {"program": "ans = 1 / 0"}]))
    first, second = model.predict(None, pd.DataFrame({"question": ["Tom has 3 apples and buys 4.", "One apple."]}))
    assert first == {"answer": 7.0, "error": None, "core_question": "How many apples?",
                     "key_points": ["3 apples", "4 more"], "execution": 7.0,
                     "program": "```python\napples = 3\nbought = 4\nans = apples + bought\n```"}
    assert (second["answer"], second["execution"], second["error"]) == (None, "runtime", "program: runtime")


def compiled_on_the_shipped_alias(root: Path, reference: str) -> Path:
    """A compiled-program directory whose every predictor runs the shipped alias: no weights written or loaded."""
    from kpdd.finetune.student import write_student
    from kpdd.modules import build_program
    from kpdd.modules.saved import save_program
    from kpdd.modules.student_format import CHAT

    (root / "students" / "all").mkdir(parents=True)
    write_student(root / "students" / "all", "smollm2-135m", None, reference, "all", {}, prompt_format=CHAT)
    program = build_program(reference)
    return save_program(program, root, students={name: "students/all" for name, _ in program.named_predictors()},
                        prompt_format=CHAT)


def test_the_model_signature_has_typed_outputs_and_a_one_input_program_takes_a_list_of_strings(tmp_path):
    from dspy.utils import DummyLM
    from user_programs import write_pipelines

    source, _, _ = write_pipelines(tmp_path)
    compiled = compiled_on_the_shipped_alias(tmp_path / "compiled", f"{source}:ReviewTagger")
    with mlflow.start_run():
        info = log_student_model(compiled)
    outputs = info.signature.outputs.to_dict()
    assert {c["name"]: c["type"] for c in outputs} == {
        "answer": "any", "error": "string", "sentiment": "any", "stars": "long", "keywords": "any",
        "reasoning": "string", "summary": "string", "confident": "boolean"}
    assert not any(c["required"] for c in outputs)
    assert info.signature.inputs.to_dict() == [{"type": "string", "required": True}]  # one unnamed column

    loaded = mlflow.pyfunc.load_model(info.model_uri)
    loaded.unwrap_python_model().program.set_lm(DummyLM([
        {"sentiment": "positive", "stars": "5", "keywords": '["good"]'},
        {"reasoning": "Good.", "summary": "Good battery.", "confident": "true"}]))
    [row] = loaded.predict(["Good battery."])  # MLflow's schema check, then the program on the row
    assert (row["sentiment"], row["stars"], row["summary"]) == ("positive", 5, "Good battery.")


def test_input_rows_take_frames_and_dicts_and_name_a_missing_field():
    import pandas as pd

    expected = [{"question": "a"}, {"question": "b"}]
    assert input_rows(pd.DataFrame({"question": ["a", "b"], "extra": [1, 2]}), ["question"]) == expected
    assert input_rows(expected, ["question"]) == expected
    assert input_rows({"question": "a"}, ["question"]) == expected[:1]
    assert input_rows(["a", "b"], ["question"]) == input_rows(pd.DataFrame(["a", "b"]), ["question"]) == expected
    assert input_rows("a", ["question"]) == expected[:1]
    with pytest.raises(ConfigError, match=r"input row 1: expected the field\(s\) question"):
        input_rows([{"question": "a"}, {"text": "b"}], ["question"])


def test_register_as_takes_only_names_a_model_uri_can_carry():
    check_registered_name("gsm8k-kpdd_pot.v2")
    with pytest.raises(ConfigError, match="--register-as 'a/b'"):
        check_registered_name("a/b")
