"""Tests of ablate.run.analysis and ablate.analyze: valid 3x3 taps (DeepLabv3 Fig. 4), receptive fields, gridding,
ERF."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from collections import Counter

import numpy as np
import pytest
import torch

from ablate.analyze import encoder_rf
from ablate.config import load_config
from ablate.run import analysis
from ablate.run.analysis import degenerate_rate_message, degenerate_rates, feature_size, valid_tap_shares

TAPS = (9, 6, 4, 3, 2, 1)


def conv_tap_shares(h: int, w: int, rate: int) -> dict[int, float]:
    """Shares of valid taps counted by a real conv: all-ones 3x3 weights on an all-ones map, zero padding."""
    conv = torch.nn.Conv2d(1, 1, 3, padding=rate, dilation=rate, bias=False)
    with torch.no_grad():
        conv.weight.fill_(1.0)
        counts = Counter(conv(torch.ones(1, 1, h, w)).round().long().flatten().tolist())
    assert set(counts) <= set(TAPS)
    return {taps: counts[taps] / (h * w) for taps in TAPS}


def test_hand_checked_3x3_map():
    # rate 1: centre sees 9 taps, the 4 edges 6, the 4 corners 4
    assert valid_tap_shares(3, 1) == pytest.approx({9: 1 / 9, 6: 4 / 9, 4: 4 / 9, 3: 0, 2: 0, 1: 0})
    # rate 2: corners 2x2 = 4, edges 2x1 = 2, the centre only itself
    assert valid_tap_shares(3, 2) == pytest.approx({9: 0, 6: 0, 4: 4 / 9, 3: 0, 2: 4 / 9, 1: 1 / 9})


def test_non_square_hand_checked():
    # 1x3 map at rate 1: rows always 1 valid offset; columns 2, 3, 2
    assert valid_tap_shares((1, 3), 1) == pytest.approx({9: 0, 6: 0, 4: 0, 3: 1 / 3, 2: 2 / 3, 1: 0})
    # 5x9 at rate 5: every row offset falls out (5 >= H); columns: 8 positions see 2, the centre 1
    assert valid_tap_shares((5, 9), 5) == pytest.approx({9: 0, 6: 0, 4: 0, 3: 0, 2: 8 / 9, 1: 1 / 9})


@pytest.mark.parametrize("size,rate", [(16, 16), (16, 24), (1, 1), ((5, 9), 9), ((9, 5), 12)])
def test_rate_at_least_the_size_leaves_only_the_centre_tap(size, rate):
    assert valid_tap_shares(size, rate)[1] == 1.0


@pytest.mark.parametrize(
    "h,w,rate",
    [
        (3, 3, 1),
        (3, 3, 2),
        (5, 7, 2),
        (7, 5, 3),
        (4, 9, 4),
        (1, 6, 2),
        (10, 10, 12),
        (16, 16, 15),
        (65, 65, 6),
        (65, 65, 33),
        (13, 40, 9),
    ],
)
def test_shares_match_a_real_dilated_conv(h, w, rate):
    assert valid_tap_shares((h, w), rate) == pytest.approx(conv_tap_shares(h, w, rate))


@pytest.mark.parametrize("size", [1, 2, 7, (3, 11), (65, 65), (33, 17)])
def test_shares_sum_to_one(size):
    for rate in (1, 2, 3, 5, 8, 13, 21, 34, 70):
        shares = valid_tap_shares(size, rate)
        assert list(shares) == list(TAPS)
        assert sum(shares.values()) == pytest.approx(1.0)


def test_deeplabv3_figure_4_curve_on_a_65x65_map():
    curve = [valid_tap_shares(65, rate) for rate in range(1, 66)]
    nine, one = [s[9] for s in curve], [s[1] for s in curve]
    assert nine[0] > 0.9 and one[0] == 0.0  # rate 1: almost every position sees all 9 taps
    assert all(a > b for a, b in zip(nine[:32], nine[1:33]))  # 9-valid share falls while 2r < 65
    assert all(a >= b for a, b in zip(nine, nine[1:])) and nine[32] == 0.0
    assert all(a <= b for a, b in zip(one, one[1:]))  # 1-valid share only grows ...
    assert one[63] > 0.9 and one[64] == 1.0  # ... to all positions as the rate reaches 65


@pytest.mark.parametrize(
    "image_size,output_stride,expected",
    [
        (128, 8, (16, 16)),
        (129, 8, (17, 17)),
        (513, 16, (33, 33)),
        (512, 32, (16, 16)),
        ((100, 37), 4, (25, 10)),
        (7, 1, (7, 7)),
        ((1, 1), 32, (1, 1)),
    ],
)
def test_feature_size(image_size, output_stride, expected):
    assert feature_size(image_size, output_stride) == expected


@pytest.mark.parametrize("image_size,output_stride", [(129, 8), ((97, 130), 16), (64, 32)])
def test_feature_size_matches_a_real_resnet(image_size, output_stride):
    from segmentation_models_pytorch.encoders import get_encoder

    encoder = get_encoder("resnet18", weights=None, depth=5, output_stride=output_stride).eval()
    h, w = (image_size, image_size) if isinstance(image_size, int) else image_size
    with torch.no_grad():
        last = encoder(torch.zeros(1, 3, h, w))[-1]
    assert tuple(last.shape[-2:]) == feature_size(image_size, output_stride)


@pytest.mark.parametrize("output_stride", [0, 3, 6, 12, -8, 8.0, True, "8"])
def test_feature_size_rejects_output_strides_not_a_power_of_2(output_stride):
    with pytest.raises(ValueError, match="power of 2"):
        feature_size(128, output_stride)


@pytest.mark.parametrize("image_size", [0, -4, (0, 5), (5, 2.5), "128"])
def test_feature_size_rejects_bad_image_sizes(image_size):
    with pytest.raises(ValueError):
        feature_size(image_size, 8)


def test_degenerate_rates():
    assert degenerate_rates([6, 12, 18, 24], 16) == [18, 24]
    assert degenerate_rates([15, 16], 16) == [16]  # r == size: off-centre taps just fall off both sides
    assert degenerate_rates([6, 18, 40], (16, 32)) == [18, 40]
    assert degenerate_rates([6, 18, 40], (32, 16)) == [18, 40]
    assert degenerate_rates([2, 4, 6], (16, 16)) == []


@pytest.mark.parametrize("size", [16, (16, 32), (32, 16), (7, 9)])
def test_degenerate_means_the_conv_loses_taps_everywhere(size):
    h, w = (size, size) if isinstance(size, int) else size
    for rate in range(1, 40):
        shares = valid_tap_shares(size, rate)
        lost_a_row_or_column = shares[9] + shares[6] + shares[4] == 0.0  # <= 3 taps at every position
        assert (rate in degenerate_rates([rate], size)) == lost_a_row_or_column
        assert (rate >= max(h, w)) == (shares[1] == 1.0)


def test_degenerate_message_on_a_square_map():
    assert degenerate_rate_message([2, 4, 6], 16) is None
    message = degenerate_rate_message([6, 12, 18, 24], 16)
    for part in ("degenerate", "[18, 24]", "16x16", "1x1 conv", "rates < 16"):
        assert part in message


def test_degenerate_message_on_a_non_square_map():
    message = degenerate_rate_message([6, 18, 40], (16, 32))
    for part in ("degenerate", "[18, 40]", "16x32", "height", "1x3 conv", "rate >= 32", "1x1 conv", "rates < 16"):
        assert part in message
    message = degenerate_rate_message([6, 18], (32, 16))
    for part in ("[18]", "32x16", "width", "3x1 conv", "rates < 16"):
        assert part in message
    assert "1x1" not in message  # 18 < 32: the vertical taps still see the map


# Receptive fields by hand for resnet18 (r = RF, j = stride of the input): conv1 7x7/2 r 7 j 2; maxpool 3x3/2
# r 7+2*2=11 j 4; layer1, four 3x3: r 11+4*2*4=43; layer2, 3x3/2 then three 3x3: r 43+2*4=51 j 8, 51+3*16=99;
# layer3 at stride 16: 99+2*8=115 j 16, 115+3*32=211; at output stride 8 dilated 2: 99+4*(2*2*8)=227;
# layer4 at stride 32: 211+2*16=243 j 32, 243+3*64=435.
@pytest.mark.parametrize(
    "depth,output_stride,rf,stride",
    [(1, 8, 7, 2), (2, 8, 43, 4), (3, 8, 99, 8), (4, 8, 227, 8), (4, 16, 211, 16), (5, 32, 435, 32)],
)
def test_encoder_receptive_field_by_hand(depth, output_stride, rf, stride):
    cfg = load_config(None, [f"model.encoder_depth={depth}", f"model.output_stride={output_stride}"])
    assert encoder_rf(cfg)[1:] == (rf, stride, feature_size(128, stride))


class LastFeature(torch.nn.Module):
    def __init__(self, encoder):
        super().__init__()
        self.encoder = encoder

    def forward(self, x):
        return self.encoder(x)[-1]


@pytest.mark.parametrize("name,depth", [("resnet18", 3), ("mobilenet_v2", 3)])
def test_encoder_receptive_field_is_the_support_of_the_real_gradient(name, depth):
    # mobilenet_v2 runs one block past its last feature: the walk must leave it out
    from segmentation_models_pytorch.encoders import get_encoder

    torch.manual_seed(0)
    encoder = get_encoder(name, weights=None, depth=depth, output_stride=8)
    rf, _ = analysis.encoder_receptive_field(encoder)
    size = (rf // 32 + 2) * 32  # the window fits inside the image, away from the padding
    erf = analysis.effective_receptive_field(LastFeature(encoder), torch.randn(2, 3, size, size))
    rows, cols = erf.nonzero()
    assert rows.max() - rows.min() + 1 == rf and cols.max() - cols.min() + 1 == rf


def test_pooled_span_by_hand():
    # adaptive pooling of 16 positions to 3 cells: [0,6), [5,11), [10,16); bilinear upsampling mixes 2 cells
    assert analysis.pooled_span(16, 3) == 11
    assert analysis.pooled_span(16, 6) == 6  # cells 0-3, 2-6, 5-8, 8-11, 10-14, 13-16: any two neighbours span 6
    assert analysis.pooled_span(16, 1) == 16
    assert analysis.pooled_span(16, 2) == 16  # the middle positions mix both halves
    assert analysis.pooled_span(16, 8) == 4  # cells of 2; upsampling x2 falls between two cells everywhere inside
    assert analysis.pooled_span(16, 16) == 1  # one position per cell, upsampled to the same size: the identity


def branch_rows(cfg) -> list[dict]:
    """The branches of the config's neck inside its random-init model (what NeckAnalysis reads from a run)."""
    model, rf, stride, size = encoder_rf(cfg)
    return analysis.neck_receptive_fields(model.neck, rf, stride, size)


