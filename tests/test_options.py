"""Every command's options are checked when its config is built, before anything runs: a value outside a field's
choices or range is one error line naming the option (exit 2), and an old spelling still works with a warning."""

import dataclasses
import subprocess
import sys
import typing
from pathlib import Path

import pytest

from kpdd.cli import commands  # noqa: F401  (registers the commands)
from kpdd.cli import main
from kpdd.cli.options import CONFIGS
from kpdd.config import build_config, expectation, flag
from kpdd.errors import ConfigError
from kpdd.run.experiment import ExperimentConfig

ALL_CONFIGS = {**CONFIGS, "experiment": ExperimentConfig}
ROOT = Path(__file__).resolve().parents[1]
# Numbers any value of which is meaningful.
UNBOUNDED = {"seed"}


def base_type(tp):
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    return base_type(args[0]) if args else tp


def bad_value(metadata, kind):
    """A value just outside what the field accepts."""
    if metadata["choices"]:
        return "no-such-" + str(metadata["choices"][0])
    if metadata["pattern"]:
        return "no such value"
    step = 1 if kind is int else 0.5
    for key, outside in (("at_least", -step), ("above", 0), ("at_most", step), ("below", 0)):
        if metadata[key] is not None:
            return metadata[key] + outside
    raise AssertionError("no check declared")


def checked_fields():
    for command, config_cls in ALL_CONFIGS.items():
        hints = typing.get_type_hints(config_cls)
        for field in dataclasses.fields(config_cls):
            if expectation(field.metadata):
                yield pytest.param(command, config_cls, field, base_type(hints[field.name]),
                                   id=f"{command}{flag(field.name)}")


def test_the_commands_are_all_covered():
    assert set(ALL_CONFIGS) == {"traces", "augment", "improve", "finetune", "compile", "eval", "export", "demo",
                                "experiment"}


@pytest.mark.parametrize("command", sorted(ALL_CONFIGS))
def test_every_numeric_option_declares_its_range(command):
    config_cls = ALL_CONFIGS[command]
    hints = typing.get_type_hints(config_cls)
    unchecked = [flag(f.name) for f in dataclasses.fields(config_cls)
                 if base_type(hints[f.name]) in (int, float) and f.name not in UNBOUNDED and not expectation(f.metadata)]
    assert unchecked == []


@pytest.mark.parametrize("command,config_cls,field,kind", list(checked_fields()))
def test_a_value_outside_the_range_or_choices_is_one_line_naming_the_option(command, config_cls, field, kind):
    value = bad_value(field.metadata, kind)
    with pytest.raises(ConfigError) as error:
        build_config(config_cls, {field.name: [value] if base_type(field.type) is list else value}, source="options")
    message = str(error.value)
    assert message.startswith(f"{flag(field.name)}: expected ") and "\n" not in message
    default = field.default if field.default is not dataclasses.MISSING else field.default_factory()
    build_config(config_cls, {field.name: default}, source="options")  # the default itself passes


def test_a_file_value_is_named_with_its_file(tmp_path):
    path = tmp_path / "eval.toml"
    path.write_text("[eval]\nthreads = 0\n")
    from kpdd.config import load_config
    from kpdd.run.eval import EvalConfig

    with pytest.raises(ConfigError, match=r"eval\.toml: --threads: expected a whole number >= 1, got 0"):
        load_config(EvalConfig, path, section="eval")
    with pytest.raises(ConfigError, match=r"^--limit: expected"):  # a command-line value is named as typed
        load_config(EvalConfig, path, section="eval", limit=-1, threads=4)


