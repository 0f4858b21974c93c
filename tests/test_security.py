"""Nothing runs from data: a malicious .pth is refused without executing; the report escapes user strings."""
from __future__ import annotations

import hashlib
import os
import pathlib
import stat
from pathlib import Path

import numpy as np
import pytest

from eegloop.cli import main

REPO = Path(__file__).resolve().parents[1]
SCRIPT = "<script>alert(1)</script>"


class _TouchOnLoad:
    """Unpickling this (with full pickle) would create ``marker``: the classic code-execution payload."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (self.marker,))


def _malicious_pth(tmp_path: Path) -> tuple[Path, Path]:
    import torch

    marker = tmp_path / "PWNED"
    f = tmp_path / "eeg.pth"
    eeg = torch.zeros(4, 100)
    torch.save({"dataset": [{"eeg": eeg, "label": 0, "image": 0, "subject": 1, "x": _TouchOnLoad(marker)}],
                "labels": ["n0"], "images": ["n0_0"]}, f)
    assert not marker.exists()
    return f, marker


@pytest.mark.parametrize("existing_db", [True, False])
def test_malicious_pth_is_refused_without_running_it(capsys, tmp_path, existing_db):
    f, marker = _malicious_pth(tmp_path)
    db = tmp_path / "data" / "eegloop.db"
    url = f"sqlite:///{db}"
    if existing_db:
        assert main(["subject", "add", "s1", "--db", url]) == 0
        capsys.readouterr()
    before = hashlib.sha256(db.read_bytes()).hexdigest() if existing_db else None
    rc = main(["import", str(f), "--format", "eeg-imagenet", "--subject", "s1", "--protocol",
               str(REPO / "protocols" / "ferrante2023.yaml"), "--db", url])
    out, err = capsys.readouterr()
    assert rc == 2, (out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("eegloop: error: "), err
    assert str(f) in lines[0] and "never runs code" in lines[0]
    assert "weights_only" not in err  # no advice to switch the safe loader off
    assert not marker.exists()
    if existing_db:
        assert hashlib.sha256(db.read_bytes()).hexdigest() == before
    else:
        assert not db.exists() and not db.parent.exists()


def test_plain_eeg_imagenet_file_still_loads(tmp_path):
    import torch

    from eegloop.recorder.importers import read_eeg_imagenet

    ds = [{"eeg": torch.randn(4, 50), "label": i % 2, "image": i, "subject": 1} for i in range(6)]
    torch.save({"dataset": ds, "labels": ["a", "b"], "images": [f"i{i}" for i in range(6)]}, tmp_path / "ok.pth")
    torch.save({"splits": [{"train": [0, 1, 2, 3], "val": [4], "test": [5]}]}, tmp_path / "splits.pth")
    es, folds = read_eeg_imagenet(tmp_path / "ok.pth", tmp_path / "splits.pth")
    assert es.data.shape == (6, 4, 50) and folds[0]["test"] == [5]


def test_no_unsafe_deserialization_in_eegloop():
    """No full pickle, eval/exec, unsafe YAML or pickled numpy anywhere in the package."""
    import re

    bad = re.compile(r"weights_only\s*=\s*False|allow_pickle\s*=\s*True|pickle\.loads?\(|yaml\.load\(|"
                     r"yaml\.unsafe_load|(?<![\w.])eval\(|(?<![\w.])exec\(|marshal\.loads?|shelve\.open|dill\.|joblib\.load")
    hits = [f"{p.relative_to(REPO)}:{i}: {line.strip()}"
            for p in (REPO / "eegloop").rglob("*.py") if "migrations" not in p.parts
            for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1) if bad.search(line)]
    assert hits == []


def _session_with_hostile_names(tmp_path: Path):
    from eegloop.database import Database
    from eegloop.protocol import load_protocol
    from eegloop.types import Epoch

    db = Database(f"sqlite:///{tmp_path / 'e.db'}", data_dir=tmp_path)
    proto = load_protocol(REPO / "protocols" / "demo.yaml").replace(name=f"demo {SCRIPT}")
    db.add_subject("S1")
    sid = db.create_session("S1", proto)
    run_id = db.add_run(sid, 1, raw_path=tmp_path / "raw" / f"run{SCRIPT}.vhdr", status="done")
    classes = {SCRIPT: "$x^2$", "a_b^c": r"$\frac{a}{b}$", "$": "unbalanced $ sign _"}
    block_id = db.add_block(run_id, 1, classes=list(classes), status="done")
    ev_ids = db.add_events(sid, [dict(kind="stim_on", lsl_time=float(i), run_id=run_id, block_id=block_id, trial=i + 1,
                                      class_id=c, payload={"class": c, "image": f"{SCRIPT}.png"})
                                 for i, c in enumerate(classes)])
    db.add_epochs(sid, [Epoch(np.zeros((2, 10), np.float32), c, 100.0, 0.0, ["E1", "E2"], 1, 1, trial=i + 1,
                              event_id=e) for i, (c, e) in enumerate(zip(classes, ev_ids))])
    db.add_feedback_trial(sid, event_id=ev_ids[0], trial=1, mode=f"bank{SCRIPT}",
                          probabilities={c: 1 / 3 for c in classes}, predicted_class=SCRIPT, true_class="a_b^c",
                          image_path=f"images/{SCRIPT}.png", seed=0,
                          latencies={"decode_ms": 1.0, "image_ready_ms": 2.0, "to_screen_ms": 3.0})
    ids = list(classes)
    ev = {"split": f"block{SCRIPT}", "n_folds": 2, "n_epochs": 3, "main_method": "kd_stft", "inflated": False,
          "classes": classes, "summary": {"kd_stft": {"top1": 0.5, "top1_std": 0.1}},
          "confusion": {"kd_stft": [[1, 0, 0], [0, 1, 0], [0, 0, 1]]}, "chance": {"chance_top1": 1 / 3},
          "notes": [f"note {SCRIPT}"], "class_order": ids}
    db.set_session_status(sid, "completed", ended=True, evaluation=ev)
    return db, sid


def test_report_escapes_user_strings(tmp_path):
    from eegloop.report import write_report

    db, sid = _session_with_hostile_names(tmp_path)
    path = write_report(db, sid)  # math text in class names must not raise (or render as math)
    page = path.read_text(encoding="utf-8")
    assert "<script" not in page.lower()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "run&lt;script&gt;" in page  # the raw file name, in the recording table
    if os.name == "posix":
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700


def test_report_plots_draw_class_names_literally(tmp_path, monkeypatch):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.text

    from eegloop.report import write_report

    seen = []
    orig = matplotlib.text.Text.draw

    def draw(self, renderer):
        if "$" in self.get_text():
            seen.append((self.get_text(), self.get_parse_math(), self.get_usetex()))
        return orig(self, renderer)

    monkeypatch.setattr(matplotlib.text.Text, "draw", draw)
    db, sid = _session_with_hostile_names(tmp_path)
    write_report(db, sid)
    texts = {t for t, *_ in seen}
    assert {"$x^2$", r"$\frac{a}{b}$"} <= texts
    assert all(parse is False and usetex is False for _, parse, usetex in seen)
    assert matplotlib.rcParams["text.parse_math"] is True  # restored after the report


def forty_class_session(tmp_path):
    """A session whose stored evaluation has the paper's 40 classes (class 3 mistaken for class 7 most)."""
    import numpy as np

    from eegloop.database import Database
    from eegloop.protocol import protocol_from_dict

    k = 40
    classes = {f"n{i:08d}": f"class {i}" for i in range(k)}
    proto = protocol_from_dict({"stimuli": {"folder": "x", "classes": classes},
                                "paradigm": {"images_per_class": 50, "runs": 4}})
    db = Database(f"sqlite:///{tmp_path / 'e.db'}", data_dir=tmp_path)
    db.get_or_add_subject("S40")
    sid = db.create_session("S40", proto)
    rng = np.random.default_rng(0)
    cm = rng.integers(0, 3, (k, k))
    np.fill_diagonal(cm, rng.integers(10, 40, k))
    cm[3, 7] = 30  # the pair that must top the list
    ev = {"split": "block", "n_folds": 5, "n_epochs": int(cm.sum()), "main_method": "auto", "inflated": False,
          "classes": classes, "summary": {"auto": {"top1": 0.5, "top1_std": 0.1}},
          "confusion": {"auto": cm.tolist()}, "chance": {"chance_top1": 1 / k}, "notes": [],
          "class_order": list(classes)}
    db.set_session_status(sid, "completed", ended=True, evaluation=ev)
    return db, sid