def test_branch_receptive_fields_by_hand():
    rows = branch_rows(load_config(None, []))  # resnet18 depth 3, stride 8, 16x16 map, rates 2, 4, 6
    assert [(b["branch"], b["rate"], b["rf_px"], b["global"]) for b in rows] == [
        ("1x1", None, 99, False),
        ("rate2", 2, 99 + 2 * 2 * 8, False),
        ("rate4", 4, 99 + 2 * 4 * 8, False),
        ("rate6", 6, 99 + 2 * 6 * 8, False),
        ("image_pool", None, 99 + 15 * 8, True),
    ]
    identity = branch_rows(load_config(None, ["model.neck={name: identity}"]))
    assert [(b["branch"], b["rf_px"], b["taps"]) for b in identity] == [("1x1", 99, None)]
    ppm = branch_rows(load_config(None, ["model.neck={name: ppm, bins: [1, 3, 6]}"]))
    # the 3x3 bottleneck adds 2 positions to every branch: spans 1+2, 16+2, 11+2, 6+2
    assert [(b["branch"], b["rf_px"], b["global"]) for b in ppm] == [
        ("features", 99 + 2 * 8, False),
        ("bin1", 99 + 17 * 8, True),
        ("bin3", 99 + 12 * 8, False),
        ("bin6", 99 + 7 * 8, False),
    ]


