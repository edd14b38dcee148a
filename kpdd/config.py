"""Config is data: one frozen dataclass per command, loadable from TOML or YAML, stored with its outputs.

Each field carries its help text in ``field(metadata={"help": ...})``; the CLI uses it for ``--help``. What a
command's driver returns is a frozen dataclass too, on :class:`Result`.
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


def option(default: Any, help: str, *, choices: tuple | None = None, at_least: float | None = None,
           above: float | None = None, at_most: float | None = None, below: float | None = None,
           pattern: tuple[str, str] | None = None, aliases: tuple[str, ...] = (), default_text: str | None = None,
           **kwargs) -> Any:
    """A config field with a default, a one-line help text and the values it accepts.

    ``choices`` (a list option: each item), a range (``at_least``/``above``/``at_most``/``below``; ``None`` stays
    allowed for an optional field) or ``pattern`` (a regular expression and how to say it) are checked when the config
    is built (:class:`Checked`), so a bad value is one error line before a run starts; ``aliases`` are old names
    that still work, with a warning; ``default_text`` says in words what a default of ``None`` means.
    """
    metadata = {"help": help, "choices": tuple(choices) if choices else None, "at_least": at_least, "above": above,
                "at_most": at_most, "below": below, "pattern": pattern, "aliases": tuple(aliases),
                "default_text": default_text}
    if isinstance(default, (list, dict, set)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata=metadata, **kwargs)
    return dataclasses.field(default=default, metadata=metadata, **kwargs)


def redefault(config_cls: type, name: str, default: Any = dataclasses.MISSING, **metadata: Any) -> Any:
    """The field ``name`` of ``config_cls`` with another default: a command that composes a shared group of options
    keeps their help, checks and spelling and changes only what it starts from (and ``metadata``, e.g. the
    ``aliases`` it still answers to, or a ``help`` that says what the option does in this command; without a
    ``default``, the group's stays)."""
    field = next(f for f in dataclasses.fields(config_cls) if f.name == name)
    if default is dataclasses.MISSING:
        return dataclasses.field(default=field.default, default_factory=field.default_factory,
                                 metadata={**field.metadata, **metadata})
    metadata = {**field.metadata, "default_text": None, **metadata}
    if isinstance(default, (list, dict, set)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def flag(name: str) -> str:
    """A field's command-line spelling: ``max_steps`` → ``--max-steps``."""
    return "--" + name.replace("_", "-")


def expectation(metadata: typing.Mapping[str, Any], kind: str = "a number") -> str | None:
    """What a field accepts, in words (``None`` when it accepts any value of its type)."""
    if metadata.get("choices"):
        return "one of " + ", ".join(map(str, metadata["choices"]))
    if metadata.get("pattern"):
        return metadata["pattern"][1]
    bounds = [f"{sign} {metadata[key]:g}" for key, sign in (("at_least", ">="), ("above", ">"), ("at_most", "<="),
                                                             ("below", "<")) if metadata.get(key) is not None]
    return f"{kind} " + " and ".join(bounds) if bounds else None


def _accepts(value: Any, metadata: typing.Mapping[str, Any]) -> bool:
    import re

    if value is None:
        return True
    if isinstance(value, (list, tuple)):
        return all(_accepts(item, metadata) for item in value)
    if metadata.get("choices") and value not in metadata["choices"]:
        return False
    if metadata.get("pattern") and not re.fullmatch(metadata["pattern"][0], str(value)):
        return False
    return ((metadata.get("at_least") is None or value >= metadata["at_least"])
            and (metadata.get("above") is None or value > metadata["above"])
            and (metadata.get("at_most") is None or value <= metadata["at_most"])
            and (metadata.get("below") is None or value < metadata["below"]))


def check_options(config: Any) -> None:
    """Every field's value against its choices, range or pattern: the first that fails is one error line that
    names the option and what it expects."""
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        if not _accepts(value, field.metadata):
            shown = ",".join(map(str, value)) if isinstance(value, (list, tuple)) else value
            kind = "a whole number" if isinstance(value, int) else "a number"
            error = ConfigError(f"{flag(field.name)}: expected {expectation(field.metadata, kind)}, got {shown!r}")
            error.option = field.name
            raise error


class Checked:
    """Base of the config dataclasses: a config checks its values (:func:`check_options`) whenever it is built,
    from the command line, a file or code."""

    def __post_init__(self) -> None:
        check_options(self)


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


def _renamed(cls: type, values: dict[str, Any], source: str) -> dict[str, Any]:
    """Old option names (a field's ``aliases``) mapped to the current ones, each with a warning."""
    import sys

    renamed = {}
    for key, value in values.items():
        name = key.replace("-", "_")
        new = next((f.name for f in dataclasses.fields(cls) if name in f.metadata.get("aliases", ())), None)
        if new is not None and value is not None:
            print(f"warning: {source}: {flag(name)} is now {flag(new)}; the old name will go", file=sys.stderr)
            if values.get(new) is not None or values.get(flag(new)[2:]) is not None:
                raise ConfigError(f"{source}: {flag(name)} and {flag(new)} are the same option: give one")
            renamed[new] = value
        elif new is None:
            renamed[key] = value
    return renamed


def build_config(cls: type[C], values: dict[str, Any], source: str = "config", given_here: tuple[str, ...] = ()) -> C:
    """Validate ``values`` against the dataclass ``cls``; unknown keys, bad types and values outside a field's
    choices or range are errors (prefixed by ``source``, except for the fields in ``given_here``: options given on
    the command line)."""
    values = _renamed(cls, values, source)
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
    try:
        return cls(**kwargs)
    except ConfigError as e:
        if source == OPTIONS or getattr(e, "option", None) in given_here:
            raise
        raise ConfigError(f"{source}: {e}") from None


OPTIONS = "options"


def load_config(cls: type[C], path: str | Path | None = None, section: str | None = None, **overrides) -> C:
    """File values first, then explicit overrides (those that are not None) on top."""
    values = read_config_file(path, section) if path else {}
    given = {k: v for k, v in overrides.items() if v is not None}
    values.update(given)
    return build_config(cls, values, source=str(path) if path else OPTIONS,
                        given_here=tuple(k.replace("-", "_") for k in given))


def config_to_dict(config) -> dict[str, Any]:
    return dataclasses.asdict(config)


CONFIG_FILE = "config.json"


def config_document(config: Any) -> dict[str, Any]:
    """A config as it is stored: its type name, then every field (a plain dict is stored as it is)."""
    if isinstance(config, dict):
        return dict(config)
    return {"type": type(config).__name__, **config_to_dict(config)}


OUTPUT_FILE_SUFFIXES = (".jsonl", ".json")  # the files a command writes (trace stores, predictions); else a directory


def config_path(output: str | Path) -> Path:
    """Where the config of an output goes: ``<dir>/config.json`` for a directory, ``<name>.config.json`` beside
    a JSON/JSONL output file. (A directory's name may hold a dot: ``kpdd-pot-local_~_.cache_...``.)"""
    output = Path(output)
    if output.suffix in OUTPUT_FILE_SUFFIXES and not output.is_dir():
        return output.with_name(f"{output.stem}.{CONFIG_FILE}")
    return output / CONFIG_FILE


def save_config(config: Any, output: str | Path) -> Path:
    """Store a config as JSON beside the output it produced (:func:`config_path`), so a run can be rebuilt from
    its output; returns the JSON file's path."""
    path = config_path(output)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(config_document(config), indent=2, default=str) + "\n")
    return path


class Result:
    """Base of the frozen dataclasses the drivers return (``TraceStats``, ``FinetuneResult``, ``EvalResult``, ...):
    read their fields by name."""

    def as_dict(self) -> dict[str, Any]:
        """The fields as JSON values (paths as strings), e.g. for an MLflow dict artifact."""
        return _plain(self)


def _plain(value: Any) -> Any:
    # walks the fields itself: dataclasses.asdict rebuilds a Counter from its (key, count) pairs, counting the pairs
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {field.name: _plain(getattr(value, field.name)) for field in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {_plain(key): _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return str(value) if isinstance(value, Path) else value
