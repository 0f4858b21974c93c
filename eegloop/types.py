"""Small typed objects that carry data between the boxes.

``Epoch`` (one cut trial) and ``EpochSet`` (many, with the group ids needed
for honest cross-validation) are what the recorder produces and the decoder
consumes. ``EpochSet.to_mne()`` gives an :class:`mne.EpochsArray`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from .montage import DEFAULT_MONTAGE

__all__ = ["Epoch", "EpochSet", "RejectedEpoch", "BlockRecord", "FEEDBACK_BLOCK_BASE"]

# a feedback run's epochs are stored with block numbers from here (10000 + run): recording blocks stay below it,
# so training and evaluation can keep the subject's recorded blocks apart from what the feedback showed
FEEDBACK_BLOCK_BASE = 10_000


@dataclass
class Epoch:
    """One trial's signal, ``data`` of shape (n_channels, n_times), float32.

    ``tmin`` is the time of the first sample relative to the stimulus onset
    (negative when the epoch keeps a margin before the onset).
    """

    data: np.ndarray
    label: str
    sfreq: float
    tmin: float
    channel_names: list[str]
    run: int
    block: int
    trial: Optional[int] = None
    onset_lsl: Optional[float] = None
    event_id: Optional[int] = None
    image: Optional[str] = None  # sha256 of the stimulus image, when known
    ready_lsl: Optional[float] = None  # LSL time the recorder had the epoch's last sample (online use)

    def __post_init__(self) -> None:
        self.data = np.ascontiguousarray(self.data, dtype=np.float32)
        if self.data.ndim != 2:
            raise ValueError(f"epoch data must be 2-D (channels, times), got shape {self.data.shape}")
        if len(self.channel_names) != self.data.shape[0]:
            raise ValueError(f"{len(self.channel_names)} channel names for {self.data.shape[0]} channels")


@dataclass
class RejectedEpoch:
    """A stimulus whose epoch is not valid, and why.

    ``reason`` is one of ``gap`` (a timestamp gap > 1.5 sample periods inside
    the window), ``non-finite`` (NaN/inf samples), ``not-buffered`` (its start
    had left the recorder's buffer), ``edge`` (the recording starts or ends
    inside the window), ``stopped`` (the recording stopped before its end).
    """

    label: str
    run: int
    block: int
    reason: str
    trial: Optional[int] = None
    onset_lsl: Optional[float] = None
    detail: str = ""


@dataclass
class BlockRecord:
    """Everything one block produced, stored in one transaction by :meth:`Database.store_block`.

    A block is ``done`` only when it ended (its ``block_end`` marker, or the
    end of an imported file's block) and stored epochs + rejected epochs =
    stimuli shown = stimuli planned; otherwise it is ``incomplete`` with a reason.
    """

    run: int
    block: int
    events: list = field(default_factory=list)  # [(marker dict, lsl time)]; kind = marker["event"]
    epochs: list = field(default_factory=list)  # [Epoch]
    rejected: list = field(default_factory=list)  # [RejectedEpoch]
    timings: list = field(default_factory=list)  # [dict(trial=..., **TrialTiming.as_db())]
    photon_delays: dict = field(default_factory=dict)  # trial -> marker-to-photon delay, ms (a photodiode)
    n_planned: Optional[int] = None  # stimuli the schedule had for the block (None: as many as shown)
    ended: bool = False
    reason: Optional[str] = None  # why the block is incomplete, when known (abort, failure)

    @property
    def n_stimuli(self) -> int:
        return sum(1 for m, _ in self.events if m.get("event") == "stim_on")

    def accounting(self) -> tuple[str, Optional[str]]:
        """``("done", None)`` or ``("incomplete", reason)``."""
        shown, kept, rej = self.n_stimuli, len(self.epochs), len(self.rejected)
        planned = self.n_planned if self.n_planned is not None else shown
        stopped = sum(1 for r in self.rejected if r.reason == "stopped")
        if stopped:  # the recording ended inside the block: record it again rather than keep a hole
            return "incomplete", self.reason or f"the recording stopped before {stopped} epochs were complete"
        if self.ended and shown == planned and kept + rej == shown and (shown > 0 or self.n_planned is None):
            return "done", None
        if self.reason:
            return "incomplete", self.reason
        if not self.ended or shown < planned:
            return "incomplete", f"stopped after {shown} of {planned} images"
        return "incomplete", f"{shown - kept - rej} of {shown} epochs missing"

    @property
    def started_lsl(self) -> Optional[float]:
        ts = [t for m, t in self.events if m.get("event") == "block_start"]
        return ts[0] if ts else (self.events[0][1] if self.events else None)

    @property
    def ended_lsl(self) -> Optional[float]:
        ts = [t for m, t in self.events if m.get("event") == "block_end"]
        return ts[-1] if ts else (self.events[-1][1] if self.events else None)


@dataclass
class EpochSet:
    """Epochs of equal shape with labels and group ids (session, run, block)."""

    data: np.ndarray  # (n, channels, times) float32
    labels: np.ndarray  # (n,) str class ids
    sfreq: float
    tmin: float
    channel_names: list[str]
    runs: np.ndarray  # (n,) int, unique over sessions (see ``groups``)
    blocks: np.ndarray  # (n,) int
    sessions: np.ndarray  # (n,) int
    classes: dict[str, str] = field(default_factory=dict)  # id -> display name, fixed order
    images: Optional[np.ndarray] = None  # (n,) sha256 of each epoch's stimulus image ('' if unknown)
    onsets: Optional[np.ndarray] = None  # (n,) LSL time of each onset, s (NaN if unknown)
    trials: Optional[np.ndarray] = None  # (n,) trial number in its session (-1 if unknown)
    montage: Optional[str] = DEFAULT_MONTAGE  # electrode positions for to_mne (amplifier.montage)

    def __post_init__(self) -> None:
        self.labels = np.asarray(self.labels).astype(str)
        n = len(self.labels)
        self.onsets = (np.asarray(self.onsets, dtype=np.float64) if self.onsets is not None
                       else np.full(n, np.nan))
        self.trials = (np.asarray(self.trials, dtype=np.int64) if self.trials is not None
                       else np.full(n, -1, dtype=np.int64))
        self.images = (np.asarray(self.images).astype(str) if self.images is not None
                       else np.full(len(self.labels), "", dtype=object).astype(str))
        for name in ("runs", "blocks", "sessions"):
            setattr(self, name, np.asarray(getattr(self, name), dtype=np.int64))
        if not self.classes:
            self.classes = {c: c for c in sorted(set(self.labels.tolist()))}
        n = len(self.labels)
        if self.data.shape[0] != n or any(len(getattr(self, a)) != n for a in ("runs", "blocks", "sessions", "onsets",
                                                                              "trials")):
            raise ValueError("data, labels and group ids must have the same length")

    def __len__(self) -> int:
        return len(self.labels)

    @classmethod
    def from_epochs(cls, epochs: list[Epoch], sessions: list[int] | None = None,
                    classes: dict[str, str] | None = None, montage: Optional[str] = DEFAULT_MONTAGE) -> "EpochSet":
        if not epochs:
            raise ValueError("no epochs")
        shapes = {e.data.shape for e in epochs}
        if len(shapes) != 1:
            raise ValueError(f"epochs differ in shape: {sorted(shapes)}")
        return cls(
            data=np.stack([e.data for e in epochs]),
            labels=np.array([e.label for e in epochs]),
            sfreq=epochs[0].sfreq,
            tmin=epochs[0].tmin,
            channel_names=list(epochs[0].channel_names),
            runs=np.array([e.run for e in epochs]),
            blocks=np.array([e.block for e in epochs]),
            sessions=np.array(sessions if sessions is not None else [0] * len(epochs)),
            classes=dict(classes or {}),
            images=np.array([e.image or "" for e in epochs]),
            onsets=np.array([np.nan if e.onset_lsl is None else e.onset_lsl for e in epochs], dtype=np.float64),
            trials=np.array([-1 if e.trial is None else int(e.trial) for e in epochs], dtype=np.int64),
            montage=montage,
        )

    @property
    def class_ids(self) -> list[str]:
        return list(self.classes)

    @property
    def y(self) -> np.ndarray:
        """Labels as integer indices into :attr:`class_ids`."""
        index = {c: i for i, c in enumerate(self.classes)}
        return np.array([index[c] for c in self.labels], dtype=np.int64)

    def groups(self, split: str) -> np.ndarray:
        """Group id per epoch for folds that leave whole blocks or runs out."""
        if split == "run":
            return self.sessions * 10**9 + self.runs
        if split == "block":  # block numbers reach 10 000+ (feedback blocks): keep the fields apart
            return self.sessions * 10**12 + self.runs * 10**6 + self.blocks
        raise ValueError(f"split must be 'block' or 'run', got {split!r}")

    def subset(self, idx) -> "EpochSet":
        return EpochSet(self.data[idx], self.labels[idx], self.sfreq, self.tmin, list(self.channel_names),
                        self.runs[idx], self.blocks[idx], self.sessions[idx], dict(self.classes), self.images[idx],
                        self.onsets[idx], self.trials[idx], self.montage)

    def event_samples(self) -> np.ndarray:
        """Each epoch's onset as a sample index on one time line: within a session, the real onset times
        (``onsets``) from the session's first onset; sessions follow each other, 100 s apart. Epochs without
        a known onset are numbered 10 000 samples apart after the rest."""
        out = np.zeros(len(self), np.int64)
        known = np.isfinite(self.onsets)
        start = 0
        for sess in dict.fromkeys(self.sessions[known].tolist()):
            m = known & (self.sessions == sess)
            s = np.round((self.onsets[m] - self.onsets[m].min()) * self.sfreq).astype(np.int64) + start
            out[m] = s
            start = int(s.max()) + int(100 * self.sfreq)
        out[~known] = start + np.arange(int((~known).sum())) * 10_000
        return out

    def to_mne(self, montage: Optional[str] = "default"):
        """An :class:`mne.EpochsArray`: data in volts (stored µV x 1e-6), one event id per class, electrode
        positions from ``montage`` (default: the set's own, the protocol's ``amplifier.montage``; None: none),
        the events at the epochs' real onset samples (:meth:`event_samples`), and ``metadata`` with each
        epoch's class, session, run, block, trial, stimulus image (sha256) and LSL onset time, so
        ``epochs["run == 2 and block > 3"]`` selects as in MNE."""
        import mne
        import pandas as pd

        from .montage import load_montage, set_positions

        info = mne.create_info(list(self.channel_names), self.sfreq, ch_types="eeg")
        codes = {c: i + 1 for i, c in enumerate(self.classes)}
        events = np.column_stack([self.event_samples(), np.zeros(len(self), int),
                                  [codes[c] for c in self.labels]]).astype(int)
        meta = pd.DataFrame({"class": self.labels, "session": self.sessions, "run": self.runs,
                             "block": self.blocks, "trial": self.trials, "image": self.images,
                             "onset_lsl": self.onsets})
        ep = mne.EpochsArray(self.data.astype(np.float64) * 1e-6, info, events=events, tmin=self.tmin,
                             event_id=codes, metadata=meta, verbose=False)
        set_positions(ep, load_montage(self.montage if montage == "default" else montage))
        return ep
