"""Group models (issue 27, item 1): consent, `eegloop pretrain`, provenance, withdrawal, and a group model decoding
a subject it never saw, aligned on that subject's own unlabelled epochs.

Four simulated subjects in a real SQLite database share one P300-like response (a bump at 300 ms with one spatial
pattern, on target epochs) seen through each subject's own channel crosstalk (a random symmetric positive-definite
mixing), gains and DC offsets: alignment has something to undo. A, B and C give group consent (B's montage is in
another order with an extra channel, C is recorded at 256 Hz: channels are matched by name and resampled); D does
not, and is the held-out subject.
"""
from __future__ import annotations

import shutil
import sqlite3
import subprocess
import sys

import numpy as np
import pytest
from scipy.linalg import expm
from scipy.signal import butter, sosfiltfilt

from eegloop.protocol import protocol_from_dict
from eegloop.types import EpochSet

CHANNELS = ["Fz", "Cz", "Pz", "Oz", "P3", "P4"]
PATTERN = np.array([0.2, 0.6, 1.0, 0.5, 0.7, 0.7])  # the response's topography, shared by every subject


def group_protocol(sfreq: int, channels, **sections):
    return protocol_from_dict({**sections,
        "stimuli": {"folder": "x", "classes": {"target": "target", "nontarget": "non-target"}},
        "paradigm": {"block_s": 10, "image_s": 0.5, "images_per_class": 60, "runs": 2, "order": "interleaved"},
        "amplifier": {"channels": len(channels), "sfreq": sfreq, "channel_names": list(channels)},
        "epochs": {"tmin": -0.1, "tmax": 0.7, "margin_s": 0.5},
        "preprocessing": {"notch_hz": None, "bandpass_hz": [1, 20], "standardize": False},
        "teacher": {"enabled": False}, "training": {"max_epochs": 5, "split": "block", "precision": "fp32"}})


def subject_epochs(seed: int, sfreq: int = 128, n: int = 120, amp: float = 1.5, mix: float = 3.0,
                   channels=CHANNELS, extra=()) -> EpochSet:
    """One simulated subject: 6 blocks of 20 epochs (half targets), 1.8 s each (the window with its margins)."""
    r = np.random.default_rng(seed)
    C = len(CHANNELS)
    t = np.arange(-0.6, 1.2, 1 / sfreq)
    S = r.normal(size=(C, C))
    A = expm((S + S.T) / 2 * mix / np.sqrt(C))  # the subject's own crosstalk between channels
    y = np.arange(n) % 2
    for b in range(0, n, 20):
        r.shuffle(y[b:b + 20])
    noise = sosfiltfilt(butter(2, [1, 20], btype="band", fs=sfreq, output="sos"), r.normal(size=(n, C, len(t))),
                        axis=-1) * 4
    src = noise + (y == 1)[:, None, None] * PATTERN[:, None] * (amp * np.exp(-((t - 0.3) / 0.08) ** 2))
    X = np.einsum("ij,njt->nit", A, src) + r.normal(size=(1, C, 1)) * 50  # + DC offsets
    names = list(CHANNELS) + list(extra)
    X = np.concatenate([X, r.normal(size=(n, len(extra), len(t)))], axis=1)
    order = [names.index(c) for c in list(channels) + list(extra)]
    blocks = np.arange(n) // 20 + 1
    return EpochSet(X[:, order].astype(np.float32), np.where(y == 1, "target", "nontarget"), float(sfreq), -0.6,
                    [names[i] for i in order], runs=(blocks - 1) // 3 + 1, blocks=blocks, sessions=np.zeros(n, int))


SUBJECTS = {"A": dict(seed=1), "B": dict(seed=2, channels=CHANNELS[::-1], extra=["AUX"]),
            "C": dict(seed=3, sfreq=256), "D": dict(seed=4)}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """The four subjects imported, A, B and C consenting; group model G trained by ``eegloop pretrain --all`` (its
    output kept) and U (the same subjects pooled without alignment) through the library. Returns the data folder
    (every database closed) and G's output lines."""
    import contextlib
    import io

    from eegloop.cli import main
    from eegloop.database import Database
    from eegloop.decoder.group import pretrain
    from eegloop.recorder.importers import import_epochset

    root = tmp_path_factory.mktemp("group")
    db = Database(None, data_dir=root)
    for code, kw in SUBJECTS.items():
        es = subject_epochs(**kw)
        import_epochset(db, code, group_protocol(int(es.sfreq), kw.get("channels", CHANNELS)), es,
                        source="simulated")
    for code in "ABC":
        db.set_subject_consent(code, True)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["pretrain", "--all", "--name", "G", "--data", str(root)]) == 0
    pretrain(db, ["A", "B", "C"], "U", align=False, progress=lambda _: None)
    db.close()
    return root, out.getvalue().splitlines()


@pytest.fixture
def cli(capsys):
    from eegloop.cli import main

    def run(root, *args):
        rc = main([*map(str, args), "--data", str(root)])
        out, err = capsys.readouterr()
        return subprocess.CompletedProcess(args, rc, out, err)

    return run


def dump(root) -> list[str]:
    """The database's whole content, as SQL (what "unchanged" is compared on)."""
    with sqlite3.connect(root / "eegloop.db") as conn:
        return list(conn.iterdump())


def clone(root, tmp_path):
    """A copy of the built data folder for a test that changes it (tests may run in any order, on two workers)."""
    shutil.copytree(root, tmp_path / "data")
    return tmp_path / "data"


def auc(dec, es) -> float:
    from eegloop.decoder.scoring import scores

    order = list(dec.classes)
    y = np.array([order.index(c) for c in es.labels])
    return scores(y, dec.predict_proba(es))["auc"]


# -- consent ---------------------------------------------------------------------------------------------------
def test_consent_is_off_by_default_shown_in_the_list_and_set_by_the_cli(built, cli, tmp_path):
    root = clone(built[0], tmp_path)
    r = cli(root, "subject", "list")
    assert r.returncode == 0
    lines = {line.split("\t")[0]: line for line in r.stdout.splitlines()}
    assert "group consent yes" in lines["A"] and "group consent no" in lines["D"]
    r = cli(root, "subject", "consent", "D", "--group", "yes")
    assert (r.returncode, r.stdout.splitlines()[0]) == (0, "D: group consent yes (was no)")
    r = cli(root, "subject", "consent", "D", "--group", "yes")
    assert r.stdout.splitlines()[0] == "D: group consent yes (unchanged)"
    r = cli(root, "subject", "consent", "D", "--group", "no")
    assert r.stdout.splitlines() == ["D: group consent no (was yes)", "no group model holds D's data"]


def test_unknown_subject_is_one_line_exit_2(built):
    built, _ = built
    before = dump(built)
    r = subprocess.run([sys.executable, "-m", "eegloop", "subject", "consent", "Z9", "--group", "yes", "--data",
                        str(built)], capture_output=True, text=True)
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.splitlines() == ["eegloop: error: unknown subject 'Z9' (add it with: eegloop subject add Z9)"]
    assert dump(built) == before


