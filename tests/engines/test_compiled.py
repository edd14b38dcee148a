"""Compiled programs keep their students' prompt format and call mode through save and load."""

import json

import dspy

from kpdd.engines.compiled import load_compiled, program_with_student, save_compiled
from kpdd.finetune.student import write_student
from kpdd.modules.one_call import OneCallProgram
from kpdd.modules.student_format import StudentAdapter


def _student(root, **meta):
    root.mkdir(parents=True)
    write_student(root, base="smollm2-135m", adapter_subdir=None, program="kpdd-pot", model_id=f"s-{root.name}",
                  train={}, **meta)
    return root


def test_compiled_one_call_program_keeps_format_and_call_mode(tmp_path):
    student = _student(tmp_path / "one", prompt_format="student", student_calls="one")
    program = program_with_student("kpdd-pot", student)
    assert isinstance(program, OneCallProgram) and isinstance(program.prompt_adapter, StudentAdapter)
    save_compiled(program, tmp_path / "compiled", "kpdd-pot")
    manifest = json.loads((tmp_path / "compiled" / "kpdd-program.json").read_text())
    assert (manifest["prompt_format"], manifest["student_calls"], manifest["students"]) == (
        "student", "one", {"one_call": "students/s-one"})
    loaded = load_compiled(tmp_path / "compiled")
    assert isinstance(loaded, OneCallProgram) and isinstance(loaded.prompt_adapter, StudentAdapter)
    assert loaded.one_call.lm.model == "local/s-one"


def test_compiled_per_stage_chat_program_keeps_chat_format(tmp_path):
    student = _student(tmp_path / "chat", prompt_format="chat", student_calls="per-stage")
    program = program_with_student("kpdd-pot", student)
    assert not isinstance(program, OneCallProgram) and type(program.prompt_adapter) is dspy.ChatAdapter
    loaded = load_compiled(save_compiled(program, tmp_path / "compiled", "kpdd-pot"))
    assert [name for name, _ in loaded.named_predictors()] == ["key_points.core", "key_points.info", "solve"]
    assert type(loaded.prompt_adapter) is dspy.ChatAdapter


def test_student_written_before_formats_existed_reads_as_chat(tmp_path):
    student = _student(tmp_path / "old")
    record = json.loads((student / "kpdd.json").read_text())
    for key in ("prompt_format", "student_calls", "repeated"):
        record.pop(key)
    (student / "kpdd.json").write_text(json.dumps(record))
    program = program_with_student("kpdd-pot", student)
    assert type(program.prompt_adapter) is dspy.ChatAdapter and not isinstance(program, OneCallProgram)


def test_save_compiled_names_a_program_of_a_local_module_relative_to_the_working_directory(tmp_path, monkeypatch):
    """As after ``BootstrapFinetune`` in a script that imports its pipeline from a file beside it: the manifest
    names the file as ``--program`` on the command line would (the working directory is tmp_path)."""
    import importlib.util
    import sys

    from user_programs import write_pipelines

    from kpdd.engines.lm import student_lm

    source, _, _ = write_pipelines(tmp_path)
    spec = importlib.util.spec_from_file_location("my_pipelines", source.resolve())
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "my_pipelines", module)
    spec.loader.exec_module(module)
    program = module.MathsSolver()
    program.set_lm(student_lm(_student(tmp_path / "tuned")))  # what BootstrapFinetune leaves on the predictors
    save_compiled(program, tmp_path / "compiled")
    manifest = json.loads((tmp_path / "compiled" / "kpdd-program.json").read_text())
    assert (manifest["program"], manifest["source"]) == ("my_pipelines.py:MathsSolver", "source/my_pipelines.py")
