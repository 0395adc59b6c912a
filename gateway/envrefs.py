"""``${VAR}`` and ``${VAR:-default}`` in config values, as in the shell: the default
applies when VAR is unset or empty; ``$$`` is a literal ``$``.

Outside the config package so that ``gateway health`` can read a config's listen
address without loading (and paying for) the whole of its validation."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping

_ENV_REF = re.compile(r"\$\$|\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::-(?P<default>[^}]*))?\}")
_BROKEN_REF = re.compile(r"\$\{[^}]*\}?")


def expand(value: str, env: Mapping[str, str],
           unset: Callable[[str], None] = lambda name: None) -> str:
    """``value`` with its references replaced; ``unset(name)`` is called for each
    variable that is not set and has no default (it becomes "")."""

    def sub(found: re.Match[str]) -> str:
        if found.group(0) == "$$":
            return "$"
        name, default = found.group("name"), found.group("default")
        if env.get(name):
            return env[name]
        if default is not None:
            return default
        unset(name)
        return ""

    return _ENV_REF.sub(sub, value)


def malformed(value: str) -> str | None:
    """The first thing in ``value`` that starts like a reference but is not one."""
    leftover = _BROKEN_REF.search(_ENV_REF.sub("", value))
    return leftover.group(0) if leftover else None