# -- pretrain: refusals before any work ------------------------------------------------------------------------
@pytest.mark.parametrize("args, says", [
    (["--subjects", "A,D,B", "--name", "X"], "no group consent from D:"),  # refused by name
    (["--subjects", "A,Q1", "--name", "X"], "unknown subject 'Q1'"),
    (["--all", "--exclude", "A,B,C", "--name", "X"], "at least 1 consenting subject with epochs, got 0"),
    (["--subjects", "D", "--name", "X"], "no group consent from D:"),
    (["--subjects", "A,B", "--name", ""], "--name: must be a group model name"),
    (["--subjects", "A,B", "--all", "--name", "X"], "--all: not allowed with argument --subjects"),
    (["--subjects", "A,B"], "--name: required to train a group model"),
    (["--subjects", "A,B", "--name", "G"], "--name: a group model named 'G' already exists"),
    (["--subjects", "A,B", "--name", "g"], "--name: 'g' differs from the group model 'G' only in letter case"),
    (["--subjects", "A,B", "--exclude", "C", "--name", "X"], "--exclude: only with --all"),
    (["--subjects", "A,B", "--name", "X", "--nproc", "2"], "--nproc: for the networks"),
    (["--subjects", "A,B", "--name", "X", "--max-epochs", "3"], "--max-epochs: for the networks"),
    (["--subjects", "A,B", "--name", "X", "--seed", "3"], "--seed: for the networks"),
    (["--subjects", "A,B", "--name", "X", "--method", "lstm", "--rdzv-id", "r1"], "--rdzv-id: only with a data-"),
    (["--subjects", "A,B", "--name", "X", "--method", "lstm", "--nproc", "1024"], "--nproc: 1024 ranks, but this"),
    (["--subjects", "A,B", "--name", "X", "--method", "lstm", "--checkpoint", "/tmp"], "--checkpoint: /tmp is a fo"),
    (["--list", "--name", "X"], "--list: not with --name"),
    (["--list", "--exclude", "Z"], "--list: not with --exclude"),
    (["--list", "--method", "lstm"], "--list: not with --method"),
    (["--subjects", "A,B", "--name", "X", "--method", "lstm", "--nnodes", "2", "--rdzv-endpoint",
      "nosuchhost.invalid:29500"], "--rdzv-endpoint: cannot resolve 'nosuchhost.invalid'"),
    (["--subjects", "A,B", "--name", "X", "--method", "lstm", "--nnodes", "2"], "--nnodes above 1 needs --rdzv"),
    (["--subjects", "A,B", "--name", "X", "--method", "lstm", "--rdzv-endpoint", "h"], "--rdzv-endpoint must be"),
    (["--subjects", "A,B", "--name", "X", "--method", "lstm", "--checkpoint", "/no/such/x.pt"], "--checkpoint: the "),
    (["--subjects", "A,B", "--name", "X", "--method", "lstm", "--nproc", "0"], "--nproc"),
])
def test_pretrain_refuses_bad_requests_in_one_line_and_changes_nothing(built, cli, args, says):
    built, _ = built
    before = dump(built)
    r = cli(built, "pretrain", *args)
    assert r.returncode == 2 and r.stdout == ""
    assert len(r.stderr.splitlines()) == 1 and r.stderr.startswith("eegloop: error: ") and says in r.stderr
    assert dump(built) == before
    assert not (built / "models" / "group-X").exists()


# -- pretrain: which subjects, provenance, listing -------------------------------------------------------------
def test_all_uses_the_consenting_subjects_and_says_whom_it_skipped(built):
    from eegloop.cli import group as cli_group
    from eegloop.database import Database
    from eegloop.decoder.group import GROUP_METHODS

    assert cli_group.GROUP_METHODS == GROUP_METHODS  # --method's choices, written out so the parser imports no torch
    root, out = built
    assert out[:2] == ["using 3 consenting subject(s): A, B, C", "skipped for lack of group consent: D"]
    assert any(line.startswith("alignment: Riemannian re-centring per subject") for line in out)
    assert any(line.startswith("group model G (id ") for line in out)
    assert any(line.startswith("tuning prior: the class differences' time courses (2, derivatives included)")
               and "its spatio-temporal covariance (" in line and "from 3 subjects" in line
               for line in out)
    db = Database(None, data_dir=root, create=False)
    assert db.get_group_model("G").subjects == ["A", "B", "C"]
    from eegloop.decoder.group import plan_group

    assert plan_group(db, all_subjects=True, exclude=["B"]).lines() == [
        "using 2 consenting subject(s): A, C", "skipped for lack of group consent: D", "left out by --exclude: B"]
    db.close()


def test_provenance_is_stored_and_listed(built, cli):
    from eegloop.database import Database

    built, _ = built
    db = Database(None, data_dir=built, create=False)
    rec = db.get_group_model("G")
    sessions = {s.subject: s for s in db.list_sessions()}
    db.close()
    assert [(m.code, m.n_epochs, m.session_ids) for m in rec.members] == [
        (c, 120, [sessions[c].id]) for c in "ABC"]
    assert all(m.consent_at is not None for m in rec.members)
    cfg = rec.config
    assert cfg["alignment"] == "riemann" and cfg["method"] == "riemann" and rec.kind == "riemann"
    assert cfg["protocol_sha256"] == sessions["A"].protocol_sha256
    assert cfg["grid"]["channel_names"] == CHANNELS and cfg["grid"]["sfreq"] == 128  # AUX dropped; C resampled
    assert [s["sfreq"] for s in cfg["subjects"]] == [128, 128, 256]
    assert {s["group_consent"] for s in cfg["subjects"]} == {"yes"}
    assert (built / rec.checkpoint_path).is_file() and rec.checkpoint_path.endswith(".skops")
    import json

    beside = json.loads((built / rec.checkpoint_path).with_suffix(".json").read_text())
    # the same provenance beside the file (the database's adds the model's own JSON, which is that file)
    assert beside["provenance"] == {k: v for k, v in cfg.items() if k != "model"}
    r = cli(built, "pretrain", "--list")
    assert r.returncode == 0
    listed = r.stdout.splitlines()
    head = next(line for line in listed if line.startswith("G (id"))
    assert "3 subjects, 360 epochs, 6 channels at 128 Hz; alignment riemann" in head
    assert f"sha256 {cfg['protocol_sha256'][:12]}" in head
    assert f"  A: sessions {sessions['A'].id}; 120 epochs; group consent yes at training" in "\n".join(listed)


# -- a new subject, aligned on their own epochs --------------------------------------------------------------
def test_the_aligned_group_model_decodes_a_subject_it_never_saw(built):
    """Measured (seeds as here): held-out D, AUC 0.89 aligned vs 0.74 pooled without alignment."""
    from eegloop.database import Database
    from eegloop.decoder.group import load_group_model, predict_new_subject

    built, _ = built
    db = Database(None, data_dir=built, create=False)
    es = db.load_epochs("D")  # D never gave consent: no group model holds D's data
    aligned, pooled = load_group_model(db, "G"), load_group_model(db, "U")
    db.close()
    p = predict_new_subject(aligned, es)
    assert p.shape == (120, 2) and np.allclose(p.sum(1), 1)
    a, u = auc(aligned, es), auc(pooled, es)
    assert a > 0.8 and a > u + 0.05, (a, u)


