"""The calibration curve and leave-one-subject-out scores (issue 27, items 4-5): `eegloop evaluate
--calibration-curve --subject S [--group-model G]` and `eegloop evaluate --loso --subjects ...`.

Four simulated subjects (test_group's: one shared P300-like response seen through each subject's own channel
crosstalk) in a real SQLite database, with onsets: 6 blocks of 20 epochs, 1.9 s apart (38 s a block). A, B and C
give group consent; G is trained on A and B; D does not consent and is the curve's subject.
"""
from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import pytest
from test_group import CHANNELS, dump, subject_epochs

from eegloop.protocol import protocol_from_dict

SOA = 1.9


def cal_protocol():
    return protocol_from_dict({
        "stimuli": {"folder": "x", "classes": {"target": "target", "nontarget": "non-target"}},
        "paradigm": {"block_s": 38, "image_s": SOA, "images_per_class": 60, "runs": 2, "order": "interleaved"},
        "amplifier": {"channels": len(CHANNELS), "sfreq": 128, "channel_names": list(CHANNELS)},
        "epochs": {"tmin": -0.1, "tmax": 0.7, "margin_s": 0.5},
        "preprocessing": {"notch_hz": None, "bandpass_hz": [1, 20], "standardize": False},
        "decoder": {"model": "lda_windowed", "inner_folds": 2},
        "teacher": {"enabled": False}, "training": {"split": "block", "n_folds": 3, "precision": "fp32"}})


def timed_epochs(seed: int):
    es = subject_epochs(seed)
    i = np.arange(len(es))
    es.onsets = 1000.0 + (es.blocks - 1) * 60.0 + (i % 20) * SOA  # 20 s pauses between blocks
    return es


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    from eegloop.database import Database
    from eegloop.decoder.group import pretrain
    from eegloop.recorder.importers import import_epochset

    root = tmp_path_factory.mktemp("calibration")
    db = Database(None, data_dir=root)
    for k, code in enumerate("ABCD"):
        import_epochset(db, code, cal_protocol(), timed_epochs(11 + k), source="simulated")
    for code in "ABC":
        db.set_subject_consent(code, True)
    db.add_subject("E")  # no session
    pretrain(db, ["A", "B"], "G", progress=lambda _: None)
    db.close()
    return root


def run_cli(capsys, root, *args):
    from eegloop.cli import main

    rc = main([*map(str, args), "--data", str(root)])
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.fixture(scope="module")
def curve(root):
    """D's curve with G through the CLI (2 label shuffles): its JSON line and the report it saved."""
    from eegloop.cli import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["evaluate", "--calibration-curve", "--subject", "D", "--group-model", "G", "--permutations", "2",
                     "--json", "--data", str(root)]) == 0
    line = json.loads(out.getvalue().splitlines()[-1])
    png = sorted((root / "reports").glob("calibration-D-*.png"))[-1]
    return line, json.loads(png.with_suffix(".json").read_text()), png


def test_the_curve_json_line_and_plot(curve):
    last, saved, png = curve
    assert list(last) == ["subject", "metric", "curve"] and last["subject"] == "D" and last["metric"] == "auc"
    assert [list(p) for p in last["curve"]] == [["minutes", "without_group", "with_group", "chance",
                                                 "p_with_group"]] * 3
    # 4 blocks of 38 s left per fold: 2.5 minutes, so no 5-minute point
    assert [p["minutes"] for p in last["curve"]] == [0, 2, pytest.approx(4 * 20 * SOA / 60, abs=0.01)]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert png.stat().st_mode & 0o777 == 0o600  # private, like the JSON beside it
    assert saved["group_model"] == "G" and saved["plot"] == str(png)


def test_the_fold_plan_never_tests_a_calibration_epoch(curve):
    folds = curve[1]["folds"]
    assert len(folds) == 3
    tested = []
    for f in folds:
        test, cal = set(f["test"]), {k: set(v) for k, v in f["calibration"].items()}
        assert len(test) == 40 and len(cal["all"]) == 80 and not test & cal["all"]  # 2 of 6 blocks held out
        assert len(cal["0"]) == 0 and len(cal["2"]) == 60  # 3 whole blocks (1.9 minutes) from the start
        assert f["calibration"]["2"] == f["calibration"]["all"][:60]
        assert f["minutes"]["2"] == pytest.approx(3 * 20 * SOA / 60)
        assert all(not test & c for c in cal.values())
        tested += f["test"]
    assert sorted(tested) == list(range(120))  # every epoch tested once


