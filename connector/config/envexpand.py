"""``${VAR}`` and ``${VAR:-default}`` in configuration values.

Expansion happens on the parsed YAML's string values, not on the file's text, so a value
from the environment can never change the file's structure. ``$${`` writes a literal
``${``. ``${VAR:-default}`` uses the default when VAR is unset or empty.
"""

from __future__ import annotations

import re
from typing import Any, Mapping

from .reader import Problems, join

_REFERENCE = re.compile(r"\$\$\{|\$\{([^}]*)\}")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


def expand(tree: Any, env: Mapping[str, str], problems: Problems, path: str = "") -> Any:
    if isinstance(tree, dict):
        return {key: expand(value, env, problems, join(path, key)) for key, value in tree.items()}
    if isinstance(tree, list):
        return [expand(value, env, problems, join(path, i)) for i, value in enumerate(tree)]
    if isinstance(tree, str) and "$" in tree:
        return _expand_string(tree, env, problems, path)
    return tree


def _expand_string(text: str, env: Mapping[str, str], problems: Problems, path: str) -> str:
    def replace(match: re.Match) -> str:
        if match.group(0) == "$${":
            return "${"
        body = match.group(1)
        name, sep, default = body.partition(":-")
        if not _NAME.match(name):
            problems.add(path, f"${{{body}}} is not a valid reference; write ${{NAME}} or ${{NAME:-default}}")
            return ""
        value = env.get(name)
        if sep:
            return value if value else default
        if value is None:
            problems.add(path, f"environment variable {name} is not set (referenced as ${{{name}}}; "
                               f"set it or write ${{{name}:-default}})")
            return ""
        return value

    return _REFERENCE.sub(replace, text)