def test_a_group_of_one_is_another_subjects_model_aligned_to_the_new_one(built, cli, tmp_path):
    """A lab's second subject can start from its first: `pretrain --subjects A` stores a group model of A alone,
    with its prior, listed with A as its only member, and it decodes D (who never consented) aligned on D's own
    epochs. Measured (seeds as here): AUC 0.85 (the group of three: 0.89)."""
    from eegloop.database import Database
    from eegloop.decoder.group import load_group_model

    root = clone(built[0], tmp_path)
    r = cli(root, "pretrain", "--subjects", "A", "--name", "ONE")
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[0] == "using 1 consenting subject(s): A"
    assert any(line.startswith("tuning prior: ") and line.endswith("from 1 subject") for line in r.stdout.splitlines())
    assert any(" epochs of 1 subject (A " in line for line in r.stdout.splitlines())
    r = cli(root, "pretrain", "--list")
    assert any(line.startswith("ONE (id ") and ": 1 subject, " in line for line in r.stdout.splitlines())
    db = Database(None, data_dir=root, create=False)
    assert db.get_group_model("ONE").subjects == ["A"]
    one, es = load_group_model(db, "ONE"), db.load_epochs("D")
    db.close()
    assert one.prior is not None and one.prior.n_subjects == 1 and one.n_subjects == 1
    a = auc(one, es)
    assert a > 0.75, a
    # D's quick-train from it: the inner folds keep their best blend, with no lean toward one other subject's model
    r = cli(root, "train", "--subject", "D", "--no-teacher", "--group-model", "ONE")
    assert r.returncode == 0, r.stderr
    line = next(x for x in r.stdout.splitlines() if x.startswith("started from group model ONE"))
    assert "inner block-wise folds" in line and "a group of one: the best blend, no lean toward it" in line, line


def test_a_network_group_model_is_euclidean_aligned_and_decodes(built, tmp_path):
    from eegloop.database import Database
    from eegloop.decoder.group import load_group_model, pretrain

    root = clone(built[0], tmp_path)
    db = Database(None, data_dir=root, create=False)
    res = pretrain(db, ["A", "C"], "N", method="conv1d", max_epochs=1, device="cpu", progress=lambda _: None)
    assert res.path.suffix == ".safetensors" and res.provenance["alignment"] == "euclid"
    assert res.metrics["epochs_run"] == 1 and [m.code for m in res.members] == ["A", "C"]
    p = load_group_model(db, "N").predict_proba(db.load_epochs("D"))
    db.close()
    assert p.shape == (120, 2) and np.isfinite(p).all() and np.allclose(p.sum(1), 1, atol=1e-5)


def test_a_network_group_model_trains_data_parallel_with_a_checkpoint(built, tmp_path):
    """The data-parallel path of pretrain (eegloop.decoder.distributed; tests/decoder/test_distributed.py starts
    real gloo ranks): one rank here, its checkpoint written, and a rerun resuming after its last epoch."""
    from eegloop.database import Database
    from eegloop.decoder.distributed import Launch
    from eegloop.decoder.group import load_group_model, pretrain

    root = clone(built[0], tmp_path)
    db = Database(None, data_dir=root, create=False)
    ckpt = tmp_path / "g.pt"
    res = pretrain(db, ["A", "C"], "P", method="conv1d", max_epochs=2, progress=lambda _: None,
                   launch=Launch(nproc=1), checkpoint=str(ckpt))
    assert ckpt.is_file() and res.metrics["epochs_run"] == 2 and res.metrics["resumed_from"] == 0
    assert res.metrics["world_size"] == 1 and res.provenance["alignment"] == "euclid"
    again = pretrain(db, ["A", "C"], "P2", method="conv1d", max_epochs=2, progress=lambda _: None,
                     launch=Launch(nproc=1), checkpoint=str(ckpt))
    assert again.metrics["resumed_from"] == 2  # nothing left to train: the checkpoint's weights, stored
    p = [load_group_model(db, n).predict_proba(db.load_epochs("D")) for n in ("P", "P2")]
    db.close()
    np.testing.assert_allclose(p[0], p[1], atol=1e-6)


def test_a_checkpoint_carries_no_other_training_into_a_group_model(built, cli, tmp_path):
    """pretrain --checkpoint of another network's file: refused before any epoch is loaded (nothing printed); of
    the same network trained on other subjects or another seed: refused before training (their weights would
    enter a model whose provenance names neither, and a withdrawal would not find it). Nothing stored."""
    root = clone(built[0], tmp_path)
    ckpt = tmp_path / "g.pt"
    common = ["--method", "conv1d", "--max-epochs", "1", "--checkpoint", ckpt]
    r = cli(root, "pretrain", "--subjects", "A,C", "--name", "P1", *common)
    assert r.returncode == 0 and ckpt.is_file(), r.stderr
    before = dump(root)
    for args, says in ((["--subjects", "A,C", "--name", "P2", "--method", "lstm", "--max-epochs", "1", "--checkpoint",
                         ckpt], "holds a conv1d network's weights, not lstm's"),
                       (["--subjects", "A,B", "--name", "P3", *common], "was written by another training"),
                       (["--subjects", "A,C", "--name", "P4", "--seed", "5", *common],
                        "was written by another training")):
        r = cli(root, "pretrain", *args)
        assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
        assert f"--checkpoint: {ckpt} {says}" in r.stderr, r.stderr
        if "lstm" in args:
            assert r.stdout == ""
    assert dump(root) == before and not [p for p in (root / "models").glob("group-P[234]*")]
    r = cli(root, "pretrain", "--subjects", "A,C", "--name", "P5", *common)  # the same training: resumed
    assert r.returncode == 0 and "(resumed from its checkpoint after epoch 1 of 1)" in r.stdout, r.stderr


# -- withdrawal --------------------------------------------------------------------------------------------------
def test_withdrawing_lists_and_deletes_every_group_model_with_the_subjects_data(built, cli, tmp_path, caplog,
                                                                                 capsys):
    """A withdrawing member's group models go, files and rows, and with them the group model tuned to another
    subject (D's blend keeps it in a file of its own, estimated from the members' epochs): D's model is named as
    one to train again, and loading it says so in one line; D's own model and everyone's epochs stay."""
    import json

    from eegloop.database import Database
    from eegloop.decoder import OnlineDecoder, quick_train
    from eegloop.errors import EegloopError

    root = clone(built[0], tmp_path)
    files = sorted((root / "models").glob("group-*/*"))
    assert len(files) == 4  # G and U: the pipeline and its JSON each
    db = Database(None, data_dir=root, create=False)
    blend = quick_train(db, "D", protocol=with_group("G", 0.5), use_teacher=False, progress=False)
    db.close()
    meta = json.loads(blend.path.with_suffix(".json").read_text())
    tuned, own = blend.path.parent / meta["group"]["tuned"]["path"], blend.path.parent / meta["own"]
    assert tuned.is_file() and own.is_file()
    r = cli(root, "subject", "consent", "A", "--group", "no")
    assert r.stdout.splitlines() == ["A: group consent no (was yes)", "2 group model(s) still hold A's data: G, U; "
                                     "delete them with: eegloop subject group-models A --delete"]
    # until deleted, using a group model with A's data says so (one warning line), and still works
    from eegloop.decoder.groupstart import group_for

    db = Database(None, data_dir=root, create=False)
    with caplog.at_level("WARNING", logger="eegloop"):
        assert group_for(db, with_group("G")) is not None
        assert group_for(db, with_group("G")) is not None  # a visit checks, then trains: said once
    db.close()
    said = [r.getMessage() for r in caplog.records if "withdrew" in r.getMessage()]
    assert len(said) == 1 and said[0].startswith("group model 'G' holds the data of A, who withdrew group consent")
    capsys.readouterr()  # the warnings above, written to stderr too
    r = cli(root, "train", "--subject", "A", "--no-teacher", "--group-model", "G")  # refused: that line alone
    assert r.returncode == 2 and len(r.stderr.splitlines()) == 1 and "was trained on A's session" in r.stderr
    r = cli(root, "subject", "group-models", "A")
    assert r.returncode == 0 and r.stdout.startswith("2 group model(s) hold A's data")
    assert sum(line.startswith(("G (id", "U (id")) for line in r.stdout.splitlines()) == 2
    assert f"  blended into 1 subject model(s), which deleting it leaves to be trained again: D (model " \
           f"{blend.model_id}, tuned file)" in r.stdout.splitlines()
    r = cli(root, "subject", "group-models", "A", "--delete")
    assert r.returncode == 0 and "deleted 2 group model(s)" in r.stdout
    assert f"1 subject model(s) blended them and must be trained again (the group model tuned to each, deleted " \
           f"with it): D (model {blend.model_id}, tuned file)" in r.stdout
    assert not any(f.exists() for f in files) and not list((root / "models").glob("group-*"))
    assert not tuned.exists() and own.is_file()
    with pytest.raises(EegloopError, match="train the subject's model again"):
        OnlineDecoder(blend.path)
    db = Database(None, data_dir=root, create=False)
    assert db.list_group_models() == [] and db.list_group_models("B") == []
    assert len(db.load_epochs("A")) == 120  # the subject's own data stays
    db.close()
    assert cli(root, "subject", "group-models", "A").stdout == "no group model holds A's data\n"
    r = cli(root, "pretrain", "--subjects", "A,B", "--name", "G")  # A withdrew: refused by name
    assert r.returncode == 2 and "no group consent from A:" in r.stderr


