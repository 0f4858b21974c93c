"""``eegloop import``: recordings (XDF, MNE formats, CSV) or datasets (THINGS-EEG2, EEG-ImageNet) as a session.

Every file is read, checked and cut before the database is opened: a bad one leaves it (and its folder) as it was.
"""
from __future__ import annotations

from pathlib import Path

from ..errors import EegloopError
from ..recorder.importers.registry import format_names
from .common import CHANNELS, PROTOCOL_FILE, SUBJECT, Parents, check_new_subject, open_db
from .types import ChannelTypesMap, EventsMap, InputFile, InputFolder, InputPath, Integer, Text, UniqueItems

DATASETS = tuple(format_names("dataset"))  # formats whose files hold epochs already, not recordings


def add_parser(commands, parents: Parents) -> None:
    """Add ``import`` to the top-level sub-parsers."""
    c = commands.add_parser("import", parents=[parents.common],
                            help="import recordings (XDF, MNE formats, CSV) or datasets (EEG-ImageNet, THINGS-EEG2) as a "
                                 "session")
    c.add_argument("files", metavar="FILES", nargs="+", action=UniqueItems,
                   type=InputPath("a recording file (or a THINGS-EEG2 subject folder)"),
                   help="recordings; eeg-imagenet: the .pth file; things-eeg2: a subject folder "
                        "(sub-01/) or its preprocessed_eeg_{training,test}.npy")
    c.add_argument("--subject", type=SUBJECT, required=True)
    c.add_argument("--format", choices=format_names())  # the importers' registry
    c.add_argument("--eeg-subject", type=Integer(0, 1000), help="eeg-imagenet: keep this subject's trials only")
    c.add_argument("--images", type=InputFolder("the folder of the stimulus images"), metavar="DIR",
                   help="eeg-imagenet: the stimulus images (e.g. your ImageNet copy, <synset>/<name>.JPEG at any "
                        "depth); things-eeg2: the folder holding training_images/ and test_images/; registered so "
                        "the CLIP teacher can be fitted")
    c.add_argument("--metadata", type=InputFile("THINGS-EEG2's image_metadata.npy"), metavar="FILE",
                   help="things-eeg2: the dataset's image_metadata.npy (default: beside the EEG files, or one "
                        "folder up)")
    c.add_argument("--max-images", type=Integer(1, 1_000_000), metavar="N",
                   help="things-eeg2: keep the first N images of each file (all their repetitions); default: all")
    c.add_argument("--events", type=EventsMap(), help="marker value -> class: '1=house,2=face' or a YAML file")
    c.add_argument("--channels", type=CHANNELS, help="comma-separated channels to keep (e.g. TP9,AF7,AF8,TP10)")
    c.add_argument("--channel-types", type=ChannelTypesMap(), metavar="LABEL=TYPE,...",
                   help="retype channels (eeg, eog, ecg, emg, misc, stim, resp; only eeg is decoded), e.g. "
                        "'Right AUX=misc': over the file's own types and the protocol's amplifier.channel_types")
    c.add_argument("--protocol", type=PROTOCOL_FILE, help="protocol describing the recording (channels, sfreq, epochs)")
    c.add_argument("--eeg-stream", type=Text("an XDF stream name or type", 256), help="XDF: EEG stream name or type")
    c.add_argument("--marker-stream", type=Text("an XDF stream name or type", 256),
                   help="XDF: marker stream name or type")
    c.add_argument("--force", action="store_true",
                   help="import a file even if the same bytes were imported before (copies inflate scores)")
    c.set_defaults(run=run)


def run(args) -> int:
    """Run ``eegloop import``: the options checked together, then the format's importer."""
    from ..protocol import load_protocol

    if args.protocol is None:
        raise EegloopError("--protocol: needed to import (channels, sampling rate, epochs, preprocessing); "
                           "see protocols/n170.yaml")
    proto = load_protocol(args.protocol)
    check_new_subject(args, args.subject)
    _check_options(args)
    if args.format == "things-eeg2":
        return import_things_eeg2(args, proto)
    if args.format == "eeg-imagenet":
        return import_eeg_imagenet(args, proto)
    return import_recordings(args, proto)


def _check_options(args) -> None:
    """The options that only some formats take."""
    if args.channel_types and args.format in DATASETS:
        raise EegloopError(f"--channel-types: not with --format {args.format} (its files hold EEG channels only)")
    if args.images is not None and args.format not in DATASETS:
        raise EegloopError("--images: only with --format eeg-imagenet or things-eeg2 (recorded sessions know their "
                           "images)")
    for opt, given in (("--metadata", args.metadata), ("--max-images", args.max_images)):
        if given is not None and args.format != "things-eeg2":
            raise EegloopError(f"{opt}: only with --format things-eeg2")


