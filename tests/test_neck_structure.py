"""Necks found by structure (issue #31): torchvision's, smp's (plain and separable), a copy in a user's project and a
hand-written ASPP are found as ASPP-like and get the analysis of ablate's own; dilated convs in sequence (a cascade,
a dilated ResNet) are not; `ablate_neck` and `necks=[...]` mark or name a module. Tiny tensors, CPU."""

import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import lightning as L
import pytest
import segmentation_models_pytorch as smp
import torch
import torch.nn as nn
import torchvision
from torchvision.models.segmentation.deeplabv3 import ASPP as TorchvisionASPP

from ablate.callbacks import Efficiency, NeckAnalysis, find_necks, summary
from ablate.callbacks.necks import locate_necks
from ablate.run import analysis
from ablate.run.neck_structure import Branches, recognise

sys.path.insert(0, str(Path(__file__).parent / "deeplab_project"))
import deeplab  # noqa: E402  (tests/deeplab_project: a project written as public ones are, with its own ASPP copy)


class HandASPP(nn.Module):
    """An ASPP written by hand with its own names: a 1x1 and two atrous 3x3 convs summed, no image pooling."""

    def __init__(self, c: int = 4, pool: bool = False):
        super().__init__()
        self.point = nn.Conv2d(c, c, 1)
        self.near = nn.Conv2d(c, c, 3, padding=2, dilation=2)
        self.far = nn.Conv2d(c, c, 3, padding=4, dilation=4)
        self.fuse, self.pool = nn.Conv2d(c, c, 1), pool

    def forward(self, x):  # (B, C, H, W) -> (B, C, H, W)
        y = self.point(x) + self.near(x) + self.far(x)
        if self.pool:  # functional image pooling, no module to hook
            y = y + x.mean((2, 3), keepdim=True)
        return self.fuse(torch.relu(y))


class Cascade(nn.Module):
    """3x3 convs at dilations 1, 2, 4 in a ModuleList, as an ASPP holds its branches, but run one after the other."""

    def __init__(self, c: int = 3, in_place: bool = False):
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv2d(c, c, 3, padding=d, dilation=d) for d in (1, 2, 4))
        self.in_place = in_place

    def forward(self, x):
        for conv in self.convs:  # in place: x keeps its identity, each conv reads a new version of it
            x = x.add_(conv(x)) if self.in_place else conv(x)
        return x


class OneRate(nn.Module):
    """A 1x1 branch, one atrous 3x3 and image pooling: one dilation only, so marked rather than recognised."""

    ablate_neck = True

    def __init__(self, c: int = 4):
        super().__init__()
        self.branches = nn.ModuleList([nn.Conv2d(c, c, 1), nn.Conv2d(c, c, 3, padding=3, dilation=3)])
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(c, c, 1))

    def forward(self, x):
        return sum(b(x) for b in self.branches) + self.pool(x)


class TwoHeads(nn.Module):
    """An ASPP and an auxiliary 3x3 head (dilation 1) both reading the stem's features."""

    def __init__(self, c: int = 4):
        super().__init__()
        self.stem = nn.Conv2d(3, c, 3, 2, 1)
        self.aspp, self.classifier = TorchvisionASPP(c, [2, 3], c), nn.Conv2d(c, 3, 1)
        self.aux = nn.Conv2d(c, 3, 3, padding=1)

    def forward(self, x):
        features = self.stem(x)
        return self.classifier(self.aspp(features)) + self.aux(features)


def model_around(neck: nn.Module, c: int = 4) -> nn.Sequential:
    """stem (3x3 stride 2, then 3x3 stride 2: 7 px at stride 4) -> neck -> 1x1 classifier."""
    stem = nn.Sequential(nn.Conv2d(3, c, 3, 2, 1), nn.ReLU(), nn.Conv2d(c, c, 3, 2, 1), nn.ReLU())
    return nn.Sequential(stem, neck, nn.Conv2d(c, 3, 1))