def test_report_scales_to_forty_classes(tmp_path, monkeypatch):
    """At the paper's 40 classes: no per-cell counts (1,600 numbers), one label per class, sorted per-class
    accuracy with intervals, and the most confused pairs as a table."""
    import html as html_mod
    import re

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.text

    from eegloop.report import write_report

    db, sid = forty_class_session(tmp_path)
    drawn = []
    orig = matplotlib.text.Text.draw

    def draw(self, renderer):
        if self.get_text() and self.get_visible():
            drawn.append(self.get_text())
        return orig(self, renderer)

    monkeypatch.setattr(matplotlib.text.Text, "draw", draw)
    page = write_report(db, sid).read_text(encoding="utf-8")
    numbers = [t for t in drawn if re.fullmatch(r"\d+", t)]
    assert len(numbers) < 100  # tick numbers only, not one count per cell
    assert sum(t == "class 7" for t in drawn) >= 2  # each class labelled (matrix axes and the sorted bars)
    m = re.search(r"<h3>Most confused pairs</h3><table>.*?</table>", page, re.S)
    assert m and m.group(0).count("<tr>") == 11  # header + 10 pairs
    first = re.findall(r"<td>(.*?)</td>", m.group(0))[:3]
    assert [html_mod.unescape(x) for x in first] == ["class 3", "class 7", "30"]
    assert "95 % Wilson intervals" in page


