"""XDF recordings (LabRecorder), read with pyxdf."""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from ...errors import clip_text, short_repr
from .recording import Recording, RecordingError, pick_channels, typed_channels


def _stream_name(s: dict) -> str:
    return s["info"]["name"][0]


def _stream_type(s: dict) -> str:
    return s["info"]["type"][0]


def _load_streams(path: Path) -> list:
    """Every stream of an XDF file, clocks synchronised, resets handled, timestamps dejittered; a file pyxdf
    cannot read, or reads only by skipping a damaged chunk, is refused."""
    import logging

    import pyxdf

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
    return streams


def _pick_streams(streams: list, path: Path, eeg: Optional[str], markers: Optional[str]) -> tuple[dict, dict]:
    """(EEG stream, marker stream): chosen by name or type, both with samples."""
    name, typ = _stream_name, _stream_type
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
    return es, mcand[0]


def _check_footers(path: Path, *streams: dict) -> None:
    """A stream's footer is written when the recording is closed: none, or fewer samples, is a cut file."""
    for st in streams:
        footer = (st.get("footer") or {}).get("info") or {}
        count = (footer.get("sample_count") or [None])[0]
        name = clip_text(_stream_name(st), 60)
        if not footer:
            raise RecordingError(f"{path}: stream '{name}' has no footer: a truncated XDF file "
                                 "(the recording was not closed)")
        if count is not None and str(count).strip().isdigit() and int(count) > len(st["time_stamps"]):
            raise RecordingError(f"{path}: stream '{name}' has {len(st['time_stamps'])} of the "
                                 f"{int(count)} samples its footer counts: a truncated XDF file")


def _first_value(c, key: str) -> str:
    v = c.get(key) if hasattr(c, "get") else None
    return str(v[0]) if v and v[0] is not None else ""


def _channel_description(es: dict, n: int) -> tuple[list, list, list]:
    """(labels, declared types, units) from the EEG stream's description; ``Ch1..`` and nothing declared when
    the description does not name every one of its ``n`` channels."""
    labels, declared, units = [], [], []
    try:
        ch = es["info"]["desc"][0]["channels"][0]["channel"]
        labels = [_first_value(c, "label") for c in ch]
        declared = [_first_value(c, "type") for c in ch]
        units = [_first_value(c, "unit") for c in ch]
    except (KeyError, IndexError, TypeError):
        pass
    if len(labels) != n or not all(labels):
        labels, declared, units = [f"Ch{i + 1}" for i in range(n)], [], []
    return labels, declared, units


def read_xdf(path: str | Path, eeg: Optional[str] = None, markers: Optional[str] = None,
             channels: Optional[Sequence[str]] = None, channel_types: Optional[dict] = None) -> Recording:
    """An XDF file (LabRecorder) via pyxdf, with its clock synchronisation and reset handling.

    ``eeg``/``markers`` select streams by name or type (types in any case; default: type EEG / the first
    string stream). Channel labels, types and units come from the stream's description, as live acquisition
    reads them: voltages (V, mV, µV, nV, MNE-LSL's powers of ten) are scaled to µV, an electrode in another unit
    is refused, ``channel_types`` retypes channels (``amplifier.channel_types``, ``--channel-types``).
    """
    path = Path(path)
    es, ms = _pick_streams(_load_streams(path), path, eeg, markers)
    _check_footers(path, es, ms)
    data = np.asarray(es["time_series"], dtype=np.float32).T
    n = data.shape[0]
    labels, declared, units = _channel_description(es, n)
    where = f"{clip_text(str(path), 300)}: EEG stream '{clip_text(_stream_name(es), 60)}'"
    data, types, units = typed_channels(data, labels, declared or [""] * n, units or [""] * n, channel_types, where)
    sfreq = float(es["info"]["nominal_srate"][0])
    mk = [(float(t), str(v[0])) for t, v in zip(ms["time_stamps"], ms["time_series"])]
    rec = Recording(data, np.asarray(es["time_stamps"], float), sfreq, labels, mk, str(path), types, units)
    return pick_channels(rec, channels)
