"""Real-dataset layouts on miniature trees: exact class mapping, the DeepLab recipe, clear errors, one-epoch runs."""

import json
import os
import subprocess
import sys
from pathlib import Path

import lightning as L
import numpy as np
import optuna
import pytest
import torch
from helpers import TINY, write_sweep
from PIL import Image

from ablate.config import load_config
from ablate.data import create_datamodule
from ablate.data.classes import CITYSCAPES, VOC_CLASSES
from ablate.data.recipe import IMAGENET_MEAN, IMAGENET_STD, sliding_logits, train_transform
from ablate.errors import ConfigError
from ablate.run.fit import run
from ablate.sweep import main as sweep_main

REPO = Path(__file__).resolve().parents[1]
SIZE = (40, 52)  # (H, W): not square, so a transposed mask would show
FILE_TINY = [*TINY, "data.batch_size=2"]  # the smallest layouts here have 3 training images


def raw_mask(values: list[int], k: int, size=SIZE, width: int = 3) -> np.ndarray:
    """Vertical stripes `width` px wide cycling through `values`, shifted by k so every file differs."""
    h, w = size
    return np.array(values, np.uint8)[(np.arange(w) // width + k) % len(values)][None, :].repeat(h, 0)


def colour_of(mask: np.ndarray) -> np.ndarray:
    """An RGB image whose colour encodes the mask value exactly (for alignment checks)."""
    m = mask.astype(np.int64)
    return np.stack([m, 255 - m, (m * 7) % 256], -1).astype(np.uint8)


def save_mask(path: Path, mask: np.ndarray, palette: bool) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(mask, mode="L")
    if palette:  # VOC's SegmentationClass: a palette PNG whose pixel values are the class indices
        image = Image.fromarray(mask, mode="P")
        image.putpalette([c for i in range(256) for c in (i, (i * 3) % 256, (i * 5) % 256)])
    image.save(path)


def save_image(path: Path, mask: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(colour_of(mask)).save(path, quality=95)


def make_voc(root: Path, sbd: bool = False) -> dict[str, np.ndarray]:
    base, masks = root / "VOCdevkit" / "VOC2012", {}
    splits = {"train": [f"2007_00000{i}" for i in range(4)], "val": ["2008_000001", "2008_000002"]}
    for split, stems in splits.items():
        (base / "ImageSets" / "Segmentation").mkdir(parents=True, exist_ok=True)
        (base / "ImageSets" / "Segmentation" / f"{split}.txt").write_text("\n".join(stems) + "\n")
        for k, stem in enumerate(stems):
            masks[stem] = raw_mask([0, 3, 15, 20, 255], k)
            save_image(base / "JPEGImages" / f"{stem}.jpg", masks[stem])
            save_mask(base / "SegmentationClass" / f"{stem}.png", masks[stem], palette=True)
    if sbd:  # SBD's extra images, listed DeepLab-style with two columns
        extra = [f"2009_00000{i}" for i in range(3)]
        lines = [f"/JPEGImages/{s}.jpg /SegmentationClassAug/{s}.png" for s in splits["train"] + extra]
        (base / "ImageSets" / "Segmentation" / "train_aug.txt").write_text("\n".join(lines) + "\n")
        for k, stem in enumerate(splits["train"] + extra):
            masks[stem] = raw_mask([0, 7, 12, 255], k)
            if stem in extra:
                save_image(base / "JPEGImages" / f"{stem}.jpg", masks[stem])
            save_mask(base / "SegmentationClassAug" / f"{stem}.png", masks[stem], palette=False)
    return masks


def make_cityscapes(root: Path) -> dict[str, np.ndarray]:
    masks = {}
    for split, n in (("train", 3), ("val", 2)):
        for k in range(n):
            city = ["aachen", "bremen"][k % 2]
            stem = f"{city}_{split}_{k:06d}_000019"
            masks[stem] = raw_mask(list(range(34)), k)  # every label id
            save_image(root / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png", masks[stem])
            save_mask(root / "gtFine" / split / city / f"{stem}_gtFine_labelIds.png", masks[stem], palette=False)
            save_mask(root / "gtFine" / split / city / f"{stem}_gtFine_instanceIds.png", masks[stem], palette=False)
    return masks


def make_ade20k(root: Path) -> dict[str, np.ndarray]:
    base, masks = root / "ADEChallengeData2016", {}
    for split, n in (("training", 3), ("validation", 2)):
        for k in range(n):
            stem = f"ADE_{split[:5]}_{k:08d}"
            masks[stem] = raw_mask([0, 1, 2, 75, 150], k)
            save_image(base / "images" / split / f"{stem}.jpg", masks[stem])
            save_mask(base / "annotations" / split / f"{stem}.png", masks[stem], palette=False)
    return masks


def make_folder(root: Path, palette: bool = True, image_suffix: str = ".png") -> dict[str, np.ndarray]:
    """The README's layout: images/<split>/, masks/<split>/, classes.txt."""
    (root).mkdir(parents=True, exist_ok=True)
    (root / "classes.txt").write_text("background\ncat\ndog\n")
    masks = {}
    for split, n in (("train", 4), ("val", 2)):
        for k in range(n):
            stem = f"{split}{k}"
            masks[stem] = raw_mask([0, 1, 2, 255], k)
            save_image(root / "images" / split / f"{stem}{image_suffix}", masks[stem])
            save_mask(root / "masks" / split / f"{stem}.png", masks[stem], palette=palette)
    return masks


def datamodule(root: Path, name: str, *overrides: str):
    return create_datamodule(load_config(None, [f"data.name={name}", f"data.root={root}", *FILE_TINY, *overrides]))


def val_masks(dm) -> dict[str, np.ndarray]:
    return {
        img.name.split("_leftImg8bit")[0].rsplit(".", 1)[0]: dm.val_set[i][1].numpy()
        for i, (img, _) in enumerate(dm.val_set.pairs)
    }


def cityscapes_train_ids() -> np.ndarray:
    table = np.full(256, 255)
    for train_id, label_id in enumerate(CITYSCAPES):
        table[label_id] = train_id
    return table


def test_voc_palette_masks_are_class_ids(tmp_path):
    masks = make_voc(tmp_path)
    dm = datamodule(tmp_path, "voc")
    assert dm.classes == VOC_CLASSES and len(dm.classes) == 21
    got = val_masks(dm)
    assert set(got) == {"2008_000001", "2008_000002"}
    for stem, mask in got.items():
        assert mask.shape == SIZE
        np.testing.assert_array_equal(mask, masks[stem])  # 0, 3, 15, 20 kept; 255 (boundary) stays ignored


def test_voc_train_aug_reads_sbd_masks(tmp_path):
    masks = make_voc(tmp_path, sbd=True)
    dm = datamodule(
        tmp_path,
        "voc",
        "data.train_split=train_aug",
        "data.scale_range=[1,1]",
        "data.image_size=64",
        "data.hflip=false",
    )
    assert len(dm.train_set) == 7
    assert all(m.parent.name == "SegmentationClassAug" for _, m in dm.train_set.pairs)
    L.seed_everything(0)
    image, mask = dm.train_set[6]  # 2009_000002: crop 64 > image, so the whole image sits inside the padding
    expected = masks["2009_000002"]
    np.testing.assert_array_equal(np.sort(mask[mask != 255].numpy()), np.sort(expected[expected != 255]))


def test_cityscapes_label_ids_become_19_train_ids(tmp_path):
    masks = make_cityscapes(tmp_path)
    dm = datamodule(tmp_path, "cityscapes")
    assert len(dm.classes) == 19 and dm.classes[0] == "road" and dm.classes[18] == "bicycle"
    table = cityscapes_train_ids()
    for stem, mask in val_masks(dm).items():
        np.testing.assert_array_equal(mask, table[masks[stem]])
    assert sorted(table[:34][table[:34] != 255]) == list(range(19))
    assert table[7] == 0 and table[26] == 13 and table[33] == 18 and table[0] == table[30] == 255


def test_ade20k_shifts_by_one_and_ignores_other(tmp_path):
    masks = make_ade20k(tmp_path)
    dm = datamodule(tmp_path, "ade20k")
    assert len(dm.classes) == 150 and dm.classes[0] == "wall" and dm.classes[149] == "flag"
    for stem, mask in val_masks(dm).items():
        expected = np.where(masks[stem] == 0, 255, masks[stem].astype(np.int64) - 1)
        np.testing.assert_array_equal(mask, expected)


@pytest.mark.parametrize("palette", [True, False], ids=["palette", "single-channel"])
def test_folder_reads_palette_and_single_channel_masks(tmp_path, palette):
    masks = make_folder(tmp_path, palette=palette, image_suffix=".jpg")
    dm = datamodule(tmp_path, "folder")
    assert dm.classes == ("background", "cat", "dog")
    for stem, mask in val_masks(dm).items():
        np.testing.assert_array_equal(mask, masks[stem])


def test_folder_splits_may_reuse_file_names(tmp_path):
    masks = make_folder(tmp_path)
    for split in ("images", "masks"):  # val0 also names a (different) training image: allowed, not a leak
        (tmp_path / split / "train" / "train3.png").rename(tmp_path / split / "train" / "val0.png")
    dm = datamodule(tmp_path, "folder")
    assert len(dm.train_set) == 4 and val_masks(dm)["val0"].tolist() == masks["val0"].tolist()


def test_folder_classes_from_config(tmp_path):
    make_folder(tmp_path)
    (tmp_path / "classes.txt").unlink()
    dm = datamodule(tmp_path, "folder", "data.classes=[bg, a, b]")
    assert dm.classes == ("bg", "a", "b")


def encoded_class(image: torch.Tensor) -> torch.Tensor:
    """Invert `colour_of` on a normalized image: the red channel is the mask value."""
    red = image[0] * IMAGENET_STD[0] + IMAGENET_MEAN[0]
    return torch.round(red * 255).long()


def test_recipe_scales_masks_by_nearest_and_pads_with_255(tmp_path):
    make_folder(tmp_path)
    cfg = load_config(None, ["data.image_size=96", "data.scale_range=[0.5,2.0]"]).data
    transform = train_transform(cfg)
    mask = raw_mask([0, 1, 2, 255], 0, width=13)
    image = torch.from_numpy(colour_of(mask)).permute(2, 0, 1)
    from torchvision import tv_tensors

    torch.manual_seed(0)
    padded = 0
    for _ in range(20):
        x, y = transform(tv_tensors.Image(image), tv_tensors.Mask(torch.from_numpy(mask)))
        assert x.shape == (3, 96, 96) and y.shape == (96, 96) and x.dtype == torch.float32
        assert set(y.unique().tolist()) <= {0, 1, 2, 255}  # nearest neighbour: no value in between
        pad = (x == 0).all(0)  # the padding is 0 after normalization (the mean colour), its mask 255
        assert (y[pad] == 255).all()
        padded += int(pad.any())
        real = ~pad & (y != 255)
        assert real.sum() > 0
        # image and mask moved together: away from stripe edges, the colour still says the class
        inner = real & (
            torch.nn.functional.max_pool2d(y[None, None].float(), 3, 1, 1)[0, 0]
            == -torch.nn.functional.max_pool2d(-y[None, None].float(), 3, 1, 1)[0, 0]
        )
        assert inner.sum() > 0 and (encoded_class(x)[inner] == y[inner]).float().mean() > 0.95
    assert padded > 0  # crops larger than the scaled 40x52 image did pad


def test_transforms_are_deterministic_under_the_seed(tmp_path):
    make_folder(tmp_path)

    def first_batches():
        dm = datamodule(tmp_path, "folder", "data.num_workers=2")
        L.seed_everything(3, workers=True)
        return [b for b in dm.train_dataloader()]

    a, b = first_batches(), first_batches()
    for (xa, ya), (xb, yb) in zip(a, b):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    L.seed_everything(4, workers=True)
    other = [x for x, _ in datamodule(tmp_path, "folder", "data.num_workers=2").train_dataloader()]
    assert not all(torch.equal(x, o) for (x, _), o in zip(a, other))


def test_sliding_window_matches_whole_image_for_a_pointwise_model():
    x = torch.randn(1, 3, 40, 52)
    model = torch.nn.Conv2d(3, 5, 1)
    with torch.no_grad():
        np.testing.assert_allclose(sliding_logits(model, x, 32, 21), model(x), atol=1e-6)
        assert sliding_logits(model, x[..., :20, :20], 32, 21).shape == (1, 5, 20, 20)


BUILDERS = {"voc": make_voc, "cityscapes": make_cityscapes, "ade20k": make_ade20k, "folder": make_folder}


@pytest.mark.parametrize("name", list(BUILDERS))
def test_one_epoch_on_each_layout(tmp_path, name):
    masks = BUILDERS[name](tmp_path / "data")
    extra = ["data.val_mode=slide"] if name == "cityscapes" else []
    summary = run(
        load_config(None, [f"data.name={name}", f"data.root={tmp_path / 'data'}", *FILE_TINY, *extra]), tmp_path / "out"
    )
    assert summary["classes"] == {"voc": 21, "cityscapes": 19, "ade20k": 150, "folder": 3}[name]
    assert 0 <= summary["val/mIoU"] <= 1 and summary["epochs"] == 1
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["config"]["data"]["name"] == name
    shown = np.load(tmp_path / "out" / "predictions.npz")  # the first val images, un-normalized, with their masks
    if name == "folder":  # PNG images: the saved picture is the file's pixels
        np.testing.assert_allclose(shown["images"][0].astype(int), colour_of(masks["val0"]).astype(int), atol=1)
        np.testing.assert_array_equal(shown["true"][0], masks["val0"])


def test_train_command_on_a_user_folder(tmp_path):
    make_folder(tmp_path / "my_data")
    cmd = [
        sys.executable,
        "-m",
        "ablate.train",
        str(REPO / "experiments" / "base.yaml"),
        "data.name=folder",
        f"data.root={tmp_path / 'my_data'}",
        *FILE_TINY,
        "--output",
        str(tmp_path / "out"),
    ]
    done = subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["classes"] == 3 and summary["config"]["data"]["name"] == "folder"
    assert "val/IoU/cat" in summary or "val/IoU/dog" in summary  # the names of classes.txt


def test_voc_recipe_applies_to_a_folder(tmp_path):
    make_folder(tmp_path / "my_data")
    cfg = load_config(
        REPO / "experiments" / "voc.yaml",
        [
            "data.name=folder",
            f"data.root={tmp_path / 'my_data'}",
            "data.train_split=null",
            "data.val_split=null",
            "model.encoder=resnet18",
            "model.encoder_weights=null",
            "model.encoder_depth=3",
            "model.output_stride=8",
            "model.neck.rates=[1,2,3]",
            *FILE_TINY,
            "trainer.max_steps=2",
            "data.num_workers=0",
        ],
    )
    summary = run(cfg, tmp_path / "out")
    assert summary["classes"] == 3 and cfg.optim.name == "sgd" and cfg.data.scale_range == [0.5, 2.0]


def break_tree(root: Path, case: str) -> str:
    """Damage a fresh folder tree one way; return a piece of text the error must contain."""
    make_folder(root)
    if case == "image without mask":
        (root / "masks" / "train" / "train1.png").unlink()
        return "train1.png has no counterpart in masks/train"
    if case == "mask without image":
        (root / "images" / "val" / "val0.png").unlink()
        return "val0.png has no counterpart in images/val"
    if case == "values outside the classes":
        save_mask(root / "masks" / "train" / "train2.png", raw_mask([0, 1, 7, 255], 0), palette=True)
        return "train2.png: mask values [7] are not valid here; valid: 0..2 and 255"
    if case == "size mismatch":
        save_mask(root / "masks" / "val" / "val1.png", raw_mask([0, 1], 0, size=(40, 50)), palette=False)
        return "val1.png: mask is 50x40 but its image val1.png is 52x40"
    if case == "rgb mask":
        Image.fromarray(colour_of(raw_mask([0, 1], 0))).save(root / "masks" / "train" / "train0.png")
        return "train0.png: mask mode 'RGB'"
    if case == "empty split":
        for split in ("images", "masks"):
            for f in (root / split / "val").iterdir():
                f.unlink()
        return "split 'val' under"
    if case == "missing split folder":
        for split in ("images", "masks"):
            (root / split / "val").rename(root / split / "validation")
        return f"folder {root / 'images' / 'val'} does not exist"
    if case == "no classes.txt":
        (root / "classes.txt").unlink()
        return "classes.txt does not exist"
    raise AssertionError(case)


@pytest.mark.parametrize(
    "case",
    [
        "image without mask",
        "mask without image",
        "values outside the classes",
        "size mismatch",
        "rgb mask",
        "empty split",
        "missing split folder",
        "no classes.txt",
    ],
)
def test_bad_folder_trees_name_the_file(tmp_path, case):
    expected = break_tree(tmp_path / "data", case)
    with pytest.raises(ConfigError) as e:
        datamodule(tmp_path / "data", "folder")
    assert expected in str(e.value)


def test_missing_root_and_split_file(tmp_path):
    with pytest.raises(ConfigError, match="set data.root"):
        create_datamodule(load_config(None, ["data.name=voc", *FILE_TINY]))
    with pytest.raises(ConfigError, match="is not a folder"):
        datamodule(tmp_path / "nowhere", "voc")
    make_voc(tmp_path)
    with pytest.raises(ConfigError, match=r"train_aug.txt does not exist; split files there: train, val"):
        datamodule(tmp_path, "voc", "data.train_split=train_aug")
    (tmp_path / "VOCdevkit/VOC2012/SegmentationClass/2008_000002.png").unlink()
    with pytest.raises(ConfigError, match=r"SegmentationClass/2008_000002.png does not exist, but val.txt lists it"):
        datamodule(tmp_path, "voc")
    (tmp_path / "VOCdevkit/VOC2012/SegmentationClass/2008_000002.png").write_bytes(b"not a png")
    with pytest.raises(ConfigError, match=r"cannot read .*2008_000002.png"):
        datamodule(tmp_path, "voc")
    save_mask(tmp_path / "VOCdevkit/VOC2012/SegmentationClass/2008_000002.png", raw_mask([0, 3], 0), palette=True)
    with (tmp_path / "VOCdevkit/VOC2012/ImageSets/Segmentation/train.txt").open("a") as f:
        f.write("2008_000001\n")  # a val image listed for training too
    with pytest.raises(ConfigError, match=r"share 1 image\(s\) \(e.g. .*2008_000001.jpg\)"):
        datamodule(tmp_path, "voc")
    with pytest.raises(ConfigError, match="data.name='coco' is not valid; choose one of 'shapes', 'voc'"):
        load_config(None, ["data.name=coco"])
    with pytest.raises(ConfigError, match="data.classes is for data.name='folder'"):
        load_config(None, ["data.name=voc", "data.classes=[a, b]"])
    with pytest.raises(ConfigError, match="data.scale_range must be"):
        load_config(None, ["data.scale_range=[2, 0.5]"])


def test_a_mask_changed_after_a_good_scan_is_checked_again(tmp_path):
    make_folder(tmp_path)
    datamodule(tmp_path, "folder")
    save_mask(tmp_path / "masks" / "val" / "val1.png", raw_mask([0, 9], 0), palette=True)
    with pytest.raises(ConfigError, match="val1.png: mask values \\[9\\]"):
        datamodule(tmp_path, "folder")


LONG = ("x" * 60, "y" * 60)  # a deep folder, as a long --basetemp gives: the path in a message is longer than a line


def test_bad_data_stops_a_sweep_before_its_first_trial(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "40")  # a narrow terminal, inherited when stderr is a pipe: no effect on messages
    root = tmp_path.joinpath(*LONG, "data")
    expected = f"{root / 'images' / 'train' / 'train1.png'} has no counterpart in masks/train"
    assert expected.endswith(break_tree(root, "image without mask"))
    path = write_sweep(overrides=["data.name=folder", f"data.root={root}", "data.batch_size=2"])
    assert sweep_main([path, "--storage", f"sqlite:///{tmp_path / 'o.db'}"]) == 2
    err = capsys.readouterr().err
    assert any(line.startswith(f"error: {expected}") for line in err.splitlines()), err  # whole, on one line
    assert optuna.load_study(study_name="t", storage=f"sqlite:///{tmp_path / 'o.db'}").trials == []


def test_bad_data_stops_the_train_command_before_training(tmp_path):
    root = tmp_path.joinpath(*LONG, "data")
    expected = f"{root / 'masks' / 'train' / 'train2.png'}: mask values [7] are not valid here; valid: 0..2 and 255"
    assert expected.endswith(break_tree(root, "values outside the classes"))
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "ablate.train",
            "data.name=folder",
            f"data.root={root}",
            *FILE_TINY,
            "--output",
            str(tmp_path / "out"),
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "40"},
        timeout=300,
    )
    assert done.returncode == 2
    assert any(line.startswith(f"error: {expected}") for line in done.stderr.splitlines()), done.stderr
    assert not (tmp_path / "out").exists()  # nothing trained, nothing written
