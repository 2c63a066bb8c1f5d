"""Tests of the neck registry and necks: ASPP (DeepLabv3, Chen et al. 2017) vs torchvision, smp and seed 000."""

import inspect
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from segmentation_models_pytorch.decoders.deeplabv3.decoder import ASPP as SmpASPP
from torch.testing import assert_close
from torchvision.models.segmentation.deeplabv3 import ASPP as TorchvisionASPP

import ablate.necks as necks
import ablate.necks.registry as neck_registry  # its dict a test may copy
from ablate.necks import create_neck, list_necks, neck_options, register_neck
from ablate.necks.aspp import ImagePooling

C_IN, C_OUT = 8, 8  # ppm needs in_channels >= its 4 bins
SIZES = [(1, 1), (1, 5), (2, 3), (7, 7), (9, 4)]  # 1x1, odd, non-square
NORM_LAYERS = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm)


class SeedASPP(nn.Module):
    """Seed article 000's BN-free ASPP, typed as the article gives it (F.interpolate for the deprecated F.upsample)."""

    def __init__(self, in_channel=512, depth=256):
        super().__init__()
        self.mean = nn.AdaptiveAvgPool2d((1, 1))  # (1,1)means ouput_dim
        self.conv = nn.Conv2d(in_channel, depth, 1, 1)
        self.atrous_block1 = nn.Conv2d(in_channel, depth, 1, 1)
        self.atrous_block6 = nn.Conv2d(in_channel, depth, 3, 1, padding=6, dilation=6)
        self.atrous_block12 = nn.Conv2d(in_channel, depth, 3, 1, padding=12, dilation=12)
        self.atrous_block18 = nn.Conv2d(in_channel, depth, 3, 1, padding=18, dilation=18)
        self.conv_1x1_output = nn.Conv2d(depth * 5, depth, 1, 1)

    def forward(self, x):
        size = x.shape[2:]
        image_features = self.mean(x)
        image_features = self.conv(image_features)
        image_features = F.interpolate(image_features, size=size, mode="bilinear")
        atrous_block1 = self.atrous_block1(x)
        atrous_block6 = self.atrous_block6(x)
        atrous_block12 = self.atrous_block12(x)
        atrous_block18 = self.atrous_block18(x)
        net = self.conv_1x1_output(
            torch.cat([image_features, atrous_block1, atrous_block6, atrous_block12, atrous_block18], dim=1)
        )
        return net


def small(name: str) -> dict:
    """Options that keep neck `name` tiny, where it takes them."""
    return {"out_channels": C_OUT} if "out_channels" in neck_options(name) else {}


def aspp(**options) -> nn.Module:
    """A tiny ASPP neck (dropout off unless asked)."""
    return create_neck("aspp", C_IN, **{"out_channels": C_OUT, "dropout": 0.0, **options})


@torch.no_grad()
def randomize_(module: nn.Module, seed: int = 0) -> nn.Module:
    """Random weights, biases and BN statistics, so equal outputs are not an accident of the default init."""
    torch.manual_seed(seed)
    for key, tensor in module.state_dict().items():
        if key.endswith("running_var"):
            tensor.uniform_(0.5, 2.0)
        elif tensor.is_floating_point():
            tensor.normal_(0.0, 0.5)
    return module


def run_both(ours: nn.Module, ref: nn.Module, x: torch.Tensor, train: bool):
    """Outputs of both modules in train or eval mode, each from the same RNG state (same dropout mask)."""
    ours.train(train), ref.train(train)
    torch.manual_seed(123)
    y_ours = ours(x)
    torch.manual_seed(123)
    return y_ours, ref(x)


def far_region_moves_centre(neck: nn.Module) -> bool:
    """Whether changing the top-left 3x3 corner of a 12x12 map changes the output's bottom-right 6x6."""
    x = torch.randn(1, C_IN, 12, 12, generator=torch.Generator().manual_seed(0))
    x_far = x.clone()
    x_far[..., :3, :3] += 5.0
    with torch.no_grad():
        y, y_far = neck.eval()(x), neck(x_far)
    assert not torch.allclose(y[..., :3, :3], y_far[..., :3, :3])  # the changed pixels themselves do move
    return not torch.allclose(y[..., 6:, 6:], y_far[..., 6:, 6:])