def test_torchvision_s_aspp_is_recognised_with_its_branches():
    aspp = TorchvisionASPP(in_channels=8, atrous_rates=[1, 2, 3], out_channels=8).train()
    assert recognise(aspp, torch.zeros(1, 8, 8, 8)) == Branches((1, 2, 3), pointwise=True, image_pool=True)
    assert aspp.training and not any(m._forward_hooks or m._forward_pre_hooks for m in aspp.modules())
    model = model_around(TorchvisionASPP(4, [1, 2, 3], 4))
    assert find_necks(model) == {"1": model[1]}  # torchvision's own deeplabv3 puts it at classifier.0


@pytest.mark.parametrize(
    "build,path",
    [(smp.DeepLabV3, "decoder.aspp"), (smp.DeepLabV3Plus, "decoder.aspp.0")],  # v3+: ASPP, then a separable 3x3
)
def test_smp_s_aspp_is_the_only_neck_and_its_dilated_encoder_is_not_one(build, path):
    model = build(encoder_name="resnet18", encoder_weights=None, classes=3)  # resnet18 dilated to OS 8 / 16
    found = locate_necks(model, torch.zeros(2, 3, 64, 64))
    assert list(found) == [path] and found[path].module is model.get_submodule(path)
    assert found[path].branches == Branches((12, 24, 36), pointwise=True, image_pool=True)
    separable = build is smp.DeepLabV3Plus  # smp 0.6: DeepLabV3Plus's ASPP is depthwise 3x3 + pointwise 1x1
    atrous = [m for m in model.get_submodule(path).modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)]
    assert [conv.groups > 1 for conv in atrous] == [separable] * 3
    assert found[path].size == ((8, 8) if build is smp.DeepLabV3 else (4, 4))  # 64 px at OS 8 / 16


def test_a_3x3_head_beside_the_aspp_on_the_same_features_does_not_widen_the_neck_found():
    found = locate_necks(TwoHeads())
    assert list(found) == ["aspp"] and found["aspp"].branches == Branches((2, 3), True, True)


@pytest.mark.parametrize("pool", [False, True])
def test_a_hand_written_aspp_with_sum_fusion_is_recognised(pool):
    assert recognise(HandASPP(pool=pool), torch.zeros(1, 4, 8, 8)) == Branches((2, 4), True, image_pool=pool)
    model = model_around(HandASPP(pool=pool))
    assert list(find_necks(model)) == ["1"]


def test_the_deeplab_project_s_copy_gets_the_receptive_fields_counted_by_hand():
    model = deeplab.DeepLabV3()
    found = locate_necks(model, torch.zeros(4, 3, 32, 32))
    assert list(found) == ["decoder.0"] and found["decoder.0"].size == (8, 8)
    neck, branches, size = found["decoder.0"]
    assert branches == Branches((12, 24, 36), pointwise=True, image_pool=True)
    assert analysis.input_receptive_field(model, neck) == (7, 4)  # 3x3 s2 (3 px), 3x3 s2 (+2 x 2 px); stride 4
    numbers = analysis.neck_summary(neck, 7, 4, size, branches)
    # each atrous branch adds 2 r feature positions x stride 4; image pooling spans the 8 positions (7 x 4 px)
    assert {k: v for k, v in numbers.items() if k.startswith("rf/")} == {
        "rf/encoder": 7,
        "rf/1x1": 7,
        "rf/rate12": 7 + 2 * 12 * 4,
        "rf/rate24": 7 + 2 * 24 * 4,
        "rf/rate36": 7 + 2 * 36 * 4,
        "rf/image_pool": 7 + 7 * 4,
    }
    assert numbers["feature_px"] == 8 and {numbers[f"taps9/rate{r}"] for r in (12, 24, 36)} == {0.0}
    assert numbers["gridding_holes"] == 73 - 7  # offsets -36..36, of which 0, +-12, +-24, +-36 are sampled
    assert analysis.neck_summary(neck, 7, 4, size) == {}  # without its branches, as before


