"""Code references: the program (or metric) a ``package.module:Attr`` or ``path/to/file.py:Attr`` string names.

What kind of thing a ``--program`` string names (a built-in, code, a compiled-program directory) is decided once, in
:func:`kpdd.references.parse_program`; this module imports and builds the code kind:

- ``package.module:Attr``: an importable module and a name in it (lm-evaluation-harness and uvicorn name code so);
- ``path/to/file.py:Attr``: a Python file, imported under a private module name (so a script's
  ``if __name__ == "__main__":`` block does not run).

``Attr`` may be a class (a fresh instance per :func:`build_reference`) or a module-level instance (copied). Each
failure is one line: no such file or module, no such attribute, not a ``dspy.Module``, a constructor that needs
arguments. :func:`program_reference` goes the other way, from an instance to the reference that rebuilds it.
"""

from __future__ import annotations

import copy
import hashlib
import importlib
import importlib.util
import inspect
import sys
import sysconfig
from pathlib import Path
from typing import Any

import dspy

from kpdd.errors import ConfigError
from kpdd.references import is_code_reference

PROGRAM_HELP = ("program: a built-in (kpdd-pot, kpdd-cot, socratic, cot, pot, direct), a class or instance of "
                "one's own as package.module:Name or path/to/file.py:Name")
METRIC_HELP = ("DSPy metric that decides which predictions are right, as package.module:function or "
               "path/to/file.py:function (default: the numeric answer equals the gold 'answer')")

# The attribute a built program carries: the reference it was built from, so it is saved under the same one.
REFERENCE_ATTR = "_kpdd_reference"


def _import_file(path: Path) -> Any:
    """Import a Python file under a private, path-derived module name (once per process)."""
    resolved = path.expanduser().resolve()
    name = f"kpdd_user_{resolved.stem}_{hashlib.sha1(str(resolved).encode()).hexdigest()[:8]}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, resolved)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # before exec: dataclasses and pickling look the module up by name
    # The file's own folder is importable while it loads, as it is when the file runs as a script.
    sys.path.insert(0, str(resolved.parent))
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    finally:
        sys.path.remove(str(resolved.parent))
    return module


def resolve_object(spec: str, what: str = "program") -> Any:
    """The object a ``module:attr`` / ``file.py:attr`` reference names (imported, not called)."""
    target, _, attribute = spec.rpartition(":")
    if target.endswith(".py"):
        path = Path(target).expanduser()
        if not path.is_file():
            raise ConfigError(f"{what} {spec}: no such file {path.resolve()}")
        try:
            module = _import_file(path)
        except Exception as e:
            raise ConfigError(f"{what} {spec}: importing {path} failed: {type(e).__name__}: {e}") from e
    else:
        try:
            module = importlib.import_module(target)
        except ModuleNotFoundError as e:
            raise ConfigError(f"{what} {spec}: no module named {e.name!r}: install the package that provides it "
                              "or put its folder on PYTHONPATH (or name a file: path/to/file.py:Name)") from e
        except Exception as e:
            raise ConfigError(f"{what} {spec}: importing {target} failed: {type(e).__name__}: {e}") from e
    if not hasattr(module, attribute):
        names = sorted(n for n, v in vars(module).items() if not n.startswith("_") and inspect.isclass(v)
                       and issubclass(v, dspy.Module) and v.__module__ == module.__name__)
        hint = f" (its dspy.Module classes: {', '.join(names)})" if names and what == "program" else ""
        raise ConfigError(f"{what} {spec}: {target} has no {attribute!r}{hint}")
    return getattr(module, attribute)


def build_reference(spec: str) -> dspy.Module:
    """A fresh program from a code reference: the class instantiated with no arguments, or a copy of an instance."""
    target = resolve_object(spec)
    if inspect.isclass(target):
        if not issubclass(target, dspy.Module):
            raise ConfigError(f"program {spec}: {target.__name__} is not a dspy.Module")
        required = [p.name for p in inspect.signature(target.__init__).parameters.values()
                    if p.name != "self" and p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
        if required:
            raise ConfigError(f"program {spec}: {target.__name__}() needs arguments ({', '.join(required)}); give "
                              "them defaults, or name a module-level instance instead (file.py:program)")
        program = target()
    elif isinstance(target, dspy.Module):
        program = copy.deepcopy(target)
    else:
        raise ConfigError(f"program {spec}: {type(target).__name__} {spec.rpartition(':')[2]!r} is not a dspy.Module "
                          "class or instance")
    setattr(program, REFERENCE_ATTR, spec)
    return program


def program_reference(program: dspy.Module, registered: dict[str, type] | None = None) -> str:
    """The reference that rebuilds ``program``: its registry name, the reference it was built from, or one derived
    from its class (``module:Class``, or ``file.py:Class`` for a class defined in a script or a loaded file)."""
    for name, cls in (registered or {}).items():
        if type(program) is cls:
            return name
    recorded = getattr(program, REFERENCE_ATTR, None)
    if recorded:
        return recorded
    cls = type(program)
    module = sys.modules.get(cls.__module__)
    if cls.__module__ == "__main__" or cls.__module__.startswith("kpdd_user_") or _is_local(module):
        source = getattr(module, "__file__", None)
        if not source:
            raise ConfigError(f"program class {cls.__name__} was defined interactively: put it in a file and name "
                              "it as path/to/file.py:Class")
        return f"{as_typed(source)}:{cls.__qualname__}"
    if "<locals>" in cls.__qualname__:
        raise ConfigError(f"program class {cls.__qualname__} is defined inside a function: move it to module level")
    return f"{cls.__module__}:{cls.__qualname__}"


def as_typed(source: str) -> str:
    """A file under the working directory relative to it, as it is typed after ``--program``: a program saved from
    Python records the same reference as one saved by the CLI."""
    path, here = Path(source).resolve(), Path.cwd().resolve()
    return str(path.relative_to(here)) if path.is_relative_to(here) else source


def _is_local(module: Any) -> bool:
    """A top-level module of the user's own (a file beside their script), not an installed package: saved programs
    keep a copy of its file, since another machine cannot import it."""
    source = getattr(module, "__file__", None)
    if not source or "." in module.__name__ or module.__name__ == "kpdd":
        return False
    parts = Path(source).resolve().parts
    stdlib = Path(sysconfig.get_paths()["stdlib"]).resolve()
    return not ({"site-packages", "dist-packages"} & set(parts)) and stdlib not in Path(source).resolve().parents


def label(reference: str) -> str:
    """A short name for runs, tables and default paths: the registry name, or the attribute's name (a reference as
    recorded in a trace store or manifest; :attr:`kpdd.references.ProgramRef.label` for a parsed one)."""
    return reference.rpartition(":")[2] if is_code_reference(reference) else reference
