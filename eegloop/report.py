"""A self-contained HTML report of a session: everything a lab looks at after a visit.

Plots are PNGs embedded as base64 (one file to mail or archive): confusion
matrix, per-class accuracy with the chance line, training curves, baselines
table, stimulus timing histogram and dropped frames, recorder sample
accounting, feedback latency per stage, and a grid of feedback trials.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ._html import _e, _fig, _img_uri, _png, _table
from .database import Database
from .protocol import stored_protocol

__all__ = ["write_report", "write_zero_shot_report"]


def _wilson(k: np.ndarray, n: np.ndarray, z: float = 1.96) -> tuple[np.ndarray, np.ndarray]:
    """95 % Wilson score interval of k successes in n trials (0..1), elementwise."""
    n = np.maximum(n, 1)
    p = k / n
    den = 1 + z * z / n
    mid = (p + z * z / (2 * n)) / den
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    # rounding puts the bound of 0 of n (or n of n) a hair beyond p: never, or an error bar would be negative
    return np.minimum(np.clip(mid - half, 0, 1), p), np.maximum(np.clip(mid + half, 0, 1), p)


def _confusion_section(plt, cm: np.ndarray, names: list, chance: float) -> str:
    """Confusion matrix, per-class accuracy (sorted, with 95 % intervals) and the most confused pairs.

    Up to 12 classes every cell shows its count; beyond, the matrix is a picture (1,600 numbers at 40
    classes are unreadable) and the most confused pairs are listed as a table instead.
    """
    k = len(names)
    many = k > 12
    side = 4.5 if k <= 12 else min(10.0, 3 + 0.16 * k)
    label_fs = 8 if k <= 12 else min(8.0, max(4.0, 0.55 * side * 0.8 * 72 / k))  # ~ half a row's height, in pt
    fig, ax = plt.subplots(figsize=(side, side * 0.9))
    norm = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    im = ax.imshow(norm, vmin=0, vmax=1, cmap="viridis")
    ax.set_xticks(range(k), names, rotation=90 if many else 45, ha="center" if many else "right", fontsize=label_fs)
    ax.set_yticks(range(k), names, fontsize=label_fs)
    ax.set_xlabel("decoded")
    ax.set_ylabel("shown")
    if not many:
        for i in range(k):
            for j in range(k):
                ax.text(j, i, int(cm[i, j]), ha="center", va="center", color="w" if norm[i, j] < 0.6 else "k",
                        fontsize=7)
    fig.colorbar(im, ax=ax, fraction=0.046, label="share of the shown class")
    ax.set_title("confusion matrix (all folds)")
    fig.tight_layout()
    cm_png = _png(fig)

    hits, shown = np.diag(cm), cm.sum(1)
    acc = hits / np.maximum(shown, 1)
    lo, hi = _wilson(hits, shown)
    order = np.argsort(-acc, kind="stable")
    fig, ax = plt.subplots(figsize=(5.5, max(3.0, 0.2 * k + 1)) if many else (5, 3))
    pos = np.arange(k)
    if many:  # horizontal bars: one readable label per class
        ax.barh(pos, acc[order], xerr=[acc[order] - lo[order], hi[order] - acc[order]], color="#4477aa",
                ecolor="#999", capsize=1.5)
        ax.axvline(chance, color="r", ls="--", label="chance")
        ax.set_yticks(pos, [names[i] for i in order], fontsize=label_fs)
        ax.invert_yaxis()
        ax.set_xlim(0, 1)
        ax.set_xlabel("accuracy (95 % interval)")
    else:
        ax.bar(pos, acc[order], yerr=[acc[order] - lo[order], hi[order] - acc[order]], color="#4477aa",
               ecolor="#999", capsize=2)
        ax.axhline(chance, color="r", ls="--", label="chance")
        ax.set_xticks(pos, [names[i] for i in order], rotation=45, ha="right", fontsize=8)
        ax.set_ylim(0, 1)
        ax.set_ylabel("accuracy (95 % interval)")
    ax.legend()
    ax.set_title("per-class accuracy, best first")
    fig.tight_layout()
    html = (f"<div class='row'>{_fig(cm_png, 'confusion matrix (all folds' + ('' if many else ', counts') + ')')}"
            f"{_fig(_png(fig), 'per-class accuracy, sorted, 95 % Wilson intervals, chance dashed')}</div>")
    off = cm.copy()
    np.fill_diagonal(off, 0)
    pairs = [(int(i), int(j)) for i, j in zip(*np.unravel_index(np.argsort(-off, axis=None), off.shape))
             if off[i, j] > 0][:10]
    if pairs:
        rows = [[names[i], names[j], int(cm[i, j]), f"{cm[i, j] / max(shown[i], 1):.1%}"] for i, j in pairs]
        html += ("<h3>Most confused pairs</h3>"
                 + _table(rows, ["shown", "decoded as", "epochs", "share of shown"]))
    return html



def _signal_section(plt, chk: dict, montage_spec, k: int) -> str:
    """The stored signal check: its verdict, a head map of the 1-40 Hz RMS with failing electrodes crossed
    (where the montage knows the channels), and the channels that did not pass."""
    chans = [c for c in chk.get("channels", []) if isinstance(c, dict)]
    verdict = str(chk.get("verdict", "?"))
    counts = {v: sum(c.get("verdict") == v for c in chans) for v in ("pass", "warn", "fail")}
    head = (f"<h2>Signal check {k}</h2><p{' class=warn' if verdict == 'fail' else ''}>{_e(chk.get('at', ''))}: "
            f"verdict <b>{_e(verdict)}</b> — {counts['pass']} pass, {counts['warn']} warn, {counts['fail']} fail over "
            f"{_e(chk.get('seconds', '?'))} s" + (" — recorded anyway (--force)" if chk.get("forced") else "") + "</p>")
    fig_html = ""
    try:
        from .montage import load_montage, positions

        pos = positions([c["name"] for c in chans], load_montage(montage_spec))
    except Exception:  # a montage file that is not here: the table alone
        pos = {}
    if len(pos) >= 4:
        import mne

        names = [c["name"] for c in chans if c["name"] in pos]
        vals = np.array([next(c["rms_uv"] for c in chans if c["name"] == n) for n in names])
        info = mne.create_info(names, float(chk.get("sfreq", 100.0)), "eeg")
        info.set_montage(mne.channels.make_dig_montage(ch_pos={n: pos[n] for n in names}, coord_frame="head"),
                         verbose="error")
        bad = np.array([next(c["verdict"] for c in chans if c["name"] == n) == "fail" for n in names])
        fig, ax = plt.subplots(figsize=(4, 4))
        im, _ = mne.viz.plot_topomap(vals, info, axes=ax, show=False, mask=bad, cmap="viridis", contours=0,
                                     mask_params=dict(marker="x", markeredgecolor="r", markersize=10))
        fig.colorbar(im, ax=ax, shrink=0.7, label="1-40 Hz RMS (µV)")
        ax.set_title("signal check: RMS per electrode (x = fail)")
        fig_html = _fig(_png(fig), "signal check: broadband RMS per electrode; failing electrodes crossed")
    rows = [[c["name"], c.get("verdict"), c.get("std_uv"), c.get("line_uv"), c.get("rms_uv"), c.get("drift_uv_s"),
             "" if c.get("impedance_kohm") is None else c.get("impedance_kohm"), "; ".join(c.get("reasons", []))]
            for c in chans if c.get("verdict") != "pass"]
    table = (_table(rows, ["channel", "verdict", "std µV", "line µV", "1-40 Hz µV", "drift µV/s", "kΩ", "why"])
             if rows else "<p>every channel passed</p>")
    return head + fig_html + table


def _photon_section(plt, delays: list, n_stim: int, offset_ms: float) -> str:
    from .recorder.timing import plot_delays, summarize

    t = summarize(delays, n_stim, offset_ms)
    fig, ax = plt.subplots(figsize=(5, 3))
    plot_delays(ax, t)
    warn = abs(t.residual_ms) > 2
    return (f"<h2>Display timing (photodiode)</h2><p{' class=warn' if warn else ''}>"
            + "<br>".join(_e(x) for x in t.lines()) + "</p>"
            + _fig(_png(fig), "marker-to-photon delay of every stimulus, measured by the photodiode"))


def quick_train_paragraph(metrics: dict) -> str:
    """How a model was quick-trained and its held-out score, labelled optimistic where it is (plain text)."""
    from .decoder import heldout_line

    mm = metrics
    if mm.get("epochs_run") is not None:  # a network
        how = (f"{mm.get('seconds', 0):.1f} s on {mm.get('n_train')} epochs, {mm.get('device')} "
               f"({mm.get('precision', 'fp32')}), {mm.get('epochs_run')} epochs run (best {mm.get('best_epoch')}); "
               + (f"teacher {mm['teacher_top1']:.3f}, alpha {mm.get('alpha')}" if mm.get("teacher_top1") is not None
                  else "no teacher (alpha 1)"))
    else:  # a pipeline: fitted once, no epochs, nothing to distil
        how = (f"{mm.get('seconds', 0):.1f} s, a pipeline fitted in one pass on "
               f"{(mm.get('n_train') or 0) + (mm.get('n_heldout') or 0)} epochs (no training epochs, no distillation)")
    from .decoder.groupstart import group_line

    if mm.get("zero_calibration"):
        how = f"{mm.get('seconds', 0):.1f} s, no model fitted on the subject's labels"
    g = group_line(mm)
    how += f"; {g}" if g else ""
    return f"{how}. {heldout_line(mm)[0].upper()}{heldout_line(mm)[1:]}." if "heldout" in mm else how + "."


def feedback_honesty(fts):
    """Whether a session's feedback accuracy is an honest online estimate: every scored trial (the embedding modes
    score only trials whose cue class has candidates) showed images the decoder never saw (:mod:`.feedback.cues`)."""
    from .feedback.cues import cue_honesty

    scored = [f for f in fts if ((f.latencies or {}).get("retrieval") or {}).get("scored", True)]
    return cue_honesty(((f.latencies or {}).get("cue_trained"), f.predicted_class == f.true_class) for f in scored)


def write_report(db: Database, session_id: int, out: str | Path | None = None) -> Path:
    """Write ``report.html`` for a session (a 0600 file); returns its path.

    Every string that came from the user or a data file (class names, subject,
    protocol, file names) is HTML-escaped, and drawn literally in the plots
    (matplotlib's math text and LaTeX off: a class named ``$x^2$`` stays that).
    """
    import matplotlib

    matplotlib.use("Agg")
    with matplotlib.rc_context({"text.parse_math": False, "text.usetex": False}):
        return _write_report(db, session_id, out)



def _write_report(db: Database, session_id: int, out: str | Path | None = None) -> Path:
    import matplotlib.pyplot as plt

    from ._files import new_folders, write_private_text

    info = db.get_session(session_id)
    out = Path(out) if out is not None else db.data_dir / "reports" / f"session-{session_id:04d}"
    ev = info.info.get("evaluation")
    sec = _decoding_sections(plt, ev)
    model_id = info.info.get("model_id")
    if model_id:
        m = db.get_model(model_id)
        sec += _model_sections(plt, db, info, ev, m)
    proto = stored_protocol(info.protocol_yaml, tolerant=True)  # its montage and the display's offset
    for k, chk in enumerate(info.info.get("signal_checks") or []):
        sec.append(_signal_section(plt, chk, proto.amplifier.montage, k + 1))
    delays, n_stim = db.photon_delays(session_id)
    if delays:
        sec.append(_photon_section(plt, delays, n_stim, proto.timing.static_offset_ms))
    sec += _stimulus_timing_sections(plt, db, session_id, info.info.get("recording", {}))
    sec += _recording_sections(db, session_id)
    sec += _feedback_sections(plt, db, session_id)
    from .report_group import calibration_sections

    sec += calibration_sections(plt, db.data_dir, info.subject)  # evaluate --calibration-curve's latest
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>eegloop session {session_id}</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}}
h1{{font-size:1.5em}} h2{{border-bottom:1px solid #ccc;margin-top:1.6em}} .big{{font-size:1.3em}}
.warn{{background:#fdd;padding:.5em;font-weight:bold}} .note{{color:#666}}
table{{border-collapse:collapse}} td,th{{border:1px solid #ccc;padding:3px 8px;text-align:right}}
.row{{display:flex;flex-wrap:wrap}} figure{{margin:0 1em 1em 0;max-width:100%}} figure img{{max-width:100%;height:auto}} figcaption{{color:#555;font-size:.85em}} .grid{{display:flex;flex-wrap:wrap}} .cell{{width:150px;margin:4px;font-size:.8em;
text-align:center;padding:4px}} .ok{{background:#e6f4e6}} .bad{{background:#fbe9e9}} .noimg{{height:128px}}</style>
</head><body><h1>eegloop — session {session_id}, subject {_e(info.subject)}</h1>
<p>protocol <b>{_e(info.protocol_name)}</b> (sha256 {_e(info.protocol_sha256[:12])}…), status {_e(info.status)},
started {info.started_at:%Y-%m-%d %H:%M}, eegloop {_e(info.software_version)}</p>
{''.join(sec)}
</body></html>"""
    path = out / "report.html"
    with new_folders(out):  # made only now that the page is whole, and removed again if writing it fails
        write_private_text(path, page)
    return path


def _decoding_sections(plt, ev) -> list[str]:
    """The stored cross-validation: its score beside chance (or why there is none), the confusion matrix, the
    baselines and the notes."""
    sec: list[str] = []
    if ev and "error" in ev:
        sec.append(f"<h2>Decoding</h2><p class='warn'>No cross-validated score: {_e(ev['error'])}</p>")
    elif ev:
        main = ev["main_method"]
        classes = list(ev["classes"])
        names = [str(ev["classes"][c]) for c in classes]
        s = ev["summary"][main]
        banner = ""
        if ev.get("inflated"):
            why = ev.get("inflated_why") or "random split: trials of one block in train and test"
            banner = f"<p class='warn'>{_e(why)} — scores INFLATED.</p>"
        if ev.get("shuffled_labels"):
            banner += "<p class='warn'>Control: labels shuffled — these scores should sit at chance.</p>"
        sec.append(f"<h2>Decoding ({_e(ev['split'])}-wise cross-validation, {_e(ev['n_folds'])} folds, "
                   f"{_e(ev['n_epochs'])} epochs)</h2>{banner}"
                   f"<p class='big'>top-1 {s['top1']:.3f} ± {s['top1_std']:.3f} — chance {ev['chance']['chance_top1']:.3f}"
                   + (f" — balanced accuracy {s['balanced_accuracy']:.3f} (chance "
                      f"{ev['chance'].get('chance_balanced_accuracy', 1 / len(classes)):.3f})"
                      if "balanced_accuracy" in s else "")
                   + (f" — AUC {s['auc']:.3f} (chance 0.5)" if "auc" in s else "") + "</p>"
                   + (f"<p>{_e(main)}: the whole model selection ran inside each fold, on its training blocks only; "
                      f"chosen per fold: {_e(', '.join(ev['selected']))}</p>" if ev.get("selected") else ""))
        cm = np.array(ev["confusion"][main], float)
        sec.append(_confusion_section(plt, cm, names, ev["chance"]["chance_top1"]))
        if len(ev["summary"]) > 1:
            from .decoder.methods import PAPER_NAMES

            metrics = [k for k in ("top1", "balanced_accuracy", "top3", "top5", "f1", "kappa", "auc") if k in s]
            rows = [[PAPER_NAMES.get(m, m)] + [f"{v[k]:.3f} ({v[k + '_std']:.3f})" for k in metrics]
                    for m, v in ev["summary"].items()]
            ch = ev["chance"]
            rows.append(["chance"] + [f"{ch['chance_' + k]:.3f}" if "chance_" + k in ch
                                      else ("0.000" if k == "kappa" else "") for k in metrics])
            sec.append("<h3>Baselines (mean (std) over folds)</h3>" + _table(rows, ["method"] + metrics))
        for n in ev.get("notes", []):
            sec.append(f"<p class='note'>{_e(n)}</p>")
    return sec


def _model_sections(plt, db: Database, info, ev, m) -> list[str]:
    """The session's quick-trained model ``m``: how it was trained, beside the honest estimate; its model
    selection, artifact rejection and training curves."""
    sec: list[str] = []
    honest = None
    if ev and "error" not in ev and not ev.get("inflated") and not ev.get("shuffled_labels"):
        honest = f"The honest estimate is the {ev.get('split')}-wise cross-validation under Decoding above."
    else:
        from .decoder import honest_estimate

        honest = honest_estimate(db, info.subject, m.metrics.get("method"))
    from .decoder.groupstart import group_estimate_note

    # a decoder that uses a group model: the cross-validation is not its estimate (the note says where that is)
    honest = group_estimate_note(m.metrics, info.subject, blend=(ev or {}).get("group_blend")) or honest
    sec.append(f"<h2>Quick-train (model {m.id}: {_e(m.metrics.get('method', m.kind))})</h2>"
               f"<p>{_e(quick_train_paragraph(m.metrics))}"
               + (f" {_e(honest)}" if honest else "") + "</p>")
    sec += _selection_sections(plt, m)
    sec += _rejection_sections(m)
    sec += _curve_sections(plt, db, m)
    return sec


def _selection_sections(plt, m) -> list[str]:
    """Auto's model selection: each candidate's inner-fold score (a plot and a table), or its note."""
    sec: list[str] = []
    sel = m.metrics.get("selection") or {}
    if sel.get("candidates"):
        rows = [[name, ("chosen" if name == sel.get("winner") else ""),
                 c.get("skipped") and f"skipped: {c['skipped']}" or f"{c['score']:.3f}",
                 ", ".join(f"{v:.3f}" for v in c.get("folds", [])), c.get("seconds", "")]
                for name, c in sel["candidates"].items()]
        scored = {n: c for n, c in sel["candidates"].items() if "score" in c}
        if scored:
            fig, ax = plt.subplots(figsize=(5, 2.6))
            names_ = list(scored)
            ax.barh(range(len(names_)), [scored[n]["score"] for n in names_],
                    color=["#cc6677" if n == sel.get("winner") else "#4477aa" for n in names_])
            for i, n in enumerate(names_):
                ax.plot(scored[n]["folds"], [i] * len(scored[n]["folds"]), "k.", ms=4)
            ax.set_yticks(range(len(names_)), names_, fontsize=8)
            chance_sel = 0.5 if sel.get("metric") == "auc" else 1 / max(len(m.metrics.get("rejection", {}).get(
                "by_class", {})) or 2, 2)
            ax.axvline(chance_sel, color="r", ls="--", label="chance")
            ax.set_xlabel(str(sel.get("metric")))
            ax.legend(fontsize=7)
            ax.set_title("model selection: inner folds (dots), chosen in red")
            sec.append(_fig(_png(fig), "model selection: each candidate's inner-fold score"))
        sec.append(f"<h3>Model selection ({_e(sel.get('n_folds'))} inner {_e(sel.get('split'))}-wise folds, "
                   f"{_e(sel.get('metric'))})</h3>" + _table(rows, ["candidate", "", sel.get("metric", "score"),
                                                                      "folds", "seconds"])
                   + (f"<p class='note'>{_e(sel['note'])}</p>" if sel.get("note") else ""))
    elif sel.get("note"):
        sec.append(f"<p class='note'>model: {_e(sel['note'])}</p>")
    return sec


def _rejection_sections(m) -> list[str]:
    """The epochs artifact rejection dropped, per class (when the protocol rejects)."""
    sec: list[str] = []
    rej = m.metrics.get("rejection") or {}
    if rej.get("by_class") and (rej.get("reject_uv") is not None or rej.get("flat_uv") is not None):
        rows = [[c, v["kept"], v["peak_to_peak"], v["flat"]] for c, v in rej["by_class"].items()]
        sec.append(f"<h3>Artifact rejection: {_e(rej['rejected'])} of {_e(rej['rejected'] + rej['kept'])} epochs "
                   f"(peak-to-peak &gt; {_e(rej['reject_uv'])} µV, flat &lt; {_e(rej['flat_uv'])} µV)</h3>"
                   + _table(rows, ["class", "kept", "peak-to-peak", "flat"]))
    return sec


def _curve_sections(plt, db: Database, m) -> list[str]:
    """The network's training curves (loss and accuracy per epoch) from the history saved beside its weights."""
    sec: list[str] = []
    meta_path = db.abspath(m.checkpoint_path).with_suffix(".json")
    hist = []
    if meta_path.is_file():
        hist = json.loads(meta_path.read_text()).get("metrics", {}).get("history", [])
    if hist:
        ep = [h["epoch"] for h in hist]
        fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 3))
        a1.plot(ep, [h["train_loss"] for h in hist], label="train")
        a1.plot(ep, [h["val_loss"] for h in hist], label="validation")
        a1.set_xlabel("epoch")
        a1.set_ylabel("loss")
        a1.legend()
        a2.plot(ep, [h["train_acc"] for h in hist], label="train")
        a2.plot(ep, [h["val_acc"] for h in hist], label="validation")
        a2.axhline(m.metrics.get("chance_top1", 0), color="r", ls="--", label="chance")
        a2.set_xlabel("epoch")
        a2.set_ylabel("accuracy")
        a2.legend()
        fig.suptitle("training curves")
        sec.append(_fig(_png(fig), "training curves: loss and accuracy, train and held-out blocks"))
    return sec