def import_things_eeg2(args, proto) -> int:
    """One subject's preprocessed THINGS-EEG2 files (Gifford et al. 2022)."""
    from ..recorder.importers import (THINGS_EEG2_TEST_RUN, import_epochset, locate_things_images, read_things_eeg2,
                                      things_eeg2_files)

    if args.eeg_subject is not None:
        raise EegloopError("--eeg-subject: only with --format eeg-imagenet (THINGS-EEG2 keeps one subject per "
                           "folder: give sub-XX/ or its files)")
    if args.max_images is not None and args.max_images < 1:
        raise EegloopError(f"--max-images: must be at least 1, got {args.max_images}")
    eeg_files, _ = things_eeg2_files(args.files, args.metadata)
    es, test_classes = read_things_eeg2(args.files, metadata=args.metadata, max_images=args.max_images,
                                        protocol=proto)
    stim = None
    if args.images:
        stim, es = locate_things_images(es, args.images)
    db = open_db(args)  # the files were read and checked first: a bad one leaves the database as it was
    info = {"format": "things-eeg2", "zero_shot_test_classes": test_classes,
            "groups": f"runs 1..: one per training repetition; runs {THINGS_EEG2_TEST_RUN}..: the test "
                      "repetitions in 4 equal consecutive groups; one block per run (the preprocessed files keep "
                      "no recording order)"}
    sid = import_epochset(db, args.subject, proto, es, source=[str(p.resolve()) for p in eeg_files.values()],
                          force=args.force, info=info)
    if stim is not None:
        db.add_stimuli(stim)
    for line in _things_eeg2_lines(args, es, sid, test_classes, stim, THINGS_EEG2_TEST_RUN):
        print(line)
    return 0


def _things_eeg2_lines(args, es, sid, test_classes, stim, test_run: int) -> list[str]:
    """What ``import --format things-eeg2`` prints: the epochs, the runs they became, the zero-shot split and the
    stimulus images."""
    train = es.runs < test_run
    parts = []
    for name, m in (("training", train), ("test", ~train)):
        if m.any():
            n_img = len(set(zip(es.labels[m], es.images[m])))
            parts.append(f"{name}: {n_img} images x {int(m.sum()) // n_img} repetitions, "
                         f"{len(set(es.labels[m]))} concepts")
    runs = sorted(set(es.runs.tolist()))
    return [
        f"imported {len(es)} THINGS-EEG2 epochs ({'; '.join(parts)}) as session {sid} of {args.subject}"
        + (f" (first {args.max_images} images of each file)" if args.max_images else ""),
        f"runs {', '.join(map(str, runs))}, one block each: the preprocessed files keep no recording order, "
        f"so each training repetition is a run (1..) and the test repetitions are runs {test_run}.. "
        "in 4 equal groups; block- or run-wise folds leave out repetitions of images the other folds also saw, "
        "not independent recording blocks",
        f"zero-shot split: {len(test_classes)} test concepts stored in the session's info "
        "(zero_shot_test_classes)" if test_classes else
        "zero-shot split: no test file imported, so no test concepts stored",
        f"stimulus images: {len(stim.images)} found under {args.images} and registered: the CLIP teacher can "
        "embed them" if stim is not None else
        "stimulus images: not given (--images DIR, the folder holding training_images/ and test_images/): "
        "kd_* models train without the CLIP teacher",
    ]


def import_eeg_imagenet(args, proto) -> int:
    """EEG-ImageNet's .pth file (one class per block)."""
    from ..recorder.importers import import_epochset, read_eeg_imagenet

    if len(args.files) != 1:
        raise EegloopError("--format eeg-imagenet: give one .pth file")
    es, _ = read_eeg_imagenet(args.files[0], subject=args.eeg_subject, sfreq=proto.amplifier.sfreq)
    stim = None
    if args.images:
        from ..recorder.importers import locate_images

        stim, es = locate_images(es, args.images, proto.stimuli.extensions)
    db = open_db(args)  # the file was read first: a bad one leaves the database (and its folder) as it was
    sid = import_epochset(db, args.subject, proto, es, source=str(Path(args.files[0]).resolve()),
                          force=args.force)
    if stim is not None:
        db.add_stimuli(stim)
    print(f"imported {len(es)} EEG-ImageNet trials ({len(es.classes)} classes) as session {sid} of "
          f"{args.subject}; recorded one class per block: only --split random (inflated) can score it")
    print(f"stimulus images: {len(stim.images)} found under {args.images} and registered: the CLIP teacher "
          "can distil into kd_* models" if stim is not None else
          "stimulus images: not given (--images DIR, e.g. your ImageNet copy): kd_* models train without "
          "the CLIP teacher")
    return 0


def import_recordings(args, proto) -> int:
    """Recordings (XDF, MNE formats, CSV): read, cut into epochs by their markers, stored as one session."""
    from collections import Counter

    from ..errors import clip_text
    from ..recorder.importers import parse_channel_types, parse_events, prepare_import, store_import

    channels = list(args.channels) if args.channels else None
    prepared = prepare_import(args.subject, proto, args.files, args.format, parse_events(args.events), channels,
                              args.eeg_stream, args.marker_stream, parse_channel_types(args.channel_types))
    db = open_db(args)  # every file was read and cut first: a bad one leaves the database (and its folder) as it was
    sid = store_import(db, prepared, force=args.force)
    es = db.get_epochs(sid)
    counts = Counter(e.label for e in es)
    rejected = db.rejected_by_reason(sid)
    print(f"imported {len(args.files)} file(s) as session {sid} of {args.subject}: {len(es)} epochs "
          f"({', '.join(f'{c} {n}' for c, n in counts.items())}) in {len(db.get_runs(sid))} runs, "
          f"{len(db.get_blocks(sid))} blocks"
          + (f"; rejected: {', '.join(f'{n} {why}' for why, n in rejected.items())}" if rejected else "")
          + (f"; ignored markers (not stimuli): {sum(prepared.ignored.values())} ("
             + ", ".join(f"{clip_text(repr(v), 40)} {n}x" for v, n in prepared.ignored.most_common()) + ")"
             if prepared.ignored else ""))
    return 0
