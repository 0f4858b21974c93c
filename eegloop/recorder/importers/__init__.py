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
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from ..._logging import logger
from ...errors import EegloopError, clip_text, short_repr
from ...protocol import Protocol, read_yaml_file
from ...stimuli import file_sha256
from ...types import BlockRecord, Epoch, RejectedEpoch

__all__ = ["Recording", "ImportError_", "RecordingError", "parse_events", "parse_channel_types", "read_csv",
           "read_xdf", "read_mne", "read_recording", "check_recording",
           "PreparedImport", "prepare_import", "store_import",
           "cut_epochs", "import_recordings", "read_eeg_imagenet", "locate_images", "import_epochset",
           "things_eeg2_files", "read_things_eeg2", "locate_things_images", "SourceRun", "source_as_brainvision"]


class ImportError_(EegloopError):
    """A file cannot be imported; the message names the file and the problem."""


class RecordingError(ImportError_):
    """A recording is not usable (:func:`check_recording`): the same sentence for import, replay and export."""


@dataclass
class Recording:
    """A continuous recording read from a file: every channel with its type (MNE's names); electrodes in µV.

    Only the ``eeg`` channels are cut into epochs and decoded (:attr:`eeg_idx`); EOG, ECG, EMG, misc, resp and
    stim channels stay with the recording (its source file, the BIDS export).
    """

    data: np.ndarray  # (n_channels, n_times) float32
    times: np.ndarray  # (n_times,) seconds, the file's clock (clock-corrected for XDF)
    sfreq: float
    ch_names: list
    markers: list = field(default_factory=list)  # [(time, value str)]
    source: str = ""
    ch_types: list = field(default_factory=list)  # per channel: eeg, eog, ecg, emg, misc, resp, stim (default eeg)
    units: list = field(default_factory=list)  # per channel, the unit its values are in (µV for electrodes)

    def __post_init__(self) -> None:
        n = len(self.ch_names)
        self.ch_types = list(self.ch_types) or ["eeg"] * n
        self.units = list(self.units) or ["µV"] * n

    @property
    def eeg_idx(self) -> list:
        return [i for i, t in enumerate(self.ch_types) if t == "eeg"]

    @property
    def eeg_names(self) -> list:
        return [self.ch_names[i] for i in self.eeg_idx]

    @property
    def duration(self) -> float:
        return float(self.times[-1] - self.times[0]) if len(self.times) else 0.0


_MAX_CLASS_NAME = 128
_MAX_MARKER = 256


def _exists(p: Path) -> bool:
    try:
        return p.exists()
    except (OSError, ValueError):  # a name too long for the file system, a NUL byte
        return False


IGNORE = "ignore"  # the class name that says: this marker value is not a stimulus


def parse_events(spec: str | None) -> dict[str, str]:
    """``"1=house,2=face"`` or a YAML file mapping marker value -> class.

    The class ``ignore`` marks a value that is not a stimulus (``start=ignore``): such markers are kept as
    events and counted, never epoched. The empty marker value some recorders write can only be ignored
    (YAML ``"": ignore``, or ``=ignore``).

    Raises :class:`EegloopError` naming ``--events`` (one line) for an empty or
    repeated marker value, an empty, over-long or control-character class name,
    and a YAML file that is missing, unreadable, over 1 MiB, not UTF-8, not
    valid YAML or not a flat mapping of scalars.
    """
    if not spec:
        return {}
    p = Path(spec)
    pairs: list[tuple[str, str, str]] = []  # (marker, class, what to show in a message)
    if p.suffix.lower() in (".yaml", ".yml") and ("=" not in spec or _exists(p)):
        where = f"--events: {clip_text(spec, 200)}"
        data = read_yaml_file(p, where, "events file", EegloopError, unique_keys=True)
        if not isinstance(data, dict) or not data:
            got = "an empty file" if data is None else f"{short_repr(data, 60)}"
            raise EegloopError(f"{where}: must map marker values to classes (e.g. 1: house), got {got}")
        for k, v in data.items():
            for x in (k, v):
                if isinstance(x, bool) or not isinstance(x, (str, int, float)):
                    raise EegloopError(f"{where}: must map marker values to class names (plain values, e.g. "
                                       f"1: house), got {short_repr(k, 40)}: {short_repr(v, 40)}")
            pairs.append((str(k), str(v), f"{short_repr(k, 40)}: {short_repr(v, 40)}"))
    else:
        where = "--events"
        for part in spec.split(","):
            if "=" not in part:
                what = "an empty entry (two commas?)" if not part.strip() else short_repr(part, 60)
                raise EegloopError(f"--events: {what} is not VALUE=CLASS (e.g. 1=house,2=face)")
            k, v = part.split("=", 1)
            pairs.append((k.strip(), v.strip(), short_repr(part, 60)))
    out: dict[str, str] = {}
    for k, v, shown in pairs:
        if not k and v != IGNORE:
            raise EegloopError(f"{where}: empty marker value in {shown} (an empty marker can only be "
                               f"ignored: '=ignore', or \"\": ignore in a YAML file)")
        if not v:
            raise EegloopError(f"{where}: empty class name in {shown}")
        for what, x, most in (("marker value", k, _MAX_MARKER), ("class name", v, _MAX_CLASS_NAME)):
            if len(x) > most:
                raise EegloopError(f"{where}: {what} {short_repr(x, 40)} is longer than {most} characters")
            if not x.isprintable():
                raise EegloopError(f"{where}: {what} {short_repr(x, 40)} has control characters")
        if k in out:
            raise EegloopError(f"{where}: marker value {short_repr(k, 40)} is given twice")
        out[k] = v
    return out


def _pick_channels(rec: Recording, channels: Optional[Sequence[str]]) -> Recording:
    if not channels:
        return rec
    missing = [c for c in channels if c not in rec.ch_names]
    if missing:
        raise RecordingError(f"{clip_text(rec.source, 300)}: channel {clip_text(str(missing[0]), 60)} not found "
                           f"(has: {_names(rec.ch_names)})")
    idx = [rec.ch_names.index(c) for c in channels]
    return Recording(rec.data[idx], rec.times, rec.sfreq, list(channels), rec.markers, rec.source,
                     [rec.ch_types[i] for i in idx], [rec.units[i] for i in idx])


def parse_channel_types(spec: Optional[str]) -> dict:
    """``--channel-types``: ``'Right AUX=misc,EXG1=eog'`` -> {label: type}; types as in amplifier.channel_types."""
    from ...protocol import CHANNEL_TYPES

    out: dict = {}
    for part in (spec or "").split(","):
        if not part.strip():
            continue
        label, sep, typ = part.rpartition("=")
        label, typ = label.strip(), typ.strip().lower()
        if not sep or not label:
            raise EegloopError(f"--channel-types: {short_repr(part.strip(), 40)} is not LABEL=TYPE")
        if typ not in CHANNEL_TYPES:
            raise EegloopError(f"--channel-types: {short_repr(label, 40)}: type {short_repr(typ, 20)} is not one of "
                               f"{', '.join(CHANNEL_TYPES)}")
        out[label] = typ
    return out


def _typed(data: np.ndarray, labels: list, declared: list, units: list, overrides: Optional[dict],
           where: str) -> tuple[np.ndarray, list, list]:
    """Final channel types (``overrides`` first, then the declared ones, EEG by default) and the data with every
    voltage scaled to µV (:func:`~eegloop.recorder.acquisition.channel_scales`, as live acquisition does)."""
    from ..acquisition import channel_scales, channel_types

    types = channel_types(labels, declared, overrides or {}, where, error=ImportError_,
                          field="amplifier.channel_types / --channel-types")
    scale, out_units = channel_scales(labels, types, units, where, error=ImportError_)
    if any(f != 1.0 for f in scale):
        with np.errstate(over="ignore"):
            data = (data.astype(np.float64) * np.asarray(scale)[:, None]).astype(np.float32)
    return data, types, out_units


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


def _names(names: Sequence, n: int = 12) -> str:
    """Column or channel names for a message: at most ``n``, each clipped."""
    shown = ", ".join(clip_text(str(x), 40) for x in list(names[:n]))
    return shown + (f", … (+{len(names) - n})" if len(names) > n else "")


_MAX_CSV_COLUMNS = 4096
_MAX_HEADER_BYTES = 4 << 20


