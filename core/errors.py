"""The error types every package raises for bad input, each a one-line message naming where the problem is.

A ``UserError`` is something the user can fix (a config key, a data file, an output folder): its text is one
line, ``SOURCE: KEY: problem``, and the command-line interface prints it as ``error: ...`` and exits with code 2
before anything is written. Library texts that span lines (YAML, PyAV, transformers) are folded with ``one_line``.
"""

from __future__ import annotations

from pathlib import Path


def one_line(text: object) -> str:
    """``text`` as a single line (exception texts from libraries may span lines)."""
    return " ".join(str(text).split())


class UserError(ValueError):
    """Bad input: a one-line message naming the source and the key or field."""

    def __init__(self, message: object) -> None:
        super().__init__(one_line(message))


class ConfigError(UserError):
    """A configuration error (unknown key, wrong type, bad value), naming the file and the key."""


class RegistryError(UserError):
    """A registry error: a name registered twice, or a name (or keyword) that is not registered."""


class DuplicateNameError(RegistryError):
    """A name was registered twice."""


class UnknownNameError(RegistryError):
    """A name is not registered (or a keyword argument does not exist)."""


class DataError(UserError):
    """Bad data: ``FILE: entry N: field 'F': problem`` (entry and field where they apply)."""

    def __init__(
        self, file: str | Path, problem: object, *, entry: int | None = None, field: str | None = None
    ) -> None:
        parts = [str(file)]
        if entry is not None:
            parts.append(f"entry {entry}")
        if field is not None:
            parts.append(f"field {field!r}")
        super().__init__(": ".join([*parts, one_line(problem)]))
        self.file = str(file)
        self.entry = entry
        self.field = field
        self.problem = one_line(problem)


class OutputError(OSError):
    """An output folder that cannot be written (no space, read-only): one line naming the folder."""

    def __init__(self, message: object) -> None:
        super().__init__(one_line(message))


USER_ERRORS: tuple[type[Exception], ...] = (UserError, OutputError)
"""what an entry point reports as one line with exit code 2"""
