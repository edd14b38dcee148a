"""Config is data: one frozen dataclass per command, loadable from TOML or YAML, stored with its outputs.

Each field carries its help text in ``field(metadata={"help": ...})``; the CLI uses it for ``--help``.
"""

from __future__ import annotations

import dataclasses
import json
import tomllib
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

from kpdd.errors import ConfigError

C = TypeVar("C")

# No hub downloads and no telemetry. Hugging Face, MLflow, LiteLLM and vLLM read these when they are imported.
OFFLINE_DEFAULTS = {
    "HF_HUB_OFFLINE": "1",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "LITELLM_LOCAL_MODEL_COST_MAP": "True",
    "VLLM_NO_USAGE_STATS": "1",
    "DO_NOT_TRACK": "1",
    "TOKENIZERS_PARALLELISM": "false",
}


def use_offline_defaults() -> None:
    """Set :data:`OFFLINE_DEFAULTS` where the environment has no value of its own; the CLI and the scripts call
    this before they import those libraries (importing kpdd sets nothing)."""
    import os

    for name, value in OFFLINE_DEFAULTS.items():
        os.environ.setdefault(name, value)


def option(default: Any, help: str, **kwargs) -> Any:
    """A config field with a default and a one-line help text."""
    if isinstance(default, (list, dict, set)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata={"help": help}, **kwargs)
    return dataclasses.field(default=default, metadata={"help": help}, **kwargs)


def read_config_file(path: str | Path, section: str | None = None) -> dict[str, Any]:
    """Read a TOML or YAML file into a dict; ``section`` picks a table (e.g. ``[eval]``) if present."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    text = path.read_text()
    try:
        if path.suffix == ".toml":
            data = tomllib.loads(text)
        elif path.suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text) or {}
        else:
            raise ConfigError(f"config file {path}: expected a .toml, .yaml or .yml file")
    except (tomllib.TOMLDecodeError, ValueError) as e:
        raise ConfigError(f"config file {path} is not valid {path.suffix[1:].upper()}: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path}: expected a table of options at the top level")
    if section and isinstance(data.get(section), dict):
        data = data[section]
    return data


def _coerce(value: Any, tp: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _coerce(value, args[0], where)
    if origin in (list, tuple):
        (item,) = typing.get_args(tp)[:1] or (Any,)
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        # A repeated option gives a list, and each value may itself be comma-separated.
        parts = [p.strip() for v in value for p in (v.split(",") if isinstance(v, str) else [v])]
        return [_coerce(v, item, where) for v in parts if v != ""]
    if tp is bool:
        if isinstance(value, bool):
            return value
        if str(value).lower() in ("true", "1", "yes"):
            return True
        if str(value).lower() in ("false", "0", "no"):
            return False
        raise ConfigError(f"{where}: expected true or false, got {value!r}")
    if tp in (int, float):
        if isinstance(value, bool):
            raise ConfigError(f"{where}: expected a {tp.__name__}, got {value!r}")
        try:
            return tp(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: expected a {tp.__name__}, got {value!r}") from None
    if tp is str:
        if not isinstance(value, (str, int, float)):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return str(value)
    return value


def build_config(cls: type[C], values: dict[str, Any], source: str = "config") -> C:
    """Validate ``values`` against the dataclass ``cls``; unknown keys and bad types are errors."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    unknown = [k for k in values if k.replace("-", "_") not in fields]
    if unknown:
        import difflib

        close = difflib.get_close_matches(unknown[0].replace("-", "_"), list(fields), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(f"{source}: unknown option {unknown[0]!r}{hint}; known: {', '.join(fields)}")
    kwargs = {}
    for key, value in values.items():
        name = key.replace("-", "_")
        kwargs[name] = _coerce(value, hints[name], f"{source}: option {name!r}")
    return cls(**kwargs)


def load_config(cls: type[C], path: str | Path | None = None, section: str | None = None, **overrides) -> C:
    """File values first, then explicit overrides (those that are not None) on top."""
    values = read_config_file(path, section) if path else {}
    values.update({k: v for k, v in overrides.items() if v is not None})
    return build_config(cls, values, source=str(path) if path else "options")


def config_to_dict(config) -> dict[str, Any]:
    return dataclasses.asdict(config)


CONFIG_FILE = "config.json"


def config_document(config: Any) -> dict[str, Any]:
    """A config as it is stored: its type name, then every field (a plain dict is stored as it is)."""
    if isinstance(config, dict):
        return dict(config)
    return {"type": type(config).__name__, **config_to_dict(config)}


def config_path(output: str | Path) -> Path:
    """Where the config of an output goes: ``<dir>/config.json`` for a directory, ``<name>.config.json`` beside
    a file (a path with a suffix)."""
    output = Path(output)
    return output.with_name(f"{output.stem}.{CONFIG_FILE}") if output.suffix else output / CONFIG_FILE


def save_config(config: Any, output: str | Path) -> Path:
    """Store a config as JSON beside the output it produced (:func:`config_path`), so a run can be rebuilt from
    its output; returns the JSON file's path."""
    path = config_path(output)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(config_document(config), indent=2, default=str) + "\n")
    return path
