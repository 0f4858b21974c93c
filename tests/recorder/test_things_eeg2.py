"""eegloop import --format things-eeg2: small files of THINGS-EEG2's layout, through the real CLI.

The data files are pickles (np.save of dicts): they are read by eegloop._safe_pickle, which rebuilds NumPy
arrays and plain containers only. A file whose pickle would run code is refused without running it.
"""
from __future__ import annotations

import hashlib
import os
import pathlib
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from eegloop.cli import main

REPO = Path(__file__).resolve().parents[2]
PROTO = REPO / "protocols" / "things-eeg2.yaml"
CH = ["Pz", "P3", "P7", "O1", "Oz", "O2", "P4", "P8", "P1", "P5", "PO7", "PO3", "POz", "PO4", "PO8", "P6", "P2"]
TIMES = np.arange(100) / 100 - 0.2
TRAIN_CONCEPTS = ["00001_aardvark", "00002_abacus", "00003_baseball_bat"]
TEST_CONCEPTS = ["01001_candle", "01002_dog", "01003_ice_cream", "01004_zebra"]


def _eeg(n_images: int, reps: int, seed: int) -> np.ndarray:
    """(images, reps, 17, 100) float64, each (image, rep) offset by 100 * image + rep so its place can be checked."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n_images, reps, len(CH), len(TIMES)))
    return x + (100 * np.arange(n_images)[:, None] + np.arange(reps)[None, :])[..., None, None]


def make_things(root: Path, images: bool = True) -> dict:
    """A tiny THINGS-EEG2: metadata, sub-01/ with (12 images x 4 reps) training and (4 x 8) test files, images."""
    train_c = [TRAIN_CONCEPTS[i // 4] for i in range(12)]
    train_f = [f"{c.split('_', 1)[1]}_{i % 4 + 1:02d}b.jpg" for i, c in enumerate(train_c)]
    test_f = [f"{c.split('_', 1)[1]}_01s.jpg" for c in TEST_CONCEPTS]
    meta = {"train_img_concepts": train_c, "train_img_files": train_f,
            "test_img_concepts": list(TEST_CONCEPTS), "test_img_files": test_f}
    root.mkdir(parents=True, exist_ok=True)
    np.save(root / "image_metadata.npy", meta)
    sub = root / "sub-01"
    sub.mkdir()
    train, test = _eeg(12, 4, 0), _eeg(4, 8, 1)
    np.save(sub / "preprocessed_eeg_training.npy", {"preprocessed_eeg_data": train, "ch_names": list(CH),
                                                    "times": TIMES})
    np.save(sub / "preprocessed_eeg_test.npy", {"preprocessed_eeg_data": test, "ch_names": list(CH), "times": TIMES})
    paths = []
    if images:
        from PIL import Image

        rng = np.random.default_rng(2)
        for folder, concepts, files in (("training_images", train_c, train_f), ("test_images", TEST_CONCEPTS, test_f)):
            for c, f in zip(concepts, files):
                p = root / "images" / folder / c / f
                p.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(p, format="JPEG")
                paths.append(p)
    return {"root": root, "sub": sub, "meta": meta, "train": train, "test": test, "images": paths}


def run_cli(capsys, *args) -> tuple[int, str, str]:
    rc = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return rc, out, err


def _import_args(things, url, subject="t1", *extra):
    return ("import", things["sub"], "--format", "things-eeg2", "--subject", subject, "--protocol", PROTO,
            "--db", url, *extra)


def _one_line_error(rc: int, err: str) -> str:
    lines = err.strip().splitlines()
    assert rc == 2 and len(lines) == 1 and lines[0].startswith("eegloop: error: "), (rc, err)
    assert "Traceback" not in err
    return lines[0]


def _db(url):
    from eegloop.database import Database

    return Database(url)


def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def test_import_with_images(capsys, tmp_path):
    """Epochs stored with concept labels, runs/blocks by repetition, channels, rate, tmin; images resolve
    to sha256; the session carries the official zero-shot split; the protocol's window fits the epochs."""
    from eegloop.decoder.preprocessing import Preprocessor
    from eegloop.protocol import load_protocol

    things = make_things(tmp_path / "things")
    url = f"sqlite:///{tmp_path / 'data' / 'eegloop.db'}"
    rc, out, err = run_cli(capsys, *_import_args(things, url), "--images", things["root"] / "images")
    assert rc == 0, err
    assert "imported 80 THINGS-EEG2 epochs (training: 12 images x 4 repetitions, 3 concepts; test: 4 images x 8 " \
           "repetitions, 4 concepts) as session 1 of t1" in out
    assert "runs 1, 2, 3, 4, 11, 12, 13, 14, one block each" in out and "no recording order" in out
    assert "zero-shot split: 4 test concepts" in out and "16 found under" in out

    db = _db(url)
    es = db.load_epochs("t1")
    assert len(es) == 12 * 4 + 4 * 8
    assert es.channel_names == CH and es.sfreq == 100.0 and es.tmin == pytest.approx(-0.2)
    assert es.data.shape[1:] == (17, 100)
    assert set(es.labels) == set(TRAIN_CONCEPTS) | set(TEST_CONCEPTS)
    assert np.array_equal(es.runs, es.blocks)
    counts = {r: int((es.runs == r).sum()) for r in np.unique(es.runs)}
    assert counts == {1: 12, 2: 12, 3: 12, 4: 12, 11: 8, 12: 8, 13: 8, 14: 8}
    assert set(es.labels[es.runs >= 11]) == set(TEST_CONCEPTS) and set(es.labels[es.runs < 11]) == set(TRAIN_CONCEPTS)
    # each epoch is its (image, repetition) row: training rep r is run r + 1; test reps 2g, 2g + 1 are run 11 + g
    img_of = {}
    for split, files in (("training", things["meta"]["train_img_files"]), ("test", things["meta"]["test_img_files"])):
        for i, f in enumerate(files):
            img_of[(split, f)] = i
    shas = {r.sha256: r for r in db.get_stimuli()}
    assert len(shas) == 16 and set(es.images) == set(shas)  # every epoch's image resolved, to the right file
    by_path = {Path(r.path).name: r for r in shas.values()}
    for k in range(len(es)):
        row = shas[es.images[k]]
        assert row.class_id == es.labels[k] and row.sha256 == _sha(Path(row.path))
        split = "test" if es.runs[k] >= 11 else "training"
        assert Path(row.path).parent.parent.name == f"{split}_images" and Path(row.path).parent.name == es.labels[k]
        i = img_of[(split, Path(row.path).name)]
        # the offset 100 * image + rep says which row this is (noise is ~N(0, 1))
        rep = int(round(es.data[k].mean() - 100 * i))
        if split == "training":
            assert es.runs[k] == rep + 1
            assert np.allclose(es.data[k], things["train"][i, rep].astype(np.float32))
        else:
            assert es.runs[k] == 11 + rep // 2
            assert np.allclose(es.data[k], things["test"][i, rep].astype(np.float32))
    assert by_path["aardvark_01b.jpg"].class_name == "aardvark"
    assert by_path["baseball_bat_01b.jpg"].class_name == "baseball bat"

    info = db.get_session(1)
    assert info.kind == "imported"
    assert info.info["format"] == "things-eeg2" and info.info["zero_shot_test_classes"] == TEST_CONCEPTS
    assert len(info.info["files"]) == 2  # the EEG files (the dataset-wide metadata is not this subject's)
    assert all(b.status == "done" for b in db.get_blocks(1)) and len(db.get_blocks(1)) == 8

    # the template's window (0..0.8 s, margins 0.2 s) crops the files' -0.2..0.79 s epochs exactly
    proto = load_protocol(PROTO)
    pre = Preprocessor.from_protocol(proto.preprocessing, proto.epochs, es.sfreq, es.tmin)
    assert pre.window_slice(es.data.shape[-1]) == slice(20, 100)
    feats = pre(es.data[:5])
    assert feats.shape == (5,) + pre.output_shape(17, 100) and np.isfinite(feats).all()

    # class decoding on these runs: every fold tests images the other runs showed too (repetitions): inflated
    import json

    rc, out, err = run_cli(capsys, "evaluate", "--subject", "t1", "--split", "run", "--methods", "lda_windowed",
                           "--folds", "4", "--db", url, "--json")
    assert rc == 0, err
    res = json.loads(out.strip().splitlines()[-1])
    assert res["split"] == "run" and res["inflated"] is True and res["shuffled_labels"] is False
    assert res["inflated_why"].startswith("images repeated across folds: 80 of 80 test epochs (100 %)")

    # the same files again: refused (a copy would inflate every score), database unchanged
    db.close()
    before = _sha(tmp_path / "data" / "eegloop.db")
    rc, out, err = run_cli(capsys, *_import_args(things, url, "t2"))
    assert "already imported as session 1" in _one_line_error(rc, err)
    assert _sha(tmp_path / "data" / "eegloop.db") == before


