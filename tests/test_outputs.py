"""Nothing half-written: files go to a temporary sibling renamed into place, folders a failed command made are
removed. The faults are real: the disk fills (RLIMIT_FSIZE in a child process) while a command writes."""
from __future__ import annotations

import hashlib
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from eegloop._files import atomic_path, atomic_write_text, new_folders

REPO = Path(__file__).resolve().parents[1]


def limited(args, limit: int, cwd=None):
    """``eegloop ARGS`` in a child process whose files cannot grow past ``limit`` bytes."""
    import resource

    def cap():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-m", "eegloop", *map(str, args)], preexec_fn=cap, capture_output=True,
                          text=True, timeout=300, env=env, cwd=cwd)


def one_line(p) -> str:
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert p.returncode == 2 and len(lines) == 1 and lines[0].startswith("eegloop: error: "), p.stderr[-2000:]
    return lines[0]


def tree(root: Path) -> dict:
    return {str(p.relative_to(root)): (hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir")
            for p in sorted(root.rglob("*"))}


def test_atomic_path_replaces_whole_or_not_at_all(tmp_path):
    f = tmp_path / "r.json"
    f.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(f) as tmp:
            tmp.write_text("half")
            raise RuntimeError("the writer fails half-way")
    assert f.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["r.json"]
    atomic_write_text(f, "new")
    assert f.read_text() == "new" and stat.S_IMODE(f.stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.json"]
    with atomic_path(tmp_path / "plot.png", mode=0o644) as tmp:
        assert tmp.suffix == ".png" and tmp.parent == tmp_path  # writers that read the suffix keep the format
        tmp.write_bytes(b"png")
    assert stat.S_IMODE((tmp_path / "plot.png").stat().st_mode) == 0o644


def test_new_folders_removes_only_what_it_made(tmp_path):
    (tmp_path / "mine").mkdir()
    with pytest.raises(OSError):
        with new_folders(tmp_path / "a" / "b") as created:
            (tmp_path / "a" / "b" / "x").write_text("x")
            raise OSError("disk full")
    assert not (tmp_path / "a").exists()
    with pytest.raises(OSError):
        with new_folders(tmp_path / "mine") as created:  # existed: kept, but what the block made in it goes
            (tmp_path / "mine" / "cls").mkdir()
            created.append(tmp_path / "mine" / "cls")
            raise OSError("disk full")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine"] and not any((tmp_path / "mine").iterdir())
    with new_folders(tmp_path / "ok" / "deeper") as created:
        pass
    assert created == [tmp_path / "ok", tmp_path / "ok" / "deeper"]
    assert stat.S_IMODE((tmp_path / "ok").stat().st_mode) == 0o700


def test_protocol_new_never_leaves_a_truncated_file(tmp_path):
    out = tmp_path / "my.yaml"
    out.write_text("name: mine\n")
    size = (REPO / "protocols" / "ferrante2023.yaml").stat().st_size
    p = limited(["protocol", "new", out, "--from", "ferrante2023", "--force"], size // 2)
    assert "File too large" in one_line(p) and "the existing file is as it was" in p.stderr
    assert out.read_text() == "name: mine\n" and sorted(x.name for x in tmp_path.iterdir()) == ["my.yaml"]
    p = limited(["protocol", "new", tmp_path / "new.yaml", "--from", "ferrante2023"], size // 2)
    one_line(p)
    assert sorted(x.name for x in tmp_path.iterdir()) == ["my.yaml"]


def test_stimuli_synth_leaves_no_folder_and_no_broken_image(tmp_path):
    # a new folder: removed again when the disk fills
    p = limited(["stimuli", "synth", "--classes", "3", "--per-class", "4", "--size", "256", "--out",
                 tmp_path / "new" / "stim"], 20_000)
    assert "File too large" in one_line(p)
    assert list(tmp_path.iterdir()) == []
    # an existing set: its images stay whole, the class folder this run made goes
    ok = limited(["stimuli", "synth", "--classes", "2", "--per-class", "3", "--size", "32", "--out",
                  tmp_path / "stim"], 10**9)
    assert ok.returncode == 0, ok.stderr
    before = tree(tmp_path / "stim")
    p = limited(["stimuli", "synth", "--classes", "3", "--per-class", "3", "--size", "256", "--out",
                 tmp_path / "stim"], 20_000)
    one_line(p)
    assert tree(tmp_path / "stim") == before


def test_report_folder_is_not_left_behind(tmp_path, fresh_postgres_db):
    """The database is a PostgreSQL server (another process, not under the limit; SQLite's own -shm file would
    not fit under it), so the report is what fills the disk."""
    data = REPO.parent / "shared" / "data" / "n170" / "subject2" / "session1"
    if not data.is_dir():
        pytest.skip("shared/data not beside the checkout")
    from eegloop.cli import main

    csv = sorted(data.glob("*.csv"))[0]
    db = ["--db", fresh_postgres_db, "--data", str(tmp_path / "d")]
    assert main(["import", str(csv), "--subject", "n1", "--format", "csv", "--events", "1=house,2=face",
                 "--channels", "TP9,AF7,AF8,TP10", "--protocol", str(REPO / "protocols" / "n170.yaml"), *db]) == 0
    p = limited(["report", "--session", "1", "--out", tmp_path / "rep" / "s1", *db], 500)
    assert "File too large" in one_line(p) and "nothing was left half-written" in p.stderr
    assert not (tmp_path / "rep").exists()
    assert main(["report", "--session", "1", "--out", str(tmp_path / "rep" / "s1"), *db]) == 0
    before = tree(tmp_path / "rep")
    p = limited(["report", "--session", "1", "--out", tmp_path / "rep" / "s1", *db], 500)
    one_line(p)
    assert tree(tmp_path / "rep") == before  # the report that was there stays whole
