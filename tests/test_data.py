"""The synthetic shapes: deterministic, every class present, scene cue hidden near objects, labels checked."""
import numpy as np
import pytest
import torch

from ablate.config import ConfigError, load_config
from ablate.data import check_labels, create_datamodule
from ablate.data.shapes import CLASSES, make_image, make_split


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


def test_no_stripes_right_around_objects():
    """The background next to an object is flat: the scene must be read from farther away."""
    rng = np.random.default_rng(5)
    image, mask = make_image(rng, 128)
    obj = torch.from_numpy(mask > 0)[None, None].float()
    ring = (torch.nn.functional.max_pool2d(obj, 9, 1, 4)[0, 0] > 0) & torch.from_numpy(mask == 0)  # 4 px around objects
    far = torch.nn.functional.max_pool2d(obj, 81, 1, 40)[0, 0] == 0  # > 40 px from any object
    near_std = image[:, ring.numpy()].std(axis=1).max()
    assert near_std < 0.1 * 255
    if far.any():
        assert image[:, far.numpy()].std(axis=1).max() > 2 * near_std  # stripes out there


def test_datamodule_checks_labels_and_class_count():
    dm = create_datamodule(load_config(None, ["data.train_size=8", "data.val_size=4", "data.image_size=32"]))
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (8, 3, 32, 32) and x.dtype == torch.float32 and y.dtype == torch.int64
    with pytest.raises(ConfigError, match="model.classes=5 .* 7 classes"):
        create_datamodule(load_config(None, ["data.train_size=8", "data.val_size=4", "model.classes=5"]))
    with pytest.raises(ConfigError, match=r"mask values \[7, 9\]"):
        check_labels(torch.tensor([[0, 7], [255, 9]]), 7, "my set")
    check_labels(torch.tensor([[0, 6], [255, 1]]), 7, "my set")
