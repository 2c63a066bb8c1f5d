"""ablate's necks injected by LightningCLI (jsonargparse class_path/init_args), and the example LightningCLI project."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import yaml
from lightning.pytorch import LightningModule
from lightning.pytorch.cli import LightningCLI

from ablate.necks import ASPP, PPM, Identity, SwapNeck, create_neck, list_necks, neck_options

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "lightning_project"
CLASSES = {"aspp": ASPP, "ppm": PPM, "identity": Identity}
QUIET = ["--trainer.logger=false", "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]


class UserModule(LightningModule):
    """A user's module: the neck is injected as a callable from the input width to a module."""

    def __init__(self, neck: Callable[[int], nn.Module], dropout: float = 0.0):
        super().__init__()
        self.neck = neck(8)


def cli(*args: str) -> LightningCLI:
    return LightningCLI(UserModule, run=False, args=[*QUIET, *args])


def neck_arg(cls: type, **init_args) -> str:
    return "--model.neck=" + json.dumps({"class_path": f"ablate.necks.{cls.__name__}", "init_args": init_args})


def test_every_registered_neck_has_an_injectable_class():
    assert sorted(CLASSES) == list_necks()


@pytest.mark.parametrize("name", list_necks())
def test_injected_neck_is_the_registry_neck_with_the_same_options(name):
    options = {"out_channels": 4, "norm": "gn"}
    injected = cli(neck_arg(CLASSES[name], **options)).model.neck
    built = create_neck(name, 8, **options)
    assert type(injected) is type(built) and injected.out_channels == 4
    assert {k: v.shape for k, v in injected.state_dict().items()} == {k: v.shape for k, v in built.state_dict().items()}


def test_every_aspp_option_is_typed_and_reaches_the_module():
    neck = cli(
        neck_arg(
            ASPP,
            out_channels=6,
            rates=[1, 2],
            norm="none",
            fusion="sum",
            image_pooling=False,
            separable=True,
            dropout=0.2,
            act="none",
        )
    ).model.neck
    assert neck.rates == (1, 2) and neck.fusion == "sum" and len(neck.convs) == 3  # 1x1 + two rates, no pooling
    assert neck.project[-1].p == 0.2 and all(c.bias is not None for c in neck.project if isinstance(c, nn.Conv2d))
    assert not any(isinstance(m, (nn.ReLU, nn.BatchNorm2d)) for m in neck.modules())


@pytest.mark.parametrize(
    "init_args,named",
    [
        ({"norm": "batch"}, ["norm", "batch", "bn", "gn", "none"]),
        ({"fusion": "add"}, ["fusion", "concat", "sum"]),
        ({"out_channels": "wide"}, ["out_channels", "wide"]),
        ({"image_pooling": "maybe"}, ["image_pooling"]),
        ({"rates": "6,12,18"}, ["rates"]),
        ({"no_such_option": 1}, ["no_such_option"]),
    ],
)
def test_wrong_type_or_unknown_init_arg_is_a_parse_error_naming_it(capsys, init_args, named):
    with pytest.raises(SystemExit) as exit_:
        cli(neck_arg(ASPP, **init_args))
    assert exit_.value.code != 0
    err = capsys.readouterr().err
    assert all(word in err for word in named), err


def test_values_are_checked_by_the_neck_when_the_model_is_built():
    with pytest.raises(ValueError, match=r"rates must be distinct; got \[2, 2\]"):  # well-typed, not valid
        cli(neck_arg(ASPP, rates=[2, 2]))