def _stimulus_timing_sections(plt, db: Database, session_id: int, rec: dict) -> list[str]:
    """Each stimulus's duration on screen (histogram) and the dropped frames."""
    sec: list[str] = []
    tt = db.get_trial_timings(session_id)
    if tt:
        durs = np.array([t.duration_s for t in tt]) * 1000
        dropped = int(sum(t.dropped_frames for t in tt))
        fig, ax = plt.subplots(figsize=(5, 3))
        ax.hist(durs, bins=40, color="#228833")
        ax.set_xlabel("stimulus duration (ms)")
        ax.set_ylabel("trials")
        ax.set_title(f"stimulus timing: {dropped} dropped frames")
        sec.append(f"<h2>Stimulus timing</h2><p>{len(tt)} stimuli at {rec.get('frame_rate_hz', float('nan')):.2f} Hz"
                   f"{' (software-paced: no vsync on this display)' if rec.get('paced') else ''}: median "
                   f"{np.median(durs):.2f} ms, max |error| vs intended "
                   f"{np.max(np.abs(durs - np.array([t.intended_frames for t in tt]) * 1000 / max(rec.get('frame_rate_hz', 60), 1))):.2f} ms,"
                   f" dropped frames {dropped}</p>" + _fig(_png(fig), "stimulus timing: duration histogram"))
    return sec