def _csv_problem(text: str, ncols: int, header: list[str]) -> str | None:
    """The first ragged row or non-numeric cell of the CSV body (the slow path, for the message)."""
    for lineno, line in enumerate(text.split("\n"), start=2):
        line = line.split("#", 1)[0]  # np.loadtxt's comments
        if not line.strip():
            continue
        cells = line.split(",")
        if len(cells) != ncols:
            return f"line {lineno} has {len(cells)} cells, the header has {ncols} columns"
        for name, cell in zip(header, cells):
            try:
                float(cell)
            except ValueError:
                return f"line {lineno}, column {clip_text(name, 40)}: not a number: {short_repr(cell.strip(), 40)}"
    return None


def read_csv(path: str | Path, channels: Optional[Sequence[str]] = None, time_column: str = "timestamps",
             marker_column: Optional[str] = None, channel_types: Optional[dict] = None) -> Recording:
    """CSV with a timestamp column, channel columns and a marker column (0 = no marker).

    Values are microvolts; every channel is EEG unless ``channel_types`` (``--channel-types``, the protocol's
    ``amplifier.channel_types``) says otherwise, e.g. ``{"Right AUX": "misc"}``.

    Any file gives a :class:`Recording` or an :class:`ImportError_` with one
    line naming the file: not UTF-8, NUL bytes, an empty or duplicate header,
    more than 4096 columns, ragged rows, non-numeric cells, NaN/inf values
    (column and row named), fewer than 2 rows, timestamps that do not increase.
    """
    import io
    import warnings

    path = Path(path)
    name = clip_text(str(path), 300)
    try:
        if not path.is_file():  # a folder, a FIFO (which would block), nothing
            raise RecordingError(f"{name}: {'is not a regular file' if _exists(path) else 'file not found'}")
        with open(path, "rb") as fh:
            head = fh.readline(_MAX_HEADER_BYTES)
            body = fh.read()
    except ValueError:  # a NUL byte in the name
        raise RecordingError(f"{name}: file not found") from None
    except OSError as exc:
        raise RecordingError(f"{name}: cannot read the file ({clip_text(exc.strerror or type(exc).__name__, 100)})") from None
    if len(head) >= _MAX_HEADER_BYTES and not head.endswith(b"\n"):
        raise RecordingError(f"{name}: the header line is longer than {_MAX_HEADER_BYTES >> 20} MiB")
    raw = head + body
    nul = raw.find(b"\x00")
    if nul >= 0:
        line = raw.count(b"\n", 0, nul) + 1
        raise RecordingError(f"{name}: NUL bytes at line {line}: not a text CSV file")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise RecordingError(f"{name}: not UTF-8 text (byte 0x{raw[exc.start]:02x} at line {line})") from None
    del raw
    head_text, _, text = text.partition("\n")
    try:
        header = next(csv.reader([head_text.rstrip("\r")]), [])
    except csv.Error as exc:
        raise RecordingError(f"{name}: the header is not a CSV line ({clip_text(str(exc), 100)})") from None
    header = [h.strip() for h in header]
    if not header or header == [""]:
        raise RecordingError(f"{name}: empty file" if not head_text.strip() and not text.strip()
                           else f"{name}: empty header line")
    if len(header) > _MAX_CSV_COLUMNS:
        raise RecordingError(f"{name}: {len(header)} columns in the header, at most {_MAX_CSV_COLUMNS}")
    if "" in header:
        raise RecordingError(f"{name}: column {header.index('') + 1} of the header has no name")
    seen: set[str] = set()
    for h in header:
        if h in seen:
            raise RecordingError(f"{name}: column {short_repr(h, 40)} appears twice in the header")
        seen.add(h)
    if time_column not in header:
        raise RecordingError(f"{name}: no '{clip_text(time_column, 40)}' column (columns: {_names(header)})")
    marker_column = marker_column or next((h for h in header if h.lower().startswith("marker")), None)
    if marker_column is None:
        raise RecordingError(f"{name}: no marker column (a column named Marker...)")
    if marker_column not in header:
        raise RecordingError(f"{name}: no '{clip_text(marker_column, 40)}' column (columns: {_names(header)})")
    data_cols = [h for h in header if h not in (time_column, marker_column)]
    if not data_cols:
        raise RecordingError(f"{name}: no channel columns besides '{clip_text(time_column, 40)}' and "
                           f"'{clip_text(marker_column, 40)}'")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "input contained no data"
            arr = np.loadtxt(io.StringIO(text), delimiter=",", dtype=np.float64, ndmin=2)
    except ValueError as exc:
        problem = _csv_problem(text, len(header), header) or f"not numeric CSV ({clip_text(str(exc), 120)})"
        raise RecordingError(f"{name}: {problem}") from None
    if arr.shape[0] < 2:
        raise RecordingError(f"{name}: no samples (fewer than 2 rows)")
    if arr.shape[1] != len(header):
        raise RecordingError(f"{name}: rows have {arr.shape[1]} cells, the header has {len(header)} columns")
    del text
    bad = ~np.isfinite(arr)
    if bad.any():
        first = int(np.flatnonzero(bad)[0])  # in reading order
        col = first % bad.shape[1]
        rows = np.flatnonzero(bad[:, col])
        what = "timestamps" if header[col] == time_column else (
            "markers" if header[col] == marker_column else f"channel {clip_text(header[col], 40)}")
        raise RecordingError(f"{name}: {len(rows)} non-finite value{'s' if len(rows) > 1 else ''} (NaN/inf) in "
                           f"{what}, first at row {int(rows[0]) + 1}; clean or interpolate them first")
    t_raw = arr[:, header.index(time_column)]
    with np.errstate(over="ignore"):
        duration = float(t_raw[-1] - t_raw[0])
    if not duration > 0:
        raise RecordingError(f"{name}: timestamps do not increase (first {t_raw[0]:g}, last {t_raw[-1]:g}): "
                           "no sampling rate")
    if not np.isfinite(duration):
        raise RecordingError(f"{name}: timestamps span no finite duration (first {t_raw[0]:g}, last {t_raw[-1]:g})")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            t = _dejitter(t_raw, str(path))
    except (np.linalg.LinAlgError, ValueError, FloatingPointError):
        t = t_raw
    if not np.all(np.isfinite(t)) or not t[-1] > t[0]:
        t = t_raw
    mk = arr[:, header.index(marker_column)]
    with np.errstate(over="ignore"):
        data = arr[:, [header.index(h) for h in data_cols]].T.astype(np.float32)
    if not np.isfinite(data).all():
        ch = int(np.flatnonzero(~np.isfinite(data).all(axis=1))[0])
        raise RecordingError(f"{name}: channel {clip_text(data_cols[ch], 40)} has values beyond the float32 range "
                           "(±3.4e38)")
    sfreq = float((len(t) - 1) / (t[-1] - t[0]))  # timestamps may be rounded: use the mean rate
    if not (np.isfinite(sfreq) and sfreq > 0):
        raise RecordingError(f"{name}: timestamps give no finite sampling rate ({len(t)} samples in "
                           f"{float(t[-1] - t[0]):g} s)")
    nz = np.flatnonzero(mk != 0)
    markers = [(float(t[i]), f"{mk[i]:g}") for i in nz]
    n = len(data_cols)  # a CSV declares neither types nor units: EEG in µV unless retyped
    _, types, units = _typed(data[:0], data_cols, [""] * n, [""] * n, channel_types, name)
    rec = Recording(data, t, sfreq, data_cols, markers, str(path), types, units)
    return _pick_channels(rec, channels)


