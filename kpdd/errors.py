"""kpdd's own exception types. The CLI prints them as one line, without a traceback."""


class KpddError(Exception):
    """Base class: a problem the user can fix; the message says what and how."""


class DataError(KpddError):
    """A dataset file or row is missing or malformed (the message names the file, row and field)."""


class ConfigError(KpddError):
    """A config file or option is invalid (the message names the option and what was expected)."""


class RegistryError(KpddError, KeyError):
    """An unknown name was looked up in a registry (the message lists close matches)."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


def unknown_name(kind: str, name: str, known) -> RegistryError:
    """Build the error for an unknown registry name, with 'did you mean ...?'."""
    import difflib

    known = sorted(known)
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    return RegistryError(f"unknown {kind} {name!r}.{hint} Known: {', '.join(known)}.")


class EngineError(KpddError):
    """A local inference engine could not serve a request (e.g. it failed to start)."""


class LMUnavailableError(KpddError):
    """A remote LM cannot serve the run: nothing answers, it refuses the key, it does not serve the model, no key
    is set, or it stopped answering mid-run (the message names the URL, model or variable, and the fix)."""
