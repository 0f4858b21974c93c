"""The THINGS-EEG2 dataset (Gifford et al. 2022): one subject's preprocessed files and its stimulus images."""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from ..._logging import logger
from ...errors import clip_text, short_repr
from ...protocol import Protocol
from ...stimuli import file_sha256
from .events import MAX_CLASS_NAME
from .recording import DataImportError, listed_names, path_exists


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
    DataImportError
        One line: nothing to read, a file missing, two files of one kind, a file that is neither the
        training nor the test file, no metadata found.
    """
    given = [path_or_folder] if isinstance(path_or_folder, (str, Path)) else list(path_or_folder)
    paths = [Path(p) for p in given]
    if not paths:
        raise DataImportError("THINGS-EEG2: give a subject folder (e.g. sub-01/) or its preprocessed_eeg_*.npy files")
    eeg: dict[str, Path] = {}
    meta = Path(metadata) if metadata is not None else None
    wanted = " and ".join(THINGS_EEG2_FILES.values())
    if len(paths) == 1 and paths[0].is_dir():
        folder = paths[0]
        eeg = {k: folder / f for k, f in THINGS_EEG2_FILES.items() if (folder / f).is_file()}
        if not eeg:
            raise DataImportError(f"{clip_text(str(folder), 300)}: no {wanted} in this folder (give a THINGS-EEG2 "
                                  "subject folder, e.g. sub-01/, or the files)")
    else:
        for p in paths:
            name = clip_text(str(p), 300)
            if p.is_dir():
                raise DataImportError(f"{name}: a folder; give one THINGS-EEG2 subject folder, or its .npy files")
            if not p.is_file():
                raise DataImportError(f"{name}: {'is not a regular file' if path_exists(p) else 'file not found'}")
            if p.name == THINGS_EEG2_METADATA:
                if meta is not None and meta.resolve() != p.resolve():
                    raise DataImportError(f"{name}: a second image metadata file (--metadata gives {meta})")
                meta = p
                continue
            split = _things_split_of(p)
            if split is None:
                raise DataImportError(f"{name}: neither the training nor the test file (THINGS-EEG2 names them "
                                      f"{wanted}: the name must say 'training' or 'test')")
            if split in eeg:
                raise DataImportError(f"{name}: a second {split} file (the first: {clip_text(str(eeg[split]), 200)})")
            eeg[split] = p
        if not eeg:
            raise DataImportError(f"THINGS-EEG2: no EEG file given, only the metadata (give {wanted})")
    if meta is None:
        folders = list(dict.fromkeys(p.parent for p in eeg.values()))
        look = list(dict.fromkeys(folders + [f.parent for f in folders]))
        meta = next((d / THINGS_EEG2_METADATA for d in look if (d / THINGS_EEG2_METADATA).is_file()), None)
        if meta is None:
            raise DataImportError(f"{clip_text(str(folders[0]), 300)}: no {THINGS_EEG2_METADATA} here or in the folder "
                                  "above (the dataset's list of the image shown in each trial); give it with "
                                  "--metadata FILE")
    return eeg, meta


def _describe_value(x) -> str:
    if isinstance(x, np.ndarray):
        return f"an array of shape {x.shape} ({x.dtype})"
    return f"{type(x).__name__} {short_repr(x, 60)}"


def _load_npy_dict(path: Path, what: str, keys: Sequence[str]) -> dict:
    from ..._safe_pickle import load_npy

    d = load_npy(path, what, DataImportError, unwrap=True)
    name = clip_text(str(path), 300)
    if not isinstance(d, dict):
        raise DataImportError(f"{name}: not a {what}: expected a dict saved with np.save (keys {', '.join(keys)}), "
                              f"got {_describe_value(d)}")
    missing = [k for k in keys if k not in d]
    if missing:
        raise DataImportError(f"{name}: not a {what}: no {', '.join(repr(k) for k in missing)} "
                              f"(its keys: {listed_names([short_repr(k, 40) for k in d])})")
    return d


def _checked_strings(value, name: str, key: str, most: int, file_name: bool = False) -> list[str]:
    """A list of non-empty, printable strings of at most ``most`` characters (file names: no folder parts)."""
    if isinstance(value, np.ndarray) and value.ndim == 1 and value.dtype.kind in "UO":
        value = value.tolist()
    if not isinstance(value, (list, tuple)):
        raise DataImportError(f"{name}: {key!r} must be a list of strings, got {_describe_value(value)}")
    out = []
    for i, v in enumerate(value):
        if not isinstance(v, str) or not v or len(v) > most or not v.isprintable():
            why = ("not a string" if not isinstance(v, str) else "empty" if not v
                   else f"longer than {most} characters" if len(v) > most else "has control characters")
            raise DataImportError(f"{name}: {key!r} entry {i} is {why}: {short_repr(v, 60)}")
        if file_name and (v in (".", "..") or "/" in v or "\\" in v):
            raise DataImportError(f"{name}: {key!r} entry {i} is not a plain file or folder name: {short_repr(v, 60)}")
        out.append(str(v))
    return out


def _read_things_metadata(path: Path) -> dict[str, tuple[list[str], list[str]]]:
    """``{"training": (concepts, files), "test": (concepts, files)}`` of THINGS-EEG2's ``image_metadata.npy``."""
    d = _load_npy_dict(path, "THINGS-EEG2 image metadata file", [k for ks in _THINGS_META_KEYS.values() for k in ks])
    name = clip_text(str(path), 300)
    out = {}
    for split, (ck, fk) in _THINGS_META_KEYS.items():
        concepts = _checked_strings(d[ck], name, ck, MAX_CLASS_NAME, file_name=True)
        files = _checked_strings(d[fk], name, fk, 255, file_name=True)
        if len(concepts) != len(files):
            raise DataImportError(f"{name}: {len(concepts)} {ck!r} but {len(files)} {fk!r} (one of each per image)")
        out[split] = (concepts, files)
    return out


