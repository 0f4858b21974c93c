"""Bring your own recordings: XDF, anything MNE reads, CSV -> a session in the database.

Each file becomes a run; contiguous stretches of ``paradigm.block_s`` seconds
become blocks, so the honest folds (leave whole runs or blocks out) exist for
imported data too. Markers are mapped to classes by an events map
(``1=house,2=face`` or a YAML file); eegloop's own JSON markers carry their
class. Epochs are cut exactly as the recorder cuts them (``epochs`` window plus
margins) and stored with ``kind="imported"``; downstream (train, evaluate,
report) cannot tell them from recorded ones.

Every file is read and checked before anything is written, so a bad file
(empty stream, no markers, unknown marker value, clock reset inside an epoch,
wrong sampling rate) leaves the database unchanged.
"""
from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from .._logging import logger
from ..errors import EegloopError
from ..protocol import Protocol
from ..types import Epoch

__all__ = ["Recording", "ImportError_", "parse_events", "read_csv", "read_xdf", "read_mne", "read_recording",
           "cut_epochs", "import_recordings"]


class ImportError_(EegloopError):
    """A file cannot be imported; the message names the file and the problem."""


@dataclass
class Recording:
    """A continuous recording read from a file (the signal in microvolts)."""

    data: np.ndarray  # (n_channels, n_times) float32
    times: np.ndarray  # (n_times,) seconds, the file's clock (clock-corrected for XDF)
    sfreq: float
    ch_names: list
    markers: list = field(default_factory=list)  # [(time, value str)]
    source: str = ""

    @property
    def duration(self) -> float:
        return float(self.times[-1] - self.times[0]) if len(self.times) else 0.0


def parse_events(spec: str | None) -> dict[str, str]:
    """``"1=house,2=face"`` or a YAML file mapping marker value -> class."""
    if not spec:
        return {}
    p = Path(spec)
    if p.suffix in (".yaml", ".yml") and p.is_file():
        import yaml

        data = yaml.safe_load(p.read_text()) or {}
        if not isinstance(data, dict):
            raise EegloopError(f"--events: {p} must map marker values to classes")
        return {str(k): str(v) for k, v in data.items()}
    out = {}
    for part in spec.split(","):
        if "=" not in part:
            raise EegloopError(f"--events: '{part}' is not VALUE=CLASS (e.g. 1=house,2=face)")
        k, v = part.split("=", 1)
        out[k.strip()] = v.strip()
    return out


def _pick_channels(rec: Recording, channels: Optional[Sequence[str]]) -> Recording:
    if not channels:
        return rec
    missing = [c for c in channels if c not in rec.ch_names]
    if missing:
        raise ImportError_(f"{rec.source}: channel {missing[0]} not found (has: {', '.join(rec.ch_names)})")
    idx = [rec.ch_names.index(c) for c in channels]
    return Recording(rec.data[idx], rec.times, rec.sfreq, list(channels), rec.markers, rec.source)


def _dejitter(t: np.ndarray, src: str, max_jitter_s: float = 0.1) -> np.ndarray:
    """Regular timestamps for a stream whose samples are contiguous but stamped with jitter.

    Consumer devices (e.g. a Bluetooth headband) stamp chunks, not samples: times
    go backwards and jump by tens of ms while no sample is lost. When a straight
    line through (sample index, time) explains every timestamp within
    ``max_jitter_s``, the line is used (as LSL's dejitter does); otherwise the
    times are kept and epochs over real gaps are dropped later.
    """
    d = np.diff(t)
    if len(t) < 3 or (d.min() > 0 and d.max() < 1.5 * np.median(d)):
        return t
    i = np.arange(len(t))
    slope, icpt = np.polyfit(i, t, 1)
    fit = icpt + slope * i
    jitter = float(np.max(np.abs(t - fit)))
    if jitter < max_jitter_s:
        logger.info("%s: timestamps jitter by up to %.0f ms with no sample lost: using regular times", src,
                    jitter * 1000)
        return fit
    return t


