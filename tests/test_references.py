"""What a ``--program`` or ``--lm`` string names, decided once (kpdd.references), case by case."""

from pathlib import Path

import pytest

import kpdd.references as references
from kpdd.errors import ConfigError, KpddError
from kpdd.references import (
    ALIAS,
    BUILTIN,
    CHECKPOINT,
    COMPILED,
    FILE,
    MODULE,
    REMOTE,
    SHIPPED,
    STUDENT,
    LMRef,
    ProgramRef,
    parse_lm,
    parse_local_lm,
    parse_program,
)


@pytest.fixture
def here(tmp_path, monkeypatch):
    """A working directory with one of each directory kind."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "compiled" / "students" / "all").mkdir(parents=True)
    (tmp_path / "compiled" / "kpdd-program.json").write_text("{}")
    (tmp_path / "student").mkdir()
    (tmp_path / "student" / "kpdd.json").write_text("{}")
    (tmp_path / "checkpoint").mkdir()
    (tmp_path / "checkpoint" / "config.json").write_text("{}")
    (tmp_path / "empty").mkdir()
    return tmp_path


# --program --------------------------------------------------------------------------------------------------------

def test_program_builtin_is_its_name():
    assert parse_program("kpdd-pot") == ProgramRef(BUILTIN, "kpdd-pot")
    assert parse_program("kpdd-pot").target == "kpdd.modules.programs:KPDDPoT"


def test_program_code_reference_names_a_module_or_a_file():
    module, file = parse_program("my_pkg.pipelines:Solver"), parse_program("src/my_pipeline.py:MyPoT")
    assert (module.kind, module.target, module.label) == (MODULE, "my_pkg.pipelines:Solver", "Solver")
    assert (file.kind, file.path, file.label) == (FILE, Path("src/my_pipeline.py"), "MyPoT")


def test_program_compiled_directory_by_any_path_spelling(here):
    for text in ("compiled", "./compiled", str(here / "compiled"), "compiled/"):
        ref = parse_program(text)
        assert (ref.kind, ref.path.resolve()) == (COMPILED, here / "compiled"), text


def test_program_builtin_wins_over_a_folder_of_its_name_and_dot_slash_names_the_folder(here):
    (here / "direct").mkdir()
    (here / "direct" / "kpdd-program.json").write_text("{}")
    assert parse_program("direct").kind == BUILTIN
    assert parse_program("./direct").kind == COMPILED


def test_program_missing_or_empty_path_is_one_line_naming_what_was_expected(here):
    with pytest.raises(ConfigError) as error:
        parse_program("runs/nope")
    assert str(error.value) == (f"--program runs/nope: no such directory ({here / 'runs' / 'nope'}); expected a "
                                "compiled program directory (with kpdd-program.json)")
    with pytest.raises(ConfigError, match=r"^--program empty: no compiled program there \(no kpdd-program.json\)"):
        parse_program("empty")
    with pytest.raises(ConfigError, match=r"^--program my_pipeline.py: name the program in the file, e.g. "):
        parse_program("my_pipeline.py")


def test_program_unknown_name_lists_the_close_matches():
    with pytest.raises(KpddError, match=r"unknown program 'kpdd-pto'. Did you mean 'kpdd-pot'"):
        parse_program("kpdd-pto")


# --lm ----------------------------------------------------------------------------------------------------------------

def test_lm_directories_by_what_they_hold(here):
    assert parse_lm("student") == LMRef(STUDENT, "student", path=Path("student"))
    assert parse_lm("./checkpoint").kind == CHECKPOINT
    assert parse_lm(str(here / "compiled")).kind == COMPILED


def test_lm_shipped_alias_and_shipped_student(here, monkeypatch):
    assert parse_lm("smollm2-135m") == LMRef(ALIAS, "smollm2-135m", model="smollm2-135m")
    monkeypatch.setattr(references, "SHIPPED_STUDENTS_DIR", here)
    assert parse_lm("shipped:student") == LMRef(SHIPPED, "shipped:student", path=here / "student",
                                                model="shipped:student")
    with pytest.raises(ConfigError, match=r"^no shipped student 'nope': .* \(shipped students: student\)"):
        parse_lm("shipped:nope")


def test_lm_model_string_carries_its_servers():
    ref = parse_lm("openai/gpt-4o-mini", servers=["http://a/v1", "http://b/v1"])
    assert (ref.kind, ref.model, ref.servers) == (REMOTE, "openai/gpt-4o-mini", ("http://a/v1", "http://b/v1"))
    assert parse_lm("hosted_vllm/Qwen/Qwen2.5-7B").model == "hosted_vllm/Qwen/Qwen2.5-7B"
    assert parse_lm("smollm2-135m", servers=["http://a/v1"]).servers == ()  # a local model has none


def test_lm_folder_named_like_an_alias_needs_dot_slash(here):
    (here / "smollm2-135m").mkdir()
    (here / "smollm2-135m" / "config.json").write_text("{}")
    assert parse_lm("smollm2-135m").kind == ALIAS
    assert parse_lm("./smollm2-135m").kind == CHECKPOINT


def test_lm_existing_folder_wins_over_a_model_string_and_remote_forces_the_model_string(here):
    (here / "openai" / "student").mkdir(parents=True)
    (here / "openai" / "student" / "kpdd.json").write_text("{}")
    assert parse_lm("openai/student").kind == STUDENT
    forced = parse_lm("remote:openai/student")
    assert (forced.kind, forced.model, forced.text) == (REMOTE, "openai/student", "remote:openai/student")
    assert parse_lm("local:smollm2-135m").kind == ALIAS


def test_lm_missing_path_is_one_line_naming_what_was_expected(here):
    with pytest.raises(ConfigError) as error:
        parse_lm("./nope")
    assert str(error.value) == (f"--lm ./nope: no such directory ({here / 'nope'}); expected a kpdd student "
                                "directory (with kpdd.json), a compiled program (with kpdd-program.json), or a "
                                "Hugging Face checkpoint (with config.json)")
    with pytest.raises(ConfigError, match=r"^--lm student/typo: no such directory .*remote:student/typo for a"):
        parse_lm("student/typo")  # its first folder exists: a typo in a path, not a provider
    with pytest.raises(ConfigError, match=r"^--lm \./empty: \S+empty holds no model; expected a kpdd student"):
        parse_lm("./empty")


def test_lm_neither_path_nor_model_string_says_what_was_expected():
    with pytest.raises(ConfigError) as error:
        parse_lm("smolm2-135m")
    assert str(error.value) == ("--lm 'smolm2-135m': expected a model directory ('./<dir>': a student, a compiled "
                                "program or a checkpoint), a shipped alias (smollm2-135m), shipped:<name> or a model "
                                "string such as 'openai/gpt-4o-mini' (with --api-base for an OpenAI-compatible "
                                "server). Did you mean 'smollm2-135m'?")


def test_lm_compiled_program_where_one_lm_is_expected_names_a_student_to_pass(here):
    with pytest.raises(ConfigError) as error:
        parse_lm("compiled", "--teacher", compiled=False)
    assert str(error.value) == ("--teacher compiled is a compiled program, and --teacher takes one LM: pass one of "
                                "its students, e.g. --teacher compiled/students/all")


def test_local_lm_refuses_a_model_string_and_reads_a_path_as_a_directory(here):
    with pytest.raises(ConfigError, match="expected a local model"):
        parse_local_lm("remote:openai/x")
    with pytest.raises(ConfigError, match=r"^student runs/x: no such directory"):
        parse_local_lm("runs/x")
    with pytest.raises(ConfigError, match=r"^student 'x': expected a model directory .* or shipped:<name>\.$"):
        parse_local_lm("x")
    assert parse_local_lm(Path("student")).kind == STUDENT