def test_forty_class_report_reads_in_a_browser(tmp_path):
    """The 40-class report as a reader sees it, in Chromium: every figure decodes, the confusion matrix is drawn
    large enough for one legible label per class (≥ 10 px a row on screen), the most confused pairs and the
    sorted per-class accuracy are there, and the page asks for nothing from the network."""
    from browser import browser_page

    from eegloop.report import write_report

    db, sid = forty_class_session(tmp_path)
    path = write_report(db, sid)
    requests, errors = [], []
    with browser_page() as page:
        page.on("request", lambda r: requests.append(r.url))
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(path.as_uri())
        imgs = page.eval_on_selector_all(
            "img", "els => els.map(e => ({w: e.naturalWidth, h: e.naturalHeight, shown: e.getBoundingClientRect().width,"
                   " alt: e.closest('figure') ? e.closest('figure').innerText : ''}))")
        pairs = page.inner_text("h3:has-text('Most confused pairs') + table")
        page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
        overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert not errors and all(u.startswith(("file:", "data:")) for u in requests), (errors, requests)
    assert imgs and all(i["w"] > 0 and i["h"] > 0 for i in imgs)  # every embedded figure decodes
    cm = [i for i in imgs if "confusion" in i["alt"].lower()]
    assert cm and cm[0]["shown"] / 40 >= 10, cm  # one row per class, at least 10 px each on screen
    assert pairs.splitlines()[1].split("\t")[:3] == ["class 3", "class 7", "30"]
    assert overflow <= 0  # nothing runs off the side of a 1280 px window (the per-class bars wrap below)
    assert (tmp_path / "report.png").stat().st_size > 20_000