# -- quick-train from a group model (decoder.group_model) ---------------------------------------------------------
def with_group(group: str, weight=None, model: str = "lda_windowed"):
    """D's protocol starting from a group model: the blend's weight chosen (None) or fixed."""
    from dataclasses import replace

    p = group_protocol(128, CHANNELS)
    return replace(p, decoder=replace(p.decoder, model=model, group_model=group, group_weight=weight))


def test_a_frozen_alignment_gives_the_batch_alignments_numbers(built):
    """The subject's alignment computed once (GroupDecoder.reference) and applied to epochs given as arrays (one at a
    time online) gives what aligning the batch on itself gives: the whitening and, for the Riemannian pipeline, the
    re-centring of its xDAWN covariances."""
    from eegloop.database import Database
    from eegloop.decoder.group import load_group_model

    db = Database(None, data_dir=built[0], create=False)
    es, group = db.load_epochs("D"), load_group_model(db, "G")
    db.close()
    ref = group.reference(es)
    assert ref.signal.shape == (6, 6) and ref.covariance is not None and ref.n_epochs == 120
    batch = group.predict_proba(es)
    frozen = group.predict_array(es.data, es.channel_names, es.sfreq, es.tmin, ref)
    one = np.concatenate([group.predict_array(es.data[i:i + 1], es.channel_names, es.sfreq, es.tmin, ref)
                          for i in range(5)])
    np.testing.assert_allclose(frozen, batch, atol=1e-6)
    np.testing.assert_allclose(one, batch[:5], atol=1e-6)


def test_quick_train_from_a_group_model_keeps_the_better_blend_and_decodes_online(built, tmp_path):
    from eegloop.database import Database
    from eegloop.decoder import OnlineDecoder, quick_train
    from eegloop.decoder.adapt import WEIGHTS
    from eegloop.decoder.scoring import scores

    root = clone(built[0], tmp_path)
    db = Database(None, data_dir=root, create=False)
    m = quick_train(db, "D", protocol=with_group("G"), use_teacher=False, progress=False)
    rec = db.latest_model("D")
    es = db.load_epochs("D")
    db.close()
    g = m.metrics["group"]
    assert rec.id == m.model_id and rec.kind == "group_adapted" and m.path.name.startswith("adapted-")
    assert g["name"] == "G" and g["weight"] in WEIGHTS and "inner block-wise folds" in g["how"]
    assert g["n_reference_epochs"] == len(es) and m.metrics["method"] == "lda_windowed"
    own = sorted(p for p in m.path.parent.glob("model-*.skops"))
    assert len(own) == 1  # the subject's own model, saved beside the blend that refers to it
    dec = OnlineDecoder(m.path)
    p = np.array([[dec.predict(x)[c] for c in dec.classes] for x in es.data])
    assert np.allclose(p.sum(1), 1) and dec.classes == list(es.class_ids)
    y = np.array([dec.classes.index(c) for c in es.labels])
    assert scores(y, p)["auc"] > 0.8
    with pytest.raises(Exception, match="trained on epochs of"):
        dec.predict(es.data[0][:, :-3])


def test_zero_calibration_uses_no_label_and_scores_a_subject_the_model_never_saw(built, tmp_path):
    """group_weight 1: the group model alone, aligned on D's epochs; D's labels only score it. Shuffling D's labels
    changes the score, never the decoder."""
    from eegloop.database import Database
    from eegloop.decoder import OnlineDecoder, quick_train
    from eegloop.decoder.group import load_group_model

    root = clone(built[0], tmp_path)
    db = Database(None, data_dir=root, create=False)
    m = quick_train(db, "D", protocol=with_group("G", 1.0), use_teacher=False, progress=False)
    es, group = db.load_epochs("D"), load_group_model(db, "G")
    assert db.latest_model("D").kind == "group_adapted" and m.metrics["zero_calibration"] is True
    assert m.metrics["group"]["weight"] == 1.0 and m.metrics["n_train"] == 0
    assert not list(m.path.parent.glob("model-*"))  # no own model fitted
    expected = auc(group, es)
    assert m.metrics["heldout"]["auc"] == pytest.approx(expected, abs=1e-9) and expected > 0.8
    from eegloop.decoder import heldout_line

    assert heldout_line(m.metrics).endswith(" — a subject the group model never saw: an honest estimate")
    dec = OnlineDecoder(m.path)
    p = np.array([[dec.predict(x)[c] for c in dec.classes] for x in es.data[:8]])
    batch = group.predict_proba(es)[:8][:, [list(group.classes).index(c) for c in dec.classes]]
    np.testing.assert_allclose(p, batch, atol=1e-6)
    # the group model deleted (a member withdrew): the blend says so in one line
    from eegloop.decoder.group import delete_group_models

    delete_group_models(db, "A")
    db.close()
    with pytest.raises(Exception, match="blends group model 'G', whose file .* is gone"):
        OnlineDecoder(m.path)


