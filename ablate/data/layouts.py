"""The standard on-disk layouts of Pascal VOC 2012 (+SBD), Cityscapes, ADE20K and a plain image/mask folder."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ablate.data.classes import ADE20K_CLASSES, CITYSCAPES, VOC_CLASSES
from ablate.errors import ConfigError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


@dataclass(frozen=True)
class Layout:
    """What a dataset on disk is: class names, the raw-mask-value -> class-id table and how to find a split."""

    classes: tuple[str, ...]
    lut: np.ndarray  # (256,) int16: raw mask value -> class id, 255 (ignored) or -1 (not a valid value)
    valid: str  # the valid raw values, in words, for error messages
    splits: tuple[str, str]  # the default train and val split names
    find: callable  # split name -> sorted [(image path, mask path)]


def identity_lut(num_classes: int) -> np.ndarray:
    """Raw values 0..num_classes-1 are the class ids, 255 is ignored, anything else is invalid."""
    lut = np.full(256, -1, np.int16)
    lut[:num_classes], lut[255] = np.arange(num_classes), 255
    return lut


def voc(root: Path, classes: tuple[str, ...] | None = None) -> Layout:
    """VOCdevkit/VOC2012: JPEGImages, SegmentationClass (palette PNGs), ImageSets/Segmentation/<split>.txt;
    split `train_aug` (SBD, 10,582 images) reads SegmentationClassAug instead."""
    base = next(
        (p for p in (root / "VOCdevkit" / "VOC2012", root / "VOC2012", root) if (p / "JPEGImages").is_dir()),
        root / "VOCdevkit" / "VOC2012",
    )

    def find(split: str) -> list[tuple[Path, Path]]:
        masks = base / ("SegmentationClassAug" if split == "train_aug" else "SegmentationClass")
        listed = base / "ImageSets" / "Segmentation" / f"{split}.txt"
        pairs = [(base / "JPEGImages" / f"{s}.jpg", masks / f"{s}.png") for s in read_split_file(listed)]
        missing = [path for pair in pairs for path in pair if not path.is_file()]
        if missing:
            raise ConfigError(
                f"{missing[0]} does not exist, but {listed.name} lists it ({len(missing)} missing "
                "file(s)); every listed image needs its JPEG and its mask PNG"
            )
        return pairs

    return Layout(VOC_CLASSES, identity_lut(21), "0..20 and 255 (boundary)", ("train", "val"), find)


def cityscapes(root: Path, classes: tuple[str, ...] | None = None) -> Layout:
    """leftImg8bit/<split>/<city>/*_leftImg8bit.png with gtFine/<split>/<city>/*_gtFine_labelIds.png;
    the 19 evaluated label ids become train ids 0..18, every other id is ignored."""
    lut = np.full(256, -1, np.int16)
    lut[:34] = 255  # label ids 0..33 exist; those not evaluated are ignored
    lut[list(CITYSCAPES)] = np.arange(len(CITYSCAPES))

    def find(split: str) -> list[tuple[Path, Path]]:
        images = folder_stems(root / "leftImg8bit" / split, "*/*_leftImg8bit.png", "_leftImg8bit")
        masks = folder_stems(root / "gtFine" / split, "*/*_gtFine_labelIds.png", "_gtFine_labelIds")
        return match(images, masks, f"leftImg8bit/{split}", f"gtFine/{split}")

    return Layout(tuple(CITYSCAPES.values()), lut, "label ids 0..33", ("train", "val"), find)


def ade20k(root: Path, classes: tuple[str, ...] | None = None) -> Layout:
    """ADEChallengeData2016/{images,annotations}/<split>: values 1..150 are classes 0..149, 0 ("other") ignored."""
    base = root / "ADEChallengeData2016" if (root / "ADEChallengeData2016").is_dir() else root
    lut = np.full(256, -1, np.int16)
    lut[0], lut[1:151] = 255, np.arange(150)

    def find(split: str) -> list[tuple[Path, Path]]:
        images = folder_stems(base / "images" / split, "*.jpg", "")
        masks = folder_stems(base / "annotations" / split, "*.png", "")
        return match(images, masks, f"images/{split}", f"annotations/{split}")

    return Layout(ADE20K_CLASSES, lut, "0 (other, ignored) and 1..150", ("training", "validation"), find)


def folder(root: Path, classes: tuple[str, ...] | None = None) -> Layout:
    """images/<split>/NAME.{jpg,png,...} with masks/<split>/NAME.png (palette or single-channel class ids, 255
    ignored), class names one per line in classes.txt (or `data.classes`)."""
    classes = classes or read_classes(root / "classes.txt")

    def find(split: str) -> list[tuple[Path, Path]]:
        images = folder_stems(root / "images" / split, "*", "")
        images = {s: p for s, p in images.items() if p.suffix.lower() in IMAGE_SUFFIXES}
        return match(images, folder_stems(root / "masks" / split, "*.png", ""), f"images/{split}", f"masks/{split}")

    if len(classes) > 255:
        raise ConfigError(f"{root / 'classes.txt'}: {len(classes)} classes; masks of uint8 ids hold at most 255")
    return Layout(
        classes, identity_lut(len(classes)), f"0..{len(classes) - 1} and 255 (ignored)", ("train", "val"), find
    )


LAYOUTS = {"voc": voc, "cityscapes": cityscapes, "ade20k": ade20k, "folder": folder}


def read_split_file(path: Path) -> list[str]:
    """Image stems listed in a split file: one per line, or DeepLab's
    `/JPEGImages/X.jpg /SegmentationClassAug/X.png`."""
    if not path.is_file():
        others = sorted(p.stem for p in path.parent.glob("*.txt")) if path.parent.is_dir() else []
        raise ConfigError(f"split file {path} does not exist; split files there: {', '.join(others) or 'none'}")
    return [Path(line.split()[0]).stem for line in path.read_text().splitlines() if line.strip()]


def read_classes(path: Path) -> tuple[str, ...]:
    """Class names, one per line, blank lines skipped; duplicates are an error."""
    if not path.is_file():
        raise ConfigError(
            f"{path} does not exist: write the class names one per line (line k = mask value k), "
            "or set data.classes=[background, ...]"
        )
    names = tuple(line.strip() for line in path.read_text().splitlines() if line.strip())
    if not names or len(set(names)) < len(names):
        raise ConfigError(f"{path} must list distinct class names, one per line; got {list(names)}")
    return names


def folder_stems(directory: Path, pattern: str, suffix: str) -> dict[str, Path]:
    """{stem without `suffix`: path} of the files matching `pattern` in `directory`."""
    if not directory.is_dir():
        raise ConfigError(f"folder {directory} does not exist (the split's images or masks go there)")
    out: dict[str, Path] = {}
    for path in sorted(directory.glob(pattern)):
        stem = path.stem.removesuffix(suffix)
        if stem in out:
            raise ConfigError(f"{out[stem].name} and {path.name} in {directory} have the same name; keep one")
        out[stem] = path
    return out


def match(images: dict[str, Path], masks: dict[str, Path], image_dir: str, mask_dir: str) -> list[tuple[Path, Path]]:
    """Pairs with the same stem; an image without a mask, or a mask without an image, is an error."""
    for have, lack, where in ((images, masks, mask_dir), (masks, images, image_dir)):
        missing = sorted(set(have) - set(lack))
        if missing:
            raise ConfigError(
                f"{have[missing[0]]} has no counterpart in {where} ({len(missing)} such file(s): "
                f"{', '.join(missing[:5])}); every image needs a mask of the same name and vice versa"
            )
    return [(images[s], masks[s]) for s in sorted(images)]
