"""Durations in configuration: seconds as a number, or a string with a unit ("90s", "15m", "8h"), so that
configs read naturally. Shared by the config and the policy rules (which the config imports)."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import BeforeValidator, Field

__all__ = ["Duration", "format_duration", "parse_duration"]

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


def parse_duration(value: object) -> object:
    """Accept seconds as a number or a string with a unit ("90s", "15m", "8h") so configs read naturally."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 30, '90s', '15m' or '8h'")
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        match = _DURATION.match(value)
        if not match:
            raise ValueError("not a duration (use seconds, or a number with ms/s/m/h/d)")
        return float(match.group(1)) * _UNITS[match.group(2)]
    return value


def format_duration(seconds: float) -> str:
    """In words for people: "10 minutes", "2 hours", "90 seconds"."""
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size and seconds % size == 0:
            count = int(seconds // size)
            return f"{count} {unit}{'' if count == 1 else 's'}"
    return f"{seconds:g} seconds"


Duration = Annotated[float, BeforeValidator(parse_duration), Field(ge=0)]
