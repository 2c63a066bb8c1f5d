"""Options for small trials on a GPU (data.on_device, optim.fused), tested on the CPU: same numbers, reproducible."""

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader

from ablate.config import load_config, to_dict
from ablate.data.shapes import DeviceBatches, TensorSegmentation, make_split
from ablate.errors import ConfigError
from ablate.run.fit import run
from ablate.run.module import SegmentationModule


@pytest.mark.parametrize("shuffle, drop_last", [(True, True), (False, False)])
def test_device_batches_are_the_dataloaders_batches(shuffle, drop_last):
    images, masks = make_split(10, 32, seed=0)  # 32 px: the smallest the dots fit in
    batches = {}
    for name in ("loader", "device"):
        L.seed_everything(3, verbose=False)
        data = (
            DataLoader(TensorSegmentation(images, masks), batch_size=4, shuffle=shuffle, drop_last=drop_last)
            if name == "loader"
            else DeviceBatches(images, masks, 4, shuffle=shuffle, drop_last=drop_last)
        )
        batches[name] = [b for _ in range(2) for b in data]  # two epochs: a new order each
        batches[name].append(torch.rand(1))  # and the global generator left in the same state
    assert len(batches["device"]) == len(batches["loader"]) == (5 if drop_last else 7)
    for ours, theirs in zip(batches["device"], batches["loader"]):
        assert all(torch.equal(a, b) for a, b in zip(ours, theirs))


def test_on_device_trains_to_the_default_numbers_bit_for_bit(tiny):
    default = run(load_config(None, tiny + ["trainer.max_epochs=2"]), "a")
    on_device = [
        run(load_config(None, tiny + ["trainer.max_epochs=2", "data.on_device=true"]), f"b{i}") for i in range(2)
    ]
    for key in ("val/mIoU", "val/mIoU_best", "val/loss", "val/pixel_acc"):
        assert on_device[0][key] == on_device[1][key] == default[key]


def test_fused_optimizers_train_and_repeat(tiny):
    for name in ("adamw", "sgd"):
        cfg = load_config(None, tiny + [f"optim.name={name}", "optim.fused=true"])
        a, b = run(cfg, f"{name}-a"), run(cfg, f"{name}-b")
        assert a["val/mIoU"] is not None and a["val/mIoU"] == b["val/mIoU"]


def test_defaults_are_off_and_on_device_is_for_the_synthetic_data():
    cfg = load_config(None)
    assert not cfg.data.on_device and not cfg.optim.fused
    module = SegmentationModule(to_dict(cfg), ["c"] * 7)
    module.trainer = L.Trainer(max_steps=1, logger=False, enable_progress_bar=False)  # for the schedule's length
    opt = module.configure_optimizers()["optimizer"]
    assert not opt.defaults["fused"]  # the default optimizer is torch's per-tensor (foreach) one, as before
    with pytest.raises(ConfigError, match="data.on_device is for the built-in synthetic data"):
        load_config(None, ["data.name=voc", "data.root=.", "data.on_device=true"])
