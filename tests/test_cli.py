"""What every command shares (ablate.cli), as a new user meets it: messages printed literally and never wrapped,
flags and overrides in any order, and a regular (non-editable) install that runs the default sweep anywhere."""

import json
import os
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import optuna
import pytest
import yaml
from helpers import ROOT, TINY
from optuna.distributions import CategoricalDistribution

from ablate import cli
from ablate.errors import ConfigError

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "40"}  # a narrow terminal's width, inherited by a pipe


# Text from users, files and exceptions is printed literally: rich markup never eats `[...]`.


def test_a_path_with_brackets_is_reported_literally(capsys, monkeypatch):
    from ablate.train import main

    monkeypatch.setenv("COLUMNS", "40")
    assert main(["data.name=folder", "data.root=/data/[train]"]) == 2
    assert "error: data.root='/data/[train]' is not a folder (data.name='folder')\n" in capsys.readouterr().err


def test_errors_and_warnings_keep_a_list_of_choices(capsys):
    def bad() -> int:
        raise ConfigError("model.neck.norm='batch' is not valid; choose one of [bn, none]")

    assert cli.guarded(bad) == 2
    cli.warn("rates [bold] and [/] stay as written")
    err = capsys.readouterr().err
    assert "error: model.neck.norm='batch' is not valid; choose one of [bn, none]\n" in err
    assert "warning: rates [bold] and [/] stay as written\n" in err


def test_a_progress_line_and_the_table_show_a_variant_with_brackets(tmp_path, capsys):
    from ablate.results.summary import show_results
    from ablate.study.engine import progress

    url = f"sqlite:///{tmp_path / 's.db'}"
    study = optuna.create_study(study_name="s", storage=url, direction="maximize")
    roots = ["/data/[train]", "/data/[val]"]
    for root, values in zip(roots, ([0.5, 0.6], [0.7, 0.8])):
        study.add_trial(
            optuna.trial.create_trial(
                value=sum(values) / 2,
                params={"data.root": root},
                distributions={"data.root": CategoricalDistribution(roots)},
                user_attrs={"variant": f"data.root={root}", "seeds": [0, 1], "values": values},
            )
        )
    progress(2, time.time())(study, study.trials[0])
    show_results(study, tmp_path / "runs/s", url)
    out, err = capsys.readouterr()
    assert "[2/2] trial 0 complete = 0.5500  data.root=/data/[train]  (" in err
    cells = [line.split() for line in out.splitlines()]
    assert ["/data/[train]"] == [c[0] for c in cells if c and c[0].startswith("/data/[t")]  # a cell, literally
    assert ["/data/[val]"] == [c[0] for c in cells if c and c[0].startswith("/data/[v")]
    assert "settings under data." in out


# Messages are never wrapped (tests/test_datasets.py: bad data stopping a sweep and the train command, with a long
# path and COLUMNS=40); here the closing lines of a sweep and the console itself.


def test_the_console_never_wraps_whatever_the_width(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "40")
    path = "/" + "/".join(["x" * 60] * 4) + "/train2.png"
    cli.make_console().print(f"{path}: mask values [7] are not valid here; valid: 0..2 and 255")
    assert capsys.readouterr().err == f"{path}: mask values [7] are not valid here; valid: 0..2 and 255\n"


# Flags and overrides in any order, on every command that takes overrides.


def _orders(file: str, flags: list[str], override: str) -> list[list[str]]:
    """The file, then flags, then an override; the override first; the flags first."""
    return [[file, *flags, override], [override, *flags, file], [*flags, override, file]]