def read_xdf(path: str | Path, eeg: Optional[str] = None, markers: Optional[str] = None,
             channels: Optional[Sequence[str]] = None, channel_types: Optional[dict] = None) -> Recording:
    """An XDF file (LabRecorder) via pyxdf, with its clock synchronisation and reset handling.

    ``eeg``/``markers`` select streams by name or type (types in any case; default: type EEG / the first
    string stream). Channel labels, types and units come from the stream's description, as live acquisition
    reads them: voltages (V, mV, µV, nV, MNE-LSL's powers of ten) are scaled to µV, an electrode in another unit
    is refused, ``channel_types`` retypes channels (``amplifier.channel_types``, ``--channel-types``).
    """
    import logging

    import pyxdf

    path = Path(path)
    damage: list[str] = []

    class _Damage(logging.Handler):  # pyxdf logs a damaged chunk and reads on; for eegloop the file is damaged
        def emit(self, record):
            damage.append(record.getMessage())

    handler = _Damage(logging.ERROR)
    pyxdf_log = logging.getLogger("pyxdf")
    pyxdf_log.addHandler(handler)
    try:
        streams, _ = pyxdf.load_xdf(str(path), synchronize_clocks=True, handle_clock_resets=True,
                                    dejitter_timestamps=True)
    except Exception as exc:  # pyxdf raises many kinds on damaged files
        raise RecordingError(f"{path}: not a readable XDF file ({type(exc).__name__}: {clip_text(str(exc), 200)})") from None
    finally:
        pyxdf_log.removeHandler(handler)
    if damage:
        raise RecordingError(f"{path}: a damaged or truncated XDF file (pyxdf: {clip_text(damage[0], 160)}); "
                             "eegloop imports whole files only")

    def name(s):
        return s["info"]["name"][0]

    def typ(s):
        return s["info"]["type"][0]

    numeric = [s for s in streams if s["info"]["channel_format"][0] != "string"]
    strings = [s for s in streams if s["info"]["channel_format"][0] == "string"]
    if eeg:
        cand = [s for s in numeric if name(s) == eeg or (typ(s) or "").lower() == eeg.lower()]
    else:
        cand = [s for s in numeric if typ(s).upper() == "EEG"] or numeric
    if not cand:
        raise RecordingError(f"{path}: no EEG stream{f' named {short_repr(eeg, 60)}' if eeg else ''} "
                           f"(streams: {', '.join(f'{name(s)} ({typ(s)})' for s in streams)})")
    es = cand[0]
    if len(es["time_stamps"]) == 0:
        raise RecordingError(f"{path}: EEG stream '{name(es)}' has no samples")
    if markers:
        mcand = [s for s in strings if name(s) == markers or (typ(s) or "").lower() == markers.lower()]
    else:
        mcand = [s for s in strings if typ(s).lower() in ("markers", "stringmarker", "marker")] or strings
    mcand = [s for s in mcand if len(s["time_stamps"])]
    if not mcand:
        raise RecordingError(f"{path}: no marker stream with samples{f' named {short_repr(markers, 60)}' if markers else ''}")
    ms = mcand[0]
    for st in (es, ms):  # a stream's footer is written when the recording is closed: none, or fewer samples, is a cut file
        footer = (st.get("footer") or {}).get("info") or {}
        count = (footer.get("sample_count") or [None])[0]
        if not footer:
            raise RecordingError(f"{path}: stream '{clip_text(name(st), 60)}' has no footer: a truncated XDF file "
                                 "(the recording was not closed)")
        if count is not None and str(count).strip().isdigit() and int(count) > len(st["time_stamps"]):
            raise RecordingError(f"{path}: stream '{clip_text(name(st), 60)}' has {len(st['time_stamps'])} of the "
                                 f"{int(count)} samples its footer counts: a truncated XDF file")
    data = np.asarray(es["time_series"], dtype=np.float32).T
    labels, declared, units = [], [], []

    def first(c, key):
        v = c.get(key) if hasattr(c, "get") else None
        return str(v[0]) if v and v[0] is not None else ""

    try:
        ch = es["info"]["desc"][0]["channels"][0]["channel"]
        labels = [first(c, "label") for c in ch]
        declared = [first(c, "type") for c in ch]
        units = [first(c, "unit") for c in ch]
    except (KeyError, IndexError, TypeError):
        pass
    if len(labels) != data.shape[0] or not all(labels):
        labels, declared, units = [f"Ch{i + 1}" for i in range(data.shape[0])], [], []
    n = data.shape[0]
    data, types, units = _typed(data, labels, declared or [""] * n, units or [""] * n, channel_types,
                                f"{clip_text(str(path), 300)}: EEG stream '{clip_text(name(es), 60)}'")
    sfreq = float(es["info"]["nominal_srate"][0])
    mk = [(float(t), str(v[0])) for t, v in zip(ms["time_stamps"], ms["time_series"])]
    rec = Recording(data, np.asarray(es["time_stamps"], float), sfreq, labels, mk, str(path), types, units)
    return _pick_channels(rec, channels)


