"""A run folder belongs to one study (runs/<study>/study.json), and the commands that read a study never write: no
storage file, no lock, no run folder (issue #32)."""

import json
import sqlite3
from pathlib import Path

import optuna
import pytest
from helpers import write_sweep

from ablate.dashboard import main as dashboard
from ablate.report import main as report
from ablate.sweep import main as sweep
from ablate.table import main as table

A, B = "sqlite:///a.db", "sqlite:///b.db"


def one_error(capsys) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def files() -> dict[str, bytes]:
    """Every file under the test's folder, with its bytes."""
    return {str(p): p.read_bytes() for p in sorted(Path().rglob("*")) if p.is_file()}


@pytest.fixture
def swept(capsys) -> str:
    """One tiny trial of study 't' in a.db (runs/t/t0-s0/), its output read."""
    path = write_sweep(n_trials=1, seeds=(0,))
    assert sweep([path, "--storage", A]) == 0
    capsys.readouterr()
    return path


def test_the_same_study_name_on_another_storage_stops_before_training(swept, capsys):
    summary = Path("runs/t/t0-s0/summary.json").read_bytes()
    assert sweep([swept, "--storage", B]) == 2
    line = one_error(capsys)
    assert "study 't'" in line and A in line and B in line, line
    assert "--study" in line and "runs/t/" in line, line  # the way out
    assert Path("runs/t/t0-s0/summary.json").read_bytes() == summary
    assert not Path("b.db").exists()  # refused before the study was created there


def test_a_study_created_again_under_the_same_name_and_storage_is_told_apart(swept, capsys):
    optuna.delete_study(study_name="t", storage=A)
    summary = Path("runs/t/t0-s0/summary.json").read_bytes()
    assert sweep([swept, "--storage", A]) == 2
    line = one_error(capsys)
    assert "study 't'" in line and A in line and "--study" in line, line
    assert Path("runs/t/t0-s0/summary.json").read_bytes() == summary


def test_resume_on_the_same_storage_goes_on_in_the_same_folder(swept, capsys):
    record = json.loads(Path("runs/t/study.json").read_text())
    assert record["storage"] == A and record["study"] == "t" and record["id"]
    assert sweep([swept, "--storage", f"sqlite:///{Path('a.db').resolve()}", "--n-trials", "2"]) == 0  # same file
    assert Path("runs/t/t1-s0/summary.json").is_file()
    assert json.loads(Path("runs/t/study.json").read_text()) == record


def test_a_folder_from_before_study_json_is_adopted_by_its_study(swept, capsys):
    Path("runs/t/study.json").unlink()
    with sqlite3.connect("a.db") as db:  # a study made before the id existed
        db.execute("DELETE FROM study_user_attributes WHERE key = 'ablate_id'")
    assert sweep([swept, "--storage", A, "--n-trials", "2"]) == 0
    record = json.loads(Path("runs/t/study.json").read_text())
    assert record["id"] == optuna.load_study(study_name="t", storage=A).user_attrs["ablate_id"]


def test_check_flags_a_run_folder_of_another_storages_study(swept, capsys):
    other = {"study": "t", "storage": B, "id": "0123456789abcdef"}  # as a sweep of study 't' in b.db writes it
    Path("runs/t/study.json").write_text(json.dumps(other))
    assert table(["--check", "--storage", A]) == 1
    out = capsys.readouterr().err
    assert f"runs/t/ holds the runs of study 't' (id 01234567) in {B}" in out, out
    assert table(["--storage", A]) == 0  # the table, with one line saying what it left out
    err = capsys.readouterr().err
    assert [line for line in err.splitlines() if line.startswith("warning: runs/t/ holds the runs of")], err


@pytest.mark.parametrize("command", ["table", "check", "report", "dashboard"])
def test_a_read_command_on_no_storage_names_it_and_writes_nothing(command, capsys):
    if command == "report":
        Path("runs").mkdir()  # report wants its --runs folder first
    before = files()
    run = {
        "table": lambda: table(["--study", "nope"]),
        "check": lambda: table(["--check", "--study", "nope"]),
        "report": lambda: report(["--study", "nope"]),
        "dashboard": lambda: dashboard(["--study", "nope", "--dry-run"]),
    }[command]
    assert run() == 2
    line = one_error(capsys)
    assert "sqlite:///runs/ablate.db" in line and "no study has been run there" in line, line
    assert files() == before and sorted(Path().rglob("*")) == ([Path("runs")] if command == "report" else [])


@pytest.mark.parametrize("command", ["table", "check", "report", "dashboard"])
def test_no_study_names_the_storage_and_its_studies_and_writes_nothing(command, capsys):
    optuna.create_study(study_name="other", storage=A)
    Path("runs").mkdir()
    before = files()
    run = {
        "table": lambda: table(["--study", "nope", "--storage", A]),
        "check": lambda: table(["--check", "--study", "nope", "--storage", A]),
        "report": lambda: report(["--study", "nope", "--storage", A]),
        "dashboard": lambda: dashboard(["--study", "nope", "--storage", A, "--dry-run"]),
    }[command]
    assert run() == 2
    assert f"no study 'nope' in {A}; studies there: other" in one_error(capsys)
    assert files() == before  # no lock file beside a.db either


def test_a_postgresql_storage_is_read_in_read_only_transactions_and_never_given_tables(postgres_url, capsys):
    import uuid

    import sqlalchemy

    name = f"empty_{uuid.uuid4().hex[:8]}"
    server = sqlalchemy.create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    with server.connect() as connection:
        connection.execute(sqlalchemy.text(f"CREATE DATABASE {name}"))
    server.dispose()
    url = postgres_url.rsplit("/", 1)[0] + f"/{name}"
    assert table(["--study", "nope", "--storage", url]) == 2
    assert "it has no Optuna tables, so no study has been run there" in one_error(capsys)
    engine = sqlalchemy.create_engine(url)
    assert sqlalchemy.inspect(engine).get_table_names() == []  # the read made none
    optuna.create_study(study_name="other", storage=url)
    assert table(["--study", "nope", "--storage", url]) == 2
    assert f"no study 'nope' in {url}; studies there: other" in one_error(capsys)
    from ablate.study.storage import read_storage

    storage = read_storage(url)
    with pytest.raises(optuna.exceptions.StorageInternalError):  # a write is refused by the server
        storage.set_study_user_attr(storage.get_study_id_from_name("other"), "k", 1)
    storage.engine.dispose()
    engine.dispose()