def _read_things_eeg(path: Path) -> tuple[np.ndarray, list[str], np.ndarray]:
    """(data (images, repetitions, channels, times), channel names, times) of a preprocessed THINGS-EEG2 file."""
    d = _load_npy_dict(path, "THINGS-EEG2 preprocessed EEG file", _THINGS_EEG_KEYS)
    name = clip_text(str(path), 300)
    x = d["preprocessed_eeg_data"]
    if not isinstance(x, np.ndarray) or x.dtype.kind not in "fiu" or x.ndim != 4:
        raise DataImportError(f"{name}: 'preprocessed_eeg_data' must be a numeric array of shape (images, repetitions, "
                              f"channels, times), got {_describe_value(x)}")
    if 0 in x.shape:
        raise DataImportError(f"{name}: 'preprocessed_eeg_data' holds no data (shape {x.shape})")
    ch = _checked_strings(d["ch_names"], name, "ch_names", 64)
    if len(set(ch)) != len(ch):
        dup = next(c for c in ch if ch.count(c) > 1)
        raise DataImportError(f"{name}: channel {short_repr(dup, 40)} appears twice in 'ch_names'")
    t = d["times"]
    if not isinstance(t, np.ndarray) or t.dtype.kind not in "fiu" or t.ndim != 1 or len(t) < 2:
        raise DataImportError(f"{name}: 'times' must be a 1-D numeric array of at least 2 times, "
                              f"got {_describe_value(t)}")
    t = t.astype(np.float64)
    steps = np.diff(t)
    if not np.isfinite(t).all() or not steps.min() > 0 or np.ptp(steps) > 1e-3 * steps.mean():
        raise DataImportError(f"{name}: 'times' are not regular increasing times (first {t[0]:g}, step "
                              f"{steps[0]:g}..{steps.max():g} s)")
    if x.shape[2] != len(ch) or x.shape[3] != len(t):
        raise DataImportError(f"{name}: 'preprocessed_eeg_data' has shape {x.shape}: expected (images, repetitions, "
                              f"{len(ch)} channels as in 'ch_names', {len(t)} times as in 'times')")
    for a in range(0, x.shape[0], 512):  # in chunks: a mask of the whole training file would be 100 M booleans
        bad = ~np.isfinite(x[a:a + 512])
        if bad.any():
            i, r, c, _ = np.unravel_index(int(np.flatnonzero(bad)[0]), bad.shape)
            raise DataImportError(f"{name}: non-finite values (NaN/inf) in 'preprocessed_eeg_data', first at image "
                                  f"{a + i}, repetition {r}, channel {short_repr(ch[c], 40)}")
    return x, ch, t


def _things_display_name(concept: str) -> str:
    """``00001_aardvark`` -> ``aardvark``; ``00146_baseball_bat`` -> ``baseball bat``."""
    import re

    return re.sub(r"^\d+_", "", concept).replace("_", " ").strip() or concept


def _read_things_parts(eeg_files: dict[str, Path], meta_path: Path,
                       max_images: Optional[int]) -> tuple[list, list, np.ndarray]:
    """(parts, channel names, times) of the EEG files, each part ``(split, data, concepts, image files)`` with
    its first ``max_images`` images; the files must match the metadata and agree on channels and times."""
    meta = _read_things_metadata(meta_path)
    meta_name = clip_text(str(meta_path), 200)
    parts = []  # (split, data, concepts, image files)
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
            raise DataImportError(f"{name}: {x.shape[0]} images, but {meta_name} lists {len(concepts)} {split} images "
                                  f"({key!r}): not this file's metadata")
        if split == "training" and x.shape[1] >= THINGS_EEG2_TEST_RUN:
            raise DataImportError(f"{name}: {x.shape[1]} repetitions; at most {THINGS_EEG2_TEST_RUN - 1} fit before "
                                  f"the test file's runs ({THINGS_EEG2_TEST_RUN}..)")
        if parts:
            if ch != ch_names:
                raise DataImportError(f"{name}: channels ({listed_names(ch)}) differ from those of {first} "
                                      f"({listed_names(ch_names)})")
            if len(t) != len(times) or not np.allclose(t, times, rtol=0, atol=1e-6):
                raise DataImportError(f"{name}: 'times' ({t[0]:g}..{t[-1]:g} s, {len(t)} samples) differ from those of "
                                      f"{first} ({times[0]:g}..{times[-1]:g} s, {len(times)} samples)")
        else:
            ch_names, times, first = ch, t, name
        n = x.shape[0] if max_images is None else min(int(max_images), x.shape[0])
        parts.append((split, x[:n], concepts[:n], files[:n]))
    return parts, ch_names, times