def _recording_sections(db: Database, session_id: int) -> list[str]:
    """The recorder's accounting: samples per run, epochs stored and rejected, blocks not complete."""
    sec: list[str] = []
    runs = db.get_runs(session_id)
    if runs:
        rows = [[r.index, r.status, r.samples_received, r.samples_expected, r.lost_samples,
                 (r.info or {}).get("gaps", ""), len((r.info or {}).get("stalls", []) or []), r.raw_path or ""]
                for r in runs]
        n_ep = db.count_epochs(session_id)
        rejected = db.rejected_by_reason(session_id)
        blocks = db.get_blocks(session_id)
        n_stim = sum(b.n_stimuli or 0 for b in blocks)
        status = {}
        for b in blocks:
            status[b.status] = status.get(b.status, 0) + 1
        rej_text = (", ".join(f"{n} {_e(why)}" for why, n in sorted(rejected.items())) if rejected else "none")
        failure = (db.get_session(session_id).info or {}).get("failure")
        head = (f"<p>{n_stim} stimuli shown: {n_ep} epochs stored, {sum(rejected.values())} rejected "
                f"(by reason: {rej_text}); blocks: "
                + ", ".join(f"{n} {_e(st)}" for st, n in sorted(status.items())) + "</p>")
        if failure:
            head += f"<p class='warn'>The recording failed: {_e(failure)}</p>"
        bad = [[b.index, b.status, b.n_stimuli, b.n_epochs, b.n_rejected, b.reason or ""]  # _table escapes
               for b in blocks if b.status not in ("done", "imported") or (b.n_rejected or 0)]
        sec.append("<h2>Recording</h2>" + head + _table(
            rows, ["run", "status", "samples received", "expected", "lost", "gaps", "stalls", "raw file"])
            + (("<p>Blocks with rejected epochs or not complete:</p>" + _table(
                bad, ["block", "status", "shown", "stored", "rejected", "reason"])) if bad else ""))
    return sec