def read_mne(path: str | Path, channels: Optional[Sequence[str]] = None,
             channel_types: Optional[dict] = None) -> Recording:
    """Anything MNE reads (FIF, BrainVision, EDF/BDF, EEGLAB .set): events from annotations or a stim channel.

    Every channel is kept with MNE's type (retyped by ``channel_types``); electrodes (EEG, EOG, ECG, EMG) are
    scaled from volts to µV, other channels kept in MNE's values.
    """
    import mne

    path = Path(path)
    try:
        raw = mne.io.read_raw(str(path), preload=False, verbose=False)
    except Exception as exc:
        raise RecordingError(f"{path}: MNE cannot read it ({type(exc).__name__}: {clip_text(str(exc), 200)})") from None
    sf = raw.info["sfreq"]
    t = raw.times + (raw.first_samp / sf)
    markers = [(float(a["onset"] + raw.first_samp / sf), str(a["description"])) for a in raw.annotations]
    stim = mne.pick_types(raw.info, stim=True, eeg=False)
    if not markers and len(stim):
        ev = mne.find_events(raw, stim_channel=raw.ch_names[stim[0]], verbose=False)
        markers = [(float(t[s - raw.first_samp]), str(v)) for s, _, v in ev]
    from ..acquisition import _LSL_TYPES, channel_scales
    from ..acquisition import channel_types as type_channels

    labels = list(raw.ch_names)
    declared = [t if t in _LSL_TYPES else "misc" for t in raw.get_channel_types()]
    units = ["V" if t in ("eeg", "eog", "ecg", "emg") else "n/a" for t in declared]  # MNE's values are SI
    where = clip_text(str(path), 300)
    types = type_channels(labels, declared, channel_types or {}, where, error=ImportError_,
                          field="amplifier.channel_types / --channel-types")
    scale, units = channel_scales(labels, types, units, where, error=ImportError_)
    scale = np.asarray(scale, np.float64)[:, None]
    # read in pieces into float32 (electrodes in microvolts): a long recording never lives as float64 in memory
    data = np.empty((len(labels), raw.n_times), np.float32)
    step = max(1, int(2**24 // max(len(labels), 1)))
    try:
        for a in range(0, raw.n_times, step):
            b = min(raw.n_times, a + step)
            data[:, a:b] = raw.get_data(start=a, stop=b) * scale
    except Exception as exc:  # a data file shorter than its header says, unreadable bytes
        raise RecordingError(f"{path}: MNE cannot read its samples ({type(exc).__name__}: "
                             f"{clip_text(str(exc), 200)}): a damaged or truncated file") from None
    rec = Recording(data, t, sf, labels, markers, str(path), types, units)
    return _pick_channels(rec, channels)


def _format_of(path: str | Path, fmt: Optional[str]) -> str:
    return fmt or {".xdf": "xdf", ".csv": "csv"}.get(Path(path).suffix.lower(), "mne")


def read_recording(path: str | Path, fmt: Optional[str] = None, channels=None, eeg_stream=None,
                   marker_stream=None, channel_types: Optional[dict] = None,
                   protocol: Optional[Protocol] = None) -> Recording:
    """Read a recording, its channels typed and electrodes in µV, and decide whether it is usable
    (:func:`check_recording`): THE reader of recordings.

    ``import``, ``replay`` and ``export bids`` all read through here, so one file is accepted or refused
    with the same sentence everywhere: a damaged or truncated file, a missing EEG or marker stream, no
    samples, NaN/inf samples or timestamps, missing, empty or repeated channel names, EEG channel names
    other than the protocol's ``amplifier.channel_names`` (when ``protocol`` lists them), no markers.
    ``channel_types`` retypes channels (``amplifier.channel_types``, ``--channel-types``). Raises
    :class:`RecordingError` (one line naming the file).
    """
    path = Path(path)
    if not path.is_file():
        raise RecordingError(f"{path}: {'is not a regular file' if _exists(path) else 'file not found'}")
    fmt = fmt or {".xdf": "xdf", ".csv": "csv"}.get(path.suffix.lower(), "mne")
    if fmt == "xdf":
        rec = read_xdf(path, eeg_stream, marker_stream, channels, channel_types)
    elif fmt == "csv":
        rec = read_csv(path, channels, channel_types=channel_types)
    elif fmt == "mne":
        rec = read_mne(path, channels, channel_types)
    else:
        raise EegloopError(f"--format: must be xdf, mne or csv, got {short_repr(fmt)}")
    expect = list(protocol.amplifier.channel_names) if protocol is not None else None
    return check_recording(rec, expect_channels=expect or None)


def check_recording(rec: Recording, expect_channels: Optional[Sequence[str]] = None) -> Recording:
    """The one decision whether a recording read from a file is usable; returns it, or raises
    :class:`RecordingError` with one line naming the file and the first problem."""
    src = clip_text(rec.source, 300)
    data = np.asarray(rec.data)
    if data.ndim != 2 or data.shape[1] < 2 or len(rec.times) != data.shape[1]:
        raise RecordingError(f"{src}: the EEG stream has no samples" if data.ndim == 2 and data.shape[1] < 2 else
                             f"{src}: {len(rec.times)} timestamps for {data.shape[-1]} samples")
    if not (np.isfinite(rec.sfreq) and rec.sfreq > 0):
        raise RecordingError(f"{src}: no usable sampling rate ({rec.sfreq!r})")
    names = [str(c) for c in rec.ch_names]
    if len(names) != data.shape[0]:
        raise RecordingError(f"{src}: {len(names)} channel names for {data.shape[0]} channels")
    empty = [i for i, c in enumerate(names) if not c.strip()]
    if empty:
        raise RecordingError(f"{src}: channel {empty[0] + 1} has no name")
    dup = next((c for c, n in Counter(names).items() if n > 1), None)
    if dup is not None:
        raise RecordingError(f"{src}: channel name {short_repr(dup, 40)} appears twice")
    eeg = [names[i] for i in rec.eeg_idx]  # other channels (EOG, misc, ...) are kept, never decoded
    if expect_channels is not None and eeg != list(expect_channels):
        wrong = next((i for i, (a, b) in enumerate(zip(eeg, expect_channels)) if a != b), min(len(eeg), len(expect_channels)))
        raise RecordingError(f"{src}: EEG channels {_names(eeg)}, the protocol names {_names(list(expect_channels))} "
                             f"(amplifier.channel_names; first difference at channel {wrong + 1}); choose and order "
                             "them with --channels")
    _check_finite(rec)
    if not rec.markers:
        raise RecordingError(f"{src}: no markers")
    return rec


def _check_finite(rec: Recording) -> None:
    """Refuse NaN/inf samples or timestamps, in any format (training would die on them much later)."""
    bad_t = ~np.isfinite(rec.times)
    if bad_t.any():
        raise RecordingError(f"{rec.source}: {int(bad_t.sum())} non-finite timestamps (NaN/inf), first at sample "
                           f"{int(np.flatnonzero(bad_t)[0])}")
    bad = ~np.isfinite(rec.data)
    if bad.any():
        ch = int(np.flatnonzero(bad.any(axis=1))[0])
        first = int(np.flatnonzero(bad[ch])[0])
        raise RecordingError(f"{rec.source}: {int(bad.sum())} non-finite samples (NaN/inf), first in channel "
                           f"{short_repr(rec.ch_names[ch], 40)} at sample {first}; clean or interpolate them first")


def _marker_class(value: str, events: dict[str, str]) -> Optional[str]:
    """Class of a marker value, '' for markers that are not stimuli (``ignore`` among them), None if unknown."""
    if value in events:
        return "" if events[value] == IGNORE else events[value]
    try:
        m = json.loads(value)
        if isinstance(m, dict) and "event" in m:
            return str(m.get("class", "")) if m["event"] == "stim_on" else ""
    except (ValueError, TypeError):
        pass
    return None


def cut_epochs(rec: Recording, protocol: Protocol, events: dict[str, str], run: int, block_offset: int = 0,
               check_rate: bool = True, trial_offset: int = 0) -> tuple[list[BlockRecord], int]:
    """Cut epochs around mapped markers exactly as the recorder does; returns (blocks, n_blocks).

    Each stretch of ``paradigm.block_s`` seconds is a block (:class:`~eegloop.types.BlockRecord`). The
    window is :func:`~eegloop.recorder.epocher.epoch_window` and the integrity rule
    :func:`~eegloop.recorder.epocher.check_epoch`, shared with the recorder: an epoch over a gap or a clock
    reset, or cut off by the file's edge, is a rejected epoch with its reason, never a valid one.
    """
    from ..epocher import check_epoch, check_onset, epoch_window

    amp, p = protocol.amplifier, protocol.paradigm
    src = rec.source
    if rec.data.shape[1] < 2:
        raise ImportError_(f"{src}: the EEG stream has no samples")
    if check_rate and abs(rec.sfreq - amp.sfreq) > 0.01 * amp.sfreq:
        raise ImportError_(f"{src}: sampled at {rec.sfreq:g} Hz, the protocol expects {amp.sfreq:g} Hz "
                           "(amplifier.sfreq); use a protocol for this recording")
    eeg = rec.eeg_idx  # only EEG is cut and decoded; the other channels stay with the recording
    if len(eeg) != amp.channels:
        others = [f"{n} ({t})" for n, t in zip(rec.ch_names, rec.ch_types) if t != "eeg"]
        raise ImportError_(f"{src}: {len(eeg)} EEG channels ({_names(rec.eeg_names)})"
                           + (f" besides {_names(others)}" if others else "")
                           + f", the protocol expects {amp.channels} (amplifier.channels); choose them with "
                           "--channels, or type the others with --channel-types (e.g. 'Right AUX=misc')")
    if not rec.markers:
        raise ImportError_(f"{src}: no markers")
    long = next((c for c in (_marker_class(v, events) for _, v in rec.markers) if c and len(c) > _MAX_CLASS_NAME),
                None)
    if long is not None:
        raise ImportError_(f"{src}: class {short_repr(long, 40)} from a marker is longer than {_MAX_CLASS_NAME} "
                           "characters")
    unknown = Counter(v for _, v in rec.markers if _marker_class(v, events) is None)
    if unknown:
        known = _names(list(events)) if events else "none given"
        listed = sorted(unknown.items(), key=lambda kv: (-kv[1], kv[0]))
        raise ImportError_(f"{src}: unknown marker value{'s' if len(unknown) > 1 else ''} "
                           + ", ".join(f"{short_repr(u, 40)} ({n}x)" for u, n in listed[:8])
                           + (f" and {len(listed) - 8} more" if len(listed) > 8 else "")
                           + f" (events map has: {known}); map them with --events VALUE=CLASS,..., "
                           "or VALUE=ignore for markers that are not stimuli")
    sf = rec.sfreq
    win = epoch_window(protocol.epochs, sf)
    t = rec.times
    t0 = t[0]
    blocks: dict[int, BlockRecord] = {}
    trial = trial_offset
    offset = protocol.timing.static_offset_ms / 1000  # the display's marker-to-photon delay
    for mt, value in rec.markers:
        cls = _marker_class(value, events)
        block = block_offset + int((mt - t0) // p.block_s) + 1
        br = blocks.setdefault(block, BlockRecord(run=run, block=block, ended=True))
        payload = {"event": "stim_on" if cls else "marker", "value": value, "run": run, "block": block,
                   **({"class": cls} if cls else {})}
        br.events.append((payload, float(mt)))
        if not cls:
            continue
        trial += 1
        payload["trial"] = trial
        on = mt + offset
        i = int(np.searchsorted(t, on))
        if i > 0 and (i == len(t) or abs(t[i - 1] - on) <= abs(t[i] - on)):
            i -= 1
        a, b = i + win.start, i + win.stop
        if a < 0 or b > len(t):
            br.rejected.append(RejectedEpoch(cls, run, block, "edge", trial, float(mt),
                                             "the recording starts or ends inside the epoch window"))
            continue
        x = rec.data[eeg, a:b]
        problem = check_onset(t[i], on, sf) or check_epoch(x, t[a:b], sf)
        if problem is not None:
            br.rejected.append(RejectedEpoch(cls, run, block, problem[0], trial, float(on), problem[1]))
            continue
        br.epochs.append(Epoch(data=x, label=cls, sfreq=sf, tmin=win.tmin,
                               channel_names=list(rec.eeg_names), run=run, block=block, trial=trial, onset_lsl=on))
    out = [blocks[k] for k in sorted(blocks)]
    rejected = Counter(r.reason for br in out for r in br.rejected)
    if rejected:
        logger.warning("%s: %s epochs rejected", src, ", ".join(f"{n} {why}" for why, n in rejected.items()))
    if not any(br.epochs for br in out):
        e = protocol.epochs
        raise ImportError_(f"{src}: no complete epoch could be cut ({len(rec.markers)} markers, "
                           f"{rec.duration:.1f} s of signal, window {e.tmin}..{e.tmax} s + {e.margin_s} s margins"
                           + (f"; rejected: {', '.join(f'{n} {w}' for w, n in rejected.items())}" if rejected else "")
                           + ")")
    n_blocks = int((t[-1] - t0) // p.block_s) + 1
    return out, n_blocks


@dataclass
class PreparedImport:
    """Files read, checked and cut, not yet written (:func:`prepare_import`, then :func:`store_import`)."""

    subject: str
    protocol: Protocol
    runs: list  # [(run index, run row fields, [BlockRecord])]
    files: list  # [(absolute path, sha256, size)]
    events: dict
    info: dict = field(default_factory=dict)  # merged into the session's info (e.g. a dataset's official split)

    @property
    def n_epochs(self) -> int:
        return sum(len(br.epochs) for _, _, blocks in self.runs for br in blocks)

    @property
    def ignored(self) -> Counter:
        """Marker value -> how many markers the events map sent to ``ignore``."""
        return Counter(ev.get("value") for _, _, blocks in self.runs for br in blocks for ev, _ in br.events
                       if ev.get("event") == "marker" and self.events.get(ev.get("value")) == IGNORE)


def _digests(files: Sequence[str | Path]) -> list[tuple[str, str, int]]:
    out, seen = [], {}
    for f in files:
        path = Path(f)
        if not path.is_file():
            raise ImportError_(f"{path}: file not found")
        digest, size = file_sha256(path), path.stat().st_size
        if digest in seen:
            raise ImportError_(f"{path}: the same file as {seen[digest]} (identical content) is given twice")
        seen[digest] = path
        out.append((str(path.resolve()), digest, size))
    return out


def prepare_import(subject: str, protocol: Protocol, files: Sequence[str | Path], fmt: Optional[str] = None,
                   events: Optional[dict] = None, channels: Optional[Sequence[str]] = None,
                   eeg_stream: Optional[str] = None, marker_stream: Optional[str] = None,
                   channel_types: Optional[dict] = None) -> PreparedImport:
    """Read, check and cut every file (one run per file); nothing is written.

    Channel types: the file's own (XDF descriptions, MNE), then the protocol's ``amplifier.channel_types``, then
    ``channel_types`` (``--channel-types``); only EEG channels are cut into epochs.
    """
    from ...database import check_subject_code

    check_subject_code(subject)
    events = dict(events or {})
    sources = _digests(files)
    runs = []
    block_offset = trial_offset = 0
    retype = {**protocol.amplifier.channel_types, **(channel_types or {})}
    for run, f in enumerate(files, start=1):
        rec = read_recording(f, fmt, channels, eeg_stream, marker_stream, retype, protocol=protocol)
        blocks, n_blocks = cut_epochs(rec, protocol, events, run, block_offset, trial_offset=trial_offset)
        fields = dict(status="imported", samples_received=int(rec.data.shape[1]),
                      samples_expected=int(round(rec.duration * rec.sfreq)) + 1, lost_samples=None,
                      info={"source": str(Path(f).resolve()), "sfreq": rec.sfreq, "channels": rec.ch_names,
                            "ch_types": rec.ch_types, "units": rec.units, "format": _format_of(f, fmt),
                            "eeg_stream": eeg_stream, "marker_stream": marker_stream})
        runs.append((run, fields, blocks))
        block_offset += n_blocks
        trial_offset = max([ev.get("trial") or 0 for br in blocks for ev, _ in br.events] + [trial_offset])
    return PreparedImport(subject, protocol, runs, sources, events)


def store_import(db, prepared: PreparedImport, force: bool = False) -> int:
    """Write a prepared import as one session in ONE transaction; returns the session id.

    A file already imported (same bytes) is refused unless ``force``: two copies of one recording
    would fall into different folds and inflate every score.
    """
    if not force:
        for path, digest, _ in prepared.files:
            prior = db.find_source_file(digest)
            if prior is not None:
                raise ImportError_(f"{path}: already imported as session {prior[0]} (identical content, from "
                                   f"{short_repr(prior[1], 120)}); a second copy would inflate cross-validated "
                                   "scores; use --force to import it anyway")
    sid = db.import_session(prepared.subject, prepared.protocol, prepared.runs, files=prepared.files,
                            info={"files": [f[0] for f in prepared.files], "events": prepared.events,
                                  **prepared.info})
    logger.info("imported %d files as session %d (%d epochs)", len(prepared.files), sid, prepared.n_epochs)
    return sid


def import_recordings(db, subject: str, protocol: Protocol, files: Sequence[str | Path], fmt: Optional[str] = None,
                      events: Optional[dict] = None, channels: Optional[Sequence[str]] = None,
                      eeg_stream: Optional[str] = None, marker_stream: Optional[str] = None,
                      force: bool = False, channel_types: Optional[dict] = None) -> int:
    """Import ``files`` as one session of ``subject`` (one run per file); returns the session id.

    All files are read and cut first (:func:`prepare_import`), then the session is written in ONE
    transaction (:func:`store_import`; blocks stored by the same function the recorder uses): a bad
    file, or a failure while writing, leaves the database as it was.
    """
    return store_import(db, prepare_import(subject, protocol, files, fmt, events, channels, eeg_stream,
                                           marker_stream, channel_types), force=force)


def _load_pth_safely(path: Path):
    """A torch file read with torch's weights-only unpickler: tensors and plain containers, numbers and strings
    only. Nothing in a data file is ever executed: a file that needs anything else (any class, any function
    -- the way a malicious pickle runs code) is refused with a one-line :class:`ImportError_`."""
    import pickle

    import torch

    try:
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError, KeyError, AttributeError,
            TypeError, ImportError, IndexError, UnicodeDecodeError, MemoryError) as exc:
        if isinstance(exc, pickle.UnpicklingError):
            # torch's message is many lines of advice on re-enabling full unpickling: never done here
            import re

            glob = re.search(r"(?:Unsupported global: GLOBAL|unsupported GLOBAL) (\S+)", str(exc))
            if glob:
                why = (f"it holds more than tensors, lists, dicts, numbers and strings: it calls "
                       f"{glob.group(1)[:80]}, and eegloop never runs code from a data file")
            else:
                first = next((ln.strip() for ln in str(exc).splitlines() if "Unsupported" in ln), "")
                why = f"refused by the safe loader: {first[:120] or 'not a torch file'}"
        else:
            first = (str(exc).strip().splitlines() or [""])[0]
            why = f"{type(exc).__name__}: {first[:160]}"
        raise ImportError_(f"{path}: not a readable EEG-ImageNet .pth file ({why})") from None


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
    from ...types import EpochSet

    path = Path(path)
    d = _load_pth_safely(path)
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
        s = _load_pth_safely(Path(splits))
        if not isinstance(s, dict):
            raise ImportError_(f"{splits}: expected a dict with 'splits'")
        keep = {i: k for k, i in enumerate(j for j, x in enumerate(d["dataset"])
                                           if subject is None or int(x["subject"]) == subject)}
        for f in s.get("splits", []):
            folds.append({k: [keep[int(i)] for i in v if int(i) in keep] for k, v in f.items()})
    return es, folds


def locate_images(es, images_dir: str | Path, extensions=None):
    """Find the stimulus file of every epoch's image name under ``images_dir`` (EEG-ImageNet, say).

    EEG-ImageNet names its images like ``n02106662_13178``; ImageNet keeps them as
    ``<synset>/n02106662_13178.JPEG`` (or in one folder): any depth, any image suffix, matched on the
    file's stem, with the suffixes a stimulus folder may hold (``stimuli.extensions``, the default when
    ``extensions`` is None). Every image must be found — a teacher fitted on part of the stimulus set would be
    silently different — so one missing name is an error naming it and the count.

    Returns
    -------
    stimuli : StimulusSet
        One entry per distinct image (path, class id from the epochs' labels, sha256), for the database.
    es : EpochSet
        A copy whose ``images`` are the files' names, as the database matches them.
    """
    from ...protocol import StimuliConfig
    from ...stimuli import Stimulus, StimulusSet, file_sha256

    suffixes = tuple(s.lower() for s in (extensions or StimuliConfig().extensions))
    root = Path(images_dir)
    if not root.is_dir():
        raise ImportError_(f"--images: {images_dir} is not a folder")
    wanted = {str(n) for n in es.images}
    found: dict[str, Path] = {}
    for f in sorted(root.rglob("*")):
        if f.suffix.lower() in suffixes and f.stem in wanted and f.stem not in found and f.is_file():
            found[f.stem] = f
    missing = sorted(wanted - set(found))
    if missing:
        raise ImportError_(f"--images: {len(missing)} of {len(wanted)} images not found under {images_dir} "
                           f"(first: {missing[0][:80]!r}; looked for <name>{{{','.join(suffixes)}}} "
                           "at any depth)")
    label_of = {}
    for name, label in zip(es.images, es.labels):
        if label_of.setdefault(str(name), str(label)) != str(label):
            raise ImportError_(f"image {str(name)[:80]!r} is labelled both {label_of[str(name)]!r} and {label!r}")
    stim = StimulusSet(dict(es.classes), tuple(Stimulus(found[n].resolve(), label_of[n], file_sha256(found[n]))
                                               for n in sorted(found)), root.resolve())
    out = es.subset(np.arange(len(es)))
    out.images = np.array([found[str(n)].name for n in es.images])
    return stim, out


def import_epochset(db, subject: str, protocol: Protocol, es, source: str | Sequence[str] = "", force: bool = False,
                    info: Optional[dict] = None) -> int:
    """Store an :class:`~eegloop.types.EpochSet` read from a file (e.g. EEG-ImageNet, THINGS-EEG2) as an imported
    session, in one transaction.

    Parameters
    ----------
    source : str or list of str
        The file (or files) the epochs came from: their content hashes are kept, so the same bytes are not
        imported twice (unless ``force``).
    info : dict, optional
        Merged into the session's info (e.g. ``{"format": "things-eeg2", "zero_shot_test_classes": [...]}``).
    """
    from ...database import check_subject_code

    check_subject_code(subject)
    sources = [source] if isinstance(source, (str, Path)) else list(source)
    files = _digests([f for f in sources if f and Path(f).is_file()])
    shown = str(source) if isinstance(source, (str, Path)) else [str(f) for f in sources]
    runs, trial = [], 0
    for run in np.unique(es.runs):
        in_run = es.runs == run
        blocks = []
        for block in np.unique(es.blocks[in_run]):
            idx = np.flatnonzero(in_run & (es.blocks == block))
            br = BlockRecord(run=int(run), block=int(block), ended=True)
            for i in idx:
                trial += 1
                onset = float(es.onsets[i]) if np.isfinite(es.onsets[i]) else None  # the file's own times, if any
                br.events.append(({"event": "stim_on", "class": str(es.labels[i]), "image": str(es.images[i]),
                                   "trial": trial}, float(trial) if onset is None else onset))
                br.epochs.append(Epoch(data=es.data[i], label=str(es.labels[i]), sfreq=es.sfreq, tmin=es.tmin,
                                       channel_names=list(es.channel_names), run=int(run), block=int(block),
                                       trial=trial, onset_lsl=onset))
            blocks.append(br)
        runs.append((int(run), dict(status="imported", info={"source": shown}), blocks))
    return store_import(db, PreparedImport(subject, protocol, runs, files, {}, dict(info or {})), force=force)


# -- THINGS-EEG2 ---------------------------------------------------------------------------------
THINGS_EEG2_FILES = {"training": "preprocessed_eeg_training.npy", "test": "preprocessed_eeg_test.npy"}
THINGS_EEG2_METADATA = "image_metadata.npy"
THINGS_EEG2_IMAGE_FOLDERS = {"training": "training_images", "test": "test_images"}
THINGS_EEG2_TEST_RUN = 11  # the test file's repetitions are runs 11.., apart from the training file's 1..
_THINGS_TEST_GROUPS = 4  # the test file's repetitions are split into this many equal, consecutive runs
_THINGS_EEG_KEYS = ("preprocessed_eeg_data", "ch_names", "times")
_THINGS_META_KEYS = {"training": ("train_img_concepts", "train_img_files"), "test": ("test_img_concepts",
                                                                                    "test_img_files")}


def _things_split_of(p: Path) -> Optional[str]:
    low = p.name.lower()
    test, train = "test" in low, "train" in low
    return "test" if test and not train else "training" if train and not test else None


def things_eeg2_files(path_or_folder: str | Path | Sequence[str | Path],
                      metadata: str | Path | None = None) -> tuple[dict[str, Path], Path]:
    """The THINGS-EEG2 files to read: ``({"training": path, "test": path}, metadata path)``.

    ``path_or_folder`` is a subject folder (``sub-01/``) holding ``preprocessed_eeg_training.npy`` and/or
    ``preprocessed_eeg_test.npy``, or the files themselves (told apart by ``train``/``test`` in their names;
    an ``image_metadata.npy`` among them is taken as the metadata). Without ``metadata``,
    ``image_metadata.npy`` is looked for beside the EEG files, then in the folder above them.

    Raises
    ------
    ImportError_
        One line: nothing to read, a file missing, two files of one kind, a file that is neither the
        training nor the test file, no metadata found.
    """
    given = [path_or_folder] if isinstance(path_or_folder, (str, Path)) else list(path_or_folder)
    paths = [Path(p) for p in given]
    if not paths:
        raise ImportError_("THINGS-EEG2: give a subject folder (e.g. sub-01/) or its preprocessed_eeg_*.npy files")
    eeg: dict[str, Path] = {}
    meta = Path(metadata) if metadata is not None else None
    wanted = " and ".join(THINGS_EEG2_FILES.values())
    if len(paths) == 1 and paths[0].is_dir():
        folder = paths[0]
        eeg = {k: folder / f for k, f in THINGS_EEG2_FILES.items() if (folder / f).is_file()}
        if not eeg:
            raise ImportError_(f"{clip_text(str(folder), 300)}: no {wanted} in this folder (give a THINGS-EEG2 "
                               "subject folder, e.g. sub-01/, or the files)")
    else:
        for p in paths:
            name = clip_text(str(p), 300)
            if p.is_dir():
                raise ImportError_(f"{name}: a folder; give one THINGS-EEG2 subject folder, or its .npy files")
            if not p.is_file():
                raise ImportError_(f"{name}: {'is not a regular file' if _exists(p) else 'file not found'}")
            if p.name == THINGS_EEG2_METADATA:
                if meta is not None and meta.resolve() != p.resolve():
                    raise ImportError_(f"{name}: a second image metadata file (--metadata gives {meta})")
                meta = p
                continue
            split = _things_split_of(p)
            if split is None:
                raise ImportError_(f"{name}: neither the training nor the test file (THINGS-EEG2 names them {wanted}: "
                                   "the name must say 'training' or 'test')")
            if split in eeg:
                raise ImportError_(f"{name}: a second {split} file (the first: {clip_text(str(eeg[split]), 200)})")
            eeg[split] = p
        if not eeg:
            raise ImportError_(f"THINGS-EEG2: no EEG file given, only the metadata (give {wanted})")
    if meta is None:
        folders = list(dict.fromkeys(p.parent for p in eeg.values()))
        look = list(dict.fromkeys(folders + [f.parent for f in folders]))
        meta = next((d / THINGS_EEG2_METADATA for d in look if (d / THINGS_EEG2_METADATA).is_file()), None)
        if meta is None:
            raise ImportError_(f"{clip_text(str(folders[0]), 300)}: no {THINGS_EEG2_METADATA} here or in the folder "
                               "above (the dataset's list of the image shown in each trial); give it with "
                               "--metadata FILE")
    return eeg, meta


def _what(x) -> str:
    if isinstance(x, np.ndarray):
        return f"an array of shape {x.shape} ({x.dtype})"
    return f"{type(x).__name__} {short_repr(x, 60)}"


def _load_dict(path: Path, what: str, keys: Sequence[str]) -> dict:
    from ..._safe_pickle import load_npy

    d = load_npy(path, what, ImportError_, unwrap=True)
    name = clip_text(str(path), 300)
    if not isinstance(d, dict):
        raise ImportError_(f"{name}: not a {what}: expected a dict saved with np.save (keys {', '.join(keys)}), "
                           f"got {_what(d)}")
    missing = [k for k in keys if k not in d]
    if missing:
        raise ImportError_(f"{name}: not a {what}: no {', '.join(repr(k) for k in missing)} "
                           f"(its keys: {_names([short_repr(k, 40) for k in d])})")
    return d


def _str_list(value, name: str, key: str, most: int, file_name: bool = False) -> list[str]:
    """A list of non-empty, printable strings of at most ``most`` characters (file names: no folder parts)."""
    if isinstance(value, np.ndarray) and value.ndim == 1 and value.dtype.kind in "UO":
        value = value.tolist()
    if not isinstance(value, (list, tuple)):
        raise ImportError_(f"{name}: {key!r} must be a list of strings, got {_what(value)}")
    out = []
    for i, v in enumerate(value):
        if not isinstance(v, str) or not v or len(v) > most or not v.isprintable():
            why = ("not a string" if not isinstance(v, str) else "empty" if not v
                   else f"longer than {most} characters" if len(v) > most else "has control characters")
            raise ImportError_(f"{name}: {key!r} entry {i} is {why}: {short_repr(v, 60)}")
        if file_name and (v in (".", "..") or "/" in v or "\\" in v):
            raise ImportError_(f"{name}: {key!r} entry {i} is not a plain file or folder name: {short_repr(v, 60)}")
        out.append(str(v))
    return out


def _read_things_metadata(path: Path) -> dict[str, tuple[list[str], list[str]]]:
    """``{"training": (concepts, files), "test": (concepts, files)}`` of THINGS-EEG2's ``image_metadata.npy``."""
    d = _load_dict(path, "THINGS-EEG2 image metadata file", [k for ks in _THINGS_META_KEYS.values() for k in ks])
    name = clip_text(str(path), 300)
    out = {}
    for split, (ck, fk) in _THINGS_META_KEYS.items():
        concepts = _str_list(d[ck], name, ck, _MAX_CLASS_NAME, file_name=True)
        files = _str_list(d[fk], name, fk, 255, file_name=True)
        if len(concepts) != len(files):
            raise ImportError_(f"{name}: {len(concepts)} {ck!r} but {len(files)} {fk!r} (one of each per image)")
        out[split] = (concepts, files)
    return out


def _read_things_eeg(path: Path) -> tuple[np.ndarray, list[str], np.ndarray]:
    """(data (images, repetitions, channels, times), channel names, times) of a preprocessed THINGS-EEG2 file."""
    d = _load_dict(path, "THINGS-EEG2 preprocessed EEG file", _THINGS_EEG_KEYS)
    name = clip_text(str(path), 300)
    x = d["preprocessed_eeg_data"]
    if not isinstance(x, np.ndarray) or x.dtype.kind not in "fiu" or x.ndim != 4:
        raise ImportError_(f"{name}: 'preprocessed_eeg_data' must be a numeric array of shape (images, repetitions, "
                           f"channels, times), got {_what(x)}")
    if 0 in x.shape:
        raise ImportError_(f"{name}: 'preprocessed_eeg_data' holds no data (shape {x.shape})")
    ch = _str_list(d["ch_names"], name, "ch_names", 64)
    if len(set(ch)) != len(ch):
        dup = next(c for c in ch if ch.count(c) > 1)
        raise ImportError_(f"{name}: channel {short_repr(dup, 40)} appears twice in 'ch_names'")
    t = d["times"]
    if not isinstance(t, np.ndarray) or t.dtype.kind not in "fiu" or t.ndim != 1 or len(t) < 2:
        raise ImportError_(f"{name}: 'times' must be a 1-D numeric array of at least 2 times, got {_what(t)}")
    t = t.astype(np.float64)
    steps = np.diff(t)
    if not np.isfinite(t).all() or not steps.min() > 0 or np.ptp(steps) > 1e-3 * steps.mean():
        raise ImportError_(f"{name}: 'times' are not regular increasing times (first {t[0]:g}, step "
                           f"{steps[0]:g}..{steps.max():g} s)")
    if x.shape[2] != len(ch) or x.shape[3] != len(t):
        raise ImportError_(f"{name}: 'preprocessed_eeg_data' has shape {x.shape}: expected (images, repetitions, "
                           f"{len(ch)} channels as in 'ch_names', {len(t)} times as in 'times')")
    for a in range(0, x.shape[0], 512):  # in chunks: a mask of the whole training file would be 100 M booleans
        bad = ~np.isfinite(x[a:a + 512])
        if bad.any():
            i, r, c, _ = np.unravel_index(int(np.flatnonzero(bad)[0]), bad.shape)
            raise ImportError_(f"{name}: non-finite values (NaN/inf) in 'preprocessed_eeg_data', first at image "
                               f"{a + i}, repetition {r}, channel {short_repr(ch[c], 40)}")
    return x, ch, t


def _things_display_name(concept: str) -> str:
    """``00001_aardvark`` -> ``aardvark``; ``00146_baseball_bat`` -> ``baseball bat``."""
    import re

    return re.sub(r"^\d+_", "", concept).replace("_", " ").strip() or concept


def read_things_eeg2(path_or_folder: str | Path | Sequence[str | Path], metadata: str | Path | None = None,
                     max_images: Optional[int] = None, protocol: Optional[Protocol] = None):
    """One subject's preprocessed THINGS-EEG2 files (Gifford et al. 2022) as an :class:`~eegloop.types.EpochSet`.

    The files (``np.save`` of dicts, read with :func:`eegloop._safe_pickle.load_npy`: nothing in them is ever
    executed) are ``preprocessed_eeg_training.npy`` and ``preprocessed_eeg_test.npy``, each with
    ``preprocessed_eeg_data`` (images, repetitions, channels, times), ``ch_names`` and ``times``, and the
    dataset's ``image_metadata.npy``, whose ``train_img_concepts``/``train_img_files`` and
    ``test_img_concepts``/``test_img_files`` name the image of each row of the matching EEG file.

    Groups: the preprocessed files keep no recording order (trials are sorted by image, repetitions
    stacked), so the recording's runs and blocks cannot be rebuilt. Each training repetition becomes its own
    run (runs 1..4 for the file's 4 repetitions, one block each: block = run), and the test file's
    repetitions are split into 4 equal, consecutive groups, runs 11..14 (block = run), so the training and
    test files never share a run or a block. These groups are repetitions, not recording blocks: a fold that
    leaves one out still trains on the same images and the same recording days.

    Parameters
    ----------
    path_or_folder : str, Path or list of them
        A subject folder (``sub-01/``) or the EEG files (see :func:`things_eeg2_files`).
    metadata : str or Path, optional
        ``image_metadata.npy``; by default looked for beside the EEG files, then in the folder above.
    max_images : int, optional
        Keep the first ``max_images`` images of each file (all their repetitions); default: all.
    protocol : Protocol, optional
        When given, the files must fit it: ``amplifier.channels`` and ``amplifier.sfreq`` (within 1 %), and
        the analysis window ``epochs.tmin``..``epochs.tmax`` inside the files' epochs.

    Returns
    -------
    epochs : EpochSet
        Labels are the concept ids (``00001_aardvark``), class names the concepts (``aardvark``), ``images``
        the image file names (``aardvark_01b.jpg``), ``sfreq``/``tmin`` from ``times``, channel names from
        ``ch_names``, runs and blocks as above.
    test_classes : list of str
        The test file's concept ids in file order (THINGS-EEG2's zero-shot split: none of them is a
        training concept); empty without the test file.

    Raises
    ------
    ImportError_
        One line naming the file and the problem: unreadable, refused (a pickle that would run code), wrong
        keys or shapes, non-finite values, EEG files that disagree on channels or times, metadata that does
        not list the files' images, a protocol the files do not fit.
    """
    from ...types import EpochSet

    if max_images is not None and int(max_images) < 1:
        raise ImportError_(f"--max-images: must be at least 1, got {max_images}")
    eeg_files, meta_path = things_eeg2_files(path_or_folder, metadata)
    meta = _read_things_metadata(meta_path)
    meta_name = clip_text(str(meta_path), 200)
    parts = []  # (split, file, data, concepts, image files)
    ch_names: list = []
    times = np.zeros(0)
    first = ""
    for split in ("training", "test"):
        if split not in eeg_files:
            continue
        path = eeg_files[split]
        name = clip_text(str(path), 300)
        x, ch, t = _read_things_eeg(path)
        concepts, files = meta[split]
        key = _THINGS_META_KEYS[split][0]
        if x.shape[0] != len(concepts):
            raise ImportError_(f"{name}: {x.shape[0]} images, but {meta_name} lists {len(concepts)} {split} images "
                               f"({key!r}): not this file's metadata")
        if split == "training" and x.shape[1] >= THINGS_EEG2_TEST_RUN:
            raise ImportError_(f"{name}: {x.shape[1]} repetitions; at most {THINGS_EEG2_TEST_RUN - 1} fit before the "
                               f"test file's runs ({THINGS_EEG2_TEST_RUN}..)")
        if parts:
            if ch != ch_names:
                raise ImportError_(f"{name}: channels ({_names(ch)}) differ from those of {first} ({_names(ch_names)})")
            if len(t) != len(times) or not np.allclose(t, times, rtol=0, atol=1e-6):
                raise ImportError_(f"{name}: 'times' ({t[0]:g}..{t[-1]:g} s, {len(t)} samples) differ from those of "
                                   f"{first} ({times[0]:g}..{times[-1]:g} s, {len(times)} samples)")
        else:
            ch_names, times, first = ch, t, name
        n = x.shape[0] if max_images is None else min(int(max_images), x.shape[0])
        parts.append((split, x[:n], concepts[:n], files[:n]))
    sfreq = float((len(times) - 1) / (times[-1] - times[0]))
    sfreq = float(np.round(sfreq, 6))  # 1 / 0.01000000000000001 -> 100.0
    tmin = float(times[0])
    if protocol is not None:
        amp, e = protocol.amplifier, protocol.epochs
        src = clip_text(str(next(iter(eeg_files.values()))), 300)
        if len(ch_names) != amp.channels:
            raise ImportError_(f"{src}: {len(ch_names)} channels ({_names(ch_names)}), the protocol expects "
                               f"{amp.channels} (amplifier.channels); use protocols/things-eeg2.yaml")
        if abs(sfreq - amp.sfreq) > 0.01 * amp.sfreq:
            raise ImportError_(f"{src}: sampled at {sfreq:g} Hz, the protocol expects {amp.sfreq:g} Hz "
                               "(amplifier.sfreq); use protocols/things-eeg2.yaml")
        a = int(round((e.tmin - tmin) * sfreq))
        if a < 0 or a + int(round((e.tmax - e.tmin) * sfreq)) > len(times):
            raise ImportError_(f"{src}: the protocol's analysis window {e.tmin:g}..{e.tmax:g} s (epochs.tmin, "
                               f"epochs.tmax) is not inside the file's epochs ({tmin:g}..{times[-1]:g} s); use "
                               "protocols/things-eeg2.yaml")
    total = sum(x.shape[0] * x.shape[1] for _, x, _, _ in parts)
    data = np.empty((total, len(ch_names), len(times)), np.float32)
    labels, images, runs = [], [], []
    k = 0
    for split, x, concepts, files in parts:
        reps = x.shape[1]
        if split == "training":
            groups = [[r] for r in range(reps)]
            first_run = 1
        else:
            groups = [g.tolist() for g in np.array_split(np.arange(reps), min(_THINGS_TEST_GROUPS, reps))]
            first_run = THINGS_EEG2_TEST_RUN
        for g, rep_ids in enumerate(groups):
            for r in rep_ids:
                n = x.shape[0]
                data[k:k + n] = x[:, r]
                k += n
                labels += concepts
                images += files
                runs += [first_run + g] * n
    del parts
    train_concepts = [lab for lab, r in zip(labels, runs) if r < THINGS_EEG2_TEST_RUN]
    test_classes = list(dict.fromkeys(lab for lab, r in zip(labels, runs) if r >= THINGS_EEG2_TEST_RUN))
    shared = set(train_concepts) & set(test_classes)
    if shared:
        logger.warning("THINGS-EEG2: %d test concepts are training concepts too (e.g. %s): not a zero-shot split",
                       len(shared), sorted(shared)[0])
    classes = {c: _things_display_name(c) for c in dict.fromkeys(labels)}
    runs_arr = np.array(runs, dtype=np.int64)
    es = EpochSet(data=data, labels=np.array(labels), sfreq=sfreq, tmin=tmin, channel_names=list(ch_names),
                  runs=runs_arr, blocks=runs_arr.copy(), sessions=np.zeros(len(labels), np.int64), classes=classes,
                  images=np.array(images))
    logger.info("THINGS-EEG2: %d epochs of %d classes from %s", len(es), len(classes),
                ", ".join(str(p) for p in eeg_files.values()))
    return es, test_classes


def locate_things_images(es, images_dir: str | Path):
    """Register the THINGS-EEG2 image of every epoch: ``<images_dir>/training_images/<concept>/<file>`` for the
    training file's epochs (runs below 11), ``<images_dir>/test_images/<concept>/<file>`` for the test file's.

    Every image must be there (a teacher fitted on part of the stimulus set would be silently different):
    one missing is an error naming it and the count.

    Returns
    -------
    stimuli : StimulusSet
        One entry per distinct image (path, concept id, sha256), class names from ``es.classes``.
    es : EpochSet
        The epochs, unchanged (their ``images`` already are the files' names, as the database matches them).
    """
    from ...stimuli import Stimulus, StimulusSet

    root = Path(images_dir)
    if not root.is_dir():
        raise ImportError_(f"--images: {clip_text(str(images_dir), 300)} is not a folder")
    wanted: dict[Path, str] = {}
    for label, image, run in zip(es.labels, es.images, es.runs):
        split = "test" if run >= THINGS_EEG2_TEST_RUN else "training"
        wanted.setdefault(Path(THINGS_EEG2_IMAGE_FOLDERS[split]) / str(label) / str(image), str(label))
    missing = [rel for rel in wanted if not (root / rel).is_file()]
    if missing:
        raise ImportError_(f"--images: {len(missing)} of {len(wanted)} images not found under "
                           f"{clip_text(str(images_dir), 200)} (first: {clip_text(missing[0].as_posix(), 160)}); give "
                           "the folder holding THINGS-EEG2's training_images/ and test_images/")
    stim = StimulusSet(dict(es.classes), tuple(Stimulus((root / rel).resolve(), label, file_sha256(root / rel))
                                               for rel, label in sorted(wanted.items())), root.resolve())
    return stim, es


@dataclass(frozen=True)
class SourceRun:
    """An imported run's continuous recording, re-read from its source file (for the BIDS export)."""

    vhdr: Path  # the recording as a BrainVision file (every channel, electrodes in µV, one marker per stimulus)
    ch_types: list  # per channel, MNE's names
    n_events: int


def source_as_brainvision(run_info: dict, events: Sequence[tuple[float, str, int]], out_vhdr: Path,
                          digests: Optional[set] = None, channel_types: Optional[dict] = None) -> SourceRun:
    """Re-read an imported run's source file as it was imported and write it as BrainVision.

    ``run_info`` is the run's stored info (the source path, its format, the channels kept and their types);
    ``events`` the run's stimulus events as (time on the file's clock, class, trial): each becomes a
    ``Stimulus`` marker ``stim_on/<class>/trial<n>`` at its nearest sample, as the recorder writes them.
    ``digests``: the sha256 the import recorded; a source whose content changed since is refused (its samples
    would not be the ones the epochs came from). Raises :class:`ImportError_` with one line.
    """
    from ..rawfile import BrainVisionWriter

    src = run_info.get("source")
    if not src:
        raise ImportError_("no source file recorded with the run (imported from a dataset's epochs, not a recording)")
    path = Path(src)
    if not path.is_file():
        raise ImportError_(f"its source file {clip_text(src, 200)} is not here any more")
    if digests is not None and file_sha256(path) not in digests:
        raise ImportError_(f"its source file {clip_text(src, 200)} changed since it was imported")
    names = run_info.get("channels") or None
    types = dict(zip(names, run_info["ch_types"])) if names and run_info.get("ch_types") else channel_types
    rec = read_recording(path, run_info.get("format"), names, run_info.get("eeg_stream"),
                         run_info.get("marker_stream"), types)
    w = BrainVisionWriter(out_vhdr, rec.ch_names, rec.sfreq, units=rec.units)
    try:
        w.write(rec.data)
        for t, cls, trial in events:
            i = int(np.clip(np.searchsorted(rec.times, t), 0, len(rec.times) - 1))
            if i > 0 and abs(rec.times[i - 1] - t) <= abs(rec.times[i] - t):
                i -= 1
            w.marker(i, f"stim_on/{cls}/trial{trial}")
    finally:
        w.close()
    return SourceRun(w.vhdr, list(rec.ch_types), len(events))
