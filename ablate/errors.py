"""Errors that name the bad value and what would be valid: ConfigError, "did you mean", one choice check."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class ConfigError(ValueError):
    """A configuration value that is not valid; the message names the key and what would be."""


def did_you_mean(word: str, choices: Iterable, prefix: str = "") -> str:
    """' (did you mean PREFIXx?)' for the closest of `choices`, or '' when none is close."""
    near = difflib.get_close_matches(str(word), [str(c) for c in choices], n=1)
    return f" (did you mean {prefix}{near[0]}?)" if near else ""


def check_choice(key: str, value, choices, error: type[Exception] = ConfigError) -> None:
    """Raise `error` naming `key`, `value` and the valid choices when `value` is not one of them."""
    if value not in choices:
        raise error(f"{key}={value!r} is not valid; choose one of {', '.join(map(repr, choices))}")