def test_branch_tap_shares_on_a_3x3_map_by_hand():
    cfg = load_config(None, ["data.image_size=24", "model.neck.rates=[1,2,3]"])  # stride 8: a 3x3 map
    rows = branch_rows(cfg)
    taps = {b["branch"]: b["taps"] for b in rows if b["taps"]}
    assert taps["rate1"] == pytest.approx({9: 1 / 9, 6: 4 / 9, 4: 4 / 9, 3: 0, 2: 0, 1: 0})
    assert taps["rate2"] == pytest.approx({9: 0, 6: 0, 4: 4 / 9, 3: 0, 2: 4 / 9, 1: 1 / 9})  # corners 2x2, edges 2x1
    assert taps["rate3"] == pytest.approx({9: 0, 6: 0, 4: 0, 3: 0, 2: 0, 1: 1.0})  # rate >= side: centre tap only


@pytest.mark.parametrize(
    "rates,kernel,holes",
    [
        ((1, 2, 3), 3, []),  # dense: every offset in -3..3 is sampled
        ((2, 4, 6), 3, [-5, -3, -1, 1, 3, 5]),  # even rates never sample odd offsets
        ((1, 2, 5), 3, [-4, -3, 3, 4]),  # HDC's sawtooth rates, here side by side
        ((6, 12, 18), 3, [o for o in range(-18, 19) if o % 6]),  # DeepLabv3's rates: 30 of 37 offsets are holes
        ((2,), 5, [-3, -1, 1, 3]),
        ((1,), 1, []),
    ],
)
def test_gridding_holes_of_known_rate_sets(rates, kernel, holes):
    assert analysis.gridding_holes(rates, kernel) == holes