def test_neck_help_lists_every_option_with_its_default(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli("--model.neck.help", "ablate.necks.ASPP")
    assert exit_.value.code == 0
    out = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    for option, default in neck_options("aspp").items():
        assert f"--model.neck.{option}" in out and f"default: {default}" in out
    assert "Literal['bn', 'gn', 'none']" in out and "distinct positive integers" in out  # types and docs


def test_print_config_fills_in_the_neck_defaults(capsys):
    with pytest.raises(SystemExit):
        cli(neck_arg(ASPP, fusion="sum"), "--print_config")
    neck = yaml.safe_load(capsys.readouterr().out)["model"]["neck"]
    assert neck["class_path"] == "ablate.necks.ASPP"
    expected = {k: list(v) if isinstance(v, tuple) else v for k, v in neck_options("aspp").items()}
    assert neck["init_args"] == {**expected, "fusion": "sum"}


def test_swap_neck_callback_from_a_config(tmp_path):
    config = tmp_path / "fit.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "trainer": {
                    "callbacks": [
                        {
                            "class_path": "ablate.necks.SwapNeck",
                            "init_args": {
                                "path": "neck",
                                "neck": {
                                    "class_path": "ablate.necks.PPM",
                                    "init_args": {"out_channels": 4, "bins": [1, 2]},
                                },
                            },
                        }
                    ]
                }
            }
        )
    )
    parsed = cli(f"--config={config}", neck_arg(Identity, out_channels=4))
    swap = next(c for c in parsed.trainer.callbacks if isinstance(c, SwapNeck))
    assert swap.path == "neck"
    swap.setup(parsed.trainer, parsed.model, "fit")
    assert isinstance(parsed.model.neck, PPM) and len(parsed.model.neck.stages) == 2


# --- the example project (examples/lightning_project), which does not import ablate's model or data --------


@pytest.fixture
def example(monkeypatch):
    """The example's folder on sys.path, as the sweep tool puts a sweep file's folder; its package imported."""
    monkeypatch.syspath_prepend(str(EXAMPLE))
    from seg_project.cli import MyCLI

    return MyCLI


def fit_example(MyCLI, tmp_path, *args: str) -> dict:
    """Fit the example for 1 epoch of 2 batches through its own CLI class; the logged metrics."""
    run = MyCLI(
        args=[
            "--config",
            str(EXAMPLE / "configs" / "fit.yaml"),
            "--trainer.max_epochs=1",
            "--trainer.limit_train_batches=2",
            "--trainer.limit_val_batches=2",
            f"--trainer.default_root_dir={tmp_path}",
            *QUIET[1:],
            *args,
        ],
        run=False,
    )
    run.trainer.fit(run.model, datamodule=run.datamodule)
    assert isinstance(run.model.neck, ASPP) and run.model.neck.out_channels == 32 and run.model.neck.rates == (1, 2, 3)
    assert run.model.hparams.num_classes == run.datamodule.num_classes  # linked by MyCLI
    return {k: float(v) for k, v in run.trainer.callback_metrics.items()}


def test_example_project_fits_through_its_cli_and_a_seed_changes_results(example, tmp_path):
    first = fit_example(example, tmp_path / "a")
    assert {"train/loss", "val/loss", "val/mIoU", "val/acc"} <= set(first)
    assert all(torch.isfinite(torch.tensor(v)) for v in first.values())
    assert fit_example(example, tmp_path / "b") == first  # same seed, same numbers
    assert fit_example(example, tmp_path / "c", "--seed_everything=1") != first
    checkpoint = next((tmp_path / "a").rglob("*.ckpt"))  # the project's own ModelCheckpoint, in the run folder
    hparams = torch.load(checkpoint, weights_only=True)["hyper_parameters"]  # plain config values, no modules
    assert hparams["neck"] == {
        "class_path": "ablate.necks.ASPP",
        "init_args": {**neck_options("aspp"), "out_channels": 32, "rates": [1, 2, 3], "dropout": 0.0},
    }
    from seg_project.module import SegModule

    assert SegModule.load_from_checkpoint(checkpoint).neck.rates == (1, 2, 3)  # the neck rebuilt from its config


def test_example_sweep_file_keys_and_space_resolve_through_the_cli(example, tmp_path):
    sweep = yaml.safe_load((EXAMPLE / "ablation.yaml").read_text())
    assert set(sweep) == {"cli", "base", "overrides", "metric", "study", "n_trials", "seeds", "space"}
    assert sweep["cli"] == "seg_project.cli.MyCLI" and (EXAMPLE / sweep["base"]).is_file()
    overrides = [f"--{item}" for item in sweep["overrides"]]
    for key, spec in sweep["space"].items():
        for value in spec["choices"]:
            run = example(
                args=[
                    "--config",
                    str(EXAMPLE / sweep["base"]),
                    *overrides,
                    f"--{key}={value}",
                    f"--trainer.default_root_dir={tmp_path}",
                ],
                run=False,
            )
            node = run.config
            for part in key.split("."):
                node = node[part]
            assert node == value
    assert run.trainer.max_epochs == 3