def _feedback_sections(plt, db: Database, session_id: int) -> list[str]:
    """The closed-loop feedback: accuracy and latency per stage, every trial's image, and for the embedding
    modes a few decoded embeddings' nearest candidates."""
    fts = db.get_feedback_trials(session_id)
    if not fts:
        return []
    rets = [f.latencies.get("retrieval") for f in fts]
    return [_feedback_summary(plt, fts, rets), _feedback_grid(db, fts)] + _retrieval_examples(db, fts, rets)


def _feedback_summary(plt, fts, rets) -> str:
    """How many trials were decoded as shown (or retrieved an image of the shown class), whether that is an
    honest online estimate, and the latency of each stage (a box plot)."""
    modes = sorted({f.mode for f in fts})
    correct = sum(f.predicted_class == f.true_class for f in fts)
    stages = ["decode_ms", "image_ready_ms", "to_screen_ms"]
    data = [[f.latencies.get(k, np.nan) for f in fts] for k in stages]
    fig, ax = plt.subplots(figsize=(5, 3))
    ax.boxplot(data)
    ax.set_xticks([1, 2, 3], ["probabilities", "image ready", "on screen"])
    ax.set_ylabel("ms after epoch complete")
    ax.set_title("feedback latency per stage")
    n_classes = len(fts[0].probabilities)
    said = feedback_honesty(fts).describe()
    honesty = f" {said[0].upper()}{said[1:]}."
    bursts = sorted({int(f.latencies.get("epochs", 1)) for f in fts})
    lived = [f.latencies["onset_to_screen_ms"] for f in fts if "onset_to_screen_ms" in f.latencies]
    onset = (f". What the subject lived, from the (last) image's onset to its feedback on screen: median "
             f"{np.median(lived):.0f} ms (the epoch window, the filter's right margin, decoding, the image and "
             "a refresh)." if lived else "")
    fmt = ("one cue image a trial" if bursts == [1] else
           f"RSVP bursts of {'/'.join(map(str, bursts))} images at the training pace, decided on their "
           "summed log-probabilities")
    judged = f"{correct}/{len(fts)} decoded as shown (chance {1 / n_classes:.2f}; {fmt})."
    if any(rets):  # retrieve/embedding: the nearest image's class, where it can be judged
        scored = [f for f, r in zip(fts, rets) if r and r.get("scored", True)]
        labelled = [c for c in fts[0].probabilities if c != "(unlabelled)"]
        judged = (f"{sum(f.predicted_class == f.true_class for f in scored)}/{len(scored)} nearest images of the "
                  f"shown class (chance about {1 / max(len(labelled), 1):.2f}: {len(labelled)} candidate classes; "
                  f"a nearest image of another class, trained or not, is a miss; trials whose shown class has no "
                  f"candidate image are not judged: {len(fts) - len(scored)}; {fmt}).")
    return (f"<h2>Feedback ({_e(', '.join(map(str, modes)))} mode)</h2><p>{judged}"
            f"{honesty} Median latency from (the last) epoch complete: "
            + ", ".join(f"{k.replace('_ms', '')} {np.nanmedian(d):.1f} ms" for k, d in zip(stages, data))
            + onset + "</p>" + _fig(_png(fig), "feedback latency per stage (ms after the epoch was complete)"))