def read_csv(path: str | Path, channels: Optional[Sequence[str]] = None, time_column: str = "timestamps",
             marker_column: Optional[str] = None) -> Recording:
    """CSV with a timestamp column, channel columns and a marker column (0 = no marker)."""
    path = Path(path)
    with open(path, newline="") as fh:
        header = next(csv.reader(fh), None)
    if not header:
        raise ImportError_(f"{path}: empty file")
    if time_column not in header:
        raise ImportError_(f"{path}: no '{time_column}' column (columns: {', '.join(header)})")
    marker_column = marker_column or next((h for h in header if h.lower().startswith("marker")), None)
    if marker_column is None:
        raise ImportError_(f"{path}: no marker column (a column named Marker...)")
    try:
        arr = np.loadtxt(path, delimiter=",", skiprows=1, dtype=np.float64, ndmin=2)
    except ValueError as exc:
        raise ImportError_(f"{path}: not numeric CSV ({exc})") from None
    if arr.shape[0] < 2:
        raise ImportError_(f"{path}: no samples")
    t = _dejitter(arr[:, header.index(time_column)], str(path))
    mk = arr[:, header.index(marker_column)]
    data_cols = [h for h in header if h not in (time_column, marker_column)]
    data = arr[:, [header.index(h) for h in data_cols]].T.astype(np.float32)
    sfreq = float((len(t) - 1) / (t[-1] - t[0]))  # timestamps may be rounded: use the mean rate
    nz = np.flatnonzero(mk != 0)
    markers = [(float(t[i]), f"{mk[i]:g}") for i in nz]
    rec = Recording(data, t, sfreq, data_cols, markers, str(path))
    return _pick_channels(rec, channels)


def read_xdf(path: str | Path, eeg: Optional[str] = None, markers: Optional[str] = None,
             channels: Optional[Sequence[str]] = None) -> Recording:
    """An XDF file (LabRecorder) via pyxdf, with its clock synchronisation and reset handling.

    ``eeg``/``markers`` select streams by name or type (default: type EEG /
    the first string stream).
    """
    import pyxdf

    path = Path(path)
    try:
        streams, _ = pyxdf.load_xdf(str(path), synchronize_clocks=True, handle_clock_resets=True,
                                    dejitter_timestamps=True)
    except Exception as exc:  # pyxdf raises many kinds on damaged files
        raise ImportError_(f"{path}: not a readable XDF file ({type(exc).__name__}: {exc})") from None

    def name(s):
        return s["info"]["name"][0]

    def typ(s):
        return s["info"]["type"][0]

    numeric = [s for s in streams if s["info"]["channel_format"][0] != "string"]
    strings = [s for s in streams if s["info"]["channel_format"][0] == "string"]
    if eeg:
        cand = [s for s in numeric if eeg in (name(s), typ(s))]
    else:
        cand = [s for s in numeric if typ(s).upper() == "EEG"] or numeric
    if not cand:
        raise ImportError_(f"{path}: no EEG stream{f' named {eeg!r}' if eeg else ''} "
                           f"(streams: {', '.join(f'{name(s)} ({typ(s)})' for s in streams)})")
    es = cand[0]
    if len(es["time_stamps"]) == 0:
        raise ImportError_(f"{path}: EEG stream '{name(es)}' has no samples")
    if markers:
        mcand = [s for s in strings if markers in (name(s), typ(s))]
    else:
        mcand = [s for s in strings if typ(s).lower() in ("markers", "stringmarker", "marker")] or strings
    mcand = [s for s in mcand if len(s["time_stamps"])]
    if not mcand:
        raise ImportError_(f"{path}: no marker stream with samples{f' named {markers!r}' if markers else ''}")
    ms = mcand[0]
    data = np.asarray(es["time_series"], dtype=np.float32).T
    labels = []
    try:
        ch = es["info"]["desc"][0]["channels"][0]["channel"]
        labels = [c["label"][0] for c in ch]
    except (KeyError, IndexError, TypeError):
        pass
    if len(labels) != data.shape[0]:
        labels = [f"Ch{i + 1}" for i in range(data.shape[0])]
    sfreq = float(es["info"]["nominal_srate"][0])
    mk = [(float(t), str(v[0])) for t, v in zip(ms["time_stamps"], ms["time_series"])]
    rec = Recording(data, np.asarray(es["time_stamps"], float), sfreq, labels, mk, str(path))
    return _pick_channels(rec, channels)