@pytest.mark.parametrize(
    "model",
    [
        nn.Sequential(*(nn.Conv2d(3, 3, 3, padding=d, dilation=d) for d in (1, 2, 4))),
        Cascade(),
        Cascade(in_place=True),
        torchvision.models.resnet50(weights=None, replace_stride_with_dilation=[False, True, True]),
        smp.encoders.get_encoder("resnet18", weights=None, output_stride=8),  # torchvision's resnet18 refuses dilation
    ],
    ids=["sequential", "modulelist-cascade", "in-place-cascade", "resnet50-dilated", "resnet18-os8"],
)
def test_dilated_convs_in_sequence_are_not_an_aspp(model):
    assert find_necks(model, torch.zeros(1, 3, 32, 32)) == {}
    assert recognise(model, torch.zeros(1, 3, 32, 32)) is None


def test_a_marked_module_is_a_neck_with_its_branches_and_a_neck_inside_it_is_not_counted_again():
    model = model_around(OneRate())
    found = locate_necks(model)
    assert list(found) == ["1"] and found["1"].branches == Branches((3,), pointwise=True, image_pool=True)
    assert recognise(OneRate(), torch.zeros(1, 4, 8, 8)) is None  # one dilation: not ASPP-like by itself
    outer = model_around(nn.Sequential(TorchvisionASPP(4, [1, 2], 4), nn.Conv2d(4, 4, 3, padding=1)))
    outer[1].ablate_neck = True  # the whole head is the neck: its ASPP is not reported again
    found = locate_necks(outer)
    assert list(found) == ["1"] and found["1"].branches == Branches((1, 2), True, True)


def test_ablate_neck_false_hides_a_module_and_what_is_inside_it():
    model = model_around(TorchvisionASPP(4, [1, 2], 4))
    model[1].ablate_neck = False
    assert find_necks(model) == {}
    model[1].ablate_neck, model[0].ablate_neck = None, False  # hiding another part leaves the ASPP found
    assert list(find_necks(model)) == ["1"]


def test_necks_named_by_path_replace_those_found_and_an_unknown_path_names_near_ones():
    model = model_around(OneRate())
    assert list(find_necks(model, paths=["0"])) == ["0"]
    found = locate_necks(model, paths=["1.branches.1", "1"])  # a neck inside a named neck is not counted again
    assert list(found) == ["1"] and found["1"].branches == Branches((3,), True, True)
    with pytest.raises(ValueError, match="no submodule '1.branchez'.*1.branches"):
        find_necks(model, paths=["1.branchez"])


def test_ablate_s_own_neck_keeps_its_analysis_by_type():
    from scene_project import SceneNet

    found = locate_necks(SceneNet(rates=(1, 2)))
    assert list(found) == ["context"] and found["context"].branches is None


def test_a_trainer_run_of_the_deeplab_project_warns_of_its_rates_and_gets_every_key(tmp_path, capsys):
    L.seed_everything(0, verbose=False)
    module, data = deeplab.DeepLabV3(), deeplab.DummyDataModule(size=32, n=16, batch_size=4)
    trainer = L.Trainer(
        max_epochs=1,
        limit_train_batches=2,
        limit_val_batches=2,
        num_sanity_val_steps=0,
        callbacks=[NeckAnalysis(), Efficiency()],
        logger=L.pytorch.loggers.TensorBoardLogger(tmp_path),  # its on_train_start writes to TensorBoard
        default_root_dir=tmp_path,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(module, datamodule=data)
    out = capsys.readouterr().out
    assert "warning: decoder.0: ASPP rates [12, 24, 36] are degenerate on the 8x8 feature map" in out
    numbers = summary(trainer)
    assert {k: numbers[k] for k in ("rf/encoder", "rf/1x1", "rf/rate12", "rf/rate36", "rf/image_pool")} == {
        "rf/encoder": 7,
        "rf/1x1": 7,
        "rf/rate12": 7 + 2 * 12 * 4,
        "rf/rate36": 7 + 2 * 36 * 4,
        "rf/image_pool": 7 + 7 * 4,
    }
    assert numbers["gridding_holes"] == 66 and numbers["feature_px"] == 8 and numbers["taps9/rate24"] == 0
    assert numbers["params/neck"] == sum(p.numel() for p in module.decoder[0].parameters())
    assert numbers["params/total"] > numbers["params/neck"] > 0 and numbers["erf/r90_px"] > 0