@pytest.mark.parametrize("args,line", [
    (["eval", "--limit", "-5"], "error: --limit: expected a whole number >= 1, got -5"),
    (["eval", "--threads", "0"], "error: --threads: expected a whole number >= 1, got 0"),
    (["eval", "--engine", "vlm"], "error: --engine: expected one of transformers, vllm, vllm-burst, got 'vlm'"),
    (["finetune", "--learning-rate", "0"], "error: --learning-rate: expected a number > 0, got 0.0"),
    (["augment", "--variants", "8", "--max-attempts", "4"], "error: --max-attempts: expected at least --variants"),
    (["finetune", "--traces", "nope.jsonl"], "error: trace store nope.jsonl does not exist"),
])
def test_cli_exits_2_with_one_line_before_anything_is_written(args, line, tmp_path, mlflow_store, capsys):
    import mlflow

    with pytest.raises(SystemExit) as done:
        main(args)
    assert done.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(line) and len(err.splitlines()) == 1
    assert [p.name for p in tmp_path.iterdir()] == ["mlflow.db"]  # the test's empty store, no output
    assert mlflow.MlflowClient(mlflow_store).search_experiments(filter_string="name = 'kpdd'") == []


def test_the_installed_command_shows_no_traceback(tmp_path):
    done = subprocess.run([sys.executable, "-m", "kpdd", "eval", "--limit", "-5"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == ["error: --limit: expected a whole number >= 1, got -5"]


def test_an_old_spelling_works_and_warns(capsys):
    from kpdd.run.demo import DemoConfig

    assert build_config(DemoConfig, {"steps": 3}, source="options").max_steps == 3
    assert "--steps is now --max-steps" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="same option"):
        build_config(DemoConfig, {"steps": 3, "max_steps": 4}, source="options")


def test_shared_options_read_the_same_in_every_command():
    """One idea, one spelling: an option that several commands take has one help text (its defaults may differ).
    `kpdd eval`'s --prompt-format (auto or an override) and --split (of the evaluation sets) are its own."""
    helps: dict[str, set[str]] = {}
    for config_cls in ALL_CONFIGS.values():
        for field in dataclasses.fields(config_cls):
            helps.setdefault(field.name, set()).add(field.metadata["help"])
    shared = ["engine", "device", "student_calls", "multitask", "max_steps", "learning_rate", "batch_size", "epochs",
              "lora", "student", "api_base", "retries", "dataset", "metric"]
    assert {name: helps[name] for name in shared if len(helps[name]) > 1} == {}


def test_a_command_rewords_a_shared_option_and_keeps_its_default_and_checks():
    from kpdd.run.improve import ImproveConfig
    from kpdd.run.options import SamplingOptions

    mine = ImproveConfig.__dataclass_fields__["temperature"]
    shared = SamplingOptions.__dataclass_fields__["temperature"]
    assert mine.default == shared.default and mine.metadata["at_least"] == shared.metadata["at_least"] == 0
    assert (mine.metadata["help"], shared.metadata["help"]) == ("sampling temperature",
                                                                "sampling temperature when samples > 1")


@pytest.mark.parametrize("command", sorted(name for name, config_cls in ALL_CONFIGS.items()
                                           if "program" in config_cls.__dataclass_fields__))
def test_help_starts_with_the_program(command):
    from kpdd.cli.options import in_reading_order

    assert in_reading_order(ALL_CONFIGS[command])[0].name == "program"


@pytest.mark.parametrize("command", sorted(name for name, config_cls in ALL_CONFIGS.items()
                                           if "samples" in config_cls.__dataclass_fields__))
def test_several_samples_need_a_temperature_above_0(command):
    """One rule wherever a command samples: a temperature of 0 is fine for one sample, not for several."""
    config_cls = ALL_CONFIGS[command]
    assert build_config(config_cls, {"samples": 1, "temperature": 0}, source="options").temperature == 0
    with pytest.raises(ConfigError, match=r"^--samples 2 needs --temperature > 0, got 0: greedy samples"):
        build_config(config_cls, {"samples": 2, "temperature": 0}, source="options")


@pytest.mark.parametrize("path", sorted((ROOT / "configs").glob("*.toml")), ids=lambda p: p.name)
def test_the_shipped_config_files_build_every_table_they_hold(path):
    import tomllib

    from kpdd.config import load_config

    tables = [name for name in tomllib.loads(path.read_text()) if name in ALL_CONFIGS]
    assert tables
    for name in tables:
        load_config(ALL_CONFIGS[name], path, section=name)
