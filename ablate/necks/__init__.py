"""Necks by name: the registry (ablate.necks.registry) and the built-in necks, classes a LightningCLI `class_path`
names (DeepLabv3's ASPP, PSPNet's PPM, Identity); swap_neck puts one into a model that has its own."""

from ablate.necks.aspp import ASPP  # importing a built-in neck registers it
from ablate.necks.identity import Identity
from ablate.necks.ppm import PPM
from ablate.necks.registry import create_neck, list_necks, neck_options, register_neck

__all__ = [
    "ASPP",
    "PPM",
    "Identity",
    "SwapNeck",
    "create_neck",
    "list_necks",
    "neck_options",
    "register_neck",
    "swap_neck",
]


def __getattr__(name: str):
    """SwapNeck and swap_neck on first use: their module imports Lightning, which the necks themselves do not need."""
    if name in ("SwapNeck", "swap_neck"):
        from ablate.necks import swap

        return getattr(swap, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
