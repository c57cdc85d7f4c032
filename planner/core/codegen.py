"""Generated files (load scripts, plan files, configs): the one way outside values enter them.

Every runtime's emitter writes values into Python source only through :func:`literal` (``repr``
of plain data, checked), and passes every file it writes through :func:`refuse_secrets`.
"""

from __future__ import annotations

from typing import Any

from planner.core.errors import UsageError
from planner.core.secrets import contains_known

# Deeper nesting than any plan value has (a device_map is 2 levels): refused, not recursed into.
MAX_LITERAL_DEPTH = 8


def literal(value: Any) -> str:
    """``repr`` of plain data only: the one way outside values enter generated code.

    Raises:
        ValueError: ``value`` holds something other than None, bool, int, float, str, and lists,
            tuples and str/int-keyed dicts of those.
    """
    _check_plain(value)
    return repr(value)


def _check_plain(value: Any, depth: int = 0) -> None:
    if depth > MAX_LITERAL_DEPTH:
        raise ValueError("value nested too deeply for a literal")
    if value is None or isinstance(value, (bool, int, float, str)):
        return
    if isinstance(value, (list, tuple)):
        for v in value:
            _check_plain(v, depth + 1)
        return
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, (str, int)):
                raise ValueError(f"dict key {k!r} is not a str or int")
            _check_plain(v, depth + 1)
        return
    raise ValueError(f"{type(value).__name__} is not plain data")


def refuse_secrets(text: str) -> str:
    """``text`` unchanged, unless it holds a token fitcheck knows of.

    Raises:
        UsageError: it does (a model path or revision that holds the token).
    """
    if contains_known(text):
        raise UsageError("refusing to write a plan or script: it would contain your Hub token",
                         hint="a model path or revision holds the token; the files never need it")
    return text
