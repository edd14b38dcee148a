"""docs/CLI.md is generated from the commands' own option definitions; it fails here when it is stale."""

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def load_script():
    spec = importlib.util.spec_from_file_location("cli_docs", ROOT / "scripts" / "cli_docs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cli_reference_matches_the_option_definitions():
    rendered = load_script().render()
    assert (ROOT / "docs" / "CLI.md").read_text() == rendered, "docs/CLI.md is stale: run python scripts/cli_docs.py"


def test_cli_reference_lists_every_command_and_option():
    from kpdd.cli.options import CONFIGS

    text = load_script().render()
    for name, config_cls in CONFIGS.items():
        assert f"## `kpdd {name}`" in text
        section = text.split(f"## `kpdd {name}`")[1].split("\n## ")[0]
        for field in config_cls.__dataclass_fields__:
            assert f"`--{field.replace('_', '-')}" in section, (name, field)


def test_cli_reference_says_which_export_options_are_required():
    section = (ROOT / "docs" / "CLI.md").read_text().split("## `kpdd export`")[1].split("\n## ")[0]
    for option in ("--lm", "--out"):
        [line] = [line for line in section.splitlines() if line.startswith(f"* `{option} ")]
        assert "required" in line, line
