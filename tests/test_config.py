"""Config loading, overrides and validation: every bad value is a clear error before training."""

import sys
from pathlib import Path

import pytest

import ablate.necks.registry as neck_registry
from ablate.config import ConfigError, RunConfig, load_config, to_dict

ROOT = Path(__file__).resolve().parents[1]


def test_base_yaml_is_the_default():
    assert load_config(ROOT / "experiments/base.yaml") == load_config(None) == load_config(None, [])
    assert to_dict(load_config(None)) == to_dict(RunConfig())


def test_overrides_follow_the_config_path():
    cfg = load_config(
        ROOT / "experiments/base.yaml",
        ["model.neck.rates=[1,3,5,7]", "model.neck.norm=none", "trainer.max_epochs=1", "optim.lr=3e-4"],
    )
    assert cfg.model.neck == {"name": "aspp", "out_channels": 64, "rates": [1, 3, 5, 7], "norm": "none"}
    assert cfg.trainer["max_epochs"] == 1 and cfg.trainer["log_every_n_steps"] == 16  # merged, not replaced
    assert cfg.optim.lr == 3e-4


def test_mapping_override_replaces_the_section():
    cfg = load_config(ROOT / "experiments/base.yaml", ["model.neck={name: ppm}"])
    assert cfg.model.neck == {"name": "ppm"}
    cfg = load_config(None, ["model.neck.norm=gn"])  # without a config file the defaults are the base
    assert cfg.model.neck["rates"] == [2, 4, 6] and cfg.model.neck["norm"] == "gn"


@pytest.mark.parametrize(
    "override, words",
    [
        ("model.nek.name=aspp", ["model.nek", "did you mean model.neck"]),
        ("optim.lrr=0.1", ["optim.lrr", "optim.lr"]),
        ("data.batch_size=two", ["data.batch_size", "int", "'two'"]),
        ("seed=1.5", ["seed", "int", "1.5"]),
        ("model.neck.name=asp", ["'asp'", "aspp", "identity", "ppm"]),
        ("model.neck.rate=[1,2]", ["model.neck.rate", "did you mean model.neck.rates"]),
        ("model.neck.rates=[6,6]", ["distinct", "[6, 6]"]),
        ("model.neck.rates=[0,2]", ["positive", "[0]"]),
        ("model.neck.rates=[]", ["non-empty"]),
        ("model.neck.norm=batch", ["'batch'", "'bn'", "'gn'", "'none'"]),
        ("model.neck.fusion=add", ["'add'", "'concat'", "'sum'"]),
        ("model.head=unet", ["'unet'", "deeplabv3plus"]),
        ("model.encoder=resnet19", ["resnet19", "resnet18"]),
        ("model.output_stride=4", ["output_stride=4", "8"]),
        ("trainer.max_epoch=1", ["trainer.max_epoch", "did you mean trainer.max_epochs"]),
        ("trainer.logger=false", ["trainer.logger", "set by ablate"]),
        ("wandb.mode=on", ["wandb.mode", "True", "'offline'", "'online'", "'disabled'"]),
        ("optim.schedule=step", ["'step'", "'poly'", "'cosine'"]),
        ("data.batch_size=0", ["data.batch_size", ">= 1"]),
        ("imports=[no_such_module_xyz]", ["no_such_module_xyz"]),
        ("model.neck.rates", ["key.path=value"]),
    ],
)
def test_bad_values_name_the_key_and_what_is_valid(override, words):
    with pytest.raises(ConfigError) as e:
        load_config(ROOT / "experiments/base.yaml", [override])
    for word in words:
        assert word in str(e.value), (word, str(e.value))


def test_batch_one_with_bn_and_pooling_is_refused_with_the_fixes():
    with pytest.raises(ConfigError) as e:
        load_config(None, ["data.batch_size=1"])
    for fix in ("data.batch_size>=2", "model.neck.norm=gn", "model.neck.image_pooling=false"):
        assert fix in str(e.value)
    load_config(None, ["data.batch_size=1", "model.neck.norm=gn"])  # these are accepted
    load_config(None, ["data.batch_size=1", "model.neck.image_pooling=false"])


def test_imports_register_third_party_necks(tmp_path, monkeypatch):
    (tmp_path / "my_necks.py").write_text(
        "import torch.nn as nn\nfrom ablate.necks import register_neck\n\n"
        "@register_neck\ndef my_conv(in_channels, *, out_channels=32):\n"
        "    m = nn.Conv2d(in_channels, out_channels, 1)\n    m.out_channels = out_channels\n    return m\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(neck_registry, "_NECKS", dict(neck_registry._NECKS))  # my_conv leaves with the test
    (tmp_path / "c.yaml").write_text("imports: [my_necks]\nmodel:\n  neck: {name: my_conv, out_channels: 16}\n")
    cfg = load_config(tmp_path / "c.yaml")
    assert cfg.model.neck == {"name": "my_conv", "out_channels": 16}
    from ablate.analyze import encoder_rf
    from ablate.callbacks import find_necks
    from ablate.run.analysis import neck_summary  # runs and reports of a neck the analysis does not know go on

    model, rf, stride, size = encoder_rf(cfg)
    assert neck_summary(model.neck, rf, stride, size) == {} and list(find_necks(model)) == ["neck"]
    model, rf, stride, size = encoder_rf(load_config(None))
    assert "rf/encoder" in neck_summary(model.neck, rf, stride, size)
    with pytest.raises(ConfigError, match="model.neck.width"):
        load_config(tmp_path / "c.yaml", ["model.neck.width=3"])
    sys.modules.pop("my_necks")


def test_config_file_must_exist_and_be_a_mapping(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(tmp_path / "list.yaml")