@pytest.mark.parametrize(
    "rates,kernel,match",
    [([0, 2], 3, "positive"), ([], 3, "non-empty"), ([2, 2], 3, "distinct"), ([2], 4, "odd"), ([2], True, "odd")],
)
def test_gridding_holes_rejects_bad_input(rates, kernel, match):
    with pytest.raises(ValueError, match=match):
        analysis.gridding_holes(rates, kernel)


def test_neck_summary_flattens_the_branches():
    cfg = load_config(None, ["model.neck.rates=[6,12,18]"])
    model, rf, stride, size = encoder_rf(cfg)
    summary = analysis.neck_summary(model.neck, rf, stride, size)
    rows = branch_rows(cfg)
    assert summary["rf/encoder"] == rf
    assert {k: v for k, v in summary.items() if k.startswith("rf/") and k != "rf/encoder"} == {
        f"rf/{b['branch']}": b["rf_px"] for b in rows
    }
    assert summary["taps9/rate12"] == valid_tap_shares(16, 12)[9]
    assert summary["gridding_holes"] == len(analysis.gridding_holes([6, 12, 18]))
    assert all(isinstance(v, float) for v in summary.values())


def test_erf_radius_by_hand():
    erf = np.zeros((9, 9))
    erf[4, 4], erf[4, 8] = 1.0, 1.0  # half the mass at the centre, half 4 px to the right
    assert analysis.erf_radius(erf, 0.5) == 0.0 and analysis.erf_radius(erf, 0.9) == 4.0
    erf[0, 0] = 2.0  # now half the mass is sqrt(32) px away, in the corner
    assert analysis.erf_radius(erf, 0.5) == 4.0 and analysis.erf_radius(erf, 0.9) == pytest.approx(32**0.5)


def erf_of(neck: dict, seed: int, images: torch.Tensor) -> np.ndarray:
    from ablate.run.model import SegmentationModel

    torch.manual_seed(seed)
    model = SegmentationModel(encoder="resnet18", classes=7, neck=neck, encoder_depth=3, output_stride=8)
    erf = analysis.effective_receptive_field(model, images)
    assert erf.shape == images.shape[-2:] and erf.min() >= 0 and erf.max() == 1.0
    return erf


def test_erf_of_identity_is_smaller_than_of_aspp_on_the_same_encoder():
    from ablate.data.shapes import make_split

    images = make_split(4, 128, seed=0)[0].float() / 255  # (4, 3, 128, 128): real shapes images
    identity, aspp = (
        {"name": "identity", "out_channels": 16},
        {"name": "aspp", "out_channels": 16, "rates": [2, 4, 6]},
    )  # the full ASPP, pooling too
    r90 = {
        "identity": analysis.erf_radius(erf_of(identity, 0, images)),
        "aspp": analysis.erf_radius(erf_of(aspp, 0, images)),
    }
    control = analysis.erf_radius(erf_of(identity, 1, images))  # the same architecture, another init
    gap, noise = r90["aspp"] - r90["identity"], abs(control - r90["identity"])
    assert gap > 5 * noise and gap > 0, (r90, control)  # the dilated branches widen it, not the init


def analyze(capsys, *argv) -> tuple[int, str, str]:
    """Run `python -m ablate.analyze` in-process: (exit code, stdout, stderr with whitespace collapsed)."""
    from ablate.analyze import main

    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, " ".join(err.split())


