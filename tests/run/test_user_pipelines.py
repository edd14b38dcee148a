"""A user's own programs, data and metric through every command and the Python API: two programs outside kpdd's
registry (tests/user_programs.py), a scripted LM teacher on 127.0.0.1, a tiny student with real weights."""

from __future__ import annotations

import json
import re
import os
import subprocess
import sys
import uuid
from pathlib import Path

import dspy
import pytest
from scripted_teacher import ScriptedTeacher
from tiny_model import save_tiny_llama
from user_programs import REVIEWS, respond, write_pipelines

from kpdd.errors import ConfigError
from kpdd.modules import build_program, program_name
from kpdd.modules.saved import load_program, save_program

TRAIN = ["--max-steps", "2", "--batch-size", "1", "--grad-accum", "1", "--learning-rate", "1e-2",
         "--warmup-ratio", "0", "--val-fraction", "0", "--device", "cpu"]


def kpdd(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{cwd / 'mlflow.db'}"}
    done = subprocess.run([sys.executable, "-m", "kpdd", *args], env=env, cwd=cwd, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, f"kpdd {' '.join(args)}\n{done.stdout[-1500:]}\n{done.stderr[-3000:]}"
    return done


@pytest.mark.parametrize("spec, message", [
    ("missing.py:Solver", "no such file"),
    ("{source}:Nope", "has no 'Nope' (its dspy.Module classes: MathsSolver, ReviewTagger)"),
    ("{source}:sentiment_matches", "is not a dspy.Module class or instance"),
    ("no_such_package.module:Solver", "no module named 'no_such_package'"),
    ("kpdd.modules.programs:run_program", "is not a dspy.Module"),
    ("dspy:Predict", "Predict() needs arguments (signature)"),
])
def test_a_bad_program_reference_is_one_error_naming_it(tmp_path, spec, message):
    source, _, _ = write_pipelines(tmp_path)
    spec = spec.format(source=source)
    with pytest.raises(ConfigError, match=re.escape(message)) as error:
        build_program(spec)
    assert spec in str(error.value) and "\n" not in str(error.value)


def test_a_class_and_a_module_level_instance_build_as_programs(tmp_path):
    source, _, _ = write_pipelines(tmp_path)
    assert type(build_program(f"{source}:MathsSolver")).__name__ == "MathsSolver"
    first, second = build_program(f"{source}:tagger"), build_program(f"{source}:tagger")
    assert first is not second and [n for n, _ in first.named_predictors()] == ["tag", "summarise.predict"]
    assert program_name(build_program("kpdd.modules.programs:KPDDPoT")) == "kpdd-pot"  # a built-in keeps its name


def test_a_saved_file_program_loads_in_a_fresh_process_without_its_original_file(tmp_path):
    source, _, _ = write_pipelines(tmp_path / "work")
    program = build_program(f"{source}:ReviewTagger")
    program.tag.demos = [dspy.Example(review="Good.", sentiment="positive", stars=5, keywords=["good"])]
    save_program(program, tmp_path / "saved")
    source.unlink()  # another machine: only the saved directory travels
    script = ("import json, sys; from kpdd.modules.saved import load_program; p = load_program(sys.argv[1]); "
              "print(json.dumps([type(p).__name__, p.tag.demos[0]['review'], [n for n, _ in p.named_predictors()]]))")
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path / "saved")], capture_output=True, text=True,
                          cwd=tmp_path, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout) == ["ReviewTagger", "Good.", ["tag", "summarise.predict"]]
    assert type(load_program(tmp_path / "saved")).__name__ == "ReviewTagger"


def test_an_installed_class_that_is_missing_says_what_to_install(tmp_path):
    program = build_program("kpdd.modules.programs:KeyPoints")
    save_program(program, tmp_path / "saved")
    manifest = tmp_path / "saved" / "kpdd-program.json"
    manifest.write_text(manifest.read_text().replace("kpdd.modules.programs:KeyPoints", "their_pkg.stages:KeyPoints"))
    with pytest.raises(ConfigError, match="no module named 'their_pkg': install the package that provides it"):
        load_program(tmp_path / "saved")