def test_import_files_without_images_max_images(capsys, tmp_path):
    """The files themselves (metadata by --metadata), the first N images of each, no images: said so."""
    things = make_things(tmp_path / "things", images=False)
    url = f"sqlite:///{tmp_path / 'eegloop.db'}"
    moved = tmp_path / "elsewhere" / "meta.npy"
    moved.parent.mkdir()
    (things["root"] / "image_metadata.npy").rename(moved)
    sub = things["sub"]
    rc, out, err = run_cli(capsys, "import", sub / "preprocessed_eeg_test.npy", sub / "preprocessed_eeg_training.npy",
                           "--format", "things-eeg2", "--subject", "t1", "--protocol", PROTO, "--db", url,
                           "--metadata", moved, "--max-images", 2)
    assert rc == 0, err
    assert "imported 24 THINGS-EEG2 epochs" in out and "first 2 images of each file" in out
    assert "stimulus images: not given" in out and "zero-shot split: 2 test concepts" in out
    db = _db(url)
    es = db.load_epochs("t1")
    assert len(es) == 2 * 4 + 2 * 8 and not any(es.images)  # no stimuli registered
    assert set(es.labels) == {TRAIN_CONCEPTS[0], *TEST_CONCEPTS[:2]}
    assert db.get_session(1).info["zero_shot_test_classes"] == TEST_CONCEPTS[:2]


