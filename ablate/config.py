"""Run configuration: YAML + dotted `key=value` overrides -> frozen, strictly validated dataclasses."""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import inspect
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ablate.errors import ConfigError, check_choice, did_you_mean, read_yaml

__all__ = ["ConfigError", "RunConfig", "load_config", "from_dict", "to_dict", "apply_overrides", "flatten"]


@dataclass(frozen=True)
class ModelConfig:
    encoder: str = "resnet18"
    encoder_weights: str | None = None  # None = random init; nothing is downloaded at run time
    encoder_depth: int = 3  # 3 = the neck sees ResNet layer2 (cheap on a CPU); 5 = layer4, as in DeepLabv3
    output_stride: int = 8
    neck: dict = field(default_factory=lambda: {"name": "aspp", "out_channels": 64, "rates": [2, 4, 6]})
    head: str = "deeplabv3"  # or "deeplabv3plus" (adds the stride-4 encoder feature)
    classes: int | None = None  # None = as many as the data has
    strict: bool = False  # degenerate dilation rates are an error instead of a warning
    channels_last: bool = False  # NHWC memory format for the model and its inputs (faster convs on GPUs)
    compile: bool = False  # torch.compile the model's forward (the first steps compile; see benchmarks/)


@dataclass(frozen=True)
class DataConfig:
    name: str = "shapes"  # or voc, cityscapes, ade20k, folder: files under `root` (README, "Your data")
    root: str | None = None
    image_size: int = 128  # synthetic: the generated side; files: the training crop (DeepLab's crop_size)
    batch_size: int = 8
    num_workers: int = 0
    train_size: int = 512  # synthetic data only
    val_size: int = 128
    seed: int = 0  # the data's own seed: the same images for every run seed
    shape_kinds: int = 3  # shapes: objects are disks, squares, diamonds (3), disks and squares (2), disks (1)
    classes: list | None = None  # folder only: class names (line k = mask value k), instead of classes.txt
    train_split: str | None = None  # files: null = the dataset's standard (voc: train; train_aug = +SBD)
    val_split: str | None = None
    scale_range: list = field(default_factory=lambda: [0.5, 2.0])  # files: random scale of the training image
    hflip: bool = True  # files: random horizontal flip
    jitter: float = 0.0  # files: colour jitter strength (brightness, contrast, saturation); 0 = off
    val_mode: str = "full"  # files: "full" = whole image; "slide" = image_size tiles, 2/3 overlap stride
    on_device: bool = False  # shapes: images on the training device, batches sliced there (no DataLoader)


@dataclass(frozen=True)
class OptimConfig:
    name: str = "adamw"  # or "sgd"
    lr: float = 1e-3
    weight_decay: float = 1e-4
    momentum: float = 0.9  # sgd only
    schedule: str = "poly"  # "poly" (power 0.9, per step), "cosine" or "none"
    poly_power: float = 0.9
    fused: bool = False  # torch's fused AdamW/SGD: one kernel for all parameters instead of one per tensor


@dataclass(frozen=True)
class WandbConfig:
    mode: str | None = None  # "offline", "online" or "disabled"; null = $WANDB_MODE, else offline
    project: str = "ablate"
    entity: str | None = None
    dir: str = "runs"  # W&B writes runs/wandb/...


@dataclass(frozen=True)
class RunConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    trainer: dict = field(default_factory=lambda: {"max_epochs": 12, "log_every_n_steps": 16})
    optim: OptimConfig = field(default_factory=OptimConfig)
    seed: int = 0
    wandb: WandbConfig = field(default_factory=WandbConfig)
    imports: list = field(default_factory=list)


DATASETS = ("shapes", "voc", "cityscapes", "ade20k", "folder")
CHOICES = {
    "model.head": ("deeplabv3", "deeplabv3plus"),
    "model.output_stride": (8, 16, 32),
    "data.name": DATASETS,
    "data.val_mode": ("full", "slide"),
    "data.shape_kinds": (1, 2, 3),
    "optim.name": ("adamw", "sgd"),
    "optim.schedule": ("poly", "cosine", "none"),
    "wandb.mode": (None, "offline", "online", "disabled"),
}
SET_BY_ABLATE = ("logger", "callbacks", "default_root_dir")  # Trainer arguments ablate passes itself


def load_config(path: str | Path | None = None, overrides: list[str] = ()) -> RunConfig:
    """Read YAML at `path` (None = defaults), apply `key=value` overrides, import `imports`, validate."""
    raw: Any = {}
    if path is not None:
        if not Path(path).is_file():
            raise ConfigError(f"config file {str(path)!r} does not exist")
        raw = read_yaml(path) or {}
        if not isinstance(raw, dict):
            raise ConfigError(f"{path} must hold a mapping of sections (model, data, ...), not {type(raw).__name__}")
    return from_dict(apply_overrides(with_defaults(RunConfig, raw), overrides))


