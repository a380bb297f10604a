"""``${VAR}`` and ``${VAR:-default}`` in configuration values.

Expansion happens on the parsed YAML's string values, not on the file's text, so a value
from the environment can never change the file's structure. ``$${`` writes a literal
``${``. ``${VAR:-default}`` uses the default when VAR is unset or empty; the default may
itself hold references (``${A:-${B:-x}}``), expanded only when it is used. A reference
that is never closed is an error, not text left behind.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from ..validation import Problems, join

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
# Deeper defaults than this are certainly a mistake; the bound also keeps recursion small.
MAX_NESTING = 10


def expand(tree: Any, env: Mapping[str, str], problems: Problems, path: str = "") -> Any:
    if isinstance(tree, dict):
        return {key: expand(value, env, problems, join(path, key)) for key, value in tree.items()}
    if isinstance(tree, list):
        return [expand(value, env, problems, join(path, i)) for i, value in enumerate(tree)]
    if isinstance(tree, str) and "$" in tree:
        return _Expander(tree, env, problems, path).run()
    return tree


class _Expander:
    """One string value, read left to right; a default is read to its matching brace."""

    def __init__(self, text: str, env: Mapping[str, str], problems: Problems, path: str):
        self.text, self.env, self.problems, self.path = text, env, problems, path
        self.pos = 0
        self.broken = False  # the string's structure is wrong: one problem, nothing more
        self.unused = 0  # > 0 while reading a default that is not used

    def run(self) -> str:
        out = self._until_close(depth=0)
        if self.pos < len(self.text):  # a stray '}' at the top level is ordinary text
            out += self.text[self.pos :]
        return out

    def _until_close(self, depth: int) -> str:
        """Expand text up to the '}' that closes the current reference (or the end)."""
        text, out = self.text, []
        while self.pos < len(text):
            if text.startswith("$${", self.pos):
                out.append("${")
                self.pos += 3
            elif text.startswith("${", self.pos):
                self.pos += 2
                out.append(self._reference(depth + 1))
            elif text[self.pos] == "}" and depth > 0:
                return "".join(out)
            else:
                out.append(text[self.pos])
                self.pos += 1
        return "".join(out)

    def _reference(self, depth: int) -> str:
        """Expand one reference; ``self.pos`` is just past its ``${``."""
        text, start = self.text, self.pos
        if depth > MAX_NESTING:
            self._broken(f"references nest more than {MAX_NESTING} deep")
            return ""
        separator = text.find(":-", start)
        close = text.find("}", start)
        if separator < 0 or (0 <= close < separator):  # ${NAME}
            if close < 0:
                return self._unclosed(start)
            self.pos = close + 1
            name = text[start:close]
            if not self._valid(name):
                return ""
            value = self.env.get(name)
            if value is None and not self.unused:
                self._problem(
                    f"environment variable {name} is not set (referenced as ${{{name}}}; "
                    f"set it or write ${{{name}:-default}})"
                )
            return value or ""
        name = text[start:separator]  # ${NAME:-default}: the default runs to its own '}'
        self.pos = separator + 2
        value = self.env.get(name)
        self.unused += bool(value)  # a default that is not used is checked, not required
        default = self._until_close(depth)
        self.unused -= bool(value)
        if self.broken:
            return ""
        if self.pos >= len(text):
            return self._unclosed(start)
        self.pos += 1
        if not self._valid(name):
            return ""
        return value if value else default

    def _valid(self, name: str) -> bool:
        if _NAME.match(name):
            return True
        self._problem(f"${{{name}}} is not a valid reference; write ${{NAME}} or ${{NAME:-default}}")
        return False

    def _unclosed(self, start: int) -> str:
        self._broken(
            f"'${{' at position {start - 2} is not closed; write ${{NAME}} or ${{NAME:-default}} "
            "(or $${ for a literal ${)"
        )
        return ""

    def _problem(self, message: str) -> None:
        self.problems.add(self.path, message)

    def _broken(self, message: str) -> None:
        if not self.broken:
            self.broken = True
            self._problem(message)
        self.pos = len(self.text)
