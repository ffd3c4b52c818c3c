"""Durations as config writes them: ``250ms``, ``10s``, ``15m``, ``24h``, ``3d``."""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import BeforeValidator

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_PATTERN = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)\s*$")


def parse_duration(value: Any) -> float:
    """Seconds in ``value``: a number of seconds or a string such as ``15m``.

    >>> parse_duration("250ms"), parse_duration("3d"), parse_duration(5)
    (0.25, 259200.0, 5.0)
    """
    if isinstance(value, bool):
        raise ValueError(f"not a duration: {value!r}")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError("a duration cannot be negative")
        return float(value)
    if isinstance(value, str):
        match = _PATTERN.match(value)
        if match:
            return float(match.group(1)) * _UNITS[match.group(2)]
    raise ValueError(f"not a duration: {value!r} (use e.g. 250ms, 10s, 15m, 24h, 3d)")


def format_duration(seconds: float) -> str:
    """The shortest config spelling of ``seconds`` (``900`` → ``15m``)."""
    for unit in ("d", "h", "m", "s"):
        size = _UNITS[unit]
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds * 1000)}ms"


Duration = Annotated[float, BeforeValidator(parse_duration)]
"""A pydantic field type: seconds, parsed from a duration string."""