def with_defaults(cls, raw: dict) -> dict:
    """`raw` with every missing key filled from `cls`'s defaults; a mapping-valued key (neck, trainer)
    given in `raw` is kept whole, not merged, so `neck: {name: ppm}` carries no aspp options."""
    out, hints = dict(raw), typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[f.name]):
            if isinstance(out.get(f.name, {}), dict):  # a non-mapping is reported by validation
                out[f.name] = with_defaults(hints[f.name], out.get(f.name, {}))
        elif f.name not in out:
            value = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
            out[f.name] = yaml.safe_load(yaml.safe_dump(value))
    return out


def from_dict(raw: dict) -> RunConfig:
    """Build and validate a RunConfig from a plain nested dict (as `to_dict` gives)."""
    for module in raw.get("imports") or []:
        try:
            importlib.import_module(module)
        except ImportError as e:
            raise ConfigError(f"imports: cannot import {module!r}: {e}") from e
    cfg = _build(RunConfig, raw, "")
    validate(cfg)
    return cfg


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    """Apply dotted `a.b=value` overrides (values parsed as YAML; a mapping replaces the whole section)."""
    raw = yaml.safe_load(yaml.safe_dump(raw))  # deep copy of plain data
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep:
            raise ConfigError(f"override {item!r} is not of the form key.path=value (e.g. model.neck.norm=none)")
        try:
            set_dotted(raw, key, parse_value(key, text))
        except ConfigError as e:
            raise ConfigError(e if item in str(e) else f"override {item!r}: {e}") from None
    return raw


def parse_value(key: str, text: str):
    """An override's value parsed as YAML (empty: null); a YAML error names the override and where it fails."""
    if not text.strip():
        return None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        where = getattr(e, "problem_mark", None)
        at = f" at column {where.column + 1}" if where is not None else ""
        raise ConfigError(
            f"override {key}={text}: the value is not YAML{at} ({getattr(e, 'problem', None) or e}); quote a string "
            "that holds ': ' or starts with [ { & * ! | > % @"
        ) from None


def set_dotted(raw: dict, key: str, value) -> None:
    """raw['a']['b'] = value for key 'a.b', creating sections on the way."""
    parts = key.split(".")
    if not key or any(not part for part in parts):
        raise ConfigError(f"{key!r} is not a dotted config key (e.g. model.neck.norm)")
    node = raw
    for i, part in enumerate(parts[:-1]):
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"{key}: {'.'.join(parts[: i + 1])} is not a section")
    node[parts[-1]] = value


def to_dict(cfg: RunConfig) -> dict:
    """The config as plain nested dicts and lists (safe for YAML, JSON and `weights_only` checkpoints)."""
    return yaml.safe_load(yaml.safe_dump(dataclasses.asdict(cfg)))


def flatten(d: dict, prefix: str = "") -> dict:
    """{'model': {'neck': {'rates': [..]}}} -> {'model.neck.rates': [..]}."""
    out = {}
    for key, value in d.items():
        if isinstance(value, dict) and value:
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _build(cls, raw, path: str):
    if not isinstance(raw, dict):
        raise ConfigError(f"{path.rstrip('.') or 'config'} must be a mapping, got {raw!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    for key in raw:
        if key not in fields:
            raise ConfigError(
                f"unknown config key {path}{key}{did_you_mean(key, fields, path)}; valid keys here: {', '.join(fields)}"
            )
    values = {}
    for name, value in raw.items():
        kind = hints[name]
        if dataclasses.is_dataclass(kind):
            values[name] = _build(kind, value, f"{path}{name}.")
        else:
            values[name] = _check_type(f"{path}{name}", value, kind)
    return cls(**values)


def _check_type(key: str, value, kind):
    allowed = typing.get_args(kind) if isinstance(kind, types.UnionType) else (kind,)
    if value is None and type(None) in allowed:
        return None
    for t in allowed:
        t = typing.get_origin(t) or t
        if t is float and isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        if t is float and isinstance(value, str):  # PyYAML reads 3e-4 (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        if isinstance(value, t) and not (t is int and isinstance(value, bool)):
            return value
    names = " or ".join("null" if t is type(None) else getattr(t, "__name__", str(t)) for t in allowed)
    choices = f"; choose one of {', '.join(map(repr, CHOICES[key]))}" if key in CHOICES else ""
    raise ConfigError(f"{key} must be {names}; got {value!r} ({type(value).__name__}){choices}")


def validate(cfg: RunConfig) -> None:
    """Cross-field checks that need no data and no model: choices, ranges, neck and Trainer options."""
    flat = flatten(dataclasses.asdict(cfg))
    for key, choices in CHOICES.items():
        check_choice(key, flat[key], choices)
    for key in ("data.image_size", "data.batch_size", "data.train_size", "data.val_size", "model.encoder_depth"):
        if flat[key] < 1:
            raise ConfigError(f"{key} must be >= 1; got {flat[key]}")
    if cfg.optim.lr <= 0:
        raise ConfigError(f"optim.lr must be > 0; got {cfg.optim.lr}")
    _validate_data(cfg.data)
    _validate_encoder(cfg.model)
    _validate_neck(cfg)
    _validate_trainer(cfg.trainer)


def _validate_data(data: DataConfig) -> None:
    scale = data.scale_range
    if (
        len(scale) != 2
        or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in scale)
        or not 0 < scale[0] <= scale[1]
    ):
        raise ConfigError(f"data.scale_range must be [low, high] with 0 < low <= high, e.g. [0.5, 2.0]; got {scale!r}")
    if not 0 <= data.jitter <= 1:
        raise ConfigError(f"data.jitter must be in [0, 1] (0 = off); got {data.jitter}")
    if data.on_device and data.name != "shapes":
        raise ConfigError(
            f"data.on_device is for the built-in synthetic data (data.name=shapes), not {data.name!r}; "
            "data read from files goes through a DataLoader (data.num_workers)"
        )
    if data.name == "shapes":
        from ablate.data.shapes import check_image_size

        check_image_size(data.image_size, data.shape_kinds)  # smaller images cannot hold the scene's dots
    if data.classes is not None and data.name != "folder":
        raise ConfigError(f"data.classes is for data.name='folder'; {data.name!r} names its own classes")
    if data.classes is not None and (not data.classes or len(set(map(str, data.classes))) < len(data.classes)):
        raise ConfigError(f"data.classes must be a non-empty list of distinct names; got {data.classes!r}")


