"""Tests of ablate.analysis: valid 3x3 taps vs atrous rate (DeepLabv3, Chen et al. 2017, Fig. 4)."""
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from collections import Counter

import pytest
import torch

from ablate.analysis import degenerate_rate_message, degenerate_rates, feature_size, valid_tap_shares

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


@pytest.mark.parametrize("h,w,rate", [(3, 3, 1), (3, 3, 2), (5, 7, 2), (7, 5, 3), (4, 9, 4), (1, 6, 2),
                                      (10, 10, 12), (16, 16, 15), (65, 65, 6), (65, 65, 33), (13, 40, 9)])
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


@pytest.mark.parametrize("image_size,output_stride,expected", [
    (128, 8, (16, 16)), (129, 8, (17, 17)), (513, 16, (33, 33)), (512, 32, (16, 16)),
    ((100, 37), 4, (25, 10)), (7, 1, (7, 7)), ((1, 1), 32, (1, 1))])
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