@pytest.mark.parametrize("order", range(3))
def test_sweep_takes_flags_between_its_file_and_overrides(order, capsys):
    from ablate.sweep import main

    argv = _orders(str(ROOT / "sweeps/fusion_modes.yaml"), ["--study", "x"], "trainer.max_epochs=1")[order]
    assert main([*argv, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "name: x" in out and "# 4 grid point(s)" in out
    assert yaml.safe_load(out.split("# sample trial:", 1)[1].split("\n", 1)[1])["trainer"]["max_epochs"] == 1


@pytest.mark.parametrize("order", range(3))
def test_train_takes_flags_between_its_file_and_overrides(order, capsys):
    from ablate.train import main

    argv = _orders(str(ROOT / "experiments/base.yaml"), ["--output", "out"], "model.neck.norm=batch")[order]
    assert main(argv) == 2  # the override reached the config, which refuses it before anything trains
    assert "norm='batch' is not valid; choose one of 'bn', 'gn', 'none'" in capsys.readouterr().err
    assert not Path("out").exists()


@pytest.mark.parametrize("order", range(3))
def test_reproduce_takes_flags_between_its_file_and_overrides(order, capsys):
    from ablate.reproduce import main

    argv = _orders(
        str(ROOT / "experiments/aspp_components.yaml"), ["--storage", "sqlite:///r.db"], "model.neck.norm=batch"
    )[order]
    assert main(argv) == 2  # every row's config is checked before anything trains
    assert "norm='batch' is not valid" in capsys.readouterr().err
    assert not Path("runs").exists()


@pytest.mark.parametrize("order", range(3))
def test_analyze_takes_flags_between_its_file_and_overrides(order, capsys):
    from ablate.analyze import main

    argv = _orders(str(ROOT / "experiments/base.yaml"), ["--json"], "model.neck.rates=[1,2,3]")[order]
    assert main(argv) == 0
    assert [b["rate"] for b in json.loads(capsys.readouterr().out)["branches"] if b["rate"]] == [1, 2, 3]


def test_the_ablate_command_runs_each_command(capsys):
    from ablate.__main__ import main

    assert main(["sweep", str(ROOT / "sweeps/fusion_modes.yaml"), "--study", "x", *TINY, "--dry-run"]) == 0
    assert "name: x" in capsys.readouterr().out
    assert main(["swep"]) == 2
    assert "unknown command 'swep' (did you mean sweep?)" in capsys.readouterr().err


# A regular install: the wheel carries the default sweep and its base config, and runs from an empty folder.


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """A fresh venv holding ablate installed from its wheel (not editable), the dependencies taken from this
    interpreter's site-packages by a .pth line (which imports nothing: the editable finder stays inactive)."""
    import site

    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"  # a copy: building writes build/ and *.egg-info next to pyproject.toml
    shutil.copytree(ROOT / "ablate", src / "ablate", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    run = lambda *args: subprocess.run(args, capture_output=True, text=True, timeout=300, env=ENV)  # noqa: E731
    built = run(
        sys.executable, "-m", "pip", "wheel", str(src), "--no-deps", "--no-build-isolation", "-w", str(tmp / "dist")
    )  # this environment's setuptools (the dev extra): no network
    assert built.returncode == 0, built.stdout + built.stderr
    (wheel,) = (tmp / "dist").glob("ablate-*.whl")
    assert {"ablate/configs/default.yaml", "ablate/configs/base.yaml"} <= set(zipfile.ZipFile(wheel).namelist())
    venv = tmp / "venv"
    done = run(sys.executable, "-m", "venv", "--without-pip", str(venv))
    assert done.returncode == 0, done.stderr
    (purelib,) = (venv / "lib").glob("python3*/site-packages")
    (purelib / "deps.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    done = run(sys.executable, "-m", "pip", "--python", str(venv / "bin/python"), "install", "--no-deps", str(wheel))
    assert done.returncode == 0, done.stdout + done.stderr
    return venv


def test_the_wheel_runs_the_default_sweep_from_an_empty_folder(installed, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    python = str(installed / "bin/python")
    where = subprocess.run(
        [python, "-c", "import ablate; print(ablate.__file__)"],
        cwd=empty,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert Path(where.stdout.strip()).is_relative_to(installed), where  # the wheel's copy, not this checkout
    for command in ([python, "-m", "ablate.sweep", "--dry-run"], [str(installed / "bin/ablate"), "sweep", "--dry-run"]):
        done = subprocess.run(command, cwd=empty, env=ENV, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        assert "name: default" in done.stdout and "# 8 grid point(s)" in done.stdout, done.stdout
    assert list(empty.iterdir()) == []  # a dry run writes nothing
