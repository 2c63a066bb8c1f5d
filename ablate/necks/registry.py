"""The neck registry: a dict plus a bare decorator keyed by the factory's name (timm style)."""

from __future__ import annotations

import inspect
from collections.abc import Callable

import torch.nn as nn

from ablate.errors import did_you_mean

_NECKS: dict[str, Callable[..., nn.Module]] = {}
_HOW = (
    "write it as `def {name}(in_channels, out_channels=256, ...)`: the input width first, then each option "
    "with its default (or `def {name}(in_channels, **options) -> NeckClass` to take NeckClass's options)"
)


def register_neck(factory: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Register `factory(in_channels, **options) -> nn.Module` (a function or a class) under its `__name__`.

    Options are the parameters after `in_channels`, each with a default: `def my_neck(in_channels, out_channels=32)`
    or a class's `__init__(self, in_channels, *, out_channels=32)`; `def aspp(in_channels, **options) -> ASPP`
    takes ASPP's. The built-in classes (`ASPP`, `PPM`, `Identity`) are what a LightningCLI `class_path` names.
    """
    name = factory.__name__
    if name in _NECKS:
        raise ValueError(f"neck {name!r} is already registered (by {_NECKS[name].__module__})")
    _options_of(factory, name)  # refuses, with how to write it, a factory whose options cannot be listed
    _NECKS[name] = factory
    return factory


def list_necks() -> list[str]:
    """Names of all registered necks, sorted."""
    return sorted(_NECKS)


def neck_options(name: str) -> dict[str, object]:
    """The options neck `name` takes, with their defaults."""
    return _options_of(_get(name), name)


def create_neck(name: str, in_channels: int, **options) -> nn.Module:
    """Build neck `name` on `in_channels` input channels; the result has `.out_channels`."""
    valid = neck_options(name)
    for key in options:
        if key not in valid:
            listed = f"valid options: {', '.join(valid)}" if valid else "it takes no options"
            raise ValueError(f"neck {name!r} has no option {key!r}{_closest(key, valid)}; {listed}")
    neck = _get(name)(in_channels, **options)
    if not isinstance(getattr(neck, "out_channels", None), int):
        raise TypeError(f"neck {name!r} must set an int `.out_channels` on the module it returns")
    neck.neck_name = name  # how ablate.callbacks.find_necks knows a registered neck of any class
    return neck


def _options_of(factory: Callable, name: str) -> dict[str, object]:
    """The keyword options of `factory` after its `in_channels`; a factory that cannot be called so is refused."""
    params = list(_signature(factory, name).parameters.values())
    if (
        not params
        or params[0].name != "in_channels"
        or params[0].kind not in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    ):
        raise TypeError(
            f"neck {name!r}: the first parameter must be `in_channels` (the input width); " + _HOW.format(name=name)
        )
    if params[-1].kind is inspect.Parameter.VAR_KEYWORD:
        return _options_of(_returned_class(factory, name, params), name)
    for p in params[1:]:
        if p.kind in (p.VAR_POSITIONAL, p.POSITIONAL_ONLY) or p.default is p.empty:
            raise TypeError(
                f"neck {name!r}: option {p.name!r} must be a keyword parameter with a default; "
                + _HOW.format(name=name)
            )
    return {p.name: p.default for p in params[1:]}


def _signature(factory: Callable, name: str) -> inspect.Signature:
    try:
        return inspect.signature(factory)
    except (TypeError, ValueError) as e:
        raise TypeError(f"neck {name!r}: cannot read its signature ({e}); " + _HOW.format(name=name)) from None


def _returned_class(factory: Callable, name: str, params: list[inspect.Parameter]) -> type:
    """For `def f(in_channels, **options) -> NeckClass`: NeckClass; any other `**kwargs` factory is refused."""
    try:
        returned = inspect.signature(factory, eval_str=True).return_annotation
    except (NameError, TypeError, SyntaxError):
        returned = None
    if (
        inspect.isclass(factory)
        or len(params) != 2
        or not (inspect.isclass(returned) and issubclass(returned, nn.Module) and returned is not nn.Module)
    ):
        raise TypeError(
            f"neck {name!r} takes **kwargs, so its options cannot be listed or checked; " + _HOW.format(name=name)
        )
    return returned


def _get(name: str) -> Callable[..., nn.Module]:
    if name not in _NECKS:
        raise ValueError(f"unknown neck {name!r}{_closest(name, _NECKS)}; registered necks: {', '.join(list_necks())}")
    return _NECKS[name]


def _closest(word: str, choices) -> str:
    return did_you_mean(repr(word), [repr(c) for c in choices])
