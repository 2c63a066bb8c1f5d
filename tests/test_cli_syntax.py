"""A LightningCLI project's values in one syntax: a sequence as "6,12,18" or [6, 12, 18] for any list- or tuple-typed
argument (the parser's own type decides; a str keeps its commas), a callback by index or class name, a broken base
config named as the base, and no message naming a class of ablate's (tests/deeplab_project, examples/)."""

import copy
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ablate.errors import ConfigError
from ablate.study.space import load_sweep
from ablate.study.targets import make_target

ROOT = Path(__file__).resolve().parents[1]
DEEPLAB = ROOT / "tests" / "deeplab_project"
EXAMPLE = ROOT / "examples" / "lightning_project"
RATES = "model.init_args.rates"  # deeplab.DeepLabV3's rates: tuple[int, int, int]
LR = {"model.init_args.lr": {"choices": [0.1]}}


def sweep_file(base: dict, space: dict, project: Path, monkeypatch, **changes) -> str:
    """A sweep of `project` (its folder on sys.path, as the sweep file's would be) written here, its base `base`."""
    monkeypatch.syspath_prepend(str(project))
    Path("base.yaml").write_text(yaml.safe_dump(base))
    spec = {"cli": "lightning.pytorch.cli.LightningCLI", "base": "base.yaml", "study": {"name": "s"}, "space": space}
    Path("sweep.yaml").write_text(yaml.safe_dump({**spec, **changes}))
    return "sweep.yaml"


def deeplab_base() -> dict:
    return yaml.safe_load((DEEPLAB / "config.yaml").read_text())


def test_rates_as_a_comma_string_a_yaml_list_or_yaml_list_choices_reach_a_tuple_typed_argument(monkeypatch):
    target = make_target(load_sweep(DEEPLAB / "sweep.yaml"))  # its choices: "12,24,36", "1,2,3"
    for value in ("1,2,3", [1, 2, 3]):
        assert target.config({RATES: value})["model"]["init_args"]["rates"] == [1, 2, 3]
    path = sweep_file(deeplab_base(), {RATES: {"choices": [[12, 24, 36], [1, 2, 3]]}}, DEEPLAB, monkeypatch)
    sweep = load_sweep(path)
    assert sweep.space[RATES]["choices"] == ["12,24,36", "1,2,3"]  # what Optuna stores (and the variant shows)
    assert make_target(sweep).config({RATES: "12,24,36"})["model"]["init_args"]["rates"] == [12, 24, 36]
    overridden = make_target(load_sweep(sweep_file(deeplab_base(), LR, DEEPLAB, monkeypatch), [f"{RATES}=6,12,18"]))
    assert overridden.config({})["model"]["init_args"]["rates"] == [6, 12, 18]  # an override, the same syntax


TYPED = """
from collections.abc import Callable, Sequence
from typing import Optional

import lightning as L
from torch import nn


class Typed(L.LightningModule):
    def __init__(
        self,
        seq: Sequence[int] = (1,),
        tup: tuple[int, ...] = (1,),
        lst: list[int] = [1],
        three: tuple[int, int, int] = (1, 2, 3),
        opt: Optional[list[float]] = None,
        names: list[str] = ["a"],
        text: str = "x",
        maybe: Optional[str] = None,
        neck: Optional[Callable[[int], nn.Module]] = None,
    ):
        super().__init__()
"""


def test_every_list_or_tuple_typed_argument_takes_a_comma_string_and_a_str_typed_one_keeps_it(monkeypatch):
    Path("typed_project.py").write_text(TYPED)
    neck = {"class_path": "ablate.necks.ASPP", "init_args": {"rates": [1, 2]}}  # rates: Sequence[int]
    base = {"model": {"class_path": "typed_project.Typed", "init_args": {"neck": neck}}}
    values = {
        "seq": ("6,12", [6, 12]),
        "tup": ("6,12,18", [6, 12, 18]),
        "lst": ("6", [6]),  # a lone number, as a {rates: 1} key draws it
        "three": ("1,2,3", [1, 2, 3]),
        "opt": ("0.5,1", [0.5, 1]),
        "names": ("a,b", ["a", "b"]),
        "text": ("a,b", "a,b"),
        "maybe": ("6,12", "6,12"),
        "neck.init_args.rates": ("3,4,5", [3, 4, 5]),
    }
    space = {f"model.init_args.{key}": {"choices": [value]} for key, (value, _) in values.items()}
    target = make_target(load_sweep(sweep_file(base, space, Path.cwd(), monkeypatch)))
    resolved = target.config({key: spec["choices"][0] for key, spec in space.items()})["model"]["init_args"]
    assert {key: resolved["neck"]["init_args"]["rates"] if "." in key else resolved[key] for key in values} == {
        key: expected for key, (_, expected) in values.items()
    }


def example_base(callbacks: list) -> dict:
    """The example project's config with `callbacks` as its trainer.callbacks."""
    base = yaml.safe_load((EXAMPLE / "configs" / "fit.yaml").read_text())
    base["trainer"]["callbacks"] = callbacks
    return base


CHECKPOINT = {"class_path": "lightning.pytorch.callbacks.ModelCheckpoint", "init_args": {"monitor": "val/mIoU"}}
LR_MONITOR = {"class_path": "lightning.pytorch.callbacks.LearningRateMonitor"}
SWAP = {
    "class_path": "ablate.necks.SwapNeck",
    "init_args": {"path": "neck", "neck": {"class_path": "ablate.necks.ASPP", "init_args": {"out_channels": 32}}},
}


