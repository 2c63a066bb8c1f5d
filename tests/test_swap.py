"""Swapping the neck of models that hard-code it: smp DeepLabV3Plus and torchvision deeplabv3_resnet50 (random init)."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from functools import partial

import pytest
import segmentation_models_pytorch as smp
import torch
import torch.nn as nn
import torch.nn.functional as F
from lightning.pytorch import LightningModule, Trainer
from torch.utils.data import DataLoader, TensorDataset
from torchvision.models.segmentation import deeplabv3_resnet50

from ablate.necks import ASPP, PPM, SwapNeck, create_neck, swap_neck

X = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))  # (B, 3, H, W)


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.fixture(scope="module")
def torchvision_model():
    torch.manual_seed(0)
    return deeplabv3_resnet50(weights=None, weights_backbone=None, num_classes=3).eval()  # nothing downloaded


def smp_model() -> nn.Module:
    torch.manual_seed(0)
    return smp.DeepLabV3Plus("resnet18", encoder_weights=None, classes=3)


@torch.no_grad()
def test_torchvision_deeplabv3_aspp_swapped_for_ours(torchvision_model):
    model = torchvision_model
    before, old = model(X)["out"], model.classifier[0]
    total = n_params(model)
    assert swap_neck(model, "classifier.0", "aspp", rates=(3, 6), norm="gn", dropout=0.0) is model
    neck = model.classifier[0]
    assert isinstance(neck, ASPP) and neck.rates == (3, 6) and not neck.training  # the model's eval mode kept
    assert neck.convs[0][0].in_channels == 2048  # read from the torchvision ASPP's first conv
    expected = create_neck("aspp", 2048, rates=(3, 6), norm="gn", dropout=0.0)
    assert n_params(model) == total - n_params(old) + n_params(expected)
    after = model(X)["out"]
    assert after.shape == before.shape == (2, 3, 64, 64) and not torch.allclose(after, before)


def test_smp_deeplabv3plus_aspp_swapped_and_trains():
    model = smp_model().train()
    old = model.decoder.aspp[0]
    total, shape = n_params(model), model(X).shape
    swap_neck(model, "decoder.aspp.0", "aspp", rates=(1, 2), fusion="sum", separable=True)
    assert model.decoder.aspp[0].fusion == "sum" and model.decoder.aspp[0].training
    assert n_params(model) == total - n_params(old) + n_params(
        create_neck("aspp", 512, rates=(1, 2), fusion="sum", separable=True)
    )
    y = model(X)  # (B, classes, H, W)
    assert y.shape == shape == (2, 3, 64, 64)
    y.sum().backward()
    assert all(p.grad is not None for p in model.decoder.aspp[0].parameters())


def test_smp_whole_aspp_block_swapped_for_a_callable_neck():
    model = smp_model().eval()
    swap_neck(model, "decoder.aspp", PPM, norm="none")  # the block ASPP + separable conv + BN + ReLU
    assert isinstance(model.decoder.aspp, PPM) and model.decoder.aspp.out_channels == 256
    with torch.no_grad():
        assert model(X).shape == (2, 3, 64, 64)


def test_out_channels_mismatch_names_path_both_widths_and_the_option(torchvision_model):
    with pytest.raises(ValueError) as err:
        swap_neck(torchvision_model, "classifier.0", "aspp", out_channels=64)
    assert all(s in str(err.value) for s in ("'classifier.0'", "64", "256", "out_channels=256"))
    assert isinstance(torchvision_model.classifier[0], nn.Module)  # nothing was replaced


@pytest.mark.parametrize(
    "path,nearest",
    [
        ("decodr.aspp.0", "decoder.aspp.0"),
        ("decoder.aspp.9", "decoder.aspp.0"),
        ("decoder.asp", "decoder.aspp"),
        ("", "decoder"),
    ],
)
def test_unknown_path_lists_nearest_valid_paths(path, nearest):
    with pytest.raises(ValueError, match=f"no submodule '{path}'; nearest valid paths: .*{nearest}"):
        swap_neck(smp_model(), path, "aspp")


def test_wrong_input_width_asks_for_in_channels():
    with pytest.raises(ValueError, match=r"cannot run the module at 'decoder.aspp.0'.*pass in_channels="):
        swap_neck(smp_model(), "decoder.aspp.0", "aspp", in_channels=64)


def test_module_without_conv_asks_for_in_channels():
    model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.Identity())
    with pytest.raises(ValueError, match=r"'1' \(Identity\) has no Conv2d.*in_channels="):
        swap_neck(model, "1", "identity", out_channels=4)
    swap_neck(model, "1", "identity", in_channels=4, out_channels=4)  # given explicitly, it works
    assert model(torch.randn(2, 3, 5, 5)).shape == (2, 4, 5, 5)


class Segmenter(LightningModule):
    """A module that hard-codes its model (smp's DeepLabV3Plus with its own ASPP)."""

    def __init__(self):
        super().__init__()
        self.net = smp_model()

    def training_step(self, batch, batch_idx):
        x, y = batch  # (B, 3, H, W), (B, H, W)
        return F.cross_entropy(self.net(x), y)

    def validation_step(self, batch, batch_idx):
        self.log("val/loss", F.cross_entropy(self.net(batch[0]), batch[1]))

    def on_train_start(self):  # after the swap, before the first step
        self.neck_before = {k: v.clone() for k, v in self.net.decoder.aspp[0].named_parameters()}

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_swap_neck_callback_swaps_before_the_optimizer_and_trains_the_new_neck(tmp_path):
    data = DataLoader(TensorDataset(X, torch.randint(0, 3, (2, 64, 64))), batch_size=2)
    module = Segmenter()
    trainer = Trainer(
        max_steps=1,
        limit_val_batches=1,
        num_sanity_val_steps=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
        default_root_dir=tmp_path,
        callbacks=[SwapNeck("net.decoder.aspp.0", partial(ASPP, rates=(1, 2), fusion="sum"))],
    )
    trainer.fit(module, data, data)
    neck = module.net.decoder.aspp[0]
    assert isinstance(neck, ASPP) and neck.rates == (1, 2)
    optimized = {id(p) for group in trainer.optimizers[0].param_groups for p in group["params"]}
    assert all(id(p) in optimized for p in neck.parameters())
    assert all(
        not torch.equal(p, module.neck_before[k]) for k, p in neck.named_parameters() if p.ndim == 4
    )  # every conv weight moved in the step
    trainer.validate(module, data, verbose=False)  # setup() runs again: the trained neck is kept
    assert module.net.decoder.aspp[0] is neck


def test_swap_neck_callback_names_a_missing_path_and_configure_model(tmp_path):
    trainer = Trainer(
        max_steps=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        accelerator="cpu",
        default_root_dir=tmp_path,
        callbacks=[SwapNeck("net.nope", ASPP)],
    )
    with pytest.raises(ValueError, match=r"SwapNeck: .*'net.nope'.*configure_model"):
        trainer.fit(Segmenter(), DataLoader(TensorDataset(X, torch.zeros(2, 64, 64, dtype=torch.long))))