def _validate_encoder(model: ModelConfig) -> None:
    from segmentation_models_pytorch.encoders import get_encoder_names

    names = get_encoder_names()
    if model.encoder not in names and not model.encoder.startswith("tu-"):
        near = difflib.get_close_matches(model.encoder, names, n=3)
        raise ConfigError(
            f"model.encoder={model.encoder!r} is not an smp encoder; closest: {', '.join(near)} "
            "(or any timm model as 'tu-<name>')"
        )
    if not 1 <= model.encoder_depth <= 5:
        raise ConfigError(f"model.encoder_depth must be 1..5; got {model.encoder_depth}")
    if model.head == "deeplabv3plus" and model.encoder_depth < 3:
        raise ConfigError(
            "model.head='deeplabv3plus' needs model.encoder_depth >= 3 (a stride-4 feature and a deeper one)"
        )


def _validate_neck(cfg: RunConfig) -> None:
    from ablate.necks import create_neck, list_necks, neck_options

    neck = dict(cfg.model.neck)
    name = neck.pop("name", None)
    if name is None:
        hint = (
            " (in YAML flow style write {name: ppm} with a space after each colon)"
            if any(":" in str(k) for k in neck)
            else ""
        )
        raise ConfigError(f"model.neck needs a name{hint}; registered necks: {', '.join(list_necks())}")
    try:
        valid = neck_options(name)
    except ValueError as e:
        raise ConfigError(f"model.neck.name: {e}") from None
    for key in neck:
        if key not in valid:
            listed = f"valid: {', '.join(valid)}" if valid else "it takes no options"
            raise ConfigError(
                f"unknown option model.neck.{key} for neck {name!r}{did_you_mean(key, valid, 'model.neck.')}; {listed}"
            )
    try:  # building it on a few channels checks every option value the way training would
        create_neck(name, 8, **neck)
    except (ValueError, TypeError) as e:
        raise ConfigError(f"model.neck: {e}") from None
    options = {**valid, **neck}
    pooled_bn = options.get("norm") == "bn" and (options.get("image_pooling") is True or name == "ppm")
    if pooled_bn and cfg.data.batch_size < 2:
        raise ConfigError(
            f"data.batch_size=1 with neck {name!r} norm='bn' and a pooled (1x1) branch: BatchNorm cannot "
            "normalize one value per channel in training. Use data.batch_size>=2, model.neck.norm=gn, "
            "or model.neck.image_pooling=false."
        )


def _validate_trainer(trainer: dict) -> None:
    from lightning import Trainer

    _validate_length(trainer)

    valid = [p for p in inspect.signature(Trainer.__init__).parameters if p != "self"]
    for key in trainer:
        if key in SET_BY_ABLATE:
            raise ConfigError(f"trainer.{key} is set by ablate itself; remove it from the config")
        if key not in valid:
            raise ConfigError(
                f"unknown Trainer argument trainer.{key}{did_you_mean(key, valid, 'trainer.')}; "
                "see lightning.Trainer for valid ones"
            )


def _validate_length(trainer: dict) -> None:
    """A run trains and validates at least once, and ends: its result is the validation metric."""
    epochs, steps = trainer.get("max_epochs"), trainer.get("max_steps", -1)
    if type(steps) is not int or (steps < 1 and steps != -1):
        raise ConfigError(f"trainer.max_steps must be an integer >= 1, or -1 for no step limit; got {steps!r}")
    ends = steps != -1 or trainer.get("max_time") is not None  # null max_epochs: Lightning's 1000
    if epochs is not None and (type(epochs) is not int or epochs < 1) and not (epochs == -1 and ends):
        raise ConfigError(
            f"trainer.max_epochs must be an integer >= 1 (or -1, no epoch limit, together with trainer.max_steps "
            f"or trainer.max_time); got {epochs!r}"
        )
    for key in ("limit_train_batches", "limit_val_batches"):
        if trainer.get(key) == 0:
            raise ConfigError(f"trainer.{key}=0 leaves the run without a result; give a share in (0, 1] or >= 1 batch")
