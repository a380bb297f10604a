"""The vocabulary of validation, shared by the settings (config/) and the mappings
(mapping/): typed reading of a parsed YAML tree, collecting every problem with its key
path, and how a value is shown in an error.

Validation does not stop at the first mistake: a user fixing a config file wants the
whole list at once. Each problem names the key (``userflux.batch_size``), what was
expected and what was found. Values of secret keys are never quoted, and no value is
quoted at more than ``short_repr``'s length.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from typing import Any

REQUIRED: Any = object()


class Problems:
    """Collects ``key: message`` lines; raise them together at the end."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def add(self, where: str, message: str) -> None:
        self.lines.append(f"{where}: {message}" if where else message)

    def __bool__(self) -> bool:
        return bool(self.lines)

    def about(self, where: str) -> bool:
        """Whether a problem was already recorded for this key (e.g. an unset ${VAR})."""
        return any(line.startswith(where + ": ") for line in self.lines)


def describe(value: Any, secret: bool = False) -> str:
    """How a found value is shown in an error: its type, and the value unless secret."""
    if value is None:
        return "null"
    if secret or isinstance(value, (dict, list)):
        name = type_name(value)
        article = "an" if name[0] in "aeiou" else "a"
        return f"{article} {name}" + (" (value hidden)" if secret else "")
    shown = short_repr(value) if not isinstance(value, bool) else str(value).lower()
    return f"{type_name(value)} {shown}"


def join(path: str, key: Any) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else str(key)


class Section:
    """One mapping of the YAML tree, read key by key.

    Every ``get_*`` marks its key as known; ``finish()`` reports the keys nobody asked
    for (a typo, usually) with the closest known key as a suggestion.
    """

    def __init__(self, data: Any, path: str, problems: Problems, what: str = "a mapping"):
        self.path = path
        self.problems = problems
        self.known: list[str] = []
        self.ok = isinstance(data, dict)
        if data is None:
            data = {}
            self.ok = True
        if not self.ok:
            # A section written as a plain string may be a secret put in the wrong place
            # (`userflux: ${USERFLUX_API_KEY}`): never quote it.
            problems.add(
                path or "(top level)", f"expected {what}, found {describe(data, secret=isinstance(data, str))}"
            )
            data = {}
        self.data: dict = data

    def has(self, key: str) -> bool:
        return key in self.data

    def raw(self, key: str, default: Any = REQUIRED) -> Any:
        self.known.append(key)
        if key in self.data:
            return self.data[key]
        if default is REQUIRED:
            self.problems.add(join(self.path, key), "is required")
            return None
        return default

    def section(self, key: str, required: bool = False) -> Section:
        value = self.raw(key, REQUIRED if required else None)
        return Section(value, join(self.path, key), self.problems)

    def get_str(self, key: str, default: Any = REQUIRED, secret: bool = False, non_empty: bool = True) -> Any:
        value = self.raw(key, default)
        if key not in self.data:
            return value  # the default, or None after "is required"
        if value is None:  # `key:` with nothing after it: never silently empty
            self.problems.add(join(self.path, key), "expected a non-empty string, found null")
            return None
        if isinstance(value, (int, float)) and not isinstance(value, bool) and not secret:
            value = str(value)
        if not isinstance(value, str):
            self.problems.add(join(self.path, key), f"expected a string, found {describe(value, secret)}")
            return None
        if non_empty and not value.strip():
            if self.problems.about(join(self.path, key)):
                return None
            self.problems.add(join(self.path, key), "expected a non-empty string, found an empty one")
            return None
        return value

    def get_int(self, key: str, default: Any, lo: int | None = None, hi: int | None = None) -> Any:
        value = self.raw(key, default)
        if value is default:
            return value
        number = _as_int(value)
        return self._check_range(key, value, number, lo, hi, "an integer")

    def get_float(self, key: str, default: Any, lo: float | None = None, hi: float | None = None) -> Any:
        value = self.raw(key, default)
        if value is default:
            return value
        number = _as_float(value)
        return self._check_range(key, value, number, lo, hi, "a number")

    def _check_range(self, key, value, number, lo, hi, kind):
        if number is None or (lo is not None and number < lo) or (hi is not None and number > hi):
            bounds = (
                f" from {lo} to {hi}"
                if lo is not None and hi is not None
                else f" >= {lo}"
                if lo is not None
                else f" <= {hi}"
                if hi is not None
                else ""
            )
            self.problems.add(join(self.path, key), f"expected {kind}{bounds}, found {describe(value)}")
            return None
        return number

    def get_bool(self, key: str, default: Any) -> Any:
        value = self.raw(key, default)
        if value is default or isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in ("true", "false"):
            return value.strip().lower() == "true"
        self.problems.add(join(self.path, key), f"expected true or false, found {describe(value)}")
        return None

    def get_choice(self, key: str, choices: Iterable[str], default: Any = REQUIRED) -> Any:
        choices = list(choices)
        value = self.raw(key, default)
        if value is default:
            return value
        if value not in choices:
            self.problems.add(join(self.path, key), f"expected one of {', '.join(choices)}, found {describe(value)}")
            return None
        return value

    def finish(self) -> None:
        for key in self.data:
            if key not in self.known:
                hint = difflib.get_close_matches(str(key), self.known, n=1)
                suggestion = f" (did you mean {hint[0]!r}?)" if hint else f" (known keys: {', '.join(self.known)})"
                self.problems.add(join(self.path, key), f"unknown key{suggestion}")


def _as_int(value: Any) -> int | None:
    # Strings are accepted because ${VAR} expansion always yields strings.
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            return None
    return None


def _as_float(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            return None
    return None


def short_repr(value: Any, limit: int = 60) -> str:
    """``repr(value)`` cut to ``limit`` characters: a reason quotes what it found, but a
    megabyte-long value must not become a megabyte-long log line or dead-letter header."""
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10**limit:
        return f"a number of about {int(value.bit_length() * 0.30103) + 1} digits"  # str() refuses huge ones
    shown = repr(value if not isinstance(value, str) or len(value) <= limit else value[:limit])
    return shown if len(shown) <= limit else shown[: limit - 3] + "..."


def type_name(value: Any) -> str:
    """Name a JSON value's type the way a user reads it in an error."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__
