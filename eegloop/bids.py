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

The images that ``stim_file`` names are copied into the dataset's ``stimuli/`` folder (``stimuli/class/image``,
BIDS's place for them); a row whose image file is no longer on this machine gets ``n/a``. The dataset passes
the official BIDS validator with no errors (``tests/test_bids.py``).

Every raw file is checked first by the one reader of recordings
(:func:`eegloop.recorder.importers.read_recording`: the same sentence as ``import`` and ``replay`` give),
then the dataset is written into a temporary folder and moved into place only when complete: a failure
leaves ``--out`` as it was (a new one is not created), and no file in it is ever left half-written.
"""
from __future__ import annotations

import csv
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

from .errors import EegloopError
from .progress import Reporter, verbose

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


@verbose
def export_bids(db, subject: str, out: str | Path, session_ids: Optional[Sequence[int]] = None,
                progress: Optional[Callable[[str], None]] = None,
                verbose: bool | str | int | None = None) -> BidsExport:
    """Write ``subject``'s recorded (and imported) runs under ``out`` as BIDS; returns what was written and
    skipped."""
    say = Reporter(progress, bus=False)  # to progress= when given, else the eegloop.progress logger
    sessions = db.list_sessions(subject)
    if not sessions:
        raise EegloopError(f"--subject: {subject!r} has no sessions")
    if session_ids:
        unknown = sorted(set(session_ids) - {s.id for s in sessions})
        if unknown:
            raise EegloopError(f"--sessions: session {unknown[0]} does not belong to subject {subject!r}")
        sessions = [s for s in sessions if s.id in set(session_ids)]
    root = Path(out)
    res = BidsExport(root)
    conv = tempfile.TemporaryDirectory(prefix="eegloop-bids-")  # imported runs as BrainVision (0700), then copied
    try:
        # -- every run's raw file is checked before anything is written ---------------------------------------
        plan = []  # (session info, protocol, classes, channel types, montage, stim payloads, [(run, raw path)])
        for info in sessions:
            planned = _plan_session(db, info, Path(conv.name), res, say)
            if planned is not None:
                plan.append(planned)
        if not plan:
            raise EegloopError(f"subject {subject!r}: no recorded run to export"
                               + (f" ({'; '.join(f'session {s}: {w}' for s, w in res.skipped)})" if res.skipped
                                  else ""))
        tmp = _write_dataset(db, subject, root, plan, res, say)
    finally:
        conv.cleanup()
    res.runs = [(sid, idx, task, n, root / Path(f).relative_to(tmp)) for sid, idx, task, n, f in res.runs]
    return res


def _plan_session(db, info, conv: Path, res: BidsExport, say) -> Optional[tuple]:
    """What one session exports: (info, protocol, classes, channel types, montage, stim payloads, [(run, raw
    path)]) once every raw file passed the one reader of recordings; None (noted in ``res.skipped``) when it
    has no run to export."""
    from .montage import load_montage
    from .protocol import CHANNEL_TYPES, stored_protocol
    from .recorder.importers import read_recording

    imported_types = {}
    if info.kind == "imported":  # its source files, read again as they were imported
        runs, imported_types, why = _imported_runs(db, info, conv)
    else:
        recorded = [r for r in db.get_runs(info.id) if r.raw_path]
        runs = [(r, db.abspath(r.raw_path)) for r in recorded if db.abspath(r.raw_path).is_file()]
        why = (f"its raw files are not under {db.data_dir} (e.g. {recorded[0].raw_path}; give --data)"
               if recorded else "no raw recording")
        for _, path in runs:  # the one reader of recordings decides, with the sentence import and replay give
            read_recording(path, "mne")
    if not runs:
        res.skipped.append((info.id, why))
        return None
    proto = stored_protocol(info.protocol_yaml, f"session {info.id}'s protocol")
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
    return info, proto, classes, types, montage, payload, runs


def _write_dataset(db, subject: str, root: Path, plan: list, res: BidsExport, say) -> Path:
    """Write the planned runs into a temporary folder beside (or in) ``root`` and move it into place when
    complete; returns the temporary folder's path (the files in ``res.runs`` are under it)."""
    import mne
    from mne_bids import BIDSPath, make_dataset_description, write_raw_bids

    from ._files import new_folders, umask_mode
    from .montage import set_positions

    stimulus_files = _stimulus_files(db)
    try:
        with new_folders(root.parent, private=False):  # parents made here are removed again on failure
            exists = root.is_dir()
            tmp = Path(tempfile.mkdtemp(dir=root if exists else root.parent,
                                        prefix=".eegloop-export-" if exists else f".{root.name}.eegloop-export-"))
            try:
                os.chmod(tmp, umask_mode(0o777))
                if exists:  # MNE-BIDS merges participants and scans with what the dataset holds
                    _copy_merged_files(root, tmp, subject)
                stimuli: dict[str, Path] = {}
                for info, proto, classes, types, montage, payload, runs in plan:
                    for run, path in runs:
                        _write_run(info, proto, classes, types, montage, payload, run, path, subject, tmp, res,
                                   stimulus_files, stimuli, say, mne, BIDSPath, write_raw_bids, set_positions)
                make_dataset_description(path=tmp, name=f"eegloop export of subject {subject}", overwrite=True,
                                         generated_by=[{"Name": "eegloop"}], verbose="error")
                for rel, src in sorted(stimuli.items()):  # the images stim_file names, where BIDS looks for them
                    dst = tmp / "stimuli" / rel
                    dst.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(src, dst)
                _publish(tmp, root, exists)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
    except OSError as exc:  # disk full, permissions: nothing of this export is left in --out
        raise EegloopError(f"--out: writing the dataset under {root} failed ({exc.strerror or type(exc).__name__}); "
                           "nothing was changed there") from None
    return tmp