def read_mne(path: str | Path, channels: Optional[Sequence[str]] = None) -> Recording:
    """Anything MNE reads (FIF, BrainVision, EDF/BDF, EEGLAB .set): events from annotations or a stim channel."""
    import mne

    path = Path(path)
    try:
        raw = mne.io.read_raw(str(path), preload=True, verbose=False)
    except Exception as exc:
        raise ImportError_(f"{path}: MNE cannot read it ({type(exc).__name__}: {exc})") from None
    sf = raw.info["sfreq"]
    t = raw.times + (raw.first_samp / sf)
    markers = [(float(a["onset"] + raw.first_samp / sf), str(a["description"])) for a in raw.annotations]
    stim = mne.pick_types(raw.info, stim=True, eeg=False)
    if not markers and len(stim):
        ev = mne.find_events(raw, stim_channel=raw.ch_names[stim[0]], verbose=False)
        markers = [(float(t[s - raw.first_samp]), str(v)) for s, _, v in ev]
    picks = mne.pick_types(raw.info, eeg=True, stim=False, misc=False) if not channels else None
    if picks is not None and len(picks):
        raw.pick(picks)
    data = (raw.get_data() * 1e6).astype(np.float32)  # volts -> microvolts
    rec = Recording(data, t, sf, list(raw.ch_names), markers, str(path))
    return _pick_channels(rec, channels)


def read_recording(path: str | Path, fmt: Optional[str] = None, channels=None, eeg_stream=None,
                   marker_stream=None) -> Recording:
    path = Path(path)
    if not path.is_file():
        raise ImportError_(f"{path}: file not found")
    fmt = fmt or {".xdf": "xdf", ".csv": "csv"}.get(path.suffix.lower(), "mne")
    if fmt == "xdf":
        return read_xdf(path, eeg_stream, marker_stream, channels)
    if fmt == "csv":
        return read_csv(path, channels)
    if fmt == "mne":
        return read_mne(path, channels)
    raise EegloopError(f"--format: must be xdf, mne or csv, got {fmt!r}")


def _marker_class(value: str, events: dict[str, str]) -> Optional[str]:
    """Class of a marker value, '' for markers that are not stimuli, None if unknown."""
    if value in events:
        return events[value]
    try:
        m = json.loads(value)
        if isinstance(m, dict) and "event" in m:
            return str(m.get("class", "")) if m["event"] == "stim_on" else ""
    except (ValueError, TypeError):
        pass
    return None


