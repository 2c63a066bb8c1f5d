"""ASPP-like modules found by their structure (DeepLabv3's parallel atrous branches, Chen et al. 2017): 3x3 convs of
different dilations that read the same tensor, seen by running the model once with hooks."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
from torch.overrides import TorchFunctionMode

PROBE = 64  # side of the (1, 3, S, S) zeros a model runs on when no example input is given


@dataclass(frozen=True)
class Branches:
    """The parallel branches of an ASPP-like module, all reading one tensor: the dilation rates of its 3x3 convs
    (distinct, in the order they run), whether a 1x1 conv and a global pooling (image pooling) read it too."""

    rates: tuple[int, ...]
    pointwise: bool = False
    image_pool: bool = False

    def rows(self, side: int) -> list[tuple[str, int | None, int, bool]]:
        """`analysis.neck_branches` rows on a map whose longer side is `side`: (branch, rate, feature positions it
        spans, sees the whole map) for the 1x1 branch, each atrous 3x3 (2r + 1) and image pooling (the whole side).
        The layers after the fusion count as a 1x1 projection (they add nothing), as in DeepLabv3."""
        rows = [("1x1", None, 1, False)] if self.pointwise else []
        rows += [(f"rate{r}", r, 2 * r + 1, False) for r in self.rates]
        return rows + ([("image_pool", None, side, True)] if self.image_pool else [])


@dataclass(frozen=True)
class ConvCall:
    """One Conv2d that ran: its dotted path, kernel (H, W), dilation along the height, and the tensor it read."""

    path: str
    kernel: tuple[int, int]
    dilation: int
    source: tuple[int, int]


def inside(path: str, outer: str) -> bool:
    """Whether module `path` is `outer` or sits inside it ("" is the root, which holds everything)."""
    return not outer or path == outer or path.startswith(f"{outer}.")


class Trace:
    """What one forward pass did: each Conv2d that ran and the tensor it read, each global pooling (a map
    (B, C, H, W) with H x W > 1 reduced to B x C values) with the module it ran in and the tensor it read, the
    paths of the modules called and the (H, W) of the map each first received. A tensor is known by (id, version):
    every tensor read is kept alive until the trace is dropped, so an id is never reused, and an in-place change
    makes it another tensor."""

    def __init__(self):
        self.convs: list[ConvCall] = []
        self.pools: list[tuple[str, tuple[int, int]]] = []  # (module running, tensor pooled)
        self.called: set[str] = set()
        self.sizes: dict[str, tuple[int, int]] = {}  # path -> (H, W) of the first map the module received
        self.stack: list[str] = []
        self._kept: list[torch.Tensor] = []

    def source(self, x: torch.Tensor) -> tuple[int, int]:
        """(id, version) of tensor `x`, which is kept alive so that its id stays its own."""
        self._kept.append(x)
        return id(x), x._version

    def enter(self, path: str):
        """A forward pre-hook for the module at `path`: notes the call, and the input of a Conv2d."""

        def hook(module: nn.Module, args) -> None:
            self.called.add(path)
            self.stack.append(path)
            if args and isinstance(args[0], torch.Tensor) and args[0].ndim >= 3:
                self.sizes.setdefault(path, tuple(args[0].shape[-2:]))
            if isinstance(module, nn.Conv2d) and args and isinstance(args[0], torch.Tensor):
                kernel = tuple(module.kernel_size)
                self.convs.append(ConvCall(path, kernel, module.dilation[0], self.source(args[0])))

        return hook

    def leave(self, module: nn.Module, args, output) -> None:
        """A forward hook: the module has returned."""
        self.stack.pop()

    def atrous_groups(self, within: str = "") -> list[list[ConvCall]]:
        """The 3x3 convs inside module `within`, grouped by the tensor they read (parallel branches), in run order."""
        groups: dict[tuple[int, int], list[ConvCall]] = {}
        for conv in self.convs:
            if conv.kernel == (3, 3) and inside(conv.path, within):
                groups.setdefault(conv.source, []).append(conv)
        return list(groups.values())

    def holders(self, group: list[ConvCall]) -> list[str]:
        """The innermost modules that ran and hold >= 2 distinct dilations of `group` (3x3 convs reading one tensor):
        a ModuleList never runs, its owner does; a 3x3 conv elsewhere that reads the same tensor (a second head)
        does not widen the module found."""
        ancestors = {".".join(c.path.split(".")[:i]) for c in group for i in range(len(c.path.split(".")) + 1)}
        holding = [
            path
            for path in ancestors
            if path in self.called and len({c.dilation for c in group if inside(c.path, path)}) >= 2
        ]
        return [p for p in holding if not any(q != p and inside(q, p) for q in holding)]

    def branches(self, group: list[ConvCall], within: str) -> Branches:
        """The Branches of `group` (3x3 convs reading one tensor) inside module `within`: with the 1x1 convs and
        global poolings there that read that tensor too."""
        source = group[0].source
        rates = tuple(dict.fromkeys(conv.dilation for conv in group if inside(conv.path, within)))
        pointwise = any(c.kernel == (1, 1) and c.source == source and inside(c.path, within) for c in self.convs)
        pooled = any(s == source and inside(p, within) for p, s in self.pools)
        return Branches(rates, pointwise, pooled)

    def aspp_like(self) -> dict[str, Branches]:
        """Path -> Branches of every ASPP-like module: an innermost module holding >= 2 parallel 3x3 convs (reading
        one tensor) of distinct dilations; "" when that is the traced module itself."""
        found: dict[str, Branches] = {}
        for group in self.atrous_groups():
            for path in self.holders(group):
                branches = self.branches(group, path)
                if path not in found or len(branches.rates) > len(found[path].rates):
                    found[path] = branches
        return found

    def branches_in(self, path: str) -> Branches | None:
        """The Branches of the module at `path` (one named or marked a neck): its parallel 3x3 convs with the most
        distinct dilations, when >= 2 branches (3x3, 1x1 or pooling) read one tensor; None otherwise."""
        best = None
        for group in self.atrous_groups(path):
            branches = self.branches(group, path)
            if len(group) + branches.pointwise + branches.image_pool < 2:
                continue
            if best is None or len(branches.rates) > len(best.rates):
                best = branches
        return best


class _GlobalPools(TorchFunctionMode):
    """Notes every torch function that reduces a (B, C, H, W) map, H x W > 1, to B x C values (adaptive pooling to
    1x1, a mean over H and W, ...) in the module running, so functional image pooling is seen as nn's is."""

    def __init__(self, trace: Trace):
        super().__init__()
        self.trace = trace

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        x = args[0] if args else None
        if _pools_globally(x, out):
            self.trace.pools.append((self.trace.stack[-1] if self.trace.stack else "", self.trace.source(x)))
        return out