# --- registry, over every registered neck -------------------------------------------------------


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("name", list_necks())
def test_output_keeps_spatial_size(name, size):
    neck = create_neck(name, C_IN, **small(name)).eval()
    with torch.no_grad():
        y = neck(torch.randn(2, C_IN, *size))
    assert y.shape == (2, neck.out_channels, *size)


@pytest.mark.parametrize("name", list_necks())
def test_out_channels_is_set(name):
    neck = create_neck(name, C_IN, **small(name))
    assert isinstance(neck.out_channels, int)
    if "out_channels" in neck_options(name):
        assert neck.out_channels == C_OUT


@pytest.mark.parametrize("name", list_necks())
def test_unknown_option_raises_naming_it(name):
    with pytest.raises(ValueError, match="no_such_option"):
        create_neck(name, C_IN, no_such_option=1)


def test_unknown_neck_raises_listing_registered_necks():
    with pytest.raises(ValueError, match="no_such_neck") as err:
        create_neck("no_such_neck", C_IN)
    assert all(name in str(err.value) for name in list_necks())


def test_duplicate_registration_raises(monkeypatch):
    monkeypatch.setattr(neck_registry, "_NECKS", dict(neck_registry._NECKS))  # undone after the test

    def aspp(in_channels, *, out_channels=4):
        return nn.Identity()

    with pytest.raises(ValueError, match="already registered"):
        register_neck(aspp)

    def tiny_test_neck(in_channels, *, out_channels=4):
        neck = nn.Conv2d(in_channels, out_channels, 1)
        neck.out_channels = out_channels
        return neck

    register_neck(tiny_test_neck)
    assert create_neck("tiny_test_neck", C_IN, out_channels=3).out_channels == 3
    with pytest.raises(ValueError, match="already registered"):
        register_neck(tiny_test_neck)


@pytest.fixture
def registry(monkeypatch):
    """A copy of the registry for the test to register into (undone after the test)."""
    monkeypatch.setattr(neck_registry, "_NECKS", dict(neck_registry._NECKS))


def test_a_neck_written_as_users_write_functions_takes_its_options(registry):
    @register_neck
    def my_neck(in_channels, out_channels=32, norm: str = "bn"):  # ordinary parameters, not keyword-only
        neck = nn.Conv2d(in_channels, out_channels, 1, bias=norm == "none")
        neck.out_channels = out_channels
        return neck

    assert neck_options("my_neck") == {"out_channels": 32, "norm": "bn"}
    assert create_neck("my_neck", C_IN).out_channels == 32
    assert create_neck("my_neck", C_IN, out_channels=5, norm="none").out_channels == 5
    with pytest.raises(
        ValueError,
        match=r"'out_chanels' \(did you mean 'out_channels'\?\); valid options: "
        r"out_channels, norm",
    ):
        create_neck("my_neck", C_IN, out_chanels=5)


def test_a_neck_class_registers_under_its_name_with_its_init_options(registry):
    @register_neck
    class MyNeck(nn.Conv2d):
        def __init__(self, in_channels: int, *, out_channels: int = 4):
            super().__init__(in_channels, out_channels, 1)

    assert neck_options("MyNeck") == {"out_channels": 4}
    assert isinstance(create_neck("MyNeck", C_IN, out_channels=3), MyNeck)


def test_a_neck_without_options_says_it_takes_none(registry):
    @register_neck
    def plain(in_channels):
        neck = nn.Identity()
        neck.out_channels = in_channels
        return neck

    assert neck_options("plain") == {}
    with pytest.raises(ValueError, match="neck 'plain' has no option 'out_channels'; it takes no options") as err:
        create_neck("plain", C_IN, out_channels=3)
    assert "valid options" not in str(err.value)


def no_in_channels(channels, out_channels=4): ...
def kwargs_only(in_channels, **kwargs): ...
def kwargs_to_a_plain_module(in_channels, **kwargs) -> nn.Module: ...
def option_without_default(in_channels, out_channels): ...
def keyword_option_without_default(in_channels, *, out_channels): ...
def star_args(in_channels, *sizes): ...
def nothing(): ...


