"""BIDS export: a subject's recorded runs as a BIDS EEG dataset, written by MNE-BIDS.

``eegloop export bids --subject S --out DIR`` (or :func:`export_bids`). Each recorded run's raw
BrainVision file (BIDS's preferred EEG format, so its data are copied, not converted) becomes
``sub-S/ses-NNNN/eeg/sub-S_ses-NNNN_task-T_run-R_eeg.vhdr`` with ``events.tsv`` (onset, duration,
``trial_type`` = the class, ``value``, ``sample``, and ``stim_file`` = ``class/image``),
``channels.tsv`` (each channel's type as recorded: EEG, EOG, MISC for a photodiode, ...), ``electrodes.tsv``
with the positions of ``amplifier.montage``, ``eeg.json`` and the dataset's ``participants.tsv``. The task is the protocol's name
(letters and digits kept: BIDS labels are alphanumeric); feedback runs are task ``feedback``.
Sessions imported from recordings (XDF, CSV, anything MNE reads) are exported from their source files, read
again as they were imported (the channels kept, their types, electrodes in µV; a file that changed since is
skipped and named); sessions of a dataset's epochs (EEG-ImageNet, THINGS-EEG2) have no continuous recording
and are skipped and named.
"""
from __future__ import annotations

import csv
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

from .errors import EegloopError

__all__ = ["BidsExport", "export_bids"]

_STIM = "Stimulus/stim_on/"


@dataclass
class BidsExport:
    root: Path
    runs: list = field(default_factory=list)  # [(session id, run index, task, n events, bids file)]
    skipped: list = field(default_factory=list)  # [(session id, why)]

    @property
    def n_events(self) -> int:
        return sum(r[3] for r in self.runs)


def _label(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]", "", text) or "task"


def export_bids(db, subject: str, out: str | Path, session_ids: Optional[Sequence[int]] = None,
                progress: Optional[Callable[[str], None]] = None) -> BidsExport:
    """Write ``subject``'s recorded (and imported) runs under ``out`` as BIDS; returns what was written and
    skipped."""
    import tempfile

    from mne_bids import make_dataset_description

    say = progress or (lambda _m: None)
    sessions = db.list_sessions(subject)
    if not sessions:
        raise EegloopError(f"--subject: {subject!r} has no sessions")
    if session_ids:
        unknown = sorted(set(session_ids) - {s.id for s in sessions})
        if unknown:
            raise EegloopError(f"--sessions: session {unknown[0]} does not belong to subject {subject!r}")
        sessions = [s for s in sessions if s.id in set(session_ids)]
    root = Path(out)
    try:  # a bad --out is one line before any work, not a traceback halfway through
        root.mkdir(parents=True, exist_ok=True)
        probe = root / ".eegloop-write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise EegloopError(f"--out: cannot write a dataset at {root} ({exc.strerror or type(exc).__name__})") from None
    res = BidsExport(root)
    tmp = tempfile.TemporaryDirectory(prefix="eegloop-bids-")  # imported runs as BrainVision (0700), then copied
    try:
        _export_sessions(db, subject, sessions, root, res, Path(tmp.name), say)
    finally:
        tmp.cleanup()
    if not res.runs:
        raise EegloopError(f"subject {subject!r}: no recorded run to export"
                           + (f" ({'; '.join(f'session {s}: {w}' for s, w in res.skipped)})" if res.skipped else ""))
    make_dataset_description(path=root, name=f"eegloop export of subject {subject}", overwrite=True,
                             generated_by=[{"Name": "eegloop"}], verbose="error")
    return res


def _imported_runs(db, info, tmp: Path) -> tuple[list, dict, str]:
    """An imported session's runs as (run, BrainVision path) from their source files, with each channel's type;
    or no runs and why."""
    from .recorder.importers import ImportError_, source_as_brainvision

    digests = {sha for sha, _ in db.source_files(info.id)}
    stim: dict = {}
    for ev in db.get_events(info.id, "stim_on"):
        p = ev.payload or {}
        stim.setdefault(p.get("run"), []).append((ev.lsl_time, p.get("class", ""), p.get("trial")))
    out, types, why = [], {}, ""
    for run in db.get_runs(info.id):
        try:
            got = source_as_brainvision(run.info or {}, stim.get(run.index, []),
                                        tmp / f"ses{info.id}-run{run.index}.vhdr", digests)
        except ImportError_ as exc:
            return [], {}, f"run {run.index}: {exc}"
        types.update(zip((run.info or {}).get("channels") or [], got.ch_types))
        out.append((run, got.vhdr))
    return out, types, why or "no runs"


