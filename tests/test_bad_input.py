"""Bad input that used to get past the checks: one line naming the file and line / host and port / variable /
name, exit code 2, and nothing written."""

import os
from pathlib import Path

import optuna
import pytest
from helpers import write_sweep

from ablate.report import main as report
from ablate.sweep import main as sweep
from ablate.table import main as table

UNREACHABLE = "postgresql+psycopg2://user:secret@127.0.0.1:1/x"


def written() -> list[str]:
    """Everything in the test's folder but the sweep files it wrote itself."""
    return sorted(str(p) for p in Path().rglob("*") if p.name not in ("sweep.yaml", "bad.yaml"))


def one_error(capsys) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def test_a_sweep_file_with_a_yaml_syntax_error_names_the_file_and_line(capsys):
    Path("bad.yaml").write_text("n_trials: 2\nspace:\n  model.neck.fusion: {choices: [concat, sum}\n")
    assert sweep(["bad.yaml"]) == 2
    line = one_error(capsys)
    assert "bad.yaml:3: YAML syntax error: " in line, line
    assert written() == []


@pytest.mark.parametrize("command", ["sweep", "table"])
def test_a_storage_server_that_cannot_be_reached_names_host_and_port_not_the_password(command, capsys):
    if command == "sweep":
        code = sweep([write_sweep(), "--storage", UNREACHABLE])
    else:
        code = table(["--storage", UNREACHABLE])
    assert code == 2
    line = one_error(capsys)
    assert "cannot reach the server at 127.0.0.1:1" in line and "Connection refused" in line, line
    assert "secret" not in line and "user:***@127.0.0.1:1/x" in line, line
    assert written() == []


def test_an_unparseable_ablate_storage_names_the_variable_and_masks_the_password(monkeypatch, capsys):
    monkeypatch.setenv("ABLATE_STORAGE", "postgresql+psycopg2//user:secret@db/x")  # a lost ':'
    assert sweep([write_sweep()]) == 2
    line = one_error(capsys)
    assert line.startswith("error: $ABLATE_STORAGE='postgresql+psycopg2//user:***@db/x' is not a storage URL"), line
    assert "secret" not in line
    monkeypatch.setenv("ABLATE_STORAGE", "postgresql://user:secret@db:port/x")  # a port that is not a number
    assert table([]) == 2
    assert "$ABLATE_STORAGE=" in one_error(capsys)
    assert written() == []


@pytest.mark.parametrize("name", ["../../etc", "a/b", ".hidden", "..", "a\\b"])
def test_a_study_name_that_would_leave_runs_is_refused_from_the_command_line(name, capsys):
    assert sweep([write_sweep(), "--study", name, "--storage", "sqlite:///s.db"]) == 2
    assert f"study.name (--study) {name!r} becomes a folder name under runs/" in one_error(capsys)
    assert written() == [] and not (Path("..") / "etc").exists()


def test_a_study_name_that_would_leave_runs_is_refused_from_a_sweep_file(capsys):
    assert sweep([write_sweep(name="../up"), "--storage", "sqlite:///s.db"]) == 2
    assert "study.name (--study) '../up' becomes a folder name" in one_error(capsys)
    assert written() == []


def test_a_study_name_that_would_leave_runs_is_refused_from_a_shared_storage(tmp_path, capsys):
    url = f"sqlite:///{tmp_path.parent / (tmp_path.name + '-shared.db')}"  # another user's storage
    optuna.create_study(study_name="../../etc", storage=url)
    Path("runs").mkdir()
    before = written()
    assert report(["--study", "../../etc", "--storage", url]) == 2
    assert "study '../../etc' becomes a folder name under runs/" in one_error(capsys)
    assert table(["--storage", url]) == 2  # every study of the storage, this one too
    assert "study '../../etc' becomes a folder name" in one_error(capsys)
    assert written() == before and not (tmp_path.parent.parent / "etc").exists()
    os.remove(url.removeprefix("sqlite:///"))
