"""ablate: ablation studies of semantic-segmentation necks (DeepLabv3 ASPP and friends) with Lightning and Optuna."""

__version__ = "0.1.0"
