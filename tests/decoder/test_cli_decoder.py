"""import -> evaluate -> train through the CLI, as the README and the issues write them."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
N170 = REPO.parent / "shared" / "data" / "n170"


def eegloop(*args, cwd=REPO, env=None):
    e = dict(os.environ, **(env or {}))
    return subprocess.run([sys.executable, "-m", "eegloop", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, env=e, timeout=600)


@pytest.mark.slow(weight=2)
@pytest.mark.skipif(not N170.is_dir(), reason="shared/data/n170 not beside the checkout")
def test_import_evaluate_train_n170(tmp_path):
    env = {"EEGLOOP_DATA": str(tmp_path)}
    files = sorted(str(p) for p in (N170 / "subject2" / "session1").glob("*.csv"))
    r = eegloop("import", *files, "--subject", "n170s2", "--format", "csv", "--events", "1=house,2=face",
                "--channels", "TP9,AF7,AF8,TP10", "--protocol", "protocols/n170.yaml", env=env)
    assert r.returncode == 0, r.stderr
    assert "as session 1 of n170s2" in r.stdout and "2 runs" in r.stdout

    r = eegloop("evaluate", "--subject", "n170s2", "--methods", "lda_windowed,riemann", "--json", env=env)
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout.strip().splitlines()[-1])
    assert res["split"] == "block" and res["n_folds"] == 5 and res["n_epochs"] > 300
    assert res["rejection"]["rejected"] + res["n_epochs"] > 380  # artifacts dropped, and counted
    assert res["chance_top1"] == pytest.approx(0.5, abs=0.05)
    lda = res["methods"]["lda_windowed"]
    assert set(lda) == {"top1", "balanced_accuracy", "f1", "kappa", "auc"}  # no top-3/top-5 with two classes
    assert lda["auc"] > 0.6
    print(f"\nn170 via CLI: LDA AUC {lda['auc']:.3f}, riemann {res['methods']['riemann']['auc']:.3f} (chance 0.5)")

    r = eegloop("evaluate", "--subject", "n170s2", "--split", "random", "--methods", "logreg_windowed", env=env)
    assert r.returncode == 0 and "INFLATED" in r.stdout

    r = eegloop("train", "--subject", "n170s2", env=env)
    assert r.returncode == 0, r.stderr
    assert "model 1:" in r.stdout and "chance" in r.stdout
    assert "inner block-wise folds" in r.stdout and "lda_windowed" in r.stdout and "riemann" in r.stdout
    assert "artifacts:" in r.stdout
    model = next(p for p in (tmp_path / "models" / "sub-n170s2").iterdir() if p.suffix != ".json")
    meta = json.loads(model.with_suffix(".json").read_text())
    if meta["method"] in ("lda_windowed", "riemann"):  # evaluated above with block-wise folds: shown beside
        assert f"honest estimate ({meta['method']}, block-wise folds" in r.stdout
    else:
        assert "honest estimate: run `eegloop evaluate" in r.stdout
    assert meta["preprocessing"]["bandpass_hz"] == [1.0, 30.0] and meta["channel_names"] == ["TP9", "AF7", "AF8", "TP10"]
    assert meta["metrics"]["selection"]["winner"] == meta["method"]


def _muse_csv(path, seed=0):
    """A Muse-like CSV as eeg-notebooks writes them (256 Hz, 4 electrodes, Right AUX, Marker0 1/2)."""
    import numpy as np

    n = 256 * 30
    rng = np.random.default_rng(seed)
    mk = np.zeros(n)
    at = np.arange(256, n - 512, 256)
    mk[at] = np.tile([1, 2], len(at))[:len(at)]
    with open(path, "w") as fh:
        fh.write("timestamps,TP9,AF7,AF8,TP10,Right AUX,Marker0\n")
        np.savetxt(fh, np.column_stack([np.arange(n) / 256, rng.standard_normal((n, 5)) * 10, mk]), delimiter=",",
                   fmt="%.6f")
    return str(path)


def test_import_bad_events_leaves_database_unchanged(tmp_path):
    """Needs no shared data: two Muse-like files written here."""
    env = {"EEGLOOP_DATA": str(tmp_path)}
    files = [_muse_csv(tmp_path / f"m{k}.csv", k) for k in range(2)]
    r = eegloop("import", *files, "--subject", "s", "--format", "csv", "--events", "1=house",
                "--channels", "TP9,AF7,AF8,TP10", "--protocol", "protocols/n170.yaml", env=env)
    assert r.returncode == 2
    assert "unknown marker value '2'" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "eegloop.db").exists()  # every file is read before a database is opened
    eegloop("db", "init", env=env)
    before = (tmp_path / "eegloop.db").read_bytes()
    r = eegloop("import", *files, "--subject", "s", "--format", "csv", "--events", "1=house",
                "--channels", "TP9,AF7,AF8,TP10", "--protocol", "protocols/n170.yaml", env=env)
    assert r.returncode == 2 and (tmp_path / "eegloop.db").read_bytes() == before
    r = eegloop("subject", "list", env=env)
    assert "no subjects yet" in r.stdout


@pytest.mark.slow
def test_eeg_imagenet_import_and_honest_refusal(tmp_path):
    import numpy as np
    import torch
    import yaml

    rng = np.random.default_rng(0)
    labels = ["n02106662", "n02124075", "n02281787"]
    ds = [{"eeg": torch.tensor(rng.standard_normal((8, 500)), dtype=torch.float32), "label": i % 3, "image": i,
           "subject": 1} for i in range(30)]
    torch.save({"dataset": ds, "labels": labels, "images": [f"{labels[i % 3]}_{i}" for i in range(30)]},
               tmp_path / "eeg.pth")
    proto = {"stimuli": {"folder": "x", "classes": {c: c for c in labels}},
             "paradigm": {"block_s": 5, "images_per_class": 10, "runs": 1, "order": "blocked"},
             "amplifier": {"channels": 8, "sfreq": 1000}, "epochs": {"tmin": 0.02, "tmax": 0.44, "margin_s": 0.02},
             "teacher": {"enabled": False}, "training": {"max_epochs": 2, "n_folds": 2}}
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(proto))
    env = {"EEGLOOP_DATA": str(tmp_path / "data")}
    r = eegloop("import", tmp_path / "eeg.pth", "--format", "eeg-imagenet", "--subject", "ei1",
                "--protocol", tmp_path / "p.yaml", env=env)
    assert r.returncode == 0, r.stderr
    assert "30 EEG-ImageNet trials (3 classes)" in r.stdout
    r = eegloop("evaluate", "--subject", "ei1", env=env)
    assert r.returncode == 2 and "no honest block-wise fold exists" in r.stderr
    r = eegloop("evaluate", "--subject", "ei1", "--split", "random", "--methods", "logreg_windowed", env=env)
    assert r.returncode == 0 and "INFLATED" in r.stdout


@pytest.mark.slow
def test_eeg_imagenet_images_register_and_feed_the_teacher(tmp_path, tiny_clip_dir):
    """--images DIR finds each EEG-ImageNet image name (ImageNet's <synset>/<name>.JPEG), registers it, and
    the teacher is then fitted on exactly those images; one missing image is a one-line error."""
    import numpy as np
    import torch
    import yaml
    from PIL import Image

    from eegloop.database import Database
    from eegloop.decoder import fit_teacher
    from eegloop.protocol import protocol_from_dict

    rng = np.random.default_rng(1)
    labels = ["n02106662", "n02124075", "n02281787"]
    names = [f"{labels[i % 3]}_{100 + i}" for i in range(12)]
    ds = [{"eeg": torch.tensor(rng.standard_normal((8, 500)), dtype=torch.float32), "label": i % 3, "image": i,
           "subject": 1} for i in range(24)]  # each image shown twice
    for i in range(24):
        ds[i]["image"] = i % 12
    torch.save({"dataset": ds, "labels": labels, "images": names}, tmp_path / "eeg.pth")
    imgs = tmp_path / "imagenet" / "train"
    for k, n in enumerate(names):
        (imgs / n.split("_")[0]).mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(imgs / n.split("_")[0] / f"{n}.JPEG")
    proto = {"stimuli": {"folder": "x", "classes": {c: c for c in labels}},
             "paradigm": {"block_s": 4, "images_per_class": 8, "runs": 1, "order": "blocked"},
             "amplifier": {"channels": 8, "sfreq": 1000}, "epochs": {"tmin": 0.02, "tmax": 0.44, "margin_s": 0.02},
             "teacher": {"enabled": False}}
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(proto))
    env = {"EEGLOOP_DATA": str(tmp_path / "data")}
    # one image missing: refused, nothing stored
    gone = imgs / labels[0] / f"{names[0]}.JPEG"
    gone.rename(tmp_path / "aside.JPEG")
    r = eegloop("import", tmp_path / "eeg.pth", "--format", "eeg-imagenet", "--subject", "ei2",
                "--protocol", tmp_path / "p.yaml", "--images", imgs.parent, env=env)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1
    assert "1 of 12 images not found" in r.stderr and names[0] in r.stderr
    assert not (tmp_path / "data" / "eegloop.db").exists()
    (tmp_path / "aside.JPEG").rename(gone)
    r = eegloop("import", tmp_path / "eeg.pth", "--format", "eeg-imagenet", "--subject", "ei2",
                "--protocol", tmp_path / "p.yaml", "--images", imgs.parent, env=env)
    assert r.returncode == 0, r.stderr
    assert "12 found under" in r.stdout
    db = Database(f"sqlite:///{tmp_path / 'data' / 'eegloop.db'}", data_dir=tmp_path / "data")
    es = db.load_epochs("ei2")
    assert len(es) == 24 and all(es.images) and len(set(es.images)) == 12
    shas = {r_.sha256: r_ for r_ in db.get_stimuli()}
    assert set(es.images) == set(shas) and {r_.class_id for r_ in shas.values()} == set(labels)
    tp = protocol_from_dict({**proto, "teacher": {"enabled": True, "model": f"local-dir:{tiny_clip_dir}",
                                                  "pretrained": None}})
    teacher = fit_teacher(db, tp, es)
    assert teacher is not None and teacher.n_images == 12
    assert teacher.logits_for(list(es.images)).shape == (24, 3)
    # --images belongs to the EEG-ImageNet format only
    r = eegloop("import", tmp_path / "eeg.pth", "--format", "csv", "--subject", "ei3", "--protocol",
                tmp_path / "p.yaml", "--images", imgs, env=env)
    assert r.returncode == 2 and "--images: only with --format eeg-imagenet" in r.stderr