def _feedback_grid(db: Database, fts) -> str:
    """Every feedback trial: its image, the class shown and the class decoded."""
    cells = []
    for f in fts:
        uri = _img_uri(db.abspath(f.image_path)) if f.image_path else None
        ok = "ok" if f.predicted_class == f.true_class else "bad"
        img = f"<img src='{uri}'>" if uri else "<div class='noimg'>no image</div>"
        cells.append(f"<div class='cell {ok}'>{img}<br>trial {_e(f.trial)}<br>shown <b>{_e(f.true_class)}"
                     f"</b><br>decoded <b>{_e(f.predicted_class)}</b> "
                     f"({f.probabilities[f.predicted_class]:.2f})</div>")
    return "<div class='grid'>" + "".join(cells) + "</div>"


def _retrieval_examples(db: Database, fts, rets) -> list[str]:
    """The first (up to six) retrieval trials: the image shown, its nearest candidates and the generated image."""
    ex = []
    for f, r in list(zip(fts, rets))[:6]:
        if not r:
            continue
        row = [_thumb(r.get("cue"), f"shown: <b>{_e(f.true_class)}</b>", "outline:3px solid #36c")]
        row += [_thumb(h.get("path"), f"#{i + 1} {_e(h.get('class') or '?')} ({float(h.get('similarity', 0)):.2f})",
                      "outline:3px solid #3a3" if h.get("path") and h.get("path") == r.get("cue") else "")
                for i, h in enumerate(r.get("top") or [])]
        if f.image_path and (not r.get("path") or Path(db.abspath(f.image_path)) != Path(r["path"])):
            row.append(_thumb(db.abspath(f.image_path), "generated"))
        ex.append(f"<div class='grid'>{''.join(row)}</div>")
    if not ex:
        return []
    return ["<h3>Decoded embeddings: the image shown, its five nearest candidates (class, cosine "
            "similarity) and the generated image</h3>" + "".join(ex)]


