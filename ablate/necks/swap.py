"""Swap the neck of a model that hard-codes it (smp DeepLabV3Plus, torchvision deeplabv3_resnet50, ...)."""

from __future__ import annotations

import difflib
from collections.abc import Callable

import torch
import torch.nn as nn
from lightning.pytorch import Callback, LightningModule, Trainer

PROBE = 16  # side of the (2, C_in, 16, 16) feature map both modules are run on to compare their outputs


def swap_neck(
    model: nn.Module, path: str, neck: str | Callable[..., nn.Module], *, in_channels: int | None = None, **options
) -> nn.Module:
    """Replace `model`'s submodule at dotted `path` (e.g. "classifier.0") by a neck, in place; returns `model`.

    `neck` is a registered name, built by `create_neck(neck, in_channels, **options)`, or a callable
    `neck(in_channels, **options) -> nn.Module` such as `ablate.necks.ASPP`. `in_channels` defaults to the
    in_channels of the first Conv2d of the module replaced. Both modules then run on a (2, in_channels, 16, 16)
    probe: the old one must accept it (else pass `in_channels=`), and the new one must give the same output
    shape, since that is what the rest of the model expects, or ValueError naming the `out_channels` to set.
    The new neck takes the old module's device, dtype and train/eval mode. Swap before building an optimizer.
    """
    from ablate.necks.registry import create_neck

    old = find_submodule(model, path)
    c_in = in_channels if in_channels is not None else _first_conv_in_channels(old, path)
    new = create_neck(neck, c_in, **options) if isinstance(neck, str) else neck(c_in, **options)
    like = next(old.parameters(), None)
    if like is not None:
        new = new.to(device=like.device, dtype=like.dtype)
    _check_fits(path, old, new, c_in, like)
    new.train(old.training)
    parent, _, leaf = path.rpartition(".")
    setattr(model.get_submodule(parent), leaf, new)
    return model


def find_submodule(model: nn.Module, path: str) -> nn.Module:
    """`model`'s submodule at dotted `path`; an unknown path raises listing the nearest valid paths."""
    modules = dict(model.named_modules())
    if path and path in modules:
        return modules[path]
    names = [n for n in modules if n]
    near = difflib.get_close_matches(path, names, n=5, cutoff=0.6)
    if not near:  # the children of the longest prefix of `path` that exists
        parts = path.split(".")
        prefix = next((".".join(parts[:i]) for i in range(len(parts) - 1, 0, -1) if ".".join(parts[:i]) in modules), "")
        near = [n for n in names if n.rpartition(".")[0] == prefix][:12]
    raise ValueError(
        f"{type(model).__name__} has no submodule {path!r}; nearest valid paths: {', '.join(near)} "
        "(print(model) shows them all)"
    )


def _first_conv_in_channels(module: nn.Module, path: str) -> int:
    conv = next((m for m in module.modules() if isinstance(m, nn.Conv2d)), None)
    if conv is None:
        raise ValueError(
            f"the module at {path!r} ({type(module).__name__}) has no Conv2d to read its input "
            "width from; pass in_channels=..."
        )
    return conv.in_channels


@torch.no_grad()
def _output_shape(module: nn.Module, x: torch.Tensor) -> tuple[int, ...]:
    """Output shape of `module` on `x` in eval mode (no BatchNorm statistics move), its mode restored after."""
    training = module.training
    try:
        y = module.eval()(x)
    finally:
        module.train(training)
    if not isinstance(y, torch.Tensor):
        raise TypeError(f"it returned a {type(y).__name__}, not a tensor")
    return tuple(y.shape)


def _check_fits(path: str, old: nn.Module, new: nn.Module, c_in: int, like: torch.Tensor | None) -> None:
    x = torch.randn(
        2,
        c_in,
        PROBE,
        PROBE,
        device=like.device if like is not None else None,
        dtype=like.dtype if like is not None else None,
    )  # (B, C_in, H, W)
    try:
        want = _output_shape(old, x)
    except Exception as e:
        raise ValueError(
            f"cannot run the module at {path!r} ({type(old).__name__}) on a (2, {c_in}, {PROBE}, "
            f"{PROBE}) feature map ({e}); swap_neck replaces a module that maps (B, C_in, H, W) to "
            f"(B, C_out, H', W'); if its input width is not {c_in}, pass in_channels=..."
        ) from e
    got = _output_shape(new, x)
    if got[1] != want[1]:
        raise ValueError(
            f"the new neck at {path!r} gives {got[1]} channels, but the module it replaces gave "
            f"{want[1]}, which is what follows expects; set the neck's out_channels={want[1]}"
        )
    if got[2:] != want[2:]:
        raise ValueError(
            f"the new neck at {path!r} gives a {got[2]}x{got[3]} map from {PROBE}x{PROBE}, but the "
            f"module it replaces gave {want[2]}x{want[3]}, which is what follows expects"
        )


class SwapNeck(Callback):
    """Swap a neck from a config: at `setup()`, before the optimizer is built, `swap_neck(pl_module, path, neck)`.

    In a LightningCLI config, under `trainer.callbacks`:
        - class_path: ablate.necks.SwapNeck
          init_args: {path: net.classifier.0, neck: {class_path: ablate.necks.ASPP, init_args: {rates: [6, 12]}}}

    Args:
        path: dotted path of the module to replace, from the LightningModule (e.g. `net.classifier.0`).
        neck: the new neck, given by its class and options like an injected neck; called with the input width.
    """

    def __init__(self, path: str, neck: Callable[[int], nn.Module]):
        self.path, self.neck = path, neck
        self._swapped: nn.Module | None = None  # the neck this callback installed (a second setup keeps it)

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        """Swap once; a later fit/validate/test on the same module keeps the trained neck."""
        try:
            current = find_submodule(pl_module, self.path)
        except ValueError as e:
            raise ValueError(
                f"SwapNeck: {e}. SwapNeck runs at setup(), before configure_model(): for a module "
                "built there, call ablate.necks.swap_neck in configure_model() instead"
            ) from None
        if current is not self._swapped:
            swap_neck(pl_module, self.path, self.neck)
            self._swapped = pl_module.get_submodule(self.path)
