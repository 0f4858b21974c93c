"""CSV recordings: a timestamp column, channel columns and a marker column."""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from ..._logging import logger
from ...errors import clip_text, short_repr
from .recording import Recording, RecordingError, listed_names, path_exists, pick_channels, typed_channels


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


def _read_text(path: Path, name: str) -> tuple[str, str]:
    """The header line and the rest of a CSV file, as text: a regular, readable file, a header line under
    4 MiB, no NUL bytes, UTF-8 (a byte-order mark dropped)."""
    try:
        if not path.is_file():  # a folder, a FIFO (which would block), nothing
            raise RecordingError(f"{name}: {'is not a regular file' if path_exists(path) else 'file not found'}")
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
    return head_text, text


def _columns(head_text: str, text: str, name: str, time_column: str,
             marker_column: Optional[str]) -> tuple[list[str], str, list[str]]:
    """(header, marker column, channel columns) of a CSV file's header line: named, distinct columns, at most
    4096, with the time column, a marker column and at least one channel."""
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
        raise RecordingError(f"{name}: no '{clip_text(time_column, 40)}' column (columns: {listed_names(header)})")
    marker_column = marker_column or next((h for h in header if h.lower().startswith("marker")), None)
    if marker_column is None:
        raise RecordingError(f"{name}: no marker column (a column named Marker...)")
    if marker_column not in header:
        raise RecordingError(f"{name}: no '{clip_text(marker_column, 40)}' column (columns: {listed_names(header)})")
    data_cols = [h for h in header if h not in (time_column, marker_column)]
    if not data_cols:
        raise RecordingError(f"{name}: no channel columns besides '{clip_text(time_column, 40)}' and "
                           f"'{clip_text(marker_column, 40)}'")
    return header, marker_column, data_cols


def _numbers(text: str, header: list[str], name: str, time_column: str, marker_column: str) -> np.ndarray:
    """The CSV body as a (rows, columns) float64 array: numeric, not ragged, at least 2 rows, all finite."""
    import io
    import warnings

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
    bad = ~np.isfinite(arr)
    if bad.any():
        first = int(np.flatnonzero(bad)[0])  # in reading order
        col = first % bad.shape[1]
        rows = np.flatnonzero(bad[:, col])
        what = "timestamps" if header[col] == time_column else (
            "markers" if header[col] == marker_column else f"channel {clip_text(header[col], 40)}")
        raise RecordingError(f"{name}: {len(rows)} non-finite value{'s' if len(rows) > 1 else ''} (NaN/inf) in "
                           f"{what}, first at row {int(rows[0]) + 1}; clean or interpolate them first")
    return arr


def _sample_times(t_raw: np.ndarray, path: Path, name: str) -> np.ndarray:
    """The samples' times: increasing over a finite span, dejittered when the file's stamps jitter
    (:func:`_dejitter`), the file's own when dejittering fails."""
    import warnings

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
    return t


def read_csv(path: str | Path, channels: Optional[Sequence[str]] = None, time_column: str = "timestamps",
             marker_column: Optional[str] = None, channel_types: Optional[dict] = None) -> Recording:
    """CSV with a timestamp column, channel columns and a marker column (0 = no marker).

    Values are microvolts; every channel is EEG unless ``channel_types`` (``--channel-types``, the protocol's
    ``amplifier.channel_types``) says otherwise, e.g. ``{"Right AUX": "misc"}``.

    Any file gives a :class:`Recording` or an :class:`DataImportError` with one
    line naming the file: not UTF-8, NUL bytes, an empty or duplicate header,
    more than 4096 columns, ragged rows, non-numeric cells, NaN/inf values
    (column and row named), fewer than 2 rows, timestamps that do not increase.
    """
    path = Path(path)
    name = clip_text(str(path), 300)
    head_text, text = _read_text(path, name)
    header, marker_column, data_cols = _columns(head_text, text, name, time_column, marker_column)
    arr = _numbers(text, header, name, time_column, marker_column)
    del text
    t = _sample_times(arr[:, header.index(time_column)], path, name)
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
    _, types, units = typed_channels(data[:0], data_cols, [""] * n, [""] * n, channel_types, name)
    rec = Recording(data, t, sfreq, data_cols, markers, str(path), types, units)
    return pick_channels(rec, channels)