def cut_epochs(rec: Recording, protocol: Protocol, events: dict[str, str], run: int, block_offset: int = 0,
               check_rate: bool = True, trial_offset: int = 0) -> tuple[list[Epoch], list[dict], int]:
    """Cut epochs around mapped markers like the recorder does; returns (epochs, events, n_blocks)."""
    amp, e, p = protocol.amplifier, protocol.epochs, protocol.paradigm
    src = rec.source
    if rec.data.shape[1] < 2:
        raise ImportError_(f"{src}: the EEG stream has no samples")
    if check_rate and abs(rec.sfreq - amp.sfreq) > 0.01 * amp.sfreq:
        raise ImportError_(f"{src}: sampled at {rec.sfreq:g} Hz, the protocol expects {amp.sfreq:g} Hz "
                           "(amplifier.sfreq); use a protocol for this recording")
    if rec.data.shape[0] != amp.channels:
        raise ImportError_(f"{src}: {rec.data.shape[0]} channels ({', '.join(rec.ch_names)}), the protocol expects "
                           f"{amp.channels} (amplifier.channels); choose them with --channels")
    if not rec.markers:
        raise ImportError_(f"{src}: no markers")
    unknown = sorted({v for _, v in rec.markers if _marker_class(v, events) is None})
    if unknown:
        known = ", ".join(events) or "none given"
        raise ImportError_(f"{src}: unknown marker value{'s' if len(unknown) > 1 else ''} "
                           f"{', '.join(repr(u) for u in unknown[:5])} (events map has: {known}); "
                           "map them with --events VALUE=CLASS,...")
    sf = rec.sfreq
    margin = int(round(e.margin_s * sf))
    start_off = int(round(e.tmin * sf)) - margin
    length = int(round((e.tmax - e.tmin) * sf)) + 2 * margin
    t = rec.times
    period = 1.0 / sf
    t0 = t[0]
    epochs, evs = [], []
    skipped_gap = skipped_edge = 0
    trial = trial_offset
    for mt, value in rec.markers:
        cls = _marker_class(value, events)
        block = block_offset + int((mt - t0) // p.block_s) + 1
        evs.append(dict(kind="stim_on" if cls else "marker", lsl_time=mt, trial=None, class_id=cls or None,
                        payload={"event": "stim_on" if cls else "marker", "value": value, "run": run, "block": block,
                                 **({"class": cls} if cls else {})}, _block=block))
        if not cls:
            continue
        i = int(np.searchsorted(t, mt))
        if i > 0 and (i == len(t) or abs(t[i - 1] - mt) <= abs(t[i] - mt)):
            i -= 1
        a, b = i + start_off, i + start_off + length
        if a < 0 or b > len(t):
            skipped_edge += 1
            continue
        seg = t[a:b]
        if np.max(np.diff(seg)) > 1.5 * period or abs(t[i] - mt) > 1.5 * period:
            skipped_gap += 1  # a clock reset or a gap inside the epoch
            continue
        trial += 1
        evs[-1]["trial"] = trial
        evs[-1]["payload"]["trial"] = trial
        epochs.append(Epoch(data=rec.data[:, a:b], label=cls, sfreq=sf, tmin=start_off / sf,
                            channel_names=list(rec.ch_names), run=run, block=block, trial=trial, onset_lsl=mt))
    if skipped_gap:
        logger.warning("%s: %d epochs dropped: a gap or clock reset falls inside them", src, skipped_gap)
    if skipped_edge:
        logger.info("%s: %d epochs too close to the file's edges dropped", src, skipped_edge)
    if not epochs:
        raise ImportError_(f"{src}: no complete epoch could be cut ({len(rec.markers)} markers, "
                           f"{rec.duration:.1f} s of signal, window {e.tmin}..{e.tmax} s + {e.margin_s} s margins)")
    n_blocks = int((t[-1] - t0) // p.block_s) + 1
    return epochs, evs, n_blocks


def import_recordings(db, subject: str, protocol: Protocol, files: Sequence[str | Path], fmt: Optional[str] = None,
                      events: Optional[dict] = None, channels: Optional[Sequence[str]] = None,
                      eeg_stream: Optional[str] = None, marker_stream: Optional[str] = None) -> int:
    """Import ``files`` as one session of ``subject`` (one run per file); returns the session id.

    All files are read and cut first; nothing is written if any fails.
    """
    events = dict(events or {})
    prepared = []
    block_offset = trial_offset = 0
    for run, f in enumerate(files, start=1):
        rec = read_recording(f, fmt, channels, eeg_stream, marker_stream)
        eps, evs, n_blocks = cut_epochs(rec, protocol, events, run, block_offset, trial_offset=trial_offset)
        prepared.append((Path(f), rec, eps, evs))
        block_offset += n_blocks
        trial_offset = eps[-1].trial
    db.get_or_add_subject(subject)
    sid = db.create_session(subject, protocol, kind="imported",
                            info={"files": [str(Path(f).resolve()) for f in files], "events": events})
    try:
        for run, (f, rec, eps, evs) in enumerate(prepared, start=1):
            run_id = db.add_run(sid, run, status="imported", samples_received=int(rec.data.shape[1]),
                                samples_expected=int(round(rec.duration * rec.sfreq)) + 1, lost_samples=None,
                                info={"source": str(f.resolve()), "sfreq": rec.sfreq, "channels": rec.ch_names})
            by_block: dict[int, list] = {}
            for ev in evs:
                by_block.setdefault(ev["_block"], []).append(ev)
            for block, bevs in sorted(by_block.items()):
                classes = sorted({ev["class_id"] for ev in bevs if ev["class_id"]})
                bid = db.add_block(run_id, block, classes=classes, status="imported",
                                   started_lsl=bevs[0]["lsl_time"], ended_lsl=bevs[-1]["lsl_time"])
                ids = db.add_events(sid, [dict({k: v for k, v in ev.items() if k != "_block"}, run_id=run_id,
                                               block_id=bid) for ev in bevs])
                by_trial = {ev["trial"]: i for ev, i in zip(bevs, ids) if ev["trial"]}
                beps = [ep for ep in eps if ep.block == block]
                for ep in beps:
                    ep.event_id = by_trial.get(ep.trial)
                db.add_epochs(sid, beps)
    except BaseException:
        db.delete_session(sid)  # leave the database as it was
        raise
    db.set_session_status(sid, "imported", ended=True)
    logger.info("imported %d files as session %d (%d epochs)", len(files), sid, sum(len(p[2]) for p in prepared))
    return sid


def read_eeg_imagenet(path: str | Path, splits: str | Path | None = None, subject: int | None = None,
                      sfreq: float = 1000.0, n_times: int | None = None):
    """The public EEG-ImageNet files of Spampinato et al. (2017), as used by Ferrante et al. (2023).

    ``path`` is the torch ``.pth`` dict ``{"dataset": [{"eeg": Tensor[128, L], "label": int, "image": int,
    "subject": int}], "labels": [...], "images": [...]}``; ``splits`` its splits file
    (``{"splits": [{"train": [...], "val": [...], "test": [...]}]}``, indices into ``dataset``).

    Class names come from the file's own ``labels`` list. The recording was a
    block design (one class per block), so each class is its own block here:
    block-wise folds are impossible, as they should be — the file's splits are
    random splits of trials, i.e. inflated (Li et al. 2021).

    Returns
    -------
    epochs : EpochSet
        Labels are synsets, ``images`` the file's image names, ``sessions`` the subject number.
    splits : list of dict
        The splits file's folds (empty without one).
    """
    import torch

    from ..types import EpochSet

    path = Path(path)
    try:
        d = torch.load(str(path), map_location="cpu", weights_only=False)
    except Exception as exc:
        raise ImportError_(f"{path}: not a readable EEG-ImageNet .pth file ({type(exc).__name__}: {exc})") from None
    if not isinstance(d, dict) or not {"dataset", "labels", "images"} <= set(d):
        raise ImportError_(f"{path}: expected a dict with 'dataset', 'labels' and 'images'")
    items = [x for x in d["dataset"] if subject is None or int(x["subject"]) == subject]
    if not items:
        raise ImportError_(f"{path}: no trials{f' of subject {subject}' if subject is not None else ''}")
    L = n_times or min(int(x["eeg"].shape[-1]) for x in items)
    data = np.stack([np.asarray(x["eeg"], dtype=np.float32)[:, :L] for x in items])
    labels = [d["labels"][int(x["label"])] for x in items]
    es = EpochSet(data=data, labels=np.array(labels), sfreq=sfreq, tmin=0.0,
                  channel_names=[f"E{i + 1}" for i in range(data.shape[1])],
                  runs=np.ones(len(items), int), blocks=np.array([int(x["label"]) + 1 for x in items]),
                  sessions=np.array([int(x["subject"]) for x in items]),
                  classes={c: c for c in d["labels"]},
                  images=np.array([str(d["images"][int(x["image"])]) for x in items]))
    folds = []
    if splits is not None:
        s = torch.load(str(splits), map_location="cpu", weights_only=False)
        keep = {i: k for k, i in enumerate(j for j, x in enumerate(d["dataset"])
                                           if subject is None or int(x["subject"]) == subject)}
        for f in s.get("splits", []):
            folds.append({k: [keep[int(i)] for i in v if int(i) in keep] for k, v in f.items()})
    return es, folds


def import_epochset(db, subject: str, protocol: Protocol, es, source: str = "") -> int:
    """Store an :class:`~eegloop.types.EpochSet` read from a file (e.g. EEG-ImageNet) as an imported session."""
    db.get_or_add_subject(subject)
    sid = db.create_session(subject, protocol, kind="imported", info={"files": [source]})
    try:
        trial = 0
        for run in np.unique(es.runs):
            in_run = es.runs == run
            run_id = db.add_run(sid, int(run), status="imported", info={"source": source})
            for block in np.unique(es.blocks[in_run]):
                idx = np.flatnonzero(in_run & (es.blocks == block))
                bid = db.add_block(run_id, int(block), classes=sorted(set(es.labels[idx].tolist())),
                                   status="imported")
                evs, eps = [], []
                for i in idx:
                    trial += 1
                    evs.append(dict(kind="stim_on", lsl_time=float(trial), run_id=run_id, block_id=bid, trial=trial,
                                    class_id=str(es.labels[i]),
                                    payload={"event": "stim_on", "class": str(es.labels[i]), "image": str(es.images[i]),
                                             "trial": trial}))
                    eps.append(Epoch(data=es.data[i], label=str(es.labels[i]), sfreq=es.sfreq, tmin=es.tmin,
                                     channel_names=list(es.channel_names), run=int(run), block=int(block), trial=trial))
                for ep, eid in zip(eps, db.add_events(sid, evs)):
                    ep.event_id = eid
                db.add_epochs(sid, eps)
    except BaseException:
        db.delete_session(sid)
        raise
    db.set_session_status(sid, "imported", ended=True)
    return sid
