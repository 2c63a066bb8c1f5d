"""The synthetic shapes: deterministic, every class present, the scene a global vote, objects visible, labels
checked."""

import numpy as np
import pytest
import torch

from ablate.config import ConfigError, load_config
from ablate.data import check_labels, create_datamodule
from ablate.data.shapes import CLASSES, MARKER_RGB, SCENES, make_image, make_split


def test_same_seed_same_data_other_seed_other_data():
    a, b, c = make_split(6, 48, seed=1), make_split(6, 48, seed=1), make_split(6, 48, seed=2)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])


def test_every_class_appears_and_labels_are_in_range():
    images, masks = make_split(64, 64, seed=0)
    assert images.shape == (64, 3, 64, 64) and images.dtype == torch.uint8
    assert set(torch.unique(masks).tolist()) == set(range(len(CLASSES)))
    assert len(CLASSES) == 7


def test_one_scene_per_image_and_flat_object_interiors():
    rng = np.random.default_rng(3)
    for _ in range(20):
        image, mask = make_image(rng, 96)
        scenes = {(c - 1) // 3 for c in np.unique(mask) if c > 0}
        assert len(scenes) == 1  # the scene is a property of the whole image
        img = image.astype(float)
        same = (mask[:, 1:] == mask[:, :-1]) & (mask[:, 1:] > 0)  # horizontal neighbours inside one class
        step = np.abs(img[:, :, 1:] - img[:, :, :-1])[:, same]
        assert np.median(step) < 0.1 * 255  # flat colour + mild noise: nothing local tells the shape


def _marker_pixels(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pixels within noise of the red and of the blue marker colour."""
    near = [np.abs(image.astype(float) - rgb[:, None, None] * 255).max(axis=0) < 0.2 * 255 for rgb in MARKER_RGB]
    return near[0], near[1]


def test_scene_is_the_majority_colour_of_dots_that_sit_on_background():
    rng = np.random.default_rng(5)
    for _ in range(30):
        image, mask = make_image(rng, 128)
        red, blue = _marker_pixels(image)
        assert (mask[red | blue] == 0).all()  # dots are background, never on an object
        scene = {(c - 1) // 3 for c in np.unique(mask) if c > 0}.pop()
        share = max(red.sum(), blue.sum()) / (red.sum() + blue.sum())
        assert SCENES[scene] == ("red" if red.sum() > blue.sum() else "blue") and 0.6 < share < 0.9


def test_a_local_window_often_disagrees_with_the_scene():
    """The vote is global: the dots in one quarter of the image give the wrong scene now and then."""
    rng, wrong, seen = np.random.default_rng(7), 0, 0
    for _ in range(100):
        image, mask = make_image(rng, 128)
        red, blue = _marker_pixels(image[:, :64, :64])
        scene = {(c - 1) // 3 for c in np.unique(mask) if c > 0}.pop()
        seen += 1
        wrong += (red.sum() > blue.sum()) != (SCENES[scene] == "red") or red.sum() == blue.sum()
    assert 0.1 < wrong / seen < 0.5


def test_objects_stand_out_from_the_background():
    rng = np.random.default_rng(9)
    for _ in range(20):
        image, mask = make_image(rng, 96)
        red, blue = _marker_pixels(image)
        background = image[:, (mask == 0) & ~red & ~blue].astype(float).mean(axis=1)
        diff = np.abs(image[:, mask > 0].astype(float) - background[:, None]).max(axis=0)
        assert np.quantile(diff, 0.01) > 0.15 * 255  # lighter or darker by 0.25-0.4, plus noise


def test_datamodule_checks_labels_and_class_count():
    dm = create_datamodule(load_config(None, ["data.train_size=8", "data.val_size=4", "data.image_size=32"]))
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (8, 3, 32, 32) and x.dtype == torch.float32 and y.dtype == torch.int64
    with pytest.raises(ConfigError, match="model.classes=5 .* 7 classes"):
        create_datamodule(load_config(None, ["data.train_size=8", "data.val_size=4", "model.classes=5"]))
    with pytest.raises(ConfigError, match=r"mask values \[7, 9\]"):
        check_labels(torch.tensor([[0, 7], [255, 9]]), 7, "my set")
    check_labels(torch.tensor([[0, 6], [255, 1]]), 7, "my set")


def test_one_shape_kind_leaves_the_scene_as_the_class():
    """data.shape_kinds=1 (the default sweep's data): every object a disk, 3 classes, the scene still a vote
    that a quarter of a 64 px image gets wrong now and then."""
    cfg = load_config(None, ["data.shape_kinds=1", "data.image_size=64", "data.train_size=32", "data.val_size=4"])
    dm = create_datamodule(cfg)
    dm.setup("fit")
    assert dm.classes == ("background", "disk/red", "disk/blue")
    assert set(torch.unique(dm.train_set.masks).tolist()) == {0, 1, 2}
    rng, wrong = np.random.default_rng(7), 0
    for _ in range(100):
        image, mask = make_image(rng, 64, kinds=1)
        red, blue = _marker_pixels(image)
        scene = {int(c) - 1 for c in np.unique(mask) if c > 0}.pop()
        assert SCENES[scene] == ("red" if red.sum() > blue.sum() else "blue")
        red, blue = _marker_pixels(image[:, :32, :32])
        wrong += (red.sum() > blue.sum()) != (SCENES[scene] == "red") or red.sum() == blue.sum()
    assert 0.1 < wrong / 100 < 0.5
    with pytest.raises(ConfigError, match="data.shape_kinds"):
        load_config(None, ["data.shape_kinds=4"])