def test_the_group_model_scores_above_chance_at_zero_minutes(curve):
    zero, two, full = curve[0]["curve"]
    assert zero["without_group"] is None and zero["chance"] == 0.5
    assert zero["with_group"] > 0.7  # shared patterns: the group model transfers, aligned on D's unlabelled epochs
    assert curve[1]["points"][0]["weights"] == [1.0, 1.0, 1.0]  # no labelled epoch: the group model alone
    assert curve[1]["points"][0]["tuned"] == [False] * 3  # nothing to tune it on
    # with labels the folds weighed the group model tuned to D too: each fold says which side its blend kept
    assert all(len(p["tuned"]) == len(p["weights"]) == 3 for p in curve[1]["points"][1:])
    assert two["without_group"] > 0.5 and full["with_group"] > 0.7
    # the smallest p 2 label shuffles can give: every shuffled refit scored below the true labels
    assert all(p["p_with_group"] == pytest.approx(1 / 3, abs=1e-3) for p in curve[0]["curve"])


def test_both_columns_get_a_permutation_p_from_the_same_shuffles(curve):
    """Each shuffle refits the per-subject default as well as the blend: its p comes at no extra fit (saved in the
    report's JSON; the --json line keeps its keys)."""
    points = curve[1]["points"]
    assert points[0]["p_without_group"] is None  # 0 minutes: nothing of the subject's own is fitted
    for p in points[1:]:
        assert p["p_without_group"] in (pytest.approx(1 / 3), pytest.approx(2 / 3), pytest.approx(1.0))
    assert all(p["budget_skipped"] == {} for p in points)  # lda_windowed: no comparison, nothing skipped


def test_the_curve_names_what_autos_time_budget_left_out(tmp_path, capsys):
    """auto's comparison has a wall-clock budget (decoder.select_budget_s): the candidates it left out are counted
    per point and named under the table; --budget 0 compares every candidate in every fit."""
    from dataclasses import replace

    from eegloop.database import Database
    from eegloop.recorder.importers import import_epochset

    proto = cal_protocol()
    proto = replace(proto, decoder=replace(proto.decoder, model="auto",
                                           candidates=["lda_windowed", "logreg_windowed", "riemann"]))
    db = Database(None, data_dir=tmp_path)
    import_epochset(db, "F", proto, timed_epochs(21), source="simulated")
    db.close()
    saved = []
    for budget in ("0.000001", "0"):
        rc, out, err = run_cli(capsys, tmp_path, "evaluate", "--calibration-curve", "--subject", "F", "--permutations",
                               "1", "--budget", budget)
        assert rc == 0, err
        saved.append(json.loads(sorted((tmp_path / "reports").glob("calibration-F-*.json"))[-1].read_text()))
        note = [line for line in out.splitlines() if "time budget" in line]
        if budget == "0":
            assert not note and all(p["budget_skipped"] == {} for p in saved[-1]["points"])
        else:  # the first candidate is always scored; the budget was spent before the others
            assert len(note) == 1 and "logreg_windowed (2 min: 3 of 3 folds, all: 3 of 3 folds)" in note[0] and "--budget 0" in note[0]
            assert [p["budget_skipped"] for p in saved[-1]["points"][1:]] == [{"logreg_windowed": 3, "riemann": 3}] * 2
        assert "label shuffle 2 of 2 done" in out and "2 minutes: permutation p without the group model" in out
    assert [s["budget_s"] for s in saved] == [1e-6, 0]


def test_cli_curve_without_group_model_prints_a_table(root, capsys):
    rc, out, err = run_cli(capsys, root, "evaluate", "--calibration-curve", "--subject", "D", "--permutations", "0")
    assert rc == 0, err
    lines = out.splitlines()
    lines = lines[next(i for i, t in enumerate(lines) if t.startswith("calibration curve of")):]
    assert lines[0].startswith("calibration curve of D: auc, 3 block-wise test folds") and "group model none" in lines[0]
    assert lines[2].split()[:2] == ["0", "(0.0)"] and lines[-1].startswith("report: ")


def test_loso_scores_each_subject_with_a_model_that_never_saw_it(root, capsys):
    from eegloop.database import Database
    from eegloop.decoder.loso import plan_loso

    rc, out, err = run_cli(capsys, root, "evaluate", "--loso", "--subjects", "A,B,C", "--permutations", "50", "--json")
    assert rc == 0, err
    assert len(out.splitlines()) == 1 and len(err.splitlines()) >= 3  # the JSON alone on stdout; progress on stderr
    rep = json.loads(out.splitlines()[-1])
    rows = {r["subject"]: r for r in rep["subjects"]}
    assert {s: r["trained_on"] for s, r in rows.items()} == {"A": ["B", "C"], "B": ["A", "C"], "C": ["A", "B"]}
    assert rep["metric"] == "auc" and all(r["chance"] == 0.5 for r in rows.values())
    assert all(r["score"] > 0.7 and r["p"] == pytest.approx(1 / 51, abs=1e-3) for r in rows.values())
    db = Database(None, data_dir=root, create=False)
    try:
        assert [m.name for m in db.list_group_models()] == ["G"]  # nothing stored
        # D gave no group consent: it may be scored (its data only tested), never trained on
        assert plan_loso(db, ["A", "B", "C", "D"]) == {"A": ["B", "C"], "B": ["A", "C"], "C": ["A", "B"],
                                                       "D": ["A", "B", "C"]}
        assert plan_loso(db, ["A", "B"]) == {"A": ["B"], "B": ["A"]}  # a group of one each
    finally:
        db.close()