class _Touch:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (self.marker,))


class _System:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _Eval:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (eval, (f"open({str(self.marker)!r}, 'w').close()",))


@pytest.mark.parametrize("which", ["training", "test", "metadata"])
@pytest.mark.parametrize("payload,glob", [(_System, "posix.system" if os.name == "posix" else "nt.system"),
                                          (_Eval, "builtins.eval"), (_Touch, "pathlib")])
def test_malicious_file_is_refused_without_running(capsys, tmp_path, which, payload, glob):
    things = make_things(tmp_path / "things", images=False)
    marker = tmp_path / "PWNED"
    target = {"training": things["sub"] / "preprocessed_eeg_training.npy",
              "test": things["sub"] / "preprocessed_eeg_test.npy",
              "metadata": things["root"] / "image_metadata.npy"}[which]
    if which == "metadata":
        d = {**things["meta"], "train_img_files": [payload(marker)] + things["meta"]["train_img_files"][1:]}
    else:
        d = {"preprocessed_eeg_data": things["train" if which == "training" else "test"], "ch_names": CH, "times": TIMES,
             "extra": {"x": [payload(marker)]}}
    np.save(target, d)
    assert not marker.exists()
    url = f"sqlite:///{tmp_path / 'data' / 'eegloop.db'}"
    assert main(["subject", "add", "s0", "--db", url]) == 0
    capsys.readouterr()
    before = _sha(tmp_path / "data" / "eegloop.db")
    rc, out, err = run_cli(capsys, *_import_args(things, url))
    line = _one_line_error(rc, err)
    assert str(target) in line and "never runs code" in line and glob in line
    assert not marker.exists()
    assert _sha(tmp_path / "data" / "eegloop.db") == before


def test_malicious_file_in_a_real_process(tmp_path):
    """The installed entry point: exit code 2, one line, no traceback, nothing run, no database created."""
    things = make_things(tmp_path / "things", images=False)
    marker = tmp_path / "PWNED"
    np.save(things["sub"] / "preprocessed_eeg_test.npy", {"preprocessed_eeg_data": things["test"], "ch_names": CH,
                                                          "times": TIMES, "x": _System(marker)})
    env = dict(os.environ, EEGLOOP_DATA=str(tmp_path / "data"))
    r = subprocess.run([sys.executable, "-m", "eegloop", "import", str(things["sub"]), "--format", "things-eeg2",
                        "--subject", "t1", "--protocol", str(PROTO)], capture_output=True, text=True, env=env,
                       cwd=REPO, timeout=300)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "refused: its pickle calls posix.system" in r.stderr
    assert not marker.exists() and not (tmp_path / "data").exists()


def _truncate(p: Path, keep: float = 0.5) -> None:
    b = p.read_bytes()
    p.write_bytes(b[: int(len(b) * keep)])