def _pools_globally(x, out) -> bool:
    """Whether `out` is one value per sample and channel of the map `x` (B, C, H, W) with H x W > 1."""
    if not (isinstance(x, torch.Tensor) and isinstance(out, torch.Tensor)) or x.ndim != 4 or out.ndim < 2:
        return False
    b, c, h, w = x.shape
    return h * w > 1 and tuple(out.shape[:2]) == (b, c) and out.numel() == b * c


def example_like(model: nn.Module, example: torch.Tensor | None = None) -> tuple[tuple, torch.dtype, torch.device]:
    """(shape (1, C, H, W), dtype, device) of the zeros a model is traced on: those of one image of `example`, else
    of the model's `example_input_array` (a LightningModule's), else a (1, 3, 64, 64) image in its parameters' dtype."""
    example = example if isinstance(example, torch.Tensor) else getattr(model, "example_input_array", None)
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    if isinstance(example, torch.Tensor) and example.ndim >= 2:
        return (1, *example.shape[1:]), example.dtype, device
    dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
    return (1, 3, PROBE, PROBE), dtype, device


def trace(model: nn.Module, example: torch.Tensor | None = None) -> Trace:
    """Runs `model` once, in eval mode without gradients, on zeros shaped as one image of `example` (see
    `example_like`), noting its convs, global poolings and module calls; the model's mode is restored."""
    seen, handles = Trace(), []
    for path, module in model.named_modules():
        handles += [module.register_forward_pre_hook(seen.enter(path)), module.register_forward_hook(seen.leave)]
    shape, dtype, device = example_like(model, example)
    was_training = model.training
    try:
        with torch.inference_mode(False), torch.no_grad():
            x = torch.zeros(shape, dtype=dtype, device=device)  # (1, C, H, W), not an inference tensor
            model.eval()
            with _GlobalPools(seen):
                model(x)
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    return seen


def recognise(module: nn.Module, example: torch.Tensor | None = None) -> Branches | None:
    """The Branches of `module` when it is ASPP-like itself (>= 2 parallel 3x3 convs of distinct dilations reading
    one tensor, held by no smaller module), else None; `example` is its input (only the shape matters)."""
    return trace(module, example).aspp_like().get("")