def _thumb(path, label, style="") -> str:
    """A 96-pixel thumbnail of the image at ``path`` (or a placeholder) above ``label`` (HTML)."""
    uri = _img_uri(Path(path), 96) if path else None
    img = f"<img src='{uri}' style='{style}'>" if uri else "<div class='noimg'>no image</div>"
    return f"<div class='cell'>{img}<br>{label}</div>"


_STYLE = """body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222} h1{font-size:1.5em}
h2{border-bottom:1px solid #ccc;margin-top:1.6em} .note{color:#666} .warn{background:#fdd;padding:.5em;font-weight:bold}
table{border-collapse:collapse} td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}
.row{display:flex;flex-wrap:wrap;align-items:flex-start} figure{margin:0 1em 1em 0} figcaption{color:#555;font-size:.85em}
.ex{display:flex;align-items:center;margin:6px 0} .ex .cell{width:110px;margin:2px;font-size:.75em;text-align:center}
.hit{outline:3px solid #3a3} .stim{outline:3px solid #36c}"""


def write_zero_shot_report(db: Database, subject: str, result: dict, out: str | Path) -> Path:
    """An HTML page of one zero-shot evaluation (``eegloop evaluate --zero-shot``): the k-way table with
    chance and p, retrieval curves beside chance, and for a few held-out images the stimulus and its top-5
    retrieved images. ``result`` is the evaluation's JSON; returns the page's path (0600)."""
    import matplotlib

    matplotlib.use("Agg")
    with matplotlib.rc_context({"text.parse_math": False, "text.usetex": False}):
        return _write_zero_shot_report(db, subject, result, Path(out))