def _resave(p: Path, **changes) -> None:
    from eegloop._safe_pickle import load_npy

    d = load_npy(p, unwrap=True)
    d.update(changes)
    for k, v in list(d.items()):
        if v is None:
            del d[k]
    np.save(p, d)


TRAIN = ("sub", "preprocessed_eeg_training.npy")
TEST = ("sub", "preprocessed_eeg_test.npy")
META = ("root", "image_metadata.npy")


def _nan(things):
    x = things["train"].copy()
    x[3, 1, 5, 7] = np.nan
    return x


BAD = {  # name: (file to change, how, what the message says)
    "truncated training": (TRAIN, lambda p, t: _truncate(p), "truncated or damaged"),
    "truncated metadata": (META, lambda p, t: _truncate(p, 0.8), "truncated or damaged"),
    "garbage test": (TEST, lambda p, t: p.write_bytes(b"not numpy at all" * 10), "not a NumPy .npy file"),
    "empty metadata": (META, lambda p, t: p.write_bytes(b""), "not a NumPy .npy file"),
    "plain array": (TRAIN, lambda p, t: np.save(p, np.zeros((3, 4))), "expected a dict"),
    "wrong keys": (TEST, lambda p, t: _resave(p, preprocessed_eeg_data=None, eeg=t["test"]),
                   "no 'preprocessed_eeg_data'"),
    "wrong metadata keys": (META, lambda p, t: _resave(p, test_img_files=None), "no 'test_img_files'"),
    "3-d data": (TRAIN, lambda p, t: _resave(p, preprocessed_eeg_data=t["train"][:, 0]), "must be a numeric array"),
    "channels mismatch": (TRAIN, lambda p, t: _resave(p, ch_names=CH[:16]), "16 channels as in 'ch_names'"),
    "times mismatch": (TEST, lambda p, t: _resave(p, times=TIMES[:90]), "90 times as in 'times'"),
    "irregular times": (TEST, lambda p, t: _resave(p, times=np.r_[TIMES[:50], TIMES[50:] + 0.003]),
                        "not regular increasing times"),
    "string data": (TRAIN, lambda p, t: _resave(p, preprocessed_eeg_data=np.array(["a"])), "must be a numeric array"),
    "nan": (TRAIN, lambda p, t: _resave(p, preprocessed_eeg_data=_nan(t)),
            "non-finite values (NaN/inf) in 'preprocessed_eeg_data', first at image 3, repetition 1, channel 'O2'"),
    "metadata count": (META, lambda p, t: _resave(p, train_img_concepts=t["meta"]["train_img_concepts"][:10],
                                                  train_img_files=t["meta"]["train_img_files"][:10]),
                       "12 images, but"),
    "metadata lengths differ": (META, lambda p, t: _resave(p, test_img_files=t["meta"]["test_img_files"][:3]),
                                "4 'test_img_concepts' but 3 'test_img_files'"),
    "path in image name": (META, lambda p, t: _resave(p, test_img_files=["../../../etc/passwd"] +
                                                      t["meta"]["test_img_files"][1:]), "not a plain file"),
    "set in file": (TEST, lambda p, t: _resave(p, extra={1, 2}), "refused: it holds a set"),
    "test channels differ": (TEST, lambda p, t: _resave(p, ch_names=CH[::-1]), "differ from those of"),
    "no metadata": (META, lambda p, t: p.unlink(), "no image_metadata.npy here or in the folder above"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_files_are_one_line_errors(capsys, tmp_path, case):
    where, change, needle = BAD[case]
    things = make_things(tmp_path / "things", images=False)
    target = things[where[0]] / where[1]
    change(target, things)
    url = f"sqlite:///{tmp_path / 'data' / 'eegloop.db'}"
    rc, out, err = run_cli(capsys, *_import_args(things, url))
    line = _one_line_error(rc, err)
    assert needle in line, line
    if case != "no metadata":
        assert str(target) in line, line
    assert not (tmp_path / "data").exists()  # the files are read before a database is opened


@pytest.mark.parametrize("extra,needle", [
    (("--eeg-subject", "1"), "--eeg-subject: only with --format eeg-imagenet"),
    (("--max-images", "0"), "--max-images: must be a whole number from 1 to"),
    (("--images", "nowhere"), "--images: no such folder; give the folder of the stimulus images, got 'nowhere'"),
])
def test_bad_options(capsys, tmp_path, extra, needle):
    things = make_things(tmp_path / "things", images=False)
    url = f"sqlite:///{tmp_path / 'data' / 'eegloop.db'}"
    rc, out, err = run_cli(capsys, *_import_args(things, url), *extra)
    assert needle in _one_line_error(rc, err)
    assert not (tmp_path / "data").exists()


def test_options_of_other_formats_and_protocol_fit(capsys, tmp_path):
    things = make_things(tmp_path / "things", images=True)
    url = f"sqlite:///{tmp_path / 'data' / 'eegloop.db'}"
    (tmp_path / "m.npy").write_bytes(b"")
    for extra, needle in ((("--metadata", tmp_path / "m.npy"), "--metadata: only with --format things-eeg2"),
                          (("--max-images", "3"), "--max-images: only with --format things-eeg2")):
        (tmp_path / "x.csv").write_text("timestamps,TP9,Marker0\n0,1,0\n")  # exists: the option is what is wrong
        rc, out, err = run_cli(capsys, "import", tmp_path / "x.csv", "--format", "csv", "--subject", "t1", "--protocol",
                               REPO / "protocols" / "n170.yaml", "--db", url, *extra)
        assert needle in _one_line_error(rc, err)
    # a protocol the files do not fit: channels, then the analysis window
    rc, out, err = run_cli(capsys, "import", things["sub"], "--format", "things-eeg2", "--subject", "t1",
                           "--protocol", REPO / "protocols" / "n170.yaml", "--db", url)
    assert "17 channels" in _one_line_error(rc, err) and "amplifier.channels" in err
    import yaml

    p = yaml.safe_load(PROTO.read_text())
    p["epochs"]["tmin"] = -0.3
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(p))
    rc, out, err = run_cli(capsys, *_import_args(things, url)[:-4], "--protocol", tmp_path / "p.yaml", "--db", url)
    assert "analysis window -0.3..0.8 s" in _one_line_error(rc, err)
    # one image missing under --images: refused, named, counted
    gone = things["images"][5]
    gone.unlink()
    rc, out, err = run_cli(capsys, *_import_args(things, url), "--images", things["root"] / "images")
    line = _one_line_error(rc, err)
    assert "1 of 16 images not found" in line and gone.relative_to(things["root"] / "images").as_posix() in line
    assert not (tmp_path / "data").exists()


def test_safe_loader_reads_numpy1_pickles_and_refuses_other_globals(tmp_path):
    """Files written by NumPy 1 name numpy.core.*: admitted; any other global is refused by name."""
    from eegloop._safe_pickle import SafeUnpickler, UnsafePickleError, load_npy, plain_data_problem
    from eegloop.errors import EegloopError

    d = {"a": np.arange(6.0).reshape(2, 3), "s": np.float32(2.5), "names": ["x", np.str_("y")],
         "obj": np.array(["a", 1], dtype=object), "t": (1, None, True)}
    raw = pickle.dumps(np.array(d, dtype=object), protocol=3)  # text GLOBAL opcodes: names can be rewritten
    assert b"numpy._core" in raw or b"numpy.core" in raw
    old = raw.replace(b"numpy._core.", b"numpy.core.")
    import io

    back = SafeUnpickler(io.BytesIO(old)).load()[()]
    assert np.array_equal(back["a"], d["a"]) and back["s"] == np.float32(2.5) and back["names"] == ["x", "y"]
    # the same through a .npy file (header + pickle), as np.save of NumPy 1 wrote it
    from numpy.lib import format as npy_format

    with open(tmp_path / "old.npy", "wb") as fh:
        npy_format.write_array_header_1_0(fh, {"descr": "|O", "fortran_order": False, "shape": ()})
        fh.write(old)
    assert load_npy(tmp_path / "old.npy", unwrap=True)["t"] == (1, None, True)
    with pytest.raises(UnsafePickleError) as exc:
        SafeUnpickler(io.BytesIO(pickle.dumps(_System(tmp_path / "m"), protocol=2))).load()
    assert exc.value.name in ("posix.system", "nt.system")
    with pytest.raises(EegloopError, match="not a regular file"):
        load_npy(tmp_path)
    cyc: list = []
    cyc.append(cyc)
    assert plain_data_problem({"x": cyc, "y": [np.zeros(2)]}) is None
    assert plain_data_problem([frozenset()]) == "a frozenset"
    assert plain_data_problem(np.zeros(2, dtype=[("a", "O")])) == "a structured array with object fields"
    assert not (tmp_path / "m").exists()
