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


@pytest.mark.parametrize("dry_run", [False, True])
@pytest.mark.parametrize(
    "spec, words",
    [
        ({"choices": []}, "space.model.neck.fusion: choices must be a non-empty list"),
        ({"choices": "sum"}, "choices must be a non-empty list of values (two or more to compare); got 'sum'"),
        ({"choices": ["sum", "sum"]}, "choices repeat a value"),
        ({"low": "a", "high": 2}, "low must be a finite number; got 'a'"),
        ({"low": 0.0, "high": 1.0, "log": True}, "a log range needs low > 0"),
        ({"choices": ["sum"], "low": 1}, "choices take no other keys; got ['low']"),
        ({"choices": ["sum"], "step": 1, "lo": 1}, "unknown key 'lo' (did you mean low?)"),
    ],
)
def test_a_bad_space_entry_is_one_line_before_the_study_is_created(spec, words, dry_run, capsys):
    path = write_sweep(space={"model.neck.fusion": spec})
    assert sweep([path, "--storage", "sqlite:///s.db", *(["--dry-run"] if dry_run else [])]) == 2
    assert words in one_error(capsys)
    assert written() == []


@pytest.mark.parametrize("seeds", ["-1", "0,0", "4294967296", "1.5"])
def test_seeds_out_of_range_or_repeated_are_named_before_anything_trains(seeds, capsys):
    assert sweep([write_sweep(), "--storage", "sqlite:///s.db", f"--seeds={seeds}"]) == 2
    line = one_error(capsys)
    assert "--seeds" in line and seeds.split(",")[0] in line, line
    assert written() == []


def test_a_key_with_one_choice_and_a_grid_smaller_than_n_trials_are_said_once_not_warned_by_optuna(capsys):
    path = write_sweep(space={"model.neck.fusion": {"choices": ["sum"]}}, n_trials=2)
    assert sweep([path, "--storage", "sqlite:///s.db", "--dry-run"]) == 0
    err = capsys.readouterr().err
    assert "note: space.model.neck.fusion has one choice (sum): nothing varies along it" in err
    assert "note: the grid has 1 point(s) and n_trials is 2: points run again" in err
    assert written() == []


def test_a_report_with_no_run_folder_of_its_study_says_where_it_looked_and_what_is_lost(shared_study, capsys):
    Path("runs").mkdir()
    assert report(["--study", "t", "--storage", shared_study.url, "--runs", "runs"]) == 0
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning")]
    assert len(lines) == 1 and "no run folder under runs/t/" in lines[0] and "for any variant" in lines[0], lines
    assert "per-class IoU, receptive fields, ERF or predictions" in lines[0] and "give --runs" in lines[0]


@pytest.mark.parametrize("command", ["sweep", "table", "report"])
def test_a_storage_file_that_is_not_a_database_is_named_as_such_and_nothing_is_left_beside_it(command, capsys):
    Path("notes.txt").write_text("not a database\n")
    url = "sqlite:///notes.txt"
    argv = {"sweep": [write_sweep()], "table": [], "report": ["--study", "t"]}[command]
    assert {"sweep": sweep, "table": table, "report": report}[command]([*argv, "--storage", url]) == 2
    line = one_error(capsys)
    assert "notes.txt" in line and "not a SQLite database" in line or "not a database" in line, line
    assert written() == ["notes.txt"]