def test_loso_of_two_subjects_scores_each_with_a_group_of_the_other(root, capsys):
    rc, out, err = run_cli(capsys, root, "evaluate", "--loso", "--subjects", "A,B", "--permutations", "20", "--json")
    assert rc == 0, err
    rows = {r["subject"]: r for r in json.loads(out.splitlines()[-1])["subjects"]}
    assert {s: r["trained_on"] for s, r in rows.items()} == {"A": ["B"], "B": ["A"]}
    assert all(0.0 <= r["score"] <= 1.0 and r["p"] == pytest.approx(1 / 21, abs=0.2) for r in rows.values())


@pytest.mark.parametrize("args, says", [
    (["--calibration-curve", "--subject", "A", "--group-model", "G"], "--group-model: 'G' was trained on A's"),
    (["--calibration-curve", "--subjects", "A,D"], "--calibration-curve: needs --subject S"),
    (["--calibration-curve", "--subject", "D", "--group-model", "NOPE"], "--group-model: no group model named"),
    (["--loso", "--subjects", "A"], "--loso: needs at least 2 subjects"),
    (["--loso", "--subjects", "A,D"], "--subjects: holding A out leaves 0 subject(s) with group consent"),
    (["--subject", "D", "--group-model", "G"], "--group-model: only with --calibration-curve"),
    (["--calibration-curve", "--subject", "E"], "--subject: E has no epochs"),
    (["--loso", "--subjects", "A,B,C", "--budget", "10"], "--loso: not with --budget"),
    (["--zero-shot", "--loso", "--subjects", "A,B,C", "--workers", "2"], "--zero-shot --loso: not with --workers"),
    (["--calibration-curve", "--subject", "D", "--split", "random"], "--split: the calibration curve holds"),
    (["--calibration-curve", "--subject", "D", "--sessions", "1"], "--calibration-curve: not with --sessions"),
    (["--loso", "--subjects", "A,B", "--sessions", "1"], "--loso: not with --sessions"),
    (["--zero-shot", "--loso", "--subjects", "A,B,C", "--sessions", "1"], "--zero-shot --loso: not with --sessions"),
    # zero-shot across subjects: the same consent rule, before any epoch or embedding is read
    (["--zero-shot", "--loso", "--subjects", "A,B,D"], "--subjects: holding A out leaves 1 subject(s) with group"),
    (["--zero-shot", "--loso", "--subjects", "A,D"], "--loso: needs at least 3 subjects"),
    (["--zero-shot", "--loso", "--subject", "A"], "--loso: needs --subjects A,B,C"),
    (["--zero-shot", "--loso", "--subjects", "A,B,C", "--methods", "riemann"], "--zero-shot --loso: not with --methods"),
])
def test_bad_requests_are_one_line_before_any_work(root, capsys, args, says):
    before = dump(root)
    reports = set((root / "reports").glob("*")) if (root / "reports").exists() else set()
    rc, out, err = run_cli(capsys, root, "evaluate", *args)
    assert (rc, out) == (2, "") and len(err.splitlines()) == 1 and err.startswith("eegloop: error: ")
    assert says in err
    assert dump(root) == before
    assert (set((root / "reports").glob("*")) if (root / "reports").exists() else set()) == reports


def test_the_session_report_draws_the_subjects_latest_curve(curve, root, tmp_path):
    """The subject's report shows the latest curve evaluate drew (figure and table, each point's scores as saved)."""
    from eegloop.database import Database
    from eegloop.report import write_report
    from eegloop.report_group import latest_curve

    db = Database(None, data_dir=root, create=False)
    page = write_report(db, db.list_sessions("D")[0].id, tmp_path / "r").read_text()
    other = write_report(db, db.list_sessions("A")[0].id, tmp_path / "a").read_text()
    db.close()
    path, saved = latest_curve(root, "D")  # the curve fixture's, or a later test's on this worker
    assert f"<h2>Calibration curve (auc, group model {saved['group_model'] or 'none'})</h2>" in page
    assert "calibration curve of D" in page and path.name in page
    for p in saved["points"]:
        for key in ("with_group", "without_group", "chance"):
            if p[key] is not None:
                assert f"<td>{p[key]:.3f}" in page, key
    assert "Calibration curve" not in other  # A's curve was never drawn