def test_another_session_of_a_member_is_blended_and_scored_as_a_cross_session_estimate(built, tmp_path):
    """A, a member of G, records a second session: its decoder may start from G on that session alone (G never saw
    those epochs), and zero calibration there says it is a cross-session estimate, not a new subject's."""
    from eegloop.database import Database
    from eegloop.decoder import heldout_line, quick_train
    from eegloop.errors import EegloopError
    from eegloop.recorder.importers import import_epochset

    root = clone(built[0], tmp_path)
    db = Database(None, data_dir=root, create=False)
    try:
        (old,) = next(m for m in db.get_group_model("G").members if m.code == "A").session_ids
        new = import_epochset(db, "A", group_protocol(128, CHANNELS), subject_epochs(seed=11), source="simulated")
        with pytest.raises(EegloopError, match="trained on A's session"):  # the member's own session: refused
            quick_train(db, "A", session_ids=[old], protocol=with_group("G"), use_teacher=False, progress=False)
        m = quick_train(db, "A", session_ids=[new], protocol=with_group("G"), use_teacher=False, progress=False)
        assert m.metrics["group"]["name"] == "G" and db.latest_model("A").kind == "group_adapted"
        z = quick_train(db, "A", session_ids=[new], protocol=with_group("G", 1.0), use_teacher=False,
                        progress=False)
        assert z.metrics["zero_calibration"] and z.metrics["n_heldout"] == len(db.load_epochs("A", [new]))
        assert heldout_line(z.metrics).endswith(f" — the group model saw other sessions of this subject ({old}), not "
                                                "these epochs: a cross-session estimate, not a new subject's")
    finally:
        db.close()


def test_a_group_weighed_0_leaves_the_own_model_free_of_it(built, tmp_path):
    """Weight 0 (fixed here; the blend may choose it too): the subject's own model is registered as it is, the
    group's choice in its metrics; nothing depends on the group model's file, so a member's withdrawal neither
    lists it nor breaks it."""
    from eegloop.database import Database
    from eegloop.decoder import OnlineDecoder, heldout_line, quick_train
    from eegloop.decoder.group import delete_group_models, dependent_models

    root = clone(built[0], tmp_path)
    db = Database(None, data_dir=root, create=False)
    try:
        m = quick_train(db, "D", protocol=with_group("G", 0.0), use_teacher=False, progress=False)
        rec = db.latest_model("D")
        assert rec.kind != "group_adapted" and rec.id == m.model_id and m.metrics["group"]["weight"] == 0
        assert "the saved model is the own model itself (group weight 0)" in heldout_line(m.metrics)
        assert not [x for deps in dependent_models(db, "A").values() for x, _ in deps if x.id == m.model_id]
        delete_group_models(db, "A")
        dec = OnlineDecoder(m.path)
        assert dec.predict(db.load_epochs("D").data[0])
    finally:
        db.close()


def test_the_report_says_its_cross_validation_is_not_the_blends(built, tmp_path):
    """A session whose decoder blends a group model: the report's quick-train paragraph says the cross-validation
    scores the subject's own decoder without the group, and where the group-based decoder's estimate is."""
    from eegloop.database import Database
    from eegloop.decoder import quick_train
    from eegloop.decoder.groupstart import group_estimate_note
    from eegloop.report import write_report

    root = clone(built[0], tmp_path)
    db = Database(None, data_dir=root, create=False)
    try:
        m = quick_train(db, "D", protocol=with_group("G", 0.5), use_teacher=False, progress=False)
        (sid,) = [s.id for s in db.list_sessions("D")]
        db.update_session_info(sid, model_id=m.model_id)
        html = write_report(db, sid, tmp_path / "report").read_text()
    finally:
        db.close()
    assert ("The decoder the feedback used is group model G at weight 0.5; the cross-validation after the feedback "
            "block scores the subject") in html
    assert "eegloop evaluate --calibration-curve --subject D --group-model G" in html
    assert group_estimate_note({"group": {"name": "G", "weight": 0}}, "D") is None  # the own model: no note


def test_the_visits_cross_validation_scores_the_blend_it_used(built, tmp_path):
    """After the feedback a visit cross-validates the decoder the feedback used (the blend, refitted on each fold:
    the subject's own model, the group's weight and side chosen again on the fold's training blocks) beside the
    subject's own model alone on the same folds; the report gives that estimate. At weight 1 nothing is refitted
    (the quick-train's score used none of the subject's labels)."""
    import json

    from eegloop.database import Database
    from eegloop.decoder import quick_train
    from eegloop.phases.report import _cross_validate_blend, _evaluate_for_report, _recording_epochs
    from eegloop.report import write_report

    root = clone(built[0], tmp_path)
    db = Database(None, data_dir=root, create=False)
    lines: list = []
    try:
        p = with_group("G")
        m = quick_train(db, "D", protocol=p, use_teacher=False, progress=False)
        (sid,) = [s.id for s in db.list_sessions("D")]
        es = _recording_epochs(db, "D", sid)
        blend = _cross_validate_blend(db, es, p, lines.append)
        assert _cross_validate_blend(db, es, with_group("G", 1.0), lines.append) is None
        said: list = []  # a group model deleted since the quick-train (a withdrawal): said, the visit completes
        assert "no group model named 'GONE'" in _cross_validate_blend(db, es, with_group("GONE"), said.append)[
            "error"] and said and said[0].startswith("the group-based decoder could not be cross-validated")
        fixed = _cross_validate_blend(db, es, with_group("G", 0.5), lambda _line: None)
        assert fixed["weights"] == [0.5] * p.training.n_folds  # a fixed weight is what each fold keeps, as quick-train
        ev = _evaluate_for_report(db, es, p, lambda _line: None)  # the subject's own model's, as a visit's
        db.set_session_status(sid, "completed", model_id=m.model_id, evaluation={**ev, "group_blend": blend})
        html = write_report(db, sid, tmp_path / "report").read_text()
    finally:
        db.close()
    n = p.training.n_folds
    assert blend["group_model"] == "G" and (blend["split"], blend["n_folds"]) == ("block", n)
    assert len(blend["folds_with"]) == len(blend["folds_without"]) == len(blend["weights"]) == n
    assert blend["with_group"] > 0.7 and blend["chance"] == 0.5  # shared patterns: the blend decodes D
    assert all(0.0 <= w <= 1.0 for w in blend["weights"])
    json.dumps(blend, allow_nan=False)  # stored in the session's JSON
    assert lines[0].startswith("cross-validating the decoder the feedback used (group model G")
    assert lines[1].startswith(f"group-based decoder, {n} block-wise folds: auc {blend['with_group']:.3f}")
    assert (f"its honest estimate, the same procedure refitted on each of {n} block-wise folds" in html
            and f"auc {blend['with_group']:.3f} ± {blend['spread_with']:.3f}" in html)


def test_a_protocol_names_a_group_model_it_can_have(built, tmp_path):
    from eegloop.database import Database
    from eegloop.decoder import quick_train
    from eegloop.errors import EegloopError, ProtocolError
    from eegloop.protocol import protocol_from_dict

    base = {"stimuli": {"folder": "x", "classes": {"a": "a", "b": "b"}}}
    with pytest.raises(ProtocolError, match="decoder.group_model: a group model name"):
        protocol_from_dict({**base, "decoder": {"group_model": "../etc"}})
    with pytest.raises(ProtocolError, match="decoder.group_weight: set without decoder.group_model"):
        protocol_from_dict({**base, "decoder": {"group_weight": 0.5}})
    with pytest.raises(ProtocolError, match="decoder.group_weight"):
        protocol_from_dict({**base, "decoder": {"group_model": "G", "group_weight": 1.5}})
    root = clone(built[0], tmp_path)
    db = Database(None, data_dir=root, create=False)
    before = dump(root)
    with pytest.raises(EegloopError, match="Nope"):
        quick_train(db, "D", protocol=with_group("Nope"), use_teacher=False, progress=False)
    db.close()
    assert dump(root) == before and not list((root / "models").glob("sub-D*"))


