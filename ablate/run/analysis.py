"""Receptive fields of a neck: valid 3x3 taps vs rate (DeepLabv3, Chen et al. 2017, Fig. 4), theoretical and
effective receptive fields (Luo et al. 2016) and gridding holes (HDC, Wang et al. 2018)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

TAP_COUNTS = (9, 6, 4, 3, 2, 1)  # possible valid taps of a 3x3 kernel: (1|2|3 rows) x (1|2|3 columns)


def _height_width(size) -> tuple[int, int]:
    """`size` as (H, W); an int means a square map."""
    sides = (size, size) if isinstance(size, int) else tuple(size) if isinstance(size, (tuple, list)) else ()
    if len(sides) != 2 or any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in sides):
        raise ValueError(f"a map size must be a positive int or (H, W) of positive ints; got {size!r}")
    return sides


def feature_size(image_size, output_stride: int) -> tuple[int, int]:
    """(H, W) of the encoder's feature map: each stride-2 stage maps a side s to ceil(s / 2)."""
    if (
        isinstance(output_stride, bool)
        or not isinstance(output_stride, int)
        or output_stride < 1
        or output_stride & (output_stride - 1)
    ):
        raise ValueError(f"output_stride must be a power of 2 (1, 2, 4, 8, 16, 32, ...); got {output_stride!r}")
    h, w = _height_width(image_size)
    for _ in range(output_stride.bit_length() - 1):  # log2(output_stride) stride-2 stages
        h, w = -(-h // 2), -(-w // 2)
    return h, w


def _axis_counts(n: int, rate: int) -> Counter:
    """How many positions along an axis of length n see 1, 2 or 3 of the offsets {-rate, 0, +rate} inside."""
    return Counter(1 + (i - rate >= 0) + (i + rate < n) for i in range(n))


def valid_tap_shares(size, rate: int) -> dict[int, float]:
    """Share of output positions of a 3x3 conv (dilation = padding = `rate`) with 9, 6, 4, 3, 2, 1 taps in the map."""
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
        return (
            f"{head}: a 3x3 conv at rate >= {h} only sees padding outside its centre tap "
            f"(a 1x1 conv in disguise); use rates < {h}"
        )
    short, long_ = min(h, w), max(h, w)
    axis, kernel = ("height", "1x3") if h < w else ("width", "3x1")
    text = (
        f"{head} (HxW): a 3x3 conv at rate >= {short} only sees padding in its off-centre taps "
        f"along the {axis} (a {kernel} conv in disguise)"
    )
    if max(bad) >= long_:
        text += f", and at rate >= {long_} it only sees padding outside its centre tap (a 1x1 conv in disguise)"
    return f"{text}; use rates < {short}"


def config_rate_message(cfg) -> str | None:
    """The degenerate-rate warning for a run config's neck (None when its rates are fine or it has none)."""
    rates = cfg.model.neck.get("rates")
    if rates is None:
        return None
    from ablate.necks.aspp import check_rates

    stride = min(cfg.model.output_stride, 2**cfg.model.encoder_depth)  # stages deeper than stride are dilated
    return degenerate_rate_message(check_rates(rates), feature_size(cfg.data.image_size, stride))


def _window(module: nn.Module) -> tuple[int, int] | None:
    """(kernel, dilation) along the height of a conv or pooling window; None for any other module."""
    first = lambda v: v[0] if isinstance(v, (tuple, list)) else v  # noqa: E731
    if isinstance(module, (nn.Conv2d, nn.MaxPool2d)):
        return first(module.kernel_size), first(module.dilation)
    if isinstance(module, nn.AvgPool2d):
        return first(module.kernel_size), 1
    return None


def encoder_receptive_field(encoder: nn.Module, probe: int = 64) -> tuple[int, int]:
    """(theoretical receptive field in input pixels, stride) of the encoder's last feature."""
    return _receptive_field(encoder, lambda x: encoder(x)[-1], probe)


def input_receptive_field(model: nn.Module, part: nn.Module, probe: int = 64) -> tuple[int, int]:
    """(theoretical receptive field in input pixels, stride) of the input `part` (a neck) receives when `model`
    runs on a (1, 3, probe, probe) image: what the layers before it (the encoder) see, wherever `part` sits."""
    seen = []
    handle = part.register_forward_pre_hook(lambda module, args: seen.append(args[0]) if not seen else None)
    try:
        return _receptive_field(model, lambda x: (model(x), seen[0])[1], probe)
    finally:
        handle.remove()


def _receptive_field(model: nn.Module, run, probe: int) -> tuple[int, int]:
    """Runs `run` (a part of `model`, in eval mode) on a probe image, notes each conv and pooling window that ran
    (dilated where the output stride made it so) and what it adds: (k - 1) x dilation x the stride of its input.
    The receptive field is 1 + the largest sum along any path of the autograd graph from the tensor `run` returns
    back to the image, so layers that do not feed it, 1x1 shortcuts and parallel paths count as they should.
    Channel gates that pool the whole map (squeeze-excitation) rescale channels and are not counted."""
    adds = {}  # autograd node of a window's output -> pixels it adds to the receptive field

    def hook(module, inputs, output):
        kernel, dilation = _window(module)
        adds[output.grad_fn] = (kernel - 1) * dilation * (probe // inputs[0].shape[-2])

    handles = [m.register_forward_hook(hook) for m in model.modules() if _window(m)]
    was_training = model.training
    device = next(model.parameters()).device
    try:
        with torch.inference_mode(False), torch.enable_grad():
            model.eval()
            last = run(torch.zeros(1, 3, probe, probe, device=device, requires_grad=True))  # (1, C, probe/s, probe/s)
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    return 1 + _longest_path(last.grad_fn, adds), probe // last.shape[-2]


def _longest_path(root, weight: dict) -> int:
    """Largest sum of `weight` over the nodes of any path from autograd node `root` down to the leaves."""
    best, stack = {}, [(root, False)]
    while stack:
        node, expanded = stack.pop()
        if node is None or node in best:
            continue
        children = [child for child, _ in node.next_functions if child is not None]
        if expanded:
            best[node] = weight.get(node, 0) + max((best[c] for c in children), default=0)
        else:
            stack += [(node, True)] + [(c, False) for c in children if c not in best]
    return best.get(root, 0)


def pooled_span(side: int, bins: int) -> int:
    """Most feature positions along a side that one output of adaptive-average-pool to `bins` cells and
    bilinear upsampling back (PSPNet's PPM, ASPP's image pooling at bins=1) depends on."""

    def pool_up(x):  # (1, 1, side, 1) -> (1, 1, side, 1)
        return F.interpolate(F.adaptive_avg_pool2d(x, (bins, 1)), size=(side, 1), mode="bilinear", align_corners=False)

    jacobian = torch.autograd.functional.jacobian(pool_up, torch.ones(1, 1, side, 1)).reshape(side, side)
    return max(int(row.nonzero().max() - row.nonzero().min()) + 1 for row in jacobian != 0)


def neck_branches(neck: nn.Module, side: int, branches=None) -> list[tuple[str, int | None, int, bool]]:
    """(branch, rate, feature positions it spans through the neck, sees the whole map) for each branch of an
    ablate neck (ASPP, PPM, Identity) on a map whose longer side is `side`, or of any other module from the
    `branches` its structure shows (`ablate.run.neck_structure.Branches`); ValueError for any other module."""
    from ablate.necks import ASPP, PPM, Identity
    from ablate.necks.aspp import ImagePooling
    from ablate.run.neck_structure import Branches

    if isinstance(neck, Identity):
        return [("1x1", None, 1, False)]
    if isinstance(neck, ASPP):
        return Branches(neck.rates, True, isinstance(neck.convs[-1], ImagePooling)).rows(side)
    if isinstance(neck, PPM):  # the 3x3 bottleneck after the concat adds 2 positions to every branch
        bins = [stage[0].output_size for stage in neck.stages]  # AdaptiveAvgPool2d(b)
        return [("features", None, 3, False)] + [(f"bin{b}", None, pooled_span(side, b) + 2, b == 1) for b in bins]
    if branches is not None:  # an ASPP-like module found by structure
        return branches.rows(side)
    raise ValueError(f"receptive-field analysis knows ASPP, PPM, Identity and ASPP-likes; not {type(neck).__name__}")


def neck_receptive_fields(neck: nn.Module, encoder_rf: int, stride: int, size, branches=None) -> list[dict]:
    """One dict per branch of `neck` (`branches`: what its structure shows, for a module not of ablate's own):
    `branch`, `rate` (None if not atrous), `rf_px` (theoretical receptive field in input pixels through that branch
    to the neck's output, from the `encoder_rf` and `stride` of its input), `global` (pools the whole map) and
    `taps` (valid_tap_shares on its (H, W) input map `size` for atrous 3x3 branches, else None)."""
    size = _height_width(size)
    return [
        {
            "branch": branch,
            "rate": rate,
            "rf_px": encoder_rf + (span - 1) * stride,
            "global": whole,
            "taps": valid_tap_shares(size, rate) if rate else None,
        }
        for branch, rate, span, whole in neck_branches(neck, max(size), branches)
    ]


def gridding_holes(rates: Iterable[int], kernel: int = 3) -> list[int]:
    """Offsets (1-D, in feature positions) within the largest branch's window that no branch samples:
    the gridding of Hybrid Dilated Convolution (Wang et al. 2018) for parallel kernel x kernel branches."""
    from ablate.necks.aspp import check_rates

    rates = check_rates(list(rates))
    if isinstance(kernel, bool) or not isinstance(kernel, int) or kernel < 1 or kernel % 2 == 0:
        raise ValueError(f"kernel must be a positive odd int (1, 3, 5, ...); got {kernel!r}")
    half = kernel // 2
    sampled = {i * r for r in rates for i in range(-half, half + 1)}
    return [o for o in range(-half * max(rates), half * max(rates) + 1) if o not in sampled]


def neck_summary(neck: nn.Module, encoder_rf: int, stride: int, size, branches=None) -> dict[str, float]:
    """Flat numbers for W&B summaries and reports: `rf/encoder` and `rf/<branch>` (px), `feature_px` (the longer
    side of the neck's input map `size`), `taps9/<branch>` (share of positions where an atrous branch sees all 9
    taps), `gridding_holes` (how many offsets no branch samples); `branches` are what the structure of a module
    not of ablate's own shows. Empty for a neck the analysis does not know, so runs and reports of it go on."""
    try:
        rows = neck_receptive_fields(neck, encoder_rf, stride, size, branches)
    except ValueError:
        return {}
    out = {"rf/encoder": float(encoder_rf), "feature_px": float(max(_height_width(size)))}
    for b in rows:
        out[f"rf/{b['branch']}"] = float(b["rf_px"])
        if b["taps"] is not None:
            out[f"taps9/{b['branch']}"] = b["taps"][9]
    rates = [b["rate"] for b in rows if b["rate"]]
    out["gridding_holes"] = float(len(gridding_holes(rates))) if rates else 0.0
    return out


def effective_receptive_field(module: nn.Module, images: torch.Tensor, chunk: int = 8) -> np.ndarray:
    """Luo et al. 2016: |d(centre output, summed over channels) / d(input)|, summed over the input channels,
    averaged over `images` (N, 3, H, W) and scaled to a maximum of 1 -> (H, W) float array in [0, 1].
    `module` maps (B, 3, H, W) to (B, C, h, w); it runs in eval mode, so images do not mix through BatchNorm."""
    if images.ndim != 4 or images.shape[0] == 0:
        raise ValueError(f"images must be a non-empty (N, C, H, W) batch; got shape {tuple(images.shape)}")
    was_training = module.training
    module.eval()
    total = torch.zeros(images.shape[-2:], dtype=torch.float64)
    try:
        for batch in images.split(chunk):
            x = batch.detach().float().requires_grad_(True)
            out = module(x)  # (B, C, h, w)
            if not isinstance(out, torch.Tensor) or out.ndim != 4:
                raise ValueError(f"the module returned {type(out).__name__} {tuple(getattr(out, 'shape', ()))}")
            centre = out[..., out.shape[-2] // 2, out.shape[-1] // 2].sum()
            (grad,) = torch.autograd.grad(centre, x)
            total += grad.abs().sum(1).sum(0).double().cpu()  # the model may be on a GPU
    finally:
        module.train(was_training)
    peak = total.max()
    return (total / peak if peak > 0 else total).numpy()


def val_images(datamodule, size: int, n: int) -> torch.Tensor:
    """The first `n` validation images (N, 3, S, S), centre-cropped to S = min(`size`, their smallest side)."""
    images = []
    for x, _ in datamodule.val_dataloader():
        images += list(x[: n - len(images)])
        if len(images) == n:
            break
    if not images:
        raise ValueError("the data has no validation images")
    side = min(size, *(min(image.shape[-2:]) for image in images))
    crops = [
        image[:, (image.shape[-2] - side) // 2 :, (image.shape[-1] - side) // 2 :][:, :side, :side] for image in images
    ]
    return torch.stack(crops)


def erf_image(erf: np.ndarray):
    """An ERF map in [0, 1] as a grayscale PIL image (peak = 255), for erf.png and W&B."""
    from PIL import Image

    return Image.fromarray(np.round(erf * 255).astype(np.uint8), mode="L")


def erf_radius(erf: np.ndarray, share: float = 0.9) -> float:
    """Smallest distance (px) from the centre pixel (H // 2, W // 2) within which `share` of the ERF's mass lies."""
    if not 0 < share <= 1:
        raise ValueError(f"share must be in (0, 1]; got {share!r}")
    h, w = erf.shape
    yy, xx = np.mgrid[0:h, 0:w]
    distance = np.hypot(yy - h // 2, xx - w // 2).ravel()
    order = np.argsort(distance, kind="stable")
    mass = np.cumsum(erf.ravel()[order])
    if mass[-1] <= 0:
        return 0.0
    return float(distance[order][np.searchsorted(mass, share * mass[-1] * (1 - 1e-12))])