@pytest.mark.slow
@pytest.mark.parametrize("program, dataset, metric, field", [
    ("MathsSolver", "problems.jsonl", None, "problem"),
    ("ReviewTagger", "reviews.jsonl", "{source}:sentiment_matches", "review"),
])
def test_a_user_program_goes_through_traces_finetune_eval_and_export(tmp_path, program, dataset, metric, field):
    source, _, _ = write_pipelines(tmp_path)
    tiny = save_tiny_llama(tmp_path / "tiny")
    reference = f"{source}:{program}"
    metric_args = ["--metric", metric.format(source=source)] if metric else []
    with ScriptedTeacher({}, respond=respond) as server:
        kpdd("traces", "--program", reference, "--teacher", f"openai/scripted-{uuid.uuid4().hex}", "--api-base",
             server.url, "--dataset", str(tmp_path / dataset), "--out", "traces.jsonl", *metric_args, cwd=tmp_path)
    traces = [json.loads(line) for line in (tmp_path / "traces.jsonl").read_text().splitlines()]
    kept = [t for t in traces if t.get("kind") == "trace"]
    assert len(kept) == 6 and all(t["method"] == reference for t in kept)
    kpdd("finetune", "--traces", "traces.jsonl", "--program", reference, "--student", str(tiny), "--out", "compiled",
         *TRAIN, cwd=tmp_path)
    manifest = json.loads((tmp_path / "compiled" / "kpdd-program.json").read_text())
    assert manifest["program"] == reference and manifest["source"] == "source/my_pipelines.py"
    assert manifest["student_calls"] == "one" and manifest["students"]
    source.unlink()  # the compiled program carries its own copy
    # the metric's file went with the source: point at the compiled copy
    eval_metric = ["--metric", "compiled/source/my_pipelines.py:sentiment_matches"] if metric else []
    done = kpdd("eval", "--lm", "compiled", "--datasets", str(tmp_path / dataset), "--max-tokens", "16",
                "--out", "predictions.jsonl", *eval_metric, cwd=tmp_path)
    records = [json.loads(line) for line in (tmp_path / "predictions.jsonl").read_text().splitlines()]
    assert len(records) == 6 and all(field in r["inputs"] and "score" in r for r in records)
    assert "95% interval" in done.stdout
    kpdd("export", "--lm", "compiled", "--out", "exported", cwd=tmp_path)
    assert (tmp_path / "exported" / "kpdd-program.json").is_file()
    assert any((tmp_path / "exported" / "students").glob("*/config.json"))



def compiled_file_program(root: Path, source: Path) -> Path:
    """A compiled-program directory of the file-defined ``MathsSolver`` whose one student is a tiny checkpoint
    prompted in DSPy's chat format (what the scripted teacher answers), written without training."""
    from kpdd.finetune.student import write_student
    from kpdd.modules.student_format import CHAT

    reference = f"{source}:MathsSolver"
    student = save_tiny_llama(root / "students" / "tiny")
    write_student(student, student, None, reference, "tiny", {}, prompt_format=CHAT)
    save_program(build_program(reference), root, students={"solve.predict": "students/tiny"}, prompt_format=CHAT)
    return root


@pytest.mark.slow
def test_an_export_of_a_file_program_loads_elsewhere_and_through_the_command_it_prints(tmp_path):
    import shlex
    import shutil

    source, problems, _ = write_pipelines(tmp_path / "work")
    compiled_file_program(tmp_path / "compiled", source)
    printed = kpdd("export", "--lm", "compiled", "--out", "exported", cwd=tmp_path).stdout
    source.unlink()  # another machine: only the export travels
    shutil.rmtree(tmp_path / "compiled")
    assert (tmp_path / "exported" / "source" / "my_pipelines.py").is_file()
    moved = shutil.copytree(tmp_path / "exported", tmp_path / "elsewhere" / "exported")
    assert type(load_program(moved)).__name__ == "MathsSolver"

    command = shlex.split(re.search(r"evaluate: (kpdd eval .*)", printed).group(1))
    assert command[:4] == ["kpdd", "eval", "--program", "exported"]
    with ScriptedTeacher({}, respond=respond) as server:
        command[command.index("--api-base") + 1] = server.url  # where the printed command's server would be
        kpdd(*command[1:], "--datasets", str(problems), "--limit", "2", "--out", "predictions.jsonl", cwd=tmp_path)
    records = [json.loads(line) for line in (tmp_path / "predictions.jsonl").read_text().splitlines()]
    assert [r["correct"] for r in records] == [True, True]