def test_train_starts_from_a_group_model_on_the_command_line(built, cli, tmp_path):
    root = clone(built[0], tmp_path)
    before = dump(root)
    for args, says in ((("--group-model", "Nope"), "Nope"), (("--group-weight", "0.5"), "--group-weight"),
                       (("--group-model", "G", "--group-weight", "2"), "--group-weight"),
                       (("--group-model", "../x"), "--group-model")):
        r = cli(root, "train", "--subject", "D", "--no-teacher", *args)
        assert r.returncode == 2 and says in r.stderr and len(r.stderr.strip().splitlines()) == 1, (args, r.stderr)
    assert dump(root) == before and not list((root / "models").glob("sub-D*"))
    r = cli(root, "train", "--subject", "D", "--no-teacher", "--group-model", "G", "--group-weight", "0.5")
    assert r.returncode == 0, r.stderr
    assert ("started from group model G (riemann, aligned on 120 of the subject's epochs, tuned on 120 labelled "
            "epochs): weight 0.5, fixed") in r.stdout
    # the held-out line is the own model's, before the group was weighed, and says so
    held = next(line for line in r.stdout.splitlines() if "top1" in line)
    assert held.startswith("the subject's own model alone (the saved model is group model G at weight 0.5; the "
                           "blend itself not scored: its weight was fixed)")
    assert ("honest estimate: run `eegloop evaluate --calibration-curve --subject D --group-model G`" in r.stdout)
    # a group model trained on the epochs this decoder trains on: refused (its weight and scores would be its fit's)
    before = dump(root)
    r = cli(root, "train", "--subject", "A", "--no-teacher", "--group-model", "G")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "--group-model: 'G' was trained on A's session" in r.stderr and "--exclude A" in r.stderr
    assert dump(root) == before and not list((root / "models").glob("sub-A*"))


def test_a_resumed_visit_refuses_a_group_model_trained_on_its_session(built, tmp_path):
    """A visit interrupted in its recording, then a group model pretrained with the subject's sessions (that one
    included): resuming the visit with that group model is refused in one line before anything starts (its
    quick-train would weigh and score the group on epochs it was trained on). Nothing written."""
    from eegloop.database import Database
    from eegloop.decoder.group import pretrain
    from eegloop.errors import EegloopError
    from eegloop.session import run_visit

    root = clone(built[0], tmp_path)
    db = Database(None, data_dir=root)
    try:
        proto = group_protocol(128, CHANNELS, decoder={"group_model": "GR"})
        sid = db.create_session("A", proto)  # the interrupted visit (no block complete)
        pretrain(db, ["A", "B"], "GR", progress=lambda _: None)
        assert sid in next(m for m in db.get_group_model("GR").members if m.code == "A").session_ids
        before = dump(root)
        with pytest.raises(EegloopError, match=rf"^decoder.group_model: 'GR' was trained on A's session {sid}, which "
                                               r"this decoder trains on: .*--exclude A"):
            run_visit(proto, "A", db, simulate=True, resume=True, progress=None)
        assert dump(root) == before and db.get_session(sid).status == "created"
    finally:
        db.close()


def test_a_group_model_of_other_classes_is_refused_everywhere_it_could_start_or_score(built, cli, tmp_path):
    """F consents and is recorded on faces and houses; group model GF is trained on F alone. Starting D's decoder
    from it (train, the protocol's decoder.group_model, zero calibration), its calibration curve, a protocol naming
    target/non-target with it, and holding A out against F: each one line, exit 2, nothing written."""
    import yaml

    from eegloop.database import Database
    from eegloop.decoder import quick_train
    from eegloop.decoder.group import pretrain
    from eegloop.errors import EegloopError
    from eegloop.recorder.importers import import_epochset

    root = clone(built[0], tmp_path)
    db = Database(None, data_dir=root, create=False)
    try:
        es = subject_epochs(seed=9)
        faces = EpochSet(es.data, np.where(es.labels == "target", "face", "house"), es.sfreq, es.tmin,
                         es.channel_names, runs=es.runs, blocks=es.blocks, sessions=es.sessions)
        proto = group_protocol(128, CHANNELS)
        proto = proto.replace(stimuli=replace_classes(proto.stimuli, {"face": "face", "house": "house"}))
        import_epochset(db, "F", proto, faces, source="simulated")
        db.set_subject_consent("F", True)
        pretrain(db, ["F"], "GF", progress=lambda _: None)
        for weight in (None, 1.0):
            with pytest.raises(EegloopError, match=r"^decoder.group_model: group model 'GF' decodes face, house, not "
                                                   r"nontarget, target \(D's epochs: nontarget, target\); pretrain"):
                quick_train(db, "D", protocol=with_group("GF", weight), use_teacher=False, progress=False)
    finally:
        db.close()
    before = dump(root)
    pfile = tmp_path / "p.yaml"
    pfile.write_text(yaml.safe_dump({
        "stimuli": {"folder": "x", "classes": {"target": "target", "nontarget": "non-target"}},
        "paradigm": {"block_s": 10, "image_s": 0.5, "images_per_class": 60, "runs": 2},
        "amplifier": {"channels": len(CHANNELS), "sfreq": 128, "channel_names": CHANNELS},
        "preprocessing": {"bandpass_hz": [1, 20]}, "decoder": {"group_model": "GF"}}))
    for args, says in (
            (["train", "--subject", "D", "--no-teacher", "--group-model", "GF"],
             "--group-model: group model 'GF' decodes face, house, not nontarget, target (D's epochs: nontarget, "
             "target)"),
            (["train", "--subject", "D", "--no-teacher", "--group-model", "GF", "--group-weight", "1"],
             "--group-model: group model 'GF' decodes face, house"),
            (["evaluate", "--calibration-curve", "--subject", "D", "--group-model", "GF"],
             "--group-model: group model 'GF' decodes face, house, not nontarget, target (D's epochs"),
            (["protocol", "check", pfile, "--design-only"],
             "decoder.group_model: group model 'GF' decodes face, house, not nontarget, target (the protocol's "
             "stimuli.classes: nontarget, target)"),
            (["evaluate", "--loso", "--subjects", "A,F"],
             "--subjects: A's epochs are of nontarget, target; the group model of F would decode face, house")):
        r = cli(root, *args)
        assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, (args, r.stderr)
        assert says in r.stderr and r.stdout == "", (args, r.stderr, r.stdout)
    assert dump(root) == before


def replace_classes(stimuli, classes):
    from dataclasses import replace

    return replace(stimuli, classes=classes)


def test_the_reference_protocol_must_name_the_subjects_classes(built, cli, tmp_path):
    import yaml

    root = clone(built[0], tmp_path)
    before = dump(root)
    other = {"stimuli": {"folder": "x", "classes": {"house": "house", "face": "face"}},
             "paradigm": {"block_s": 10, "image_s": 0.5, "images_per_class": 60, "runs": 2, "order": "interleaved"},
             "amplifier": {"channels": len(CHANNELS), "sfreq": 128, "channel_names": CHANNELS},
             "epochs": {"tmin": -0.1, "tmax": 0.7, "margin_s": 0.5},
             "preprocessing": {"notch_hz": None, "bandpass_hz": [1, 20], "standardize": False}}
    (tmp_path / "other.yaml").write_text(yaml.safe_dump(other))
    r = cli(root, "pretrain", "--subjects", "A,B", "--name", "X", "--protocol", tmp_path / "other.yaml")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "--protocol: its stimuli.classes (face, house) are not the subjects' (" in r.stderr
    assert r.stdout == ""  # refused from the stored labels, before the plan is printed or an epoch is loaded
    assert dump(root) == before and not list((root / "models").glob("group-X*"))