def _imported_runs(db, info, tmp: Path) -> tuple[list, dict, str]:
    """An imported session's runs as (run, BrainVision path) from their source files, with each channel's type;
    or no runs and why."""
    from .recorder.importers import DataImportError, source_as_brainvision

    digests = {sha for sha, _ in db.source_files(info.id)}
    stim: dict = {}
    for ev in db.get_events(info.id, "stim_on"):
        p = ev.payload or {}
        stim.setdefault(p.get("run"), []).append((ev.lsl_time, p.get("class", ""), p.get("trial")))
    out, types = [], {}
    for run in db.get_runs(info.id):
        try:
            got = source_as_brainvision(run.info or {}, stim.get(run.index, []),
                                        tmp / f"ses{info.id}-run{run.index}.vhdr", digests)
        except DataImportError as exc:
            return [], {}, f"run {run.index}: {exc}"
        types.update(zip((run.info or {}).get("channels") or [], got.ch_types))
        out.append((run, got.vhdr))
    return out, types, "no runs"


def _write_run(info, proto, classes, types, montage, payload, run, path, subject, tmp, res, stimulus_files, stimuli,
               say, mne, BIDSPath, write_raw_bids, set_positions) -> None:
    """One run's raw file into the dataset at ``tmp`` (events.tsv with stim_file; the images it names noted)."""
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
        files.append(_stim_file(cls, p.get("image"), stimulus_files, stimuli))
    for c in descs:
        if c not in classes:
            classes.append(c)
    raw.set_annotations(mne.Annotations(onsets, [proto.paradigm.image_s] * len(onsets), descs,
                                        orig_time=ann.orig_time))
    raw.info["line_freq"] = proto.preprocessing.notch_hz
    bp = BIDSPath(subject=subject, session=f"{info.id:04d}", task=task, run=run.index, datatype="eeg", root=tmp)
    write_raw_bids(raw, bp, event_id={c: i + 1 for i, c in enumerate(classes) if c in set(descs)} or None,
                   overwrite=True, verbose="error")
    _add_stim_files(bp, files)
    res.runs.append((info.id, run.index, task, len(onsets), bp.fpath))
    say(f"session {info.id} run {run.index}: {len(onsets)} stimulus events -> {bp.fpath.relative_to(tmp)}")


def _stimulus_files(db) -> dict:
    """(class id, image file name) -> the image file on this machine (the newest registered one that exists)."""
    out = {}
    for r in db.get_stimuli():  # in id order: a later registration of the same name wins, as load_epochs does
        p = db.abspath(r.path)
        if p.is_file():
            out[(r.class_id, p.name)] = p
    return out


def _stim_file(cls: str, image, stimulus_files: dict, stimuli: dict) -> str:
    """The ``stim_file`` value of one event (``class/image``, relative to ``stimuli/``), or ``n/a`` where the
    image is not on this machine; notes the file to copy in ``stimuli``."""
    if not image:
        return "n/a"
    src = stimulus_files.get((cls, str(image)))
    rel = f"{cls}/{image}"
    parts = rel.split("/")
    if src is None or len(parts) != 2 or any(x in ("", ".", "..") or "\\" in x for x in parts):
        return "n/a"
    if stimuli.get(rel, src) != src:  # two different files under one name (two stimulus sets): keep both
        import hashlib

        tag = hashlib.sha256(str(src).encode("utf-8", "surrogateescape")).hexdigest()[:8]
        rel = f"{cls}/{Path(str(image)).stem}-{tag}{Path(str(image)).suffix}"
    stimuli[rel] = src
    return rel


def _copy_merged_files(root: Path, tmp: Path, subject: str) -> None:
    """The files of an existing dataset that MNE-BIDS updates rather than replaces (participants, README, the
    subject's scans), so that the new files keep what the dataset already listed."""
    names = ["participants.tsv", "participants.json", "README", "README.md", "CHANGES"]
    for n in names:
        if (root / n).is_file():
            shutil.copyfile(root / n, tmp / n)
    sub = root / f"sub-{subject}"
    if sub.is_dir():
        for f in sub.rglob("*_scans.tsv"):
            dst = tmp / f.relative_to(root)
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(f, dst)


def _publish(tmp: Path, root: Path, exists: bool) -> None:
    """Move the complete dataset at ``tmp`` into ``root``: one rename for a new dataset, else each file
    replaced whole (``os.replace``: a reader sees the old file or the new one, never a truncated one), after
    checking that no file would land on a folder (or a folder on a file)."""
    if not exists:
        os.rename(tmp, root)
        return
    for dirpath, dirnames, filenames in os.walk(tmp):
        rel = Path(dirpath).relative_to(tmp)
        for names, want in ((dirnames, "folder"), (filenames, "file")):
            for n in names:
                dst = root / rel / n
                if os.path.lexists(dst) and (dst.is_dir() if want == "file" else not dst.is_dir()):
                    raise EegloopError(f"--out: {dst} is a {'folder' if want == 'file' else 'file'} where the "
                                       f"dataset has a {want}; nothing was changed under {root}")
    try:
        for dirpath, dirnames, filenames in os.walk(tmp):
            rel = Path(dirpath).relative_to(tmp)
            (root / rel).mkdir(exist_ok=True)
            for f in filenames:
                os.replace(Path(dirpath) / f, root / rel / f)
    except OSError as exc:  # between renames in one folder: hardly ever; each file is still whole
        raise EegloopError(f"--out: moving the dataset into {root} failed ({exc.strerror or type(exc).__name__}); "
                           "some of its files are replaced, each one whole: run the export again") from None


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
