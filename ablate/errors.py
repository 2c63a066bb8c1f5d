"""Errors that name the bad value and what would be valid: ConfigError, "did you mean", choice, name and YAML checks."""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from pathlib import Path

import yaml


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


def check_path_name(what: str, name) -> None:
    """A name that becomes a folder (a study's runs/<name>/): refused when it could leave that folder or hide."""
    text = str(name)
    if not text or text in (".", "..") or ".." in text or "/" in text or "\\" in text or text.startswith("."):
        raise ConfigError(
            f"{what} {text!r} becomes a folder name under runs/: use letters, digits, '-', '_' "
            "(no '..', no '/' or '\\', no leading '.')"
        )


def read_yaml(path) -> object:
    """The YAML document in file `path`; a syntax error is a ConfigError naming the file and line."""
    try:
        return yaml.safe_load(Path(path).read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"{where}: YAML syntax error: {problem}") from None