@pytest.mark.slow
def test_eval_of_a_compiled_directory_without_program_is_filed_under_the_compiled_program(tmp_path):
    import mlflow

    from kpdd.config import config_path

    source, problems, _ = write_pipelines(tmp_path / "work")
    compiled_file_program(tmp_path / "compiled", source)
    kpdd("eval", "--lm", "compiled", "--datasets", str(problems), "--limit", "1", "--max-tokens", "4", cwd=tmp_path)
    predictions = tmp_path / "kpdd-runs" / "eval" / "MathsSolver-compiled.jsonl"
    assert predictions.is_file()
    assert json.loads(config_path(predictions).read_text())["program"] == f"{source}:MathsSolver"
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    [run] = client.search_runs([client.get_experiment_by_name("kpdd").experiment_id])
    assert run.info.run_name == "eval MathsSolver" and run.data.tags["kpdd.method"] == "MathsSolver"

@pytest.mark.slow
def test_distill_compiles_saves_and_reloads_with_the_same_predictions(tmp_path):
    from kpdd.engines import load_compiled
    from kpdd.finetune import TrainConfig
    from kpdd.run import distill

    source, _, reviews = write_pipelines(tmp_path)
    program = build_program(f"{source}:ReviewTagger")
    trainset = [dspy.Example(**row).with_inputs("review") for row in REVIEWS]
    metric = __import__("kpdd.modules.reference", fromlist=["x"]).resolve_object(f"{source}:sentiment_matches")
    with ScriptedTeacher({}, respond=respond) as server:
        teacher = dspy.LM(f"openai/scripted-{uuid.uuid4().hex}", api_base=server.url, api_key="x", cache=False)
        train = TrainConfig(student=str(save_tiny_llama(tmp_path / "tiny")), max_steps=2, batch_size=1, grad_accum=1,
                            learning_rate=1e-2, warmup_ratio=0.0, val_fraction=0.0, device="cpu")
        compiled = distill(program, trainset, teacher=teacher, metric=metric, out=tmp_path / "student", train=train,
                           progress=False)
    assert [n for n, _ in compiled.named_predictors()] == ["one_call"]  # one call, the students' format
    reloaded = load_compiled(tmp_path / "student" / "compiled", max_tokens=24)
    here = [_fields(reloaded, row["review"]) for row in REVIEWS[:2]]
    helper = tmp_path / "tests_helper.py"
    helper.write_text(_FIELDS_SOURCE)
    script = ("import json, sys; sys.path.insert(0, sys.argv[2]); from tests_helper import fields; "
              "from kpdd.engines import load_compiled; p = load_compiled(sys.argv[1], max_tokens=24); "
              f"print(json.dumps([fields(p, r) for r in {[r['review'] for r in REVIEWS[:2]]!r}]))")
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path / "student" / "compiled"), str(tmp_path)],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == here


_FIELDS_SOURCE = '''
import dspy


def fields(program, review):
    """What one call gives: the prediction's fields, or the parse error's raw text (a 2-step tiny student)."""
    try:
        return {k: str(v) for k, v in program(review=review).items()}
    except dspy.utils.exceptions.AdapterParseError as e:
        return {"raw": e.lm_response}
'''


def _fields(program, review):
    namespace: dict = {}
    exec(_FIELDS_SOURCE, namespace)
    return namespace["fields"](program, review)


def test_traces_checks_the_program_and_the_gold_teacher_before_asking_an_lm(tmp_path):
    from kpdd.run.traces import TracesConfig, check_lms

    source, _, _ = write_pipelines(tmp_path)
    with pytest.raises(ConfigError, match="no such file"):
        check_lms(TracesConfig(program="missing.py:X", teacher="openai/x", api_base=["http://127.0.0.1:9/v1"]))
    with pytest.raises(ConfigError, match="--teacher gold writes traces of the built-in programs only"):
        check_lms(TracesConfig(program=f"{source}:MathsSolver", teacher="gold"))