def _check_fits_protocol(protocol: Protocol, eeg_files: dict[str, Path], ch_names: list, times: np.ndarray,
                         sfreq: float) -> None:
    """Refuse files that do not fit ``protocol``: its number of channels, its sampling rate (within 1 %), its
    analysis window inside the files' epochs."""
    tmin = float(times[0])
    amp, e = protocol.amplifier, protocol.epochs
    src = clip_text(str(next(iter(eeg_files.values()))), 300)
    if len(ch_names) != amp.channels:
        raise DataImportError(f"{src}: {len(ch_names)} channels ({listed_names(ch_names)}), the protocol expects "
                              f"{amp.channels} (amplifier.channels); use protocols/things-eeg2.yaml")
    if abs(sfreq - amp.sfreq) > 0.01 * amp.sfreq:
        raise DataImportError(f"{src}: sampled at {sfreq:g} Hz, the protocol expects {amp.sfreq:g} Hz "
                              "(amplifier.sfreq); use protocols/things-eeg2.yaml")
    a = int(round((e.tmin - tmin) * sfreq))
    if a < 0 or a + int(round((e.tmax - e.tmin) * sfreq)) > len(times):
        raise DataImportError(f"{src}: the protocol's analysis window {e.tmin:g}..{e.tmax:g} s (epochs.tmin, "
                              f"epochs.tmax) is not inside the file's epochs ({tmin:g}..{times[-1]:g} s); use "
                              "protocols/things-eeg2.yaml")


def _stack_repetitions(parts: list, n_channels: int, n_times: int) -> tuple[np.ndarray, list, list, list]:
    """(data, labels, images, runs) of every repetition of every image: each training repetition its own run
    (1..), the test file's repetitions in :data:`_THINGS_TEST_GROUPS` consecutive runs from
    :data:`THINGS_EEG2_TEST_RUN`."""
    total = sum(x.shape[0] * x.shape[1] for _, x, _, _ in parts)
    data = np.empty((total, n_channels, n_times), np.float32)
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
    return data, labels, images, runs


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
    DataImportError
        One line naming the file and the problem: unreadable, refused (a pickle that would run code), wrong
        keys or shapes, non-finite values, EEG files that disagree on channels or times, metadata that does
        not list the files' images, a protocol the files do not fit.
    """
    from ...types import EpochSet

    if max_images is not None and int(max_images) < 1:
        raise DataImportError(f"--max-images: must be at least 1, got {max_images}")
    eeg_files, meta_path = things_eeg2_files(path_or_folder, metadata)
    parts, ch_names, times = _read_things_parts(eeg_files, meta_path, max_images)
    sfreq = float((len(times) - 1) / (times[-1] - times[0]))
    sfreq = float(np.round(sfreq, 6))  # 1 / 0.01000000000000001 -> 100.0
    tmin = float(times[0])
    if protocol is not None:
        _check_fits_protocol(protocol, eeg_files, ch_names, times, sfreq)
    data, labels, images, runs = _stack_repetitions(parts, len(ch_names), len(times))
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
        raise DataImportError(f"--images: {clip_text(str(images_dir), 300)} is not a folder")
    wanted: dict[Path, str] = {}
    for label, image, run in zip(es.labels, es.images, es.runs):
        split = "test" if run >= THINGS_EEG2_TEST_RUN else "training"
        wanted.setdefault(Path(THINGS_EEG2_IMAGE_FOLDERS[split]) / str(label) / str(image), str(label))
    missing = [rel for rel in wanted if not (root / rel).is_file()]
    if missing:
        raise DataImportError(f"--images: {len(missing)} of {len(wanted)} images not found under "
                              f"{clip_text(str(images_dir), 200)} (first: {clip_text(missing[0].as_posix(), 160)}); "
                              "give the folder holding THINGS-EEG2's training_images/ and test_images/")
    stim = StimulusSet(dict(es.classes), tuple(Stimulus((root / rel).resolve(), label, file_sha256(root / rel))
                                               for rel, label in sorted(wanted.items())), root.resolve())
    return stim, es
