"""Electrode positions: the protocol's ``amplifier.montage`` as an MNE montage.

``amplifier.montage`` names one of MNE's standard montages (``standard_1005``, ``biosemi64``,
``GSN-HydroCel-128``, ... see :func:`mne.channels.get_builtin_montages`) or a file MNE reads
(``.elc``, ``.sfp``, ``.bvef``, ``.csd``, ``.elp``, ``.loc``, ...). Channels are matched by label without
regard to case; a channel the montage does not know (an EOG, a photodiode, ``E1``) has no position.
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Optional

from .errors import EegloopError

__all__ = ["load_montage", "set_positions", "positions", "DEFAULT_MONTAGE"]

DEFAULT_MONTAGE = "standard_1005"  # amplifier.montage when a protocol does not say (MNE's 10-05 positions)

# names MNE is renaming (same positions): used when this MNE has the new name, so no FutureWarning
_RENAMED = {"standard_1005": "colin27_1005", "standard_1020": "colin27_1020",
            "standard_alphabetic": "colin27_alphabetic", "standard_postfixed": "colin27_postfixed",
            "standard_prefixed": "colin27_prefixed", "standard_primed": "colin27_primed"}


def load_montage(spec: Optional[str], base_dir: str | Path | None = None, field: str = "amplifier.montage"):
    """The :class:`mne.channels.DigMontage` of ``spec`` (None for None); a bad spec is one line naming ``field``."""
    if not spec:
        return None
    import mne

    builtin = mne.channels.get_builtin_montages()
    name = _RENAMED.get(spec, spec)
    name = name if name in builtin else spec
    if name in builtin:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            return mne.channels.make_standard_montage(name)
    path = Path(spec).expanduser()
    if not path.is_absolute() and base_dir is not None:
        path = Path(base_dir) / path
    if not path.is_file():
        raise EegloopError(f"{field}: {spec!r} is neither one of MNE's standard montages (standard_1005, biosemi64, "
                           "...) nor a montage file that exists"[:400])
    try:
        return mne.channels.read_custom_montage(path)
    except Exception as exc:  # any reader error of a user's file is one line
        raise EegloopError(f"{field}: cannot read montage file {path.name} ({type(exc).__name__}: {exc})"[:400]) from None


def set_positions(inst, montage) -> int:
    """Give ``inst`` (Raw, Epochs, Info) the positions of ``montage`` for the channels it knows; returns how many."""
    if montage is None:
        return 0
    import mne

    known = {n.lower() for n in montage.ch_names}
    info = inst if isinstance(inst, mne.Info) else inst.info
    eeg = [info["ch_names"][i] for i in mne.pick_types(info, eeg=True, exclude=[])]
    n = sum(1 for c in eeg if c.lower() in known)
    if n:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            inst.set_montage(montage, match_case=False, on_missing="ignore", verbose="error")
    return n


def positions(names, montage) -> dict:
    """Channel name -> (x, y, z) in metres, for the names ``montage`` knows."""
    if montage is None:
        return {}
    pos = {k.lower(): v for k, v in montage.get_positions()["ch_pos"].items()}
    return {n: tuple(map(float, pos[n.lower()])) for n in names if n.lower() in pos}
