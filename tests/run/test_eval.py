"""`kpdd eval`'s choice of program, LM and prompt format, without weights: a compiled (or exported) program on a
served student is prompted in the format recorded for it; other served models keep DSPy's defaults."""

import pytest

from kpdd.errors import ConfigError
from kpdd.modules import build_program
from kpdd.modules.saved import save_program
from kpdd.modules.student_format import STUDENT, StudentAdapter
from kpdd.run.eval import EvalConfig, load_program_and_lm, references, with_prompt_format
from scripted_teacher import ScriptedTeacher



@pytest.fixture
def server_url():
    """A real OpenAI-compatible server on 127.0.0.1: the driver probes a served LM before it uses it."""
    with ScriptedTeacher({}) as server:
        yield server.url


def loaded(config: EvalConfig):
    return load_program_and_lm(config, *references(config))


def compiled(directory, students):
    return str(save_program(build_program("kpdd-pot"), directory, "kpdd-pot", students=students,
                            prompt_format=STUDENT))


def test_a_compiled_program_runs_on_a_served_student_in_its_recorded_format(tmp_path, server_url):
    program_dir = compiled(tmp_path, {name: "students/all" for name in ("key_points.core", "key_points.info", "solve")})
    program, name, local = loaded(EvalConfig(program=program_dir, lm="openai/student", api_base=[server_url]))
    assert name == "kpdd-pot" and not local
    assert {predictor.lm.model for _, predictor in program.named_predictors()} == {"openai/student"}
    assert program.solve.lm.kwargs["api_base"] == server_url
    assert isinstance(program.prompt_adapter, StudentAdapter)  # what the student was trained on


def test_a_served_model_with_a_registry_program_keeps_dspys_defaults(tmp_path, server_url):
    program, _, local = loaded(EvalConfig(program="direct", lm="openai/teacher", api_base=[server_url]))
    assert not local and program.prompt_adapter is None


def test_prompt_format_overrides_what_the_program_carries():
    """--prompt-format student: a served export evaluated with a registry program instead of its own directory."""
    assert isinstance(with_prompt_format(build_program("direct"), "student").prompt_adapter, StudentAdapter)
    assert with_prompt_format(build_program("direct"), "auto").prompt_adapter is None
    with pytest.raises(ConfigError, match="prompt format 'json'"):
        with_prompt_format(build_program("direct"), "json")


def test_one_served_model_cannot_stand_for_per_stage_students(tmp_path):
    program_dir = compiled(tmp_path, {"key_points.core": "students/core", "key_points.info": "students/info",
                                      "solve": "students/solve"})
    with pytest.raises(ConfigError, match="3 students"):
        loaded(EvalConfig(program=program_dir, lm="openai/student", api_base=["http://127.0.0.1:9/v1"]))


def test_an_unknown_engine_fails_before_anything_is_written(tmp_path):
    from kpdd.errors import ConfigError

    with pytest.raises(ConfigError, match="--engine: expected one of transformers, vllm, vllm-burst, got 'vlm'"):
        EvalConfig(program="direct", lm="smollm2-135m", engine="vlm", out=str(tmp_path / "p.jsonl"))
    assert not (tmp_path / "p.jsonl").exists()