def test_a_missing_score_has_no_p_the_saved_json_is_strict_and_each_p_is_said_in_any_order():
    """A point whose per-subject default could be fitted in no fold has no score, so no p (not the smallest p a
    shuffle count gives); the report's JSON holds no NaN; a point's p line comes once its true pass and all its
    shuffles are in, whichever finishes last (on a cluster shuffles may finish first)."""
    from eegloop.decoder.calibration import (CalibrationCurve, CalibrationFold, CalibrationPlan, _CurveProgress,
                                             _Pass, _point)

    nan = float("nan")
    folds = [CalibrationFold(np.arange(3), np.arange(3, 9), {2: np.arange(3, 5), "all": np.arange(3, 9)},
                             {2: 2.0, "all": 6.0}) for _ in range(2)]
    plan = CalibrationPlan("block", [2, "all"], folds)
    sides, skipped = [(1.0, False)] * 2, [(), ()]
    true = _Pass(2, None, np.array([nan, nan]), np.array([0.51, nan]), sides, skipped)
    shuffled = [_Pass(2, q, np.array([0.6, 0.7]), np.array([0.9, 0.95]), sides, skipped) for q in range(3)]
    pt = _point(true, shuffled, plan, 0.5, True)
    assert pt.without_group != pt.without_group and pt.p_without_group is None
    assert pt.p_with_group == pytest.approx(1.0)  # every shuffle scored above 0.51
    saved = json.dumps(CalibrationCurve("X", "auc", "G", "block", 2, 3, [pt], plan).full_json())
    json.loads(saved, parse_constant=lambda c: pytest.fail(f"{c} in the report's JSON"))
    for order in (shuffled + [true], [true] + shuffled):
        lines: list = []
        progress = _CurveProgress(lines.append, "X", "auc", 0.5, plan, 3, 3, "here", True)
        for r in order:
            progress(0, r)
        said = [line for line in lines if "minutes: permutation p" in line]
        assert said == ["X: 2 minutes: permutation p with it 1.000 (3 label shuffles)"]


@pytest.mark.parametrize("budget", [-1.0, float("nan"), 1e9])
def test_the_python_api_refuses_a_budget_the_cli_would(root, budget):
    from eegloop.database import Database
    from eegloop.decoder.calibration import calibration_curve
    from eegloop.errors import EegloopError

    db = Database(None, data_dir=root, create=False)
    try:
        with pytest.raises(EegloopError, match="budget_s: 0 to 864000 seconds"):
            calibration_curve(db, "D", budget_s=budget, permutations=0)
    finally:
        db.close()


def test_long_label_shuffles_go_to_a_local_cluster_unless_told_where(monkeypatch):
    """The curve's shuffles leave this process by default only where they would take over CLUSTER_WORTH_S here at
    the measured pace (as evaluate's permutation test), and never when --cluster or --workers said where."""
    from eegloop.decoder.calibration import _shuffle_workers
    from eegloop.decoder.tasks import CLUSTER_WORTH_S

    monkeypatch.setenv("EEGLOOP_JOBS", "4")
    assert _shuffle_workers(False, 50, 2 * CLUSTER_WORTH_S / 50) == 4
    assert _shuffle_workers(False, 3, CLUSTER_WORTH_S) == 3  # never more workers than shuffles
    assert _shuffle_workers(False, 50, 0.5 * CLUSTER_WORTH_S / 50) == 0  # a short test: here
    assert _shuffle_workers(True, 50, CLUSTER_WORTH_S) == 0  # --workers / --cluster given
    monkeypatch.setenv("EEGLOOP_JOBS", "1")
    assert _shuffle_workers(False, 50, CLUSTER_WORTH_S) == 0  # one core


def test_the_time_left_weighs_each_shuffle_by_its_points_cost():
    """A 20-minute point's shuffle refits more than a 2-minute point's: the time left counts each remaining
    shuffle at its point's true-labels pass's cost, scaled by the pace the finished shuffles kept."""
    from eegloop.decoder.calibration import CalibrationFold, CalibrationPlan, _CurveProgress, _Pass

    fold = CalibrationFold(np.arange(2), np.arange(2, 6), {}, {0: 0.0, 2: 2.0, "all": 4.0})
    plan = CalibrationPlan("block", [0, 2, "all"], [fold])
    progress = _CurveProgress(lambda _line: None, "X", "auc", 0.5, plan, 3, 9, "here", True)
    one = np.array([0.6])
    for m, s in ((0, 1.0), (2, 2.0), ("all", 10.0)):
        progress(0, _Pass(m, None, one, one, [(1.0, False)], [()], s))
    progress.null[2] = [_Pass(2, 0, one, one, [(1.0, False)], [()], 2.0)]
    # started 2 s before now, 2 s of work done; left: 3 x 1 + 2 x 2 + 3 x 10 = 37 s at that pace
    assert progress._left_s(now=100.0) == pytest.approx(37.0)