def _export_sessions(db, subject: str, sessions, root: Path, res: BidsExport, tmp: Path, say) -> None:
    import mne
    from mne_bids import BIDSPath, write_raw_bids

    from .montage import load_montage, set_positions
    from .protocol import CHANNEL_TYPES, parse_yaml_text, protocol_from_dict

    for info in sessions:
        imported_types = {}
        if info.kind == "imported":
            runs, imported_types, why = _imported_runs(db, info, tmp)
        else:
            recorded = [r for r in db.get_runs(info.id) if r.raw_path]
            runs = [(r, db.abspath(r.raw_path)) for r in recorded if db.abspath(r.raw_path).is_file()]
            why = (f"its raw files are not under {db.data_dir} (e.g. {recorded[0].raw_path}; give --data)"
                   if recorded else "no raw recording")
        if not runs:
            res.skipped.append((info.id, why))
            continue
        proto = protocol_from_dict(parse_yaml_text(info.protocol_yaml, f"session {info.id}'s protocol"))
        classes = list(proto.stimuli.classes)
        types = {c["name"]: c["type"] for c in (info.info or {}).get("channels", []) if isinstance(c, dict)
                 and c.get("type") in CHANNEL_TYPES and c.get("name")}
        types.update({c: t for c, t in imported_types.items() if t in CHANNEL_TYPES})
        try:
            montage = load_montage(proto.amplifier.montage, proto.base_dir)
        except EegloopError as exc:  # a montage file that stayed on the recording machine: no positions
            montage = None
            say(f"session {info.id}: no electrode positions ({exc})")
        payload = {}
        for ev in db.get_events(info.id, "stim_on"):
            p = ev.payload or {}
            payload[(p.get("run"), str(p.get("trial")))] = p
        for run, path in runs:
            raw = mne.io.read_raw_brainvision(path, preload=False, verbose="error")
            known = {c: t for c, t in types.items() if c in raw.ch_names and raw.get_channel_types([c])[0] != t}
            if known:  # EOG, misc (a photodiode), stim... as recorded, never all EEG
                raw.set_channel_types(known, on_unit_change="ignore", verbose="error")
            set_positions(raw, montage)
            task = "feedback" if "task-feedback" in path.name else _label(proto.name)
            ann = raw.annotations
            onsets, descs, files = [], [], []
            for onset, desc in zip(ann.onset, ann.description):
                if not desc.startswith(_STIM):
                    continue
                cls, _, trial = desc[len(_STIM):].rpartition("/trial")
                onsets.append(onset)
                descs.append(cls)
                p = payload.get((run.index, trial), {})
                files.append(f"{cls}/{p['image']}" if p.get("image") else "n/a")
            for c in descs:
                if c not in classes:
                    classes.append(c)
            raw.set_annotations(mne.Annotations(onsets, [proto.paradigm.image_s] * len(onsets), descs,
                                                orig_time=ann.orig_time))
            raw.info["line_freq"] = proto.preprocessing.notch_hz
            bp = BIDSPath(subject=subject, session=f"{info.id:04d}", task=task, run=run.index, datatype="eeg",
                          root=root)
            try:
                write_raw_bids(raw, bp, event_id={c: i + 1 for i, c in enumerate(classes) if c in set(descs)} or None,
                               overwrite=True, verbose="error")
            except OSError as exc:  # disk full, permissions: say which run, keep the runs already written
                raise EegloopError(f"--out: writing session {info.id} run {run.index} under {root} failed "
                                   f"({exc.strerror or type(exc).__name__}); runs before it are complete") from None
            _add_stim_files(bp, files)
            res.runs.append((info.id, run.index, task, len(onsets), bp.fpath))
            say(f"session {info.id} run {run.index}: {len(onsets)} stimulus events -> {bp.fpath.relative_to(root)}")


def _add_stim_files(bp, files: list[str]) -> None:
    """Add BIDS's optional ``stim_file`` column to the run's events.tsv (rows are in onset order)."""
    ev = bp.copy().update(suffix="events", extension=".tsv")
    with open(ev.fpath, newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh, delimiter="\t"))
    if not rows:
        return
    head, body = rows[0], rows[1:]
    if len(body) != len(files):  # never guess which image belongs to which row
        return
    head.append("stim_file")
    for r, f in zip(body, files):
        r.append(f)
    with open(ev.fpath, "w", newline="", encoding="utf-8") as fh:
        csv.writer(fh, delimiter="\t", lineterminator="\n").writerows([head] + body)