@pytest.mark.parametrize(
    "factory,says",
    [
        (no_in_channels, "the first parameter must be `in_channels`"),
        (nothing, "the first parameter must be"),
        (kwargs_only, "takes **kwargs"),
        (kwargs_to_a_plain_module, "takes **kwargs"),
        (option_without_default, "option 'out_channels' must be a keyword parameter with a default"),
        (keyword_option_without_default, "option 'out_channels' must be a keyword parameter with a default"),
        (star_args, "option 'sizes' must be"),
    ],
)
def test_a_factory_whose_options_cannot_be_listed_is_refused_at_registration_saying_how(registry, factory, says):
    with pytest.raises(TypeError) as err:
        register_neck(factory)
    assert says in str(err.value)
    assert f"def {factory.__name__}(in_channels, out_channels=256, ...)" in str(err.value)  # how to write it
    assert factory.__name__ not in list_necks()


def test_builtin_necks_are_thin_factories_over_their_classes():
    for name, cls in [("aspp", necks.ASPP), ("ppm", necks.PPM), ("identity", necks.Identity)]:
        assert type(create_neck(name, C_IN)) is cls
        params = list(inspect.signature(cls).parameters.values())
        assert neck_options(name) == {p.name: p.default for p in params[1:]}
        assert all(p.kind is p.KEYWORD_ONLY and p.annotation is not p.empty for p in params[1:])


@pytest.mark.parametrize(
    "options",
    [
        dict(fusion="sum"),
        dict(image_pooling=False),
        dict(separable=True),
        dict(norm="gn"),
        dict(norm="none", act="none"),
        dict(rates=(1,)),
        dict(rates="2,4,6,8"),
    ],
)
def test_aspp_variants_keep_spatial_size(options):
    neck = aspp(**options).eval()
    for size in [(1, 1), (2, 3), (5, 4)]:
        with torch.no_grad():
            assert neck(torch.randn(2, C_IN, *size)).shape == (2, C_OUT, *size)


# --- equivalence with torchvision, smp and the seed article ----------------------------------------


@pytest.mark.parametrize("train", [False, True])
@pytest.mark.parametrize("rates", [(1,), (1, 2, 3), (1, 2, 3, 5)])
def test_aspp_is_torchvision_aspp(rates, train):
    ref = randomize_(TorchvisionASPP(C_IN, rates, C_OUT))  # its projection ends in Dropout(0.5)
    ours = aspp(rates=rates, norm="bn", fusion="concat", image_pooling=True, dropout=0.5)
    ours.load_state_dict(ref.state_dict())  # strict: same names and shapes
    y_ours, y_ref = run_both(ours, ref, torch.randn(2, C_IN, 7, 9), train)
    assert_close(y_ours, y_ref)
    assert_close(ours.state_dict(), ref.state_dict())  # train mode updated the same BN statistics


@pytest.mark.parametrize("train", [False, True])
@pytest.mark.parametrize("separable", [False, True])
def test_aspp_is_smp_aspp(separable, train):
    ref = randomize_(SmpASPP(C_IN, C_OUT, (1, 2, 3), separable=separable, dropout=0.3))
    ours = aspp(rates=(1, 2, 3), norm="bn", fusion="concat", image_pooling=True, separable=separable, dropout=0.3)
    ours.load_state_dict(ref.state_dict())
    y_ours, y_ref = run_both(ours, ref, torch.randn(2, C_IN, 6, 5), train)
    assert_close(y_ours, y_ref)
    assert_close(ours.state_dict(), ref.state_dict())


def test_linear_bn_free_aspp_is_seed_article_aspp():
    seed = randomize_(SeedASPP(C_IN, C_OUT))
    ours = aspp(norm="none", act="none").eval()  # default rates (6, 12, 18), as the seed's
    state = {}
    for key, conv in [
        ("convs.0.0", seed.atrous_block1),
        ("convs.1.0", seed.atrous_block6),
        ("convs.2.0", seed.atrous_block12),
        ("convs.3.0", seed.atrous_block18),
        ("convs.4.1", seed.conv),
    ]:
        state[f"{key}.weight"], state[f"{key}.bias"] = conv.weight, conv.bias
    w = seed.conv_1x1_output.weight  # input blocks [pool, 1x1, r6, r12, r18]; ours [1x1, r6, r12, r18, pool]
    state["project.0.weight"] = torch.cat([w[:, C_OUT:], w[:, :C_OUT]], dim=1)
    state["project.0.bias"] = seed.conv_1x1_output.bias
    ours.load_state_dict(state)  # strict: every parameter of ours is covered
    x = torch.randn(2, C_IN, 21, 26)  # 21 > 18: every rate sees more than its centre tap somewhere
    with torch.no_grad():
        assert_close(ours(x), seed.eval()(x))


