"""Cutting a continuous recording into epochs around its mapped markers, exactly as the recorder does."""
from __future__ import annotations

from collections import Counter

import numpy as np

from ..._logging import logger
from ...errors import short_repr
from ...protocol import Protocol
from ...types import BlockRecord, Epoch, RejectedEpoch
from .events import MAX_CLASS_NAME, marker_class
from .recording import DataImportError, Recording, listed_names


def _check_cuttable(rec: Recording, protocol: Protocol, events: dict[str, str], check_rate: bool) -> None:
    """Refuse, before cutting, a recording that cannot be cut for ``protocol``: no samples, another sampling
    rate (when ``check_rate``), another number of EEG channels, no markers, a class name too long, a marker
    value the events map does not know."""
    amp = protocol.amplifier
    src = rec.source
    if rec.data.shape[1] < 2:
        raise DataImportError(f"{src}: the EEG stream has no samples")
    if check_rate and abs(rec.sfreq - amp.sfreq) > 0.01 * amp.sfreq:
        raise DataImportError(f"{src}: sampled at {rec.sfreq:g} Hz, the protocol expects {amp.sfreq:g} Hz "
                              "(amplifier.sfreq); use a protocol for this recording")
    eeg = rec.eeg_idx  # only EEG is cut and decoded; the other channels stay with the recording
    if len(eeg) != amp.channels:
        others = [f"{n} ({t})" for n, t in zip(rec.ch_names, rec.ch_types) if t != "eeg"]
        raise DataImportError(f"{src}: {len(eeg)} EEG channels ({listed_names(rec.eeg_names)})"
                              + (f" besides {listed_names(others)}" if others else "")
                              + f", the protocol expects {amp.channels} (amplifier.channels); choose them with "
                              "--channels, or type the others with --channel-types (e.g. 'Right AUX=misc')")
    if not rec.markers:
        raise DataImportError(f"{src}: no markers")
    long = next((c for c in (marker_class(v, events) for _, v in rec.markers) if c and len(c) > MAX_CLASS_NAME),
                None)
    if long is not None:
        raise DataImportError(f"{src}: class {short_repr(long, 40)} from a marker is longer than {MAX_CLASS_NAME} "
                              "characters")
    unknown = Counter(v for _, v in rec.markers if marker_class(v, events) is None)
    if unknown:
        known = listed_names(list(events)) if events else "none given"
        listed = sorted(unknown.items(), key=lambda kv: (-kv[1], kv[0]))
        raise DataImportError(f"{src}: unknown marker value{'s' if len(unknown) > 1 else ''} "
                              + ", ".join(f"{short_repr(u, 40)} ({n}x)" for u, n in listed[:8])
                              + (f" and {len(listed) - 8} more" if len(listed) > 8 else "")
                              + f" (events map has: {known}); map them with --events VALUE=CLASS,..., "
                              "or VALUE=ignore for markers that are not stimuli")


def cut_epochs(rec: Recording, protocol: Protocol, events: dict[str, str], run: int, block_offset: int = 0,
               check_rate: bool = True, trial_offset: int = 0) -> tuple[list[BlockRecord], int]:
    """Cut epochs around mapped markers exactly as the recorder does; returns (blocks, n_blocks).

    Each stretch of ``paradigm.block_s`` seconds is a block (:class:`~eegloop.types.BlockRecord`). The
    window is :func:`~eegloop.recorder.epocher.epoch_window` and the integrity rule
    :func:`~eegloop.recorder.epocher.check_epoch`, shared with the recorder: an epoch over a gap or a clock
    reset, or cut off by the file's edge, is a rejected epoch with its reason, never a valid one.
    """
    from ..epocher import check_epoch, check_onset, epoch_window

    _check_cuttable(rec, protocol, events, check_rate)
    p = protocol.paradigm
    src = rec.source
    eeg = rec.eeg_idx  # only EEG is cut and decoded
    sf = rec.sfreq
    win = epoch_window(protocol.epochs, sf)
    t = rec.times
    t0 = t[0]
    blocks: dict[int, BlockRecord] = {}
    trial = trial_offset
    offset = protocol.timing.static_offset_ms / 1000  # the display's marker-to-photon delay
    for mt, value in rec.markers:
        cls = marker_class(value, events)
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
        raise DataImportError(f"{src}: no complete epoch could be cut ({len(rec.markers)} markers, "
                              f"{rec.duration:.1f} s of signal, window {e.tmin}..{e.tmax} s + {e.margin_s} s margins"
                              + (f"; rejected: {', '.join(f'{n} {w}' for w, n in rejected.items())}"
                                 if rejected else "")
                              + ")")
    n_blocks = int((t[-1] - t0) // p.block_s) + 1
    return out, n_blocks
