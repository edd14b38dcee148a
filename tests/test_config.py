"""Configs are stored beside what they produced, and importing kpdd leaves the environment alone."""

import json
import os
import subprocess
import sys
from dataclasses import dataclass

from kpdd.config import OFFLINE_DEFAULTS, config_path, option, save_config


@dataclass(frozen=True)
class ToyConfig:
    program: str = option("kpdd-pot", "program")
    datasets: list[str] = option(["gsm8k"], "datasets")


def test_config_path_is_beside_a_file_and_inside_a_directory(tmp_path):
    assert config_path(tmp_path / "eval" / "preds.jsonl") == tmp_path / "eval" / "preds.config.json"
    assert config_path(tmp_path / "compiled") == tmp_path / "compiled" / "config.json"


def test_save_config_round_trips_every_field(tmp_path):
    path = save_config(ToyConfig(datasets=["svamp", "asdiv"]), tmp_path / "out" / "traces.jsonl")
    assert path == tmp_path / "out" / "traces.config.json"
    assert json.loads(path.read_text()) == {"type": "ToyConfig", "program": "kpdd-pot", "datasets": ["svamp", "asdiv"]}


def test_importing_kpdd_changes_no_environment_variable():
    env = {k: v for k, v in os.environ.items() if k not in OFFLINE_DEFAULTS}
    code = ("import os; before = dict(os.environ); import kpdd, kpdd.cli, kpdd.run.eval, kpdd.engines; "
            "print(sorted(set(os.environ.items()) ^ set(before.items())))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]"


def test_the_cli_sets_the_offline_defaults_an_explicit_value_wins():
    env = {k: v for k, v in os.environ.items() if k not in OFFLINE_DEFAULTS} | {"HF_HUB_OFFLINE": "0"}
    code = ("import os; from kpdd.cli import main\ntry: main(['--help'])\nexcept SystemExit: pass\n"
            "print(os.environ['HF_HUB_OFFLINE'], os.environ['MLFLOW_DISABLE_TELEMETRY'])")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split()[-2:] == ["0", "true"]


def test_a_directory_whose_name_holds_a_dot_gets_its_config_inside(tmp_path):
    from kpdd.config import config_path

    assert config_path(tmp_path / "kpdd-pot-local_~_.cache_models") == tmp_path / "kpdd-pot-local_~_.cache_models" / "config.json"
    assert config_path(tmp_path / "store.jsonl") == tmp_path / "store.config.json"


def test_a_results_fields_become_json_values_counters_keep_their_counts(tmp_path):
    from collections import Counter
    from dataclasses import field
    from pathlib import Path

    from kpdd.config import Result

    @dataclass(frozen=True)
    class Score:
        errors: Counter = field(default_factory=Counter)

    @dataclass(frozen=True)
    class Outcome(Result):
        out: Path
        scores: dict[str, Score]

    outcome = Outcome(out=tmp_path, scores={"gsm8k": Score(Counter({"wrong answer": 3, "parse": 1}))})
    assert outcome.as_dict() == {"out": str(tmp_path), "scores": {"gsm8k": {"errors": {"wrong answer": 3, "parse": 1}}}}
    json.dumps(outcome.as_dict())
