"""Receptive-field checks for atrous convs: valid 3x3 taps vs rate, as in DeepLabv3 (Chen et al. 2017) Fig. 4."""
from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

TAP_COUNTS = (9, 6, 4, 3, 2, 1)  # possible valid taps of a 3x3 kernel: (1|2|3 rows) x (1|2|3 columns)


def _height_width(size) -> tuple[int, int]:
    """`size` as (H, W); an int means a square map."""
    sides = (size, size) if isinstance(size, int) else tuple(size) if isinstance(size, (tuple, list)) else ()
    if len(sides) != 2 or any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in sides):
        raise ValueError(f"a map size must be a positive int or (H, W) of positive ints; got {size!r}")
    return sides


def feature_size(image_size, output_stride: int) -> tuple[int, int]:
    """(H, W) of the encoder's feature map: each stride-2 stage maps a side s to ceil(s / 2)."""
    if isinstance(output_stride, bool) or not isinstance(output_stride, int) or output_stride < 1 \
            or output_stride & (output_stride - 1):
        raise ValueError(f"output_stride must be a power of 2 (1, 2, 4, 8, 16, 32, ...); got {output_stride!r}")
    h, w = _height_width(image_size)
    for _ in range(output_stride.bit_length() - 1):  # log2(output_stride) stride-2 stages
        h, w = -(-h // 2), -(-w // 2)
    return h, w


def _axis_counts(n: int, rate: int) -> Counter:
    """How many positions along an axis of length n see 1, 2 or 3 of the offsets {-rate, 0, +rate} inside."""
    return Counter(1 + (i - rate >= 0) + (i + rate < n) for i in range(n))


def valid_tap_shares(size, rate: int) -> dict[int, float]:
    """Share of output positions of a 3x3 conv (dilation = padding = `rate`) with 9, 6, 4, 3, 2, 1 taps inside the map."""
    if isinstance(rate, bool) or not isinstance(rate, int) or rate < 1:
        raise ValueError(f"rate must be a positive int; got {rate!r}")
    h, w = _height_width(size)
    rows, cols = _axis_counts(h, rate), _axis_counts(w, rate)
    counts = Counter()
    for a, n_a in rows.items():  # valid taps = valid row offsets x valid column offsets
        for b, n_b in cols.items():
            counts[a * b] += n_a * n_b
    return {taps: counts[taps] / (h * w) for taps in TAP_COUNTS}


def degenerate_rates(rates: Iterable[int], size) -> list[int]:
    """Rates r >= H or >= W: their off-centre taps in that direction always fall in the zero padding."""
    h, w = _height_width(size)
    return [r for r in rates if r >= h or r >= w]


def degenerate_rate_message(rates: Iterable[int], size) -> str | None:
    """A warning naming the degenerate rates and the feature-map size, or None when every rate is fine."""
    h, w = _height_width(size)
    bad = degenerate_rates(rates, size)
    if not bad:
        return None
    head = f"ASPP rates {bad} are degenerate on the {h}x{w} feature map"
    if h == w:
        return (f"{head}: a 3x3 conv at rate >= {h} only sees padding outside its centre tap "
                f"(a 1x1 conv in disguise); use rates < {h}")
    short, long_ = min(h, w), max(h, w)
    axis, kernel = ("height", "1x3") if h < w else ("width", "3x1")
    text = (f"{head} (HxW): a 3x3 conv at rate >= {short} only sees padding in its off-centre taps "
            f"along the {axis} (a {kernel} conv in disguise)")
    if max(bad) >= long_:
        text += f", and at rate >= {long_} it only sees padding outside its centre tap (a 1x1 conv in disguise)"
    return f"{text}; use rates < {short}"


def config_rate_message(cfg) -> str | None:
    """The degenerate-rate warning for a run config's neck (None when its rates are fine or it has none)."""
    rates = cfg.model.neck.get("rates")
    if rates is None:
        return None
    from ablate.necks.aspp import check_rates

    stride = min(cfg.model.output_stride, 2 ** cfg.model.encoder_depth)  # stages deeper than stride are dilated
    return degenerate_rate_message(check_rates(rates), feature_size(cfg.data.image_size, stride))