def _write_zero_shot_report(db: Database, subject: str, r: dict, out: Path) -> Path:
    from ._files import write_private_text

    sec = _zero_shot_scores(r) + _zero_shot_curves(r) + _zero_shot_examples(db, r) + _zero_shot_fits(r)
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>eegloop zero-shot {_e(subject)}</title>"
            f"<style>{_STYLE}</style></head><body><h1>eegloop — zero-shot evaluation, subject {_e(subject)}</h1>"
            f"<p class='note'>sessions {_e(r.get('sessions'))}, {r.get('seconds', 0):.0f} s</p>{''.join(sec)}</body></html>")
    write_private_text(out, page)
    return out


def _zero_shot_scores(r: dict) -> list[str]:
    """The k-way table beside chance, the permutation p-value and the notes (after the shuffled control's warning)."""
    sec = []
    if r.get("shuffled_images"):
        sec.append("<p class='warn'>Control: training images shuffled among epochs — scores should sit at "
                   "chance.</p>")
    rows = [[k, f"{v['top1']:.3f}", f"{v['chance_top1']:.3f}", f"{v['top5']:.3f}", f"{v['chance_top5']:.3f}"]
            for k, v in r["scores"].items()]
    sec.append(f"<h2>Zero-shot identification</h2><p>{_e(r['n_test_images'])} images of "
               f"{_e(len(r['test_classes']))} classes the encoder never saw ({_e(r['n_test_epochs'])} epochs), "
               f"{_e(r['split'])}-wise folds: {_e(r['n_folds'])}; trained on {_e(r['n_train_epochs'])} epochs of "
               f"the other classes, never on a test epoch's {_e(r['split'])}. Targets: CLIP "
               f"{_e(r.get('clip_model', ''))} image embeddings.</p>"
               + _table(rows, ["k-way", "top-1", "chance", "top-5", "chance"])
               + f"<p>{_e(r['main_k'])}-way top-1: permutation p = {r['pvalue']:.4f} ({_e(r['permutations'])} random "
                 f"reassignments of predictions to images; null 95 % band {r['null_band'][0]:.3f}–"
                 f"{r['null_band'][1]:.3f})</p>"
               + "".join(f"<p class='note'>{_e(n)}</p>" for n in r.get("notes", [])))
    return sec


