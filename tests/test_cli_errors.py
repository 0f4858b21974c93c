"""Bad databases and bad subject codes, as a user meets them: one line ``eegloop: error: ...``, exit 2, no
traceback, no password printed, and the database (or its absence) exactly as it was."""
from __future__ import annotations

import hashlib
import os
import socket
import sqlite3
import stat
import sys
import time
from pathlib import Path

import pytest

from eegloop.cli import main

REPO = Path(__file__).resolve().parents[1]
SECRET = "s3cr3tPW"


def run(capsys, *args):
    rc = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return rc, out, err


def one_line_error(rc, out, err, *, contains=()):
    assert rc == 2, (rc, out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("eegloop: error: "), err
    assert "Traceback" not in err
    assert SECRET not in out and SECRET not in err
    for c in contains:
        assert c in err, err
    return lines[0]


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- URLs -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("command", [["subject", "add", "S1"], ["subject", "list"], ["db", "init"]])
def test_postgres_driver_not_installed(capsys, monkeypatch, tmp_path, command):
    monkeypatch.chdir(tmp_path)
    for mod in ("psycopg", "psycopg2"):  # as on a machine without them
        monkeypatch.setitem(sys.modules, mod, None)
    rc, out, err = run(capsys, *command, "--db", f"postgresql://u:{SECRET}@127.0.0.1:1/x")
    one_line_error(rc, out, err, contains=("pip install 'psycopg[binary]'", "postgresql+psycopg://", "u:***@"))
    assert listing(tmp_path) == []  # no data folder made


def test_mysql_driver_not_installed(capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "MySQLdb", None)
    rc, out, err = run(capsys, "subject", "list", "--db", f"mysql://u:{SECRET}@localhost/x")
    one_line_error(rc, out, err, contains=("MySQLdb", "pip install pymysql"))


@pytest.mark.parametrize("url", [
    f"postgresql://u:{SECRET}@host:notaport/x",  # does not parse
    f"not a url {SECRET}@x",
    f"nosuchdb://u:{SECRET}@h/x",  # an unknown dialect
    f"nosuchdb://u:{SECRET}@" + "h" * 5000 + "/x",  # a very long one
    f"postgresql+nosuchdriver://u:{SECRET}@h/x",
])
def test_bad_url_one_line_no_password(capsys, tmp_path, monkeypatch, url):
    monkeypatch.chdir(tmp_path)
    rc, out, err = run(capsys, "subject", "add", "S1", "--db", url)
    line = one_line_error(rc, out, err, contains=("cannot use database URL",))
    assert len(line) < 500
    assert listing(tmp_path) == []


def test_password_only_in_query_is_hidden_too(capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "psycopg", None)
    rc, out, err = run(capsys, "subject", "list", "--db", f"postgresql://u@h/x?password={SECRET}")
    one_line_error(rc, out, err)


def test_postgres_refuses_connection_quickly(capsys):
    t0 = time.monotonic()
    rc, out, err = run(capsys, "subject", "list", "--db", f"postgresql+psycopg://u:{SECRET}@127.0.0.1:{_free_port()}/x")
    one_line_error(rc, out, err, contains=("u:***@127.0.0.1",))
    assert time.monotonic() - t0 < 15


def test_postgres_read_only_on_empty_database(capsys, fresh_postgres_db):
    url = fresh_postgres_db.replace("postgres@", f"postgres:{SECRET}@")  # trust auth: the password is unused
    rc, out, err = run(capsys, "subject", "list", "--db", url)
    one_line_error(rc, out, err, contains=("has no eegloop tables", "eegloop db init", "postgres:***@"))
    rc, out, err = run(capsys, "subject", "add", "S1", "--db", url)  # may create
    assert rc == 0, err
    rc, out, err = run(capsys, "subject", "list", "--db", url)
    assert rc == 0 and "S1" in out and SECRET not in out


# -- files that are not databases -------------------------------------------------------------------
def _not_databases(tmp_path: Path) -> list[Path]:
    (tmp_path / "random.db").write_bytes(os.urandom(4096))
    (tmp_path / "notes.db").write_text("subject S01 came at 10:00\n" * 20)
    (tmp_path / "folder.db").mkdir()
    (tmp_path / "header-only.db").write_bytes(b"SQLite format 3\x00" + os.urandom(200))
    return [tmp_path / n for n in ("random.db", "notes.db", "folder.db", "header-only.db")]


@pytest.mark.parametrize("command", [["subject", "add", "S1"], ["subject", "list"], ["db", "init"],
                                     ["report", "--session", "1"]])
def test_not_a_sqlite_database_left_untouched(capsys, tmp_path, command):
    for path in _not_databases(tmp_path):
        before = sha(path) if path.is_file() else None
        names = listing(tmp_path)
        rc, out, err = run(capsys, *command, "--db", f"sqlite:///{path}")
        one_line_error(rc, out, err)
        assert (sha(path) if path.is_file() else None) == before, path
        assert listing(tmp_path) == names  # no -wal, -shm or -journal beside it
        if path.is_dir():
            assert listing(path) == []


def test_another_programs_sqlite_database_is_refused(capsys, tmp_path):
    path = tmp_path / "other.db"
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE contacts (name TEXT)")
    con.execute("INSERT INTO contacts VALUES ('x')")
    con.commit()
    con.close()
    before = sha(path)
    for command in (["subject", "add", "S1"], ["db", "init"], ["subject", "list"]):
        rc, out, err = run(capsys, *command, "--db", f"sqlite:///{path}")
        one_line_error(rc, out, err)
        assert sha(path) == before
    assert listing(tmp_path) == ["other.db"]


# -- read-only commands never create ------------------------------------------------------------------
@pytest.mark.parametrize("command", [
    ["subject", "list"],
    ["evaluate", "--subject", "x"],
    ["train", "--subject", "x"],
    ["report", "--session", "1"],
    ["feedback", "--protocol", REPO / "protocols" / "demo.yaml", "--subject", "S1", "--mode", "stimulus"],
])
def test_read_only_commands_create_nothing(capsys, tmp_path, monkeypatch, command):
    monkeypatch.chdir(tmp_path)
    db = tmp_path / "nowhere" / "eegloop.db"
    rc, out, err = run(capsys, *command, "--db", f"sqlite:///{db}")
    one_line_error(rc, out, err, contains=("no eegloop database at", "eegloop db init"))
    assert not db.exists() and not db.parent.exists()
    rc, out, err = run(capsys, *command, "--data", tmp_path / "data")
    one_line_error(rc, out, err, contains=("no eegloop database at",))
    assert not (tmp_path / "data").exists()
    rc, out, err = run(capsys, *command)  # the default ./eegloop-data
    one_line_error(rc, out, err)
    assert listing(tmp_path) == []


def _set_revision(path: Path, rev: str) -> None:
    con = sqlite3.connect(path)
    con.execute("UPDATE alembic_version SET version_num = ?", (rev,))
    con.commit()
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # into the file itself, so that its bytes are the state
    con.close()


def test_read_only_refuses_old_and_new_schemas(capsys, tmp_path):
    assert run(capsys, "subject", "add", "S1", "--data", tmp_path)[0] == 0
    path = tmp_path / "eegloop.db"
    _set_revision(path, "0001")
    before = sha(path)
    rc, out, err = run(capsys, "subject", "list", "--data", tmp_path)
    one_line_error(rc, out, err, contains=("older than", "eegloop db upgrade"))
    assert sha(path) == before

    _set_revision(path, "f00dfeed9999")
    before = sha(path)
    for command in (["subject", "list"], ["subject", "add", "S2"], ["db", "upgrade"]):
        rc, out, err = run(capsys, *command, "--data", tmp_path)
        one_line_error(rc, out, err, contains=("f00dfeed9999", "newer eegloop"))
        assert sha(path) == before


def test_empty_file_is_no_database_for_read_only(capsys, tmp_path):
    path = tmp_path / "empty.db"
    path.touch()
    rc, out, err = run(capsys, "subject", "list", "--db", f"sqlite:///{path}")
    one_line_error(rc, out, err, contains=("empty",))
    assert path.stat().st_size == 0


# -- locks ---------------------------------------------------------------------------------------------
def test_locked_database_fails_in_seconds(capsys, tmp_path):
    assert run(capsys, "db", "init", "--data", tmp_path)[0] == 0
    path = tmp_path / "eegloop.db"
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        t0 = time.monotonic()
        rc, out, err = run(capsys, "subject", "add", "S1", "--data", tmp_path)
        took = time.monotonic() - t0
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    line = one_line_error(rc, out, err, contains=("is locked by another program",))
    assert line.startswith("eegloop: error: database sqlite:///")
    assert took < 8, took
    rc, out, err = run(capsys, "subject", "list", "--data", tmp_path)
    assert rc == 0 and "no subjects yet" in out  # nothing was added


# -- permissions ----------------------------------------------------------------------------------------
@pytest.mark.skipif(os.name != "posix", reason="POSIX modes")
def test_data_folder_and_database_are_private(capsys, tmp_path):
    old = os.umask(0o022)
    try:
        assert run(capsys, "subject", "add", "S1", "--data", tmp_path / "d" / "inner")[0] == 0
    finally:
        os.umask(old)
    for d in (tmp_path / "d", tmp_path / "d" / "inner"):
        assert stat.S_IMODE(d.stat().st_mode) == 0o700, d
    for f in (tmp_path / "d" / "inner").iterdir():  # eegloop.db and its -wal/-shm
        assert stat.S_IMODE(f.stat().st_mode) == 0o600, f

    mine = tmp_path / "mine"  # a folder the user made: its mode is theirs
    mine.mkdir(mode=0o755)
    os.chmod(mine, 0o755)
    assert run(capsys, "subject", "add", "S1", "--data", mine)[0] == 0
    assert stat.S_IMODE(mine.stat().st_mode) == 0o755
    assert stat.S_IMODE((mine / "eegloop.db").stat().st_mode) == 0o600


@pytest.mark.skipif(os.name != "posix", reason="POSIX modes")
def test_private_helpers(tmp_path):
    from eegloop._files import private_dir, private_file, write_private_text

    old = os.umask(0o000)
    try:
        created = []
        private_dir(tmp_path / "a" / "b", created)
        f = write_private_text(tmp_path / "a" / "b" / "r.html", "x")
        g = private_file(tmp_path / "a" / "g.bin", create=True)
    finally:
        os.umask(old)
    assert created == [tmp_path / "a", tmp_path / "a" / "b"]
    assert {stat.S_IMODE(p.stat().st_mode) for p in created} == {0o700}
    assert stat.S_IMODE(f.stat().st_mode) == stat.S_IMODE(g.stat().st_mode) == 0o600
    with pytest.raises(FileExistsError):
        private_dir(f)


# -- subject codes --------------------------------------------------------------------------------------
@pytest.mark.parametrize("code", ["n170-s2", "sim_01", "S.1", "John Smith", "S1\n", "../x", "", "é1", "x" * 65])
def test_bad_subject_code_writes_nothing(capsys, tmp_path, monkeypatch, code):
    monkeypatch.chdir(tmp_path)
    rc, out, err = run(capsys, "subject", "add", code, "--data", tmp_path / "d")
    one_line_error(rc, out, err, contains=("letters and digits",))
    csv = tmp_path / "x.csv"
    csv.write_text("timestamps,TP9\n0,1\n")
    rc, out, err = run(capsys, "import", csv, "--subject", code, "--format", "csv", "--events", "1=a",
                       "--protocol", REPO / "protocols" / "n170.yaml", "--data", tmp_path / "d")
    one_line_error(rc, out, err, contains=("letters and digits",))
    assert not (tmp_path / "d").exists()


def test_subject_code_added_before_the_rule_stays_usable(capsys, tmp_path):
    import argparse

    from eegloop.cli.common import check_new_subject
    from eegloop.errors import DatabaseError

    assert run(capsys, "db", "init", "--data", tmp_path)[0] == 0
    con = sqlite3.connect(tmp_path / "eegloop.db")
    con.execute("INSERT INTO subjects (code, created_at) VALUES ('old-code', CURRENT_TIMESTAMP)")
    con.commit()
    con.close()
    args = argparse.Namespace(db=None, data=tmp_path)
    check_new_subject(args, "old-code")  # known: record/session may continue with it
    with pytest.raises(DatabaseError, match="letters and digits"):
        check_new_subject(args, "new-code")


def test_good_subject_codes(capsys, tmp_path):
    for code in ("S01", "n170s2", "P007", "x" * 64):
        assert run(capsys, "subject", "add", code, "--data", tmp_path)[0] == 0
    rc, out, _ = run(capsys, "subject", "list", "--data", tmp_path)
    assert rc == 0 and "n170s2" in out


def test_other_exceptions_keep_their_traceback(monkeypatch, tmp_path):
    import eegloop.cli as cli
    import eegloop.cli.db as cli_db

    def boom(args):
        raise RuntimeError("a bug")

    monkeypatch.setattr(cli_db, "subject_list", boom)
    with pytest.raises(RuntimeError, match="a bug"):
        cli.main(["subject", "list", "--data", str(tmp_path)])


def test_bad_montage_and_timing_inputs_are_one_line(capsys, tmp_path):
    """A montage MNE does not know or cannot read, and check-timing's bad arguments: one line each, exit 2,
    and `record` refuses before the database changes."""
    import yaml

    base = yaml.safe_load((REPO / "protocols" / "demo.yaml").read_text())
    base["stimuli"]["folder"] = str(tmp_path / "stim")
    for montage, needle in (("standard_9999", "is neither one of MNE's standard montages"),
                            ("cap.elc", "amplifier.montage: cannot read montage file cap.elc")):
        (tmp_path / "cap.elc").write_text("this is not a montage\n")
        base["amplifier"]["montage"] = montage
        p = tmp_path / "p.yaml"
        p.write_text(yaml.safe_dump(base))
        rc, out, err = run(capsys, "protocol", "check", p)
        one_line_error(rc, out, err, contains=(needle,))
        assert run(capsys, "subject", "add", "S1", "--data", tmp_path / "d")[0] in (0, 2)
        before = sha(tmp_path / "d" / "eegloop.db")
        rc, out, err = run(capsys, "record", "--protocol", p, "--subject", "S1", "--data", tmp_path / "d")
        one_line_error(rc, out, err, contains=(needle,))
        assert sha(tmp_path / "d" / "eegloop.db") == before
    base["amplifier"]["montage"] = None
    p.write_text(yaml.safe_dump(base))
    rc, out, err = run(capsys, "check-timing", "--protocol", p, "--trials", "2")
    one_line_error(rc, out, err, contains=("--trials: must be a whole number from 5 to 10000, got '2'",))