def test_cli_json_is_the_library_s_numbers(capsys):
    import json

    code, out, _ = analyze(capsys, "--json", "model.neck.rates=[6,12,18]")
    assert code == 0
    report, cfg = json.loads(out), load_config(None, ["model.neck.rates=[6,12,18]"])
    assert report["branches"] == json.loads(json.dumps(branch_rows(cfg)))
    assert report["gridding_holes"] == analysis.gridding_holes([6, 12, 18])
    model, rf, stride, size = encoder_rf(cfg)
    assert report["summary"] == analysis.neck_summary(model.neck, rf, stride, size)
    assert (report["encoder_rf_px"], report["stride"], report["feature_size"]) == (99, 8, [16, 16])
    assert "[18]" in report["degenerate"] and "erf" not in report


def test_cli_prints_the_tables(capsys):
    code, out, _ = analyze(capsys, "model.neck.rates=[6,12,18]")
    assert code == 0
    for part in (
        "encoder receptive field 99 px",
        "16x16",
        "rate12",
        "291",
        "219*",
        "pools the whole map",
        "±1-5, ±7-11, ±13-17 (30 of 37)",
        "degenerate",
    ):
        assert part in out, part


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A real checkpoint of a tiny one-epoch run (Lightning's ModelCheckpoint, as every run keeps one)."""
    from helpers import TINY

    from ablate.run.fit import run

    root = tmp_path_factory.mktemp("trained")
    here = os.getcwd()
    os.chdir(root)
    try:
        run(load_config(None, [*TINY, "trainer.enable_checkpointing=true"]), root / "run")
    finally:
        os.chdir(here)
    (ckpt,) = (root / "run" / "checkpoints").glob("*.ckpt")
    return ckpt


def test_cli_erf_of_a_checkpoint(checkpoint, capsys):
    import json

    from helpers import TINY
    from PIL import Image

    code, out, _ = analyze(capsys, "--checkpoint", checkpoint, "--out", "trained.png", "--images", 4, "--json")
    assert code == 0
    report = json.loads(out)
    assert report["neck"] == "aspp" and report["image_size"] == 32 and report["erf"]["images"] == 4
    assert 0 < report["erf"]["radius50_px"] <= report["erf"]["radius90_px"]
    trained = np.asarray(Image.open("trained.png"))
    assert trained.shape == (32, 32) and trained.max() == 255
    # the same config at random init (the run's starting weights): the checkpoint's weights must change the ERF
    code, out, _ = analyze(capsys, *TINY, "--out", "init.png", "--images", 4)
    assert code == 0 and "random init" in out
    assert not np.array_equal(trained, np.asarray(Image.open("init.png")))


def test_cli_checkpoint_errors(checkpoint, capsys):
    from helpers import TINY

    (tmp := checkpoint.parent.parent / "bad").mkdir(exist_ok=True)
    (tmp / "text.ckpt").write_text("not a checkpoint")
    torch.save({"state_dict": {}}, tmp / "bare.ckpt")
    ckpt = torch.load(checkpoint, weights_only=True)
    ckpt["state_dict"] = {k: v for k, v in ckpt["state_dict"].items() if ".neck." not in k}
    torch.save(ckpt, tmp / "cut.ckpt")
    for argv, message in [
        (["--checkpoint", tmp / "missing.ckpt"], "does not exist"),
        (["--checkpoint", tmp / "text.ckpt"], "cannot be read as a PyTorch checkpoint"),
        (["--checkpoint", tmp / "bare.ckpt"], "is not a checkpoint of an ablate run"),
        (["--checkpoint", tmp / "cut.ckpt"], "weights do not fit the model its config describes"),
        (
            [*TINY, "model.neck.rates=[2,4,6]", "--checkpoint", checkpoint],
            "is from a different model (model.neck.rates: checkpoint [1, 2, 3], config [2, 4, 6])",
        ),
    ]:
        code, out, err = analyze(capsys, *argv)
        assert (code, out) == (2, "") and message in err, (argv, err)


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--images", "0"], "--images must be >= 1; got 0"),
        (["model.neck.ratez=[1]"], "did you mean model.neck.rates"),
        (["missing.yaml"], "does not exist"),
    ],
)
def test_cli_rejects_bad_input(capsys, argv, message):
    code, out, err = analyze(capsys, *argv)
    assert (code, out) == (2, "") and message in err, err