# --- each axis does what it says -------------------------------------------------------------------


def test_each_rate_branch_is_a_3x3_conv_dilated_and_padded_by_its_rate():
    rates = (1, 2, 5)
    neck = aspp(rates=rates, norm="none", act="none").eval()
    x = torch.randn(1, C_IN, 11, 12)
    assert neck.convs[0][0].kernel_size == (1, 1)
    for branch, r in zip(neck.convs[1 : 1 + len(rates)], rates):
        conv = branch[0]
        assert conv.kernel_size == (3, 3) and conv.dilation == conv.padding == (r, r)
        with torch.no_grad():
            assert_close(branch(x), F.conv2d(x, conv.weight, conv.bias, padding=r, dilation=r))


def test_changing_a_rate_changes_the_output():
    base = randomize_(aspp(rates=(1, 2, 3))).eval()
    other = aspp(rates=(1, 2, 4)).eval()
    other.load_state_dict(base.state_dict())  # same shapes, only the last rate differs
    x = torch.randn(1, C_IN, 9, 9)
    with torch.no_grad():
        assert not torch.allclose(base(x), other(x))


def test_image_pooling_adds_a_branch_and_global_context():
    on, off = aspp(rates=(1,), image_pooling=True), aspp(rates=(1,), image_pooling=False)
    assert len(on.convs) == 3 and len(off.convs) == 2
    assert on.project[0].in_channels == 3 * C_OUT and off.project[0].in_channels == 2 * C_OUT
    assert far_region_moves_centre(randomize_(on))
    assert not far_region_moves_centre(randomize_(off))  # rate 1: receptive field of 3x3 only


def test_sum_fusion_adds_branches_before_the_projection():
    concat = randomize_(aspp(rates=(1, 2), fusion="concat", norm="none")).eval()
    summed = aspp(rates=(1, 2), fusion="sum", norm="none").eval()
    assert concat.project[0].in_channels == 4 * C_OUT and summed.project[0].in_channels == C_OUT
    missing, unexpected = summed.load_state_dict(
        {k: v for k, v in concat.state_dict().items() if not k.startswith("project.")}, strict=False
    )
    assert not unexpected and all(k.startswith("project.") for k in missing)
    x = torch.randn(2, C_IN, 6, 7)
    with torch.no_grad():
        assert not torch.allclose(concat(x), summed(x))
        # W @ (a + b + c + d) == [W W W W] @ cat(a, b, c, d)
        concat.project[0].weight.copy_(summed.project[0].weight.repeat(1, 4, 1, 1))
        concat.project[0].bias.copy_(summed.project[0].bias)
        assert_close(concat(x), summed(x))


def convs_of(module: nn.Module) -> list[nn.Conv2d]:
    return [m for m in module.modules() if isinstance(m, nn.Conv2d)]


@pytest.mark.parametrize("name,options", [("aspp", {}), ("aspp", {"separable": True}), ("identity", {}), ("ppm", {})])
def test_norm_none_has_no_norm_layer_and_every_conv_a_bias(name, options):
    neck = create_neck(name, C_IN, out_channels=C_OUT, norm="none", **options)
    assert not any(isinstance(m, NORM_LAYERS) for m in neck.modules())
    pointwise = [c for c in convs_of(neck) if c.groups == 1]  # a depthwise bias would be folded into the next 1x1
    assert pointwise and all(c.bias is not None for c in pointwise)