def _zero_shot_curves(r: dict) -> list[str]:
    """k-way identification against k, and retrieval among all test images against n, each beside chance."""
    import matplotlib.pyplot as plt

    figs = []
    if r.get("curve_k"):
        figs.append(_curve(plt, r["curve_k"], "chance (1/k)", "k (candidates)", "top-1",
                           "k-way identification: top-1 against the number of candidates"))
    if r.get("curve_topn"):
        figs.append(_curve(plt, r["curve_topn"], "chance (n/N)", f"n (retrieved among all {r['n_test_images']})",
                           "true image in the top n",
                           "retrieval: share of test images whose own image is among the n nearest"))
    return ["<div class='row'>" + "".join(figs) + "</div>"]


def _curve(plt, points, chance, xlabel, ylabel, caption) -> str:
    """A figure of (x, score, chance) ``points`` beside the chance line (log x axis)."""
    x, acc, ch = (np.array(v, float) for v in zip(*points))
    fig, ax = plt.subplots(figsize=(4.6, 3.4))
    ax.plot(x, acc, "o-", label="encoder")
    ax.plot(x, ch, "k--", label=chance)
    ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_ylim(0, 1.02)
    ax.legend(frameon=False)
    return _fig(_png(fig), caption)


def _zero_shot_examples(db: Database, r: dict) -> list[str]:
    """For a few held-out images: the stimulus and its five nearest retrieved images."""
    path_of = {s.sha256: s.path for s in db.get_stimuli()}
    ex = []
    for e in r.get("examples", []):
        cells = [_example_cell(path_of, e["image"], f"shown: {_e(e['class'])}<br>rank {e['rank'] + 1}", "stim")]
        cells += [_example_cell(path_of, s, f"#{i + 1} ({sim:.2f})", "hit" if s == e["image"] else "")
                  for i, (s, sim) in enumerate(zip(e["retrieved"], e["similarity"]))]
        ex.append("<div class='ex'>" + "".join(cells) + "</div>")
    if not ex:
        return []
    return ["<h2>Examples</h2><p class='note'>Blue: the image shown; then the five nearest held-out images "
            "to the decoded embedding (cosine similarity), green when it is the shown image.</p>" + "".join(ex)]


def _example_cell(path_of: dict, sha, label, cls="") -> str:
    """A thumbnail of the registered image ``sha`` (or a placeholder) above ``label``, in a box of class ``cls``."""
    uri = _img_uri(Path(path_of[sha]), 96) if sha in path_of else None
    img = f"<img src='{uri}'>" if uri else "<div style='height:96px'>no image</div>"
    return f"<div class='cell'><div class='{cls}'>{img}</div>{label}</div>"


def _zero_shot_fits(r: dict) -> list[str]:
    """Each fold's training of the encoder."""
    fits = r.get("fits") or []
    if not fits:
        return []
    return ["<h2>Training</h2>" + _table([[i + 1, f["n_train"], f["epochs_run"], f["best_epoch"], f["stopped"],
                                           f["seconds"]] for i, f in enumerate(fits)],
                                         ["fold", "epochs", "epochs run", "best", "stopped", "seconds"])]
