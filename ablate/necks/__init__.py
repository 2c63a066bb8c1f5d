"""Neck registry: a dict plus a bare decorator keyed by the factory's name (timm style)."""
from __future__ import annotations

import difflib
import inspect
from typing import Callable

import torch.nn as nn

_NECKS: dict[str, Callable[..., nn.Module]] = {}


def register_neck(factory: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Register `factory(in_channels, **options) -> nn.Module` under its function name."""
    name = factory.__name__
    if name in _NECKS:
        raise ValueError(f"neck {name!r} is already registered (by {_NECKS[name].__module__})")
    _NECKS[name] = factory
    return factory


def list_necks() -> list[str]:
    """Names of all registered necks, sorted."""
    return sorted(_NECKS)


def neck_options(name: str) -> dict[str, object]:
    """The options neck `name` takes, with their defaults."""
    params = inspect.signature(_get(name)).parameters
    return {p.name: p.default for p in params.values() if p.kind is inspect.Parameter.KEYWORD_ONLY}


def create_neck(name: str, in_channels: int, **options) -> nn.Module:
    """Build neck `name` on `in_channels` input channels; the result has `.out_channels`."""
    valid = neck_options(name)
    for key in options:
        if key not in valid:
            raise ValueError(f"neck {name!r} has no option {key!r}{_closest(key, valid)}; "
                             f"valid options: {', '.join(valid)}")
    neck = _get(name)(in_channels, **options)
    if not isinstance(getattr(neck, "out_channels", None), int):
        raise TypeError(f"neck {name!r} must set an int `.out_channels` on the module it returns")
    return neck


def _get(name: str) -> Callable[..., nn.Module]:
    if name not in _NECKS:
        raise ValueError(f"unknown neck {name!r}{_closest(name, _NECKS)}; "
                         f"registered necks: {', '.join(list_necks())}")
    return _NECKS[name]


def _closest(word: str, choices) -> str:
    match = difflib.get_close_matches(word, list(choices), n=1)
    return f" (did you mean {match[0]!r}?)" if match else ""


from ablate.necks import aspp, identity, ppm  # noqa: E402,F401  (registers the built-in necks)