@pytest.mark.parametrize("item", ["2", "SwapNeck"])
def test_a_callback_is_reached_by_index_and_by_class_name_and_the_rest_of_the_list_stays(item, monkeypatch):
    key = f"trainer.callbacks.{item}.init_args.neck"
    space = {f"{key}.init_args.norm": {"choices": ["gn"]}, f"{key}.init_args.rates": {"choices": ["2,4"]}}
    path = sweep_file(example_base([CHECKPOINT, LR_MONITOR, SWAP]), space, EXAMPLE, monkeypatch)
    target = make_target(load_sweep(path))
    base = target.config({})["trainer"]["callbacks"]
    got = target.config({f"{key}.init_args.norm": "gn", f"{key}.init_args.rates": "2,4"})["trainer"]["callbacks"]
    expected = copy.deepcopy(base)
    expected[2]["init_args"]["neck"]["init_args"].update(norm="gn", rates=[2, 4])
    assert got == expected
    ppm = target.config({f"{key}.class_path": "ablate.necks.PPM"})["trainer"]["callbacks"][2]["init_args"]["neck"]
    assert ppm["class_path"] == "ablate.necks.PPM" and ppm["init_args"]["out_channels"] == 32  # kept, as jsonargparse


LISTED = (
    "0: lightning.pytorch.callbacks.ModelCheckpoint; 1: lightning.pytorch.callbacks.ModelCheckpoint; "
    "2: lightning.pytorch.callbacks.LearningRateMonitor; 3: ablate.necks.SwapNeck"
)


@pytest.mark.parametrize(
    "key, words",
    [
        ("trainer.callbacks.4.init_args.verbose", "it has no item 4"),
        ("trainer.callbacks.EarlyStopping.init_args.patience", "none is a EarlyStopping"),
        ("trainer.callbacks.ModelCheckpoint.init_args.verbose", "ModelCheckpoint is items 0, 1"),
        ("trainer.callbacks.init_args.verbose", "say which: trainer.callbacks.<index>.init_args"),
    ],
)
def test_a_callback_key_that_names_no_single_item_is_an_error_listing_the_callbacks(key, words, monkeypatch):
    callbacks = [CHECKPOINT, {**CHECKPOINT, "init_args": {"monitor": "val/loss"}}, LR_MONITOR, SWAP]
    path = sweep_file(example_base(callbacks), {key: {"choices": [True]}}, EXAMPLE, monkeypatch)
    with pytest.raises(ConfigError) as error:
        make_target(load_sweep(path))
    message = str(error.value)
    assert message.startswith(f"space: {key}: trainer.callbacks in the base config lists {LISTED}; ")
    assert words in message


@pytest.mark.parametrize(
    "init_args, key",
    [({"aspp_channels": "notanint"}, "aspp_channels"), ({"channels": 32}, "'channels' is not accepted")],
)
def test_a_broken_base_config_is_named_as_the_base_not_as_a_space_value(init_args, key, monkeypatch):
    base = deeplab_base()
    base["model"]["init_args"].update(init_args)
    with pytest.raises(ConfigError) as error:
        make_target(load_sweep(sweep_file(base, LR, DEEPLAB, monkeypatch)))
    message = str(error.value)
    assert message.startswith(f"{Path('base.yaml').resolve()}: LightningCLI refuses it:") and key in message
    assert "space" not in message and "model.init_args.lr" not in message


def test_a_broken_override_is_named_as_an_override(monkeypatch):
    path = sweep_file(deeplab_base(), LR, DEEPLAB, monkeypatch)
    with pytest.raises(ConfigError) as error:
        make_target(load_sweep(path, ["model.init_args.num_classes=three"]))
    message = str(error.value)
    assert message.startswith(f"{Path('base.yaml').resolve()} with overrides [") and "num_classes" in message
    assert "model.init_args.lr" not in message


INTERNAL = ("FitCLI", "ParseOnly", "_Parsed", "ablate.study")


@pytest.mark.parametrize(
    "sweep, args",
    [
        (DEEPLAB / "sweep.yaml", ["trainer.limit_train_batches=2", "optimizer=torch.optim.Adam"]),
        (EXAMPLE / "ablation.yaml", ["data.init_args.train_size=16", "optimizer=torch.optim.Adam"]),
    ],
)
def test_no_warning_of_a_sweep_names_a_class_of_ablate(sweep, args):
    """The optimizer given in the config, as LightningCLI allows: it warns that it replaces the module's own
    configure_optimizers, by the CLI class's name, which is the project's, not the subclass ablate fits with."""
    tiny = ["trainer.max_epochs=1", "trainer.limit_val_batches=1", "--n-trials", "1", "--seeds", "0"]
    done = subprocess.run(
        [sys.executable, "-m", "ablate.sweep", str(sweep), *tiny, *args], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    logs = done.stdout + done.stderr + "".join(p.read_text() for p in Path("runs").glob("*/t*/*.log"))
    cli = "LightningCLI" if "deeplab" in str(sweep) else "MyCLI"
    assert f"configure_optimizers` will be overridden by `{cli}.configure_optimizers`" in logs
    assert not [word for word in INTERNAL if word in logs], logs
