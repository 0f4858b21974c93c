"""The EEG-ImageNet dataset (Spampinato et al. 2017): its torch files, read safely, and its stimulus images."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .recording import DataImportError


def _load_pth_safely(path: Path):
    """A torch file read with torch's weights-only unpickler: tensors and plain containers, numbers and strings
    only. Nothing in a data file is ever executed: a file that needs anything else (any class, any function
    -- the way a malicious pickle runs code) is refused with a one-line :class:`DataImportError`."""
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
        raise DataImportError(f"{path}: not a readable EEG-ImageNet .pth file ({why})") from None


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
        raise DataImportError(f"{path}: expected a dict with 'dataset', 'labels' and 'images'")
    items = [x for x in d["dataset"] if subject is None or int(x["subject"]) == subject]
    if not items:
        raise DataImportError(f"{path}: no trials{f' of subject {subject}' if subject is not None else ''}")
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
            raise DataImportError(f"{splits}: expected a dict with 'splits'")
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
        raise DataImportError(f"--images: {images_dir} is not a folder")
    wanted = {str(n) for n in es.images}
    found: dict[str, Path] = {}
    for f in sorted(root.rglob("*")):
        if f.suffix.lower() in suffixes and f.stem in wanted and f.stem not in found and f.is_file():
            found[f.stem] = f
    missing = sorted(wanted - set(found))
    if missing:
        raise DataImportError(f"--images: {len(missing)} of {len(wanted)} images not found under {images_dir} "
                              f"(first: {missing[0][:80]!r}; looked for <name>{{{','.join(suffixes)}}} "
                              "at any depth)")
    label_of = {}
    for name, label in zip(es.images, es.labels):
        if label_of.setdefault(str(name), str(label)) != str(label):
            raise DataImportError(f"image {str(name)[:80]!r} is labelled both {label_of[str(name)]!r} and {label!r}")
    stim = StimulusSet(dict(es.classes), tuple(Stimulus(found[n].resolve(), label_of[n], file_sha256(found[n]))
                                               for n in sorted(found)), root.resolve())
    out = es.subset(np.arange(len(es)))
    out.images = np.array([found[str(n)].name for n in es.images])
    return stim, out