@pytest.mark.parametrize("name,options", [("aspp", {}), ("aspp", {"separable": True}), ("identity", {}), ("ppm", {})])
@pytest.mark.parametrize("norm,layer", [("bn", nn.BatchNorm2d), ("gn", nn.GroupNorm)])
def test_norm_layers_follow_convs_without_bias(name, options, norm, layer):
    neck = create_neck(name, C_IN, out_channels=C_OUT, norm=norm, **options)
    norms = [m for m in neck.modules() if isinstance(m, NORM_LAYERS)]
    assert norms and all(type(m) is layer for m in norms)
    pooled = {id(c) for m in neck.modules() if isinstance(m, ImagePooling) for c in convs_of(m)}
    if norm == "gn":  # GroupNorm on the 1x1 pooled map is degenerate: that conv takes a bias instead
        assert all(c.bias is not None for c in convs_of(neck) if id(c) in pooled)
    else:  # with BatchNorm (or none) the pooled branch is like every other branch, as in torchvision
        pooled = set()
    assert all(c.bias is None for c in convs_of(neck) if id(c) not in pooled)
    full = [c for c in convs_of(neck) if c.groups == 1 and id(c) not in pooled]
    assert len(norms) == len(full)  # one norm after each full conv


def test_gn_aspp_trains_at_batch_one_where_bn_cannot():
    x = torch.randn(1, C_IN, 5, 5)
    neck = create_neck("aspp", C_IN, out_channels=C_OUT, norm="gn").train()
    neck(x).sum().backward()
    assert all(
        p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0 for p in neck.parameters()
    )
    with pytest.raises(ValueError, match="more than 1 value per channel"):  # BN of the pooled 1x1 branch
        create_neck("aspp", C_IN, out_channels=C_OUT, norm="bn").train()(x)


@pytest.mark.parametrize("out_channels", [2, 5, 6, 9, 17, 64])
def test_group_norm_works_for_any_width(out_channels):
    neck = create_neck("aspp", C_IN, out_channels=out_channels, rates=(1,), norm="gn").eval()
    for gn in (m for m in neck.modules() if isinstance(m, nn.GroupNorm)):
        assert out_channels % gn.num_groups == 0
    assert neck(torch.randn(1, C_IN, 3, 3)).shape == (1, out_channels, 3, 3)


def test_separable_uses_depthwise_dilated_convs():
    rates = (1, 2, 3)
    neck = aspp(rates=rates, separable=True)
    for branch, r in zip(neck.convs[1 : 1 + len(rates)], rates):
        depthwise, pointwise = branch[0]
        assert depthwise.groups == depthwise.in_channels == depthwise.out_channels == C_IN
        assert depthwise.dilation == depthwise.padding == (r, r) and depthwise.kernel_size == (3, 3)
        assert pointwise.kernel_size == (1, 1) and pointwise.out_channels == C_OUT
    assert all(c.groups == 1 for c in convs_of(aspp(rates=rates, separable=False)))


@pytest.mark.parametrize(
    "rates,shown",
    [([], "[]"), ([0], "[0]"), ([6, 6], "[6, 6]"), ([-1], "[-1]"), ("a,b", "'a,b'"), ([6, 2.5], "[2.5]"), (6, "6")],
)
def test_bad_rates_raise_showing_the_bad_value(rates, shown):
    with pytest.raises(ValueError) as err:
        aspp(rates=rates)
    assert shown in str(err.value)


@pytest.mark.parametrize(
    "option,value,choices",
    [
        ("norm", "batch", ("'bn'", "'gn'", "'none'")),
        ("fusion", "add", ("'concat'", "'sum'")),
        ("act", "gelu", ("'relu'", "'none'")),
    ],
)
def test_bad_choice_raises_naming_valid_choices(option, value, choices):
    with pytest.raises(ValueError, match=option) as err:
        aspp(**{option: value})
    assert value in str(err.value) and all(c in str(err.value) for c in choices)


# --- identity and ppm ------------------------------------------------------------------------------


def test_identity_adds_no_context():
    torch.manual_seed(0)
    neck = create_neck("identity", C_IN, out_channels=C_OUT).eval()
    assert not far_region_moves_centre(neck)
    x = torch.randn(1, C_IN, 5, 5)
    x_pixel = x.clone()
    x_pixel[..., 2, 2] += 5.0
    with torch.no_grad():
        moved = (neck(x) - neck(x_pixel)).abs().sum(dim=1)[0] > 0  # (H, W)
    assert moved[2, 2] and moved.sum() == 1  # a 1x1 projection: each output pixel sees only its own input


def test_ppm_adds_pooled_context():
    torch.manual_seed(0)
    assert far_region_moves_centre(create_neck("ppm", C_IN, out_channels=C_OUT))