def test_protocol_check_looks_the_group_model_up_as_the_visit_will(built, cli, tmp_path):
    """`protocol check` with decoder.group_model: found (one line), unknown (one error line, exit 2), reading a
    channel the amplifier lacks (one error line), or not checked where there is no database yet."""
    import yaml

    def check(group, channels=CHANNELS, data=built[0]):
        proto = {"stimuli": {"folder": "x", "classes": {"target": "target", "nontarget": "non-target"}},
                 "paradigm": {"block_s": 10, "image_s": 0.5, "images_per_class": 60, "runs": 2},
                 "amplifier": {"channels": len(channels), "sfreq": 128, "channel_names": list(channels)},
                 "preprocessing": {"bandpass_hz": [1, 20]}, "decoder": {"group_model": group}}
        (tmp_path / "p.yaml").write_text(yaml.safe_dump(proto))
        return cli(data, "protocol", "check", tmp_path / "p.yaml", "--design-only")

    r = check("G")
    assert r.returncode == 0 and r.stdout.splitlines()[-1] == ("decoder.group_model 'G': found, and it reads "
                                                               "channels the amplifier records"), r.stdout + r.stderr
    for group, channels, says in (("NOPE", CHANNELS, "decoder.group_model: no group model named 'NOPE'"),
                                  ("G", CHANNELS[:-1], "decoder.group_model: group model 'G' reads channel(s) P4")):
        r = check(group, channels)
        assert r.returncode == 2 and r.stdout == "" and len(r.stderr.strip().splitlines()) == 1, r.stderr
        assert says in r.stderr
    r = check("G", data=tmp_path / "none")
    assert r.returncode == 0 and r.stdout.splitlines()[-1].startswith("decoder.group_model 'G': not checked (no "
                                                                      "eegloop database at ")
    assert not (tmp_path / "none").exists()


def test_a_rendezvous_nobody_joins_ends_in_one_line_after_its_timeout(built, cli, tmp_path):
    """--nnodes 2 with no second machine: a line says where it waits and for how long, then one error line
    (torch's elastic launcher, a real c10d rendezvous on 127.0.0.1), nothing stored."""
    import socket

    root = clone(built[0], tmp_path)
    before = dump(root)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    r = cli(root, "pretrain", "--subjects", "A,C", "--name", "RZ", "--method", "conv1d", "--nnodes", "2",
            "--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-timeout", "3", "--max-epochs", "1")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert f"--rdzv-endpoint: no rendezvous at 127.0.0.1:{port} within 3 s (2 machines wanted" in r.stderr
    assert f"meeting 1 other machine at 127.0.0.1:{port} (each runs this same command); giving up after 3 s" in r.stdout
    assert dump(root) == before and not list((root / "models").glob("group-RZ*"))


def test_a_checkpoint_that_is_not_one_is_refused_before_training(built, cli, tmp_path):
    root = clone(built[0], tmp_path)
    before = dump(root)
    junk = tmp_path / "junk.pt"
    junk.write_text("garbage")
    r = cli(root, "pretrain", "--subjects", "A,C", "--name", "X", "--method", "conv1d", "--checkpoint", junk)
    assert r.returncode == 2 and r.stdout == "" and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert f"--checkpoint: {junk} is not a checkpoint eegloop wrote" in r.stderr
    assert dump(root) == before and junk.read_text() == "garbage" and sorted(tmp_path.iterdir()) == [root, junk]


def test_braindecode_networks_train_as_group_models_and_as_a_subjects_decoder(built, tmp_path):
    """EEGNet and ShallowFBCSPNet (braindecode) are methods like eegloop's own: a group model pretrained on A and C
    (Euclidean-aligned) decodes D; D's own pinned EEGNet is saved, rebuilt from its JSON and gives the same
    probabilities online as in memory."""
    from dataclasses import replace

    from eegloop.database import Database
    from eegloop.decoder import OnlineDecoder, quick_train
    from eegloop.decoder.group import load_group_model, pretrain

    root = clone(built[0], tmp_path)
    db = Database(None, data_dir=root, create=False)
    res = pretrain(db, ["A", "C"], "S", method="shallow_fbcsp", max_epochs=1, device="cpu", progress=lambda _: None)
    assert res.provenance["alignment"] == "euclid"
    es = db.load_epochs("D")
    p = load_group_model(db, "S").predict_proba(es)
    assert p.shape == (120, 2) and np.allclose(p.sum(1), 1, atol=1e-5)
    proto = group_protocol(128, CHANNELS)
    proto = replace(proto, decoder=replace(proto.decoder, model="eegnet"), training=replace(proto.training, max_epochs=2))
    m = quick_train(db, "D", protocol=proto, use_teacher=False, progress=False)
    db.close()
    assert m.metrics["method"] == "eegnet" and m.path.suffix == ".safetensors"
    dec = OnlineDecoder(m.path)
    assert dec.meta["model"]["kind"] == "eegnet" and "kernel_length" in dec.meta["model"]
    online = np.array([[dec.predict(x)[c] for c in dec.classes] for x in es.data[:4]])
    assert np.isfinite(online).all() and np.allclose(online.sum(1), 1, atol=1e-5)


def test_auto_on_one_run_keeps_its_student_with_the_students_features():
    """A calibration set of one run leaves auto no honest run-wise inner fold: it keeps the protocol's student, whose
    representation was missing from the features (a KeyError, and a traceback from the calibration curve)."""
    from dataclasses import replace

    from eegloop.decoder.adapt import adapt
    from eegloop.decoder.methods import student

    es = subject_epochs(1)
    p = group_protocol(128, CHANNELS)
    p = replace(p, decoder=replace(p.decoder, model="auto", candidates=["lda_windowed", "riemann"]),
                training=replace(p.training, split="run", max_epochs=2))
    a = adapt(None, es.subset(np.flatnonzero(es.runs == 1)), p)
    assert a.method == student(p.preprocessing.representation) and a.weight == 0.0
    assert a.predict_proba(es.subset(np.flatnonzero(es.runs == 2))).shape == (60, 2)


def test_the_blend_leans_on_the_group_until_the_own_model_wins_beyond_one_se():
    from eegloop.decoder.adapt import WEIGHTS, _steadiest

    level = np.array([[.70, .71, .72, .73, .74], [.72, .71, .70, .69, .70], [.71, .72, .73, .72, .71]])
    assert _steadiest(level, level.mean(0), int(np.argmax(level.mean(0)))) == 0  # within noise: the group
    clear = np.array([[.60, .70, .80, .85, .90], [.61, .72, .81, .86, .91], [.59, .69, .79, .84, .89]])
    assert WEIGHTS[_steadiest(clear, clear.mean(0), 4)] == 0.0  # the own model wins on every fold by far
    # at the ceiling: the first blend ties the best on two folds and loses the third, exactly one SE below it (the
    # clearest verdict three folds give): not kept; a blend level with the best on every fold is
    ceiling = np.array([[.82, 1.0, 1.0], [1.0, 1.0, 1.0], [1.0, 1.0, 1.0]])
    assert _steadiest(ceiling, ceiling.mean(0), 1) == 1
    tied = np.array([[1.0, 1.0], [.9, .9], [1.0, 1.0]])
    assert _steadiest(tied, tied.mean(0), 1) == 0
    # a loss of one pair in one fold (25 targets x 25 non-targets) is below what the folds resolve: level (the
    # grain: one pair of one fold as a change of the 3 folds' mean); a pair lost in every fold is a verdict
    one_pair = np.array([[1 - 1 / 625, 1.0], [1.0, 1.0], [1.0, 1.0]])
    assert _steadiest(one_pair, one_pair.mean(0), 1) == 1
    assert _steadiest(one_pair, one_pair.mean(0), 1, grain=1 / 625 / 3) == 0
    every = np.array([[1 - 1 / 625, 1.0]] * 3)
    assert _steadiest(every, every.mean(0), 1, grain=1 / 625 / 3) == 1
    assert _steadiest(ceiling, ceiling.mean(0), 1, grain=1 / 625 / 3) == 1  # a real loss stays one


def test_the_grain_is_one_pair_for_auc_and_one_epoch_for_balanced_accuracy():
    from eegloop.decoder.adapt import _grain, key_score

    y = np.array([0] * 4 + [1] * 3)
    assert _grain(y, 2) == 1 / 12
    p = np.linspace(0, 1, 7)
    best = key_score(y, np.c_[1 - p, p])
    p[[3, 4]] = p[[4, 3]]  # one target and one non-target swapped: the smallest step
    assert np.isclose(best - key_score(y, np.c_[1 - p, p]), _grain(y, 2))
    y3 = np.array([0, 0, 1, 1, 1, 2])
    assert _grain(y3, 3) == 1 / 9
    onehot = np.eye(3)[y3]
    wrong = onehot.copy()
    wrong[2] = [1, 0, 0]  # one epoch of the largest class misclassified
    assert np.isclose(key_score(y3, onehot) - key_score(y3, wrong), _grain(y3, 3))
    y2 = np.array([0, 0, 1, 1])  # a fold without the third class: balanced accuracy over the two present
    wrong2 = np.eye(3)[y2]
    wrong2[0] = [0, 1, 0]
    assert np.isclose(key_score(y2, np.eye(3)[y2]) - key_score(y2, wrong2), _grain(y2, 3))
    assert np.isnan(_grain(np.zeros(5, int), 2))  # AUC undefined with one class: no step


# -- tuning a group model to a subject --------------------------------------------------------------------------
def test_a_group_model_is_tuned_to_the_subject_and_decodes_them_online_as_in_memory(built, tmp_path):
    """G keeps its members' time courses (a TemporalPrior); tuned on D's first blocks it decodes D's later blocks;
    quick-train from G saves the tuned model beside the blend, and the online decoder gives what the blend gives in
    memory."""
    import json

    from eegloop.database import Database
    from eegloop.decoder import OnlineDecoder, quick_train
    from eegloop.decoder.adapt import adapt, in_class_order
    from eegloop.decoder.group import load_group_model
    from eegloop.decoder.groupdecoder import TunedGroup

    root = clone(built[0], tmp_path)
    db = Database(None, data_dir=root, create=False)
    group, es = load_group_model(db, "G"), db.load_epochs("D")
    w = len(group.prior.time_cov)
    assert group.prior.n_subjects == 3 and group.prior.basis.shape == (w, 2)  # the response and its derivative
    np.testing.assert_allclose(group.prior.basis.T @ group.prior.basis, np.eye(2), atol=1e-6)
    c = len(group.grid.channel_names)  # the members' background pooled in one head, kept for the tuned model
    assert group.prior.noise_cov.shape == (c * w, c * w)
    first, rest = np.flatnonzero(es.blocks <= 3), np.flatnonzero(es.blocks > 3)
    tuned = group.tuned(es.subset(first))
    assert isinstance(tuned, TunedGroup) and tuned.n_epochs == len(first)
    assert sorted(tuned.classes) == sorted(es.class_ids)
    later = es.subset(rest)
    y = np.array([tuned.classes.index(c) for c in later.labels])
    from eegloop.decoder.scoring import scores

    assert scores(y, tuned.predict_proba(later))["auc"] > 0.8
    assert group.tuned(es.subset(first[:3])) is None  # fewer than 4 epochs a class: nothing to tune on
    a = adapt(group, es.subset(first), with_group("G"))  # the inner folds weigh the aligned and the tuned model
    assert "also tuned on each fold's training epochs (3 of 3 folds)" in a.how
    assert isinstance(a.group, TunedGroup) == ("(the group model tuned to the subject)" in a.how)

    m = quick_train(db, "D", protocol=with_group("G", 0.5), use_teacher=False, progress=False)
    db.close()
    g = m.metrics["group"]
    assert g["weight"] == 0.5 and g["tuned_on"] == len(es)
    meta = json.loads(m.path.with_suffix(".json").read_text())
    assert meta["group"]["tuned"]["n_epochs"] == len(es) and (m.path.parent / meta["group"]["tuned"]["path"]).is_file()
    dec = OnlineDecoder(m.path)
    online = np.array([[dec.predict(x)[c] for c in dec.classes] for x in es.data[:6]])
    own = OnlineDecoder(m.path.parent / meta["own"])
    p_own = np.array([[own.predict(x)[c] for c in dec.classes] for x in es.data[:6]])
    t_all = group.tuned(es)
    p_tuned = in_class_order(t_all.predict_proba(es.subset(np.arange(6))), t_all.classes, dec.classes)
    np.testing.assert_allclose(online, 0.5 * p_tuned + 0.5 * p_own, atol=1e-6)
    # a damaged entry for the tuned model, or its file gone: one line, never a traceback
    from eegloop.errors import EegloopError

    meta_file = m.path.with_suffix(".json")
    for tuned_entry in ("junk", {"n_epochs": 3}, {"path": "nowhere.skops"}):
        meta_file.write_text(json.dumps({**meta, "group": {**meta["group"], "tuned": tuned_entry}}))
        with pytest.raises(EegloopError, match="train the subject's model again"):
            OnlineDecoder(m.path)


def test_a_group_model_without_a_prior_is_used_as_it_is(built, tmp_path):
    """A group model stored before priors existed (or whose prior does not fit together) is not tuned: the blend
    uses it aligned, as before."""
    import json

    from eegloop.database import Database
    from eegloop.decoder.adapt import adapt
    from eegloop.decoder.group import load_group_model
    from eegloop.decoder.groupdecoder import GroupDecoder

    root = clone(built[0], tmp_path)
    db = Database(None, data_dir=root, create=False)
    path = db.abspath(db.get_group_model("G").checkpoint_path)
    es = db.load_epochs("D")
    meta_file = path.with_suffix(".json")
    meta = json.loads(meta_file.read_text())
    for prior in (None, {**meta["temporal_prior"], "basis": [[1.0, 0.0]]}, "junk"):
        meta["temporal_prior"] = prior
        meta_file.write_text(json.dumps(meta))
        group = load_group_model(db, "G")
        assert group.prior is None and group.tuned(es) is None
        a = adapt(group, es.subset(np.flatnonzero(es.blocks <= 3)), with_group("G"))
        assert isinstance(a.group, GroupDecoder) and "tuned" not in a.how
    db.close()
