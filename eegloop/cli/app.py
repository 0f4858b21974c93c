"""The ``eegloop`` command line. Thin: parse, call one function, print.

Errors meant for the user (:class:`~eegloop.errors.EegloopError`) are printed
as one line ``eegloop: error: ...`` with exit status 2; anything else is a bug
and keeps its traceback.
"""
from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path

from .. import __version__, set_log_level
from ..errors import EegloopError
from ..types import FEEDBACK_BLOCK_BASE

EXIT_USER_ERROR = 2


_OPENED: list = []  # the databases this command opened: main() words their lock/connection errors


def _db(args, create: bool = True):
    """The database of ``--db``/``--data``. ``create=False`` for commands that only use an existing one: they
    never create a database (nor the data folder) and never migrate it."""
    from ..database import Database

    db = Database(args.db, data_dir=args.data, create=create)
    _OPENED.append(db)
    return db


def _check_new_subject(args, code: str) -> None:
    """Before anything is written: a subject code this command may add is letters and digits only. A code
    already in the database (added before that rule) stays usable."""
    from ..database import check_subject_code

    try:
        check_subject_code(code)
    except EegloopError as exc:
        try:
            _db(args, create=False).get_subject(code)
        except EegloopError:
            raise exc from None


def _protocol_for_run(args):
    """The protocol of a command that streams; ``--simulate`` gives it default simulator settings if it has none."""
    import dataclasses

    from ..protocol import SimulateConfig, load_protocol

    proto = load_protocol(args.protocol)
    if getattr(args, "simulate", False) and proto.amplifier.simulate is None:
        proto = proto.replace(amplifier=dataclasses.replace(proto.amplifier, simulate=SimulateConfig()))
    return proto


# -- protocol ---------------------------------------------------------------------
def cmd_protocol_check(args) -> int:
    from ..protocol import load_protocol
    from ..stimuli import load_stimuli

    proto = load_protocol(args.file)
    if args.design_only:
        if not proto.stimuli.classes:
            from ..errors import ProtocolError

            raise ProtocolError(f"{args.file}: stimuli.classes: --design-only needs the class list in the protocol")
        design = proto.design()
        print(f"{args.file}: valid (design only; stimulus files not checked)")
        print(design.describe(proto.stimuli.classes))
        return 0
    stim = load_stimuli(proto)
    design = proto.design(len(stim.classes))
    from ..montage import load_montage

    load_montage(proto.amplifier.montage, proto.base_dir)  # a montage that cannot be read: one line now
    print(f"{args.file}: valid; {len(stim.images)} images in {len(stim.classes)} classes under {stim.root}")
    print(design.describe(stim.classes))
    return 0


def cmd_protocol_schema(args) -> int:
    from ..protocol import describe_schema

    print(describe_schema())
    return 0


def cmd_protocol_new(args) -> int:
    from .._files import atomic_write_text, umask_mode
    from ..errors import EegloopError, clip_text
    from ..protocol import parse_yaml_text, protocol_from_dict, template_path

    src = template_path(args.template)
    out = args.file  # a .yaml file in a folder we can write in (cli_types.OutputFile)
    if out.exists() and not args.force:
        raise EegloopError(f"{out}: exists already (--force replaces it)")
    text = src.read_text(encoding="utf-8")
    where = clip_text(str(out), 1000)
    # the copy is valid where it will live (stimulus folders are checked by `protocol check`), before it is written
    protocol_from_dict(parse_yaml_text(text, where), source=str(out))
    try:
        atomic_write_text(out, text, mode=umask_mode())  # whole or not at all: an existing file is never truncated
    except OSError as exc:  # disk full, file too large
        raise EegloopError(f"{where}: cannot write it ({exc.strerror or type(exc).__name__})"
                           + ("; the existing file is as it was" if out.exists() else "")) from None
    print(f"wrote {out} from the {args.template} template; edit it, then: eegloop protocol check {out}")
    return 0


def cmd_protocol_show(args) -> int:
    from ..protocol import load_protocol

    print(load_protocol(args.file).to_yaml(), end="")
    return 0


# -- stimuli ------------------------------------------------------------------------
def cmd_stimuli_synth(args) -> int:
    from .._files import new_folders
    from ..stimuli import synthesize_stimuli

    try:
        with new_folders(args.out, private=False) as created:  # folders made here are removed again on failure
            st = synthesize_stimuli(args.out, args.classes, args.per_class, size=args.size, seed=args.seed,
                                    created=created)
    except OSError as exc:  # disk full, file too large, a class folder that is a file
        from ..errors import EegloopError

        raise EegloopError(f"--out: drawing the images into {args.out} failed ({exc.strerror or type(exc).__name__}); "
                           "the folders this command made are removed, images that existed are as they were") from None
    print(f"drew {len(st.images)} images of {len(st.classes)} classes into {args.out}: "
          + ", ".join(f"{c} ({n})" for c, n in st.classes.items()))
    return 0


# -- database -----------------------------------------------------------------------
def cmd_db(args) -> int:
    db = _db(args)
    print(f"database {db.safe_url}: schema at revision {db.revision()} (head {db.head_revision()}); "
          f"tables: {', '.join(t for t in db.table_names() if t != 'alembic_version')}")
    return 0


def cmd_subject_add(args) -> int:
    from ..database import check_subject_code

    check_subject_code(args.code)  # before the database (and its folder) is created
    subj = _db(args).add_subject(args.code)
    print(f"added subject {subj.code} (id {subj.id})")
    return 0


def cmd_subject_list(args) -> int:
    subjects = _db(args, create=False).list_subjects()
    if not subjects:
        print("no subjects yet (add one with: eegloop subject add CODE)")
    for s in subjects:
        print(f"{s.code}\t{s.n_sessions} session(s)\tadded {s.created_at:%Y-%m-%d %H:%M}")
    return 0


# -- simulate ----------------------------------------------------------------------
def cmd_simulate(args) -> int:
    import dataclasses
    import time

    from ..lsl import configure_lsl
    from ..protocol import AmplifierConfig, SimulateConfig, load_protocol
    from ..recorder.simulator import VirtualAmplifier

    if args.protocol:
        proto = load_protocol(args.protocol)
        amp, sim = proto.amplifier, proto.amplifier.simulate or SimulateConfig()
    else:
        amp, sim = AmplifierConfig(), SimulateConfig()
    over = {k: v for k, v in dict(stream_name=args.name, channels=args.channels, sfreq=args.sfreq,
                                  lsl_scope=args.scope).items() if v is not None}
    amp = dataclasses.replace(amp, **over)
    sover = {k: v for k, v in dict(snr=args.snr, class_signal=args.class_signal, block_drift=args.block_drift,
                                   seed=args.seed, onset_channel=args.onset_channel or None).items() if v is not None}
    sim = dataclasses.replace(sim, **sover)
    configure_lsl(amp.lsl_scope)
    embeddings = None
    if args.protocol and sim.embedding_signal > 0:
        from ..rig import simulated_embeddings

        embeddings = simulated_embeddings(dataclasses.replace(proto, amplifier=dataclasses.replace(amp, simulate=sim)))
    va = VirtualAmplifier(amp, sim, embeddings=embeddings).start(duration=args.duration)
    print(f"virtual amplifier '{amp.stream_name}': {amp.channels} ch at {amp.sfreq:g} Hz, snr {sim.snr}, "
          f"class_signal {sim.class_signal}, block_drift {sim.block_drift}, seed {sim.seed}; "
          f"following markers on '{amp.marker_stream_name}'"
          + (f"; stops after {args.duration:g} s" if args.duration else "; Ctrl-C stops"), flush=True)
    try:
        t0 = time.monotonic()
        while va.alive:
            va.wait(1.0)
            if args.verbose:
                print(f"  {time.monotonic() - t0:6.1f} s, {va.samples_pushed} samples, {va.markers_seen} markers",
                      flush=True)
    except KeyboardInterrupt:
        pass
    finally:
        va.stop()
    print(f"stopped after {va.samples_pushed} samples ({va.samples_pushed / amp.sfreq:.1f} s), "
          f"{va.markers_seen} markers seen")
    return 0


# -- record ------------------------------------------------------------------------
def cmd_record(args) -> int:
    proto = _protocol_for_run(args)
    _check_new_subject(args, args.subject)
    db = _db(args)
    with _console(args, proto):
        return _record(args, proto, db)


def _record(args, proto, db) -> int:
    from ..session import record_session, steal_note

    if args.resume:
        from ..database.claim import SessionClaim
        from ..session import resumable_session

        sid, done = resumable_session(db, args.subject, proto)
        with SessionClaim(db, sid):  # a second --resume of the same session refuses here
            print(f"resuming session {sid}: {len(done)} complete block(s) kept; the others are shown again",
                  flush=True)
            res = record_session(proto, args.subject, db, simulate=args.simulate, session_id=sid, skip_blocks=done,
                                 progress=lambda m: print(m, flush=True), force=args.force)
    else:
        res = record_session(proto, args.subject, db, simulate=args.simulate,
                             progress=lambda m: print(m, flush=True), force=args.force)
    state = "ABORTED" if res.aborted else "done"
    print(f"recording {state}: session {res.session_id}, {res.epochs}/{res.expected_epochs} epochs, "
          f"{res.samples_received} samples ({res.lost_samples} lost), {res.dropped_frames} dropped frames, "
          f"image duration median {res.stim_duration_ms_median:.1f} ms (max error "
          f"{res.stim_duration_ms_max_abs_error:.1f} ms) at {res.frame_rate_hz:.2f} Hz"
          f"{steal_note(res.cpu_steal_pct_max)}")
    for f in res.raw_files:
        print(f"raw: {f}")
    return 1 if res.aborted else 0


# -- decoder ------------------------------------------------------------------------
def cmd_train(args) -> int:
    from ..decoder import heldout_line, honest_estimate, quick_train

    db = _db(args, create=False)
    if args.encoder:
        return _train_encoder(db, args)
    res = quick_train(db, args.subject, args.sessions, progress=True, use_teacher=not args.no_teacher)
    m = res.metrics
    from ..decoder.selection import Selection

    sel = Selection.from_json(m["selection"])
    print(f"model {res.model_id}: {res.path}")
    if sel.n_folds:
        print(f"decoder: {m['method']}, chosen by " + sel.describe())
    else:
        print(f"decoder: {m['method']}" + (f" ({sel.note})" if sel.note else ""))
    rej = m["rejection"]
    if rej["rejected"]:
        print(f"artifacts: {rej['rejected']} of {rej['rejected'] + rej['kept']} epochs dropped "
              f"(epochs.reject_uv {rej['reject_uv']}, flat_uv {rej['flat_uv']})")
    if m.get("epochs_run") is not None:
        teacher = (f"teacher accuracy {m['teacher_top1']:.3f}, alpha {m.get('alpha')}"
                   if m.get("teacher_top1") is not None else "no teacher (alpha 1)")
        print(f"trained in {m['seconds']:.1f} s on {m['n_train']} epochs ({m['epochs_run']} epochs run, best "
              f"{m['best_epoch']}; {m['device']}, {m['threads']} threads; {teacher})")
    else:
        print(f"trained in {m['seconds']:.1f} s on {m['n_train'] + m['n_heldout']} epochs")
    print(heldout_line(m))
    est = honest_estimate(db, args.subject, m["method"])
    if est:
        print(est)
    else:
        print(f"honest estimate: run `eegloop evaluate --subject {args.subject}` (whole blocks left out)")
    from ..decoder import subject_protocol

    if subject_protocol(db, args.subject, args.sessions)[0].encoder.enabled:  # the protocol asks for the encoder too
        from ..errors import EegloopError

        try:
            return _train_encoder(db, args)
        except EegloopError as exc:  # the decoder above is saved: its success stands
            print(f"eegloop: warning: the EEG encoder was not trained: {exc}", file=sys.stderr)
    return 0


def _train_encoder(db, args) -> int:
    from ..decoder import train_encoder

    def show(rec):
        if rec["epoch"] == 1 or rec["epoch"] % 10 == 0:
            print(f"encoder epoch {rec['epoch']}/{rec['planned']}: loss {rec['train_loss']:.3f}"
                  + (f", held-out blocks loss {rec['val_loss']:.3f}, top-1 {rec['val_top1']:.3f}" if "val_loss" in rec
                     else "") + f" ({rec['seconds']:.1f} s)", flush=True)

    res = train_encoder(db, args.subject, args.sessions, progress=show)
    m = res.metrics
    print(f"encoder {res.model_id}: {res.path}")
    print(f"trained in {m['seconds']:.1f} s on {m['n_train']} epochs ({m['epochs_run']} epochs run, best "
          f"{m['best_epoch']}, stopped: {m['stopped']}); targets: CLIP {m['clip_model']} image embeddings")
    if "val_top1" in m:
        print(f"held-out blocks ({m['n_heldout']} epochs, {m['val_images']} images): {m['val_k']}-way top-1 "
              f"{m['val_top1']:.3f} (chance {m['chance_top1']:.3f}), top-5 {m['val_top5']:.3f} (chance "
              f"{m['chance_top5']:.3f}) — images of trained classes; the zero-shot number: "
              f"`eegloop evaluate --subject {args.subject} --zero-shot`")
    return 0


def _zero_shot_one(db, subject, args, say):
    import numpy as np

    from ..decoder import stimulus_embeddings_for, subject_protocol
    from ..decoder.zeroshot import zero_shot_evaluate

    proto, sids = subject_protocol(db, subject, args.sessions)
    es = db.load_epochs(subject, sids)
    es = es.subset(np.flatnonzero(es.blocks < FEEDBACK_BLOCK_BASE))
    test = None
    if args.test_classes:
        test = list(args.test_classes)  # a list already: no empty or repeated items (cli_types.CommaList)
    else:  # the data's own split (THINGS-EEG2's test concepts), when an import recorded one
        named = [c for s in db.list_sessions(subject) if s.id in sids
                 for c in (s.info or {}).get("zero_shot_test_classes") or []]
        test = sorted(set(named)) or None
    Z, model, _pre = stimulus_embeddings_for(db, proto, es.images)
    rep = zero_shot_evaluate(es, Z, proto, test_classes=test, split=args.split, n_folds=args.folds,
                             permutations=1000 if args.permutations is None else args.permutations,
                             budget_s=args.budget,
                             shuffle_images=args.shuffle_labels, progress=say, clip_model=model)
    return rep, sids


def _evaluate_one(db, subject, args, say):
    import numpy as np

    from ..decoder import evaluate, fit_teacher, subject_protocol
    from ..decoder.evaluation import BASELINES, main_method
    from ..errors import EegloopError, ModelNotAvailableError

    proto, sids = subject_protocol(db, subject, args.sessions)
    es = db.load_epochs(subject, sids)
    es = es.subset(np.flatnonzero(es.blocks < FEEDBACK_BLOCK_BASE))  # recording blocks, not feedback trials
    methods = [main_method(proto)]
    if args.baselines:
        methods += [m for m in BASELINES if m not in methods]
    if args.methods:
        methods = list(args.methods)
    if args.ablation and not any(m.startswith("kd") or m == "auto" for m in methods):
        raise EegloopError(f"--ablation teacher: none of the methods distils ({', '.join(methods)}); "
                           "add auto or a kd_* method")
    teacher = None
    if any(m.startswith("kd") or m == "auto" for m in methods):
        try:
            teacher = fit_teacher(db, proto, es)
        except ModelNotAvailableError as exc:
            if args.ablation:
                raise EegloopError(f"--ablation teacher: {exc}") from None
            print(f"eegloop: warning: {exc}", file=sys.stderr)
    if args.ablation and teacher is None:
        raise EegloopError(f"--ablation teacher: subject {subject!r} has no teacher to compare with (teacher.enabled "
                           "is false in its protocol, or some epochs have no known stimulus image)")
    rep = evaluate(es, proto, methods=methods, split=args.split, n_folds=args.folds,
                   shuffle_labels=args.shuffle_labels, teacher=teacher, progress=say,
                   permutations=args.permutations, budget_s=args.budget, ablation=args.ablation)
    return rep, sids


def cmd_evaluate(args) -> int:
    import json
    from datetime import datetime

    from .._files import private_dir, write_private_text
    from ..errors import EegloopError, clip_text

    db = _db(args, create=False)
    if args.permutations is None:  # zero-shot's null costs no refits: 1000 by default; refits: none by default
        args.permutations = 1000 if args.zero_shot else 0
    if args.permutations < 0 or args.permutations > 10_000:
        raise EegloopError(f"--permutations: 0 to 10000, got {args.permutations}")
    if args.folds is not None and not 2 <= args.folds <= 1000:
        raise EegloopError(f"--folds: 2 to 1000, got {args.folds}")
    if args.budget is not None and not 0 <= args.budget <= 864_000:  # also refuses nan
        raise EegloopError(f"--budget: 0 to 864000 seconds, got {args.budget:g}")
    known = [s.code for s in db.list_subjects()]
    if args.all:
        subjects = known
    elif args.subjects:
        subjects = list(args.subjects)
    else:
        subjects = [args.subject]
    missing = [c for c in subjects if c not in known]
    if not subjects:
        raise EegloopError("--all: no subjects in the database" if args.all else "--subjects: no subject codes given")
    if missing:
        raise EegloopError(f"--subject{'s' if args.subjects else ''}: unknown subject {clip_text(missing[0], 40)!r}")
    say = None if args.json else (lambda m: print(m, flush=True))
    out = private_dir(db.data_dir / "reports")
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    reports = {}
    if args.zero_shot:
        if args.baselines or args.methods or args.ablation:
            raise EegloopError("--zero-shot: evaluates the EEG encoder only (no --methods/--baselines/--ablation)")
        from ..report import write_zero_shot_report

        for subject in subjects:
            if len(subjects) > 1 and say:
                say(f"== {subject} ==")
            rep, sids = _zero_shot_one(db, subject, args, say)
            full = {**rep.to_json(), "subject": subject, "sessions": sids}
            jpath = out / f"zero-shot-{subject}-{stamp}.json"
            write_private_text(jpath, json.dumps(full, indent=1))
            html = write_zero_shot_report(db, subject, full, jpath.with_suffix(".html"))
            if args.json:
                print(json.dumps(full))
            else:
                print(rep.table())
                print(f"report: {html}")
        return 0
    for subject in subjects:
        if len(subjects) > 1 and say:
            say(f"== {subject} ==")
        rep, sids = _evaluate_one(db, subject, args, say)
        reports[subject] = rep
        full = {**rep.to_json(), "subject": subject, "sessions": sids, "summary": rep.summary(),
                "folds": rep.methods, "confusion": rep.confusion, "classes": rep.classes, "chance": rep.chance,
                "notes": rep.notes}
        write_private_text(out / f"evaluation-{subject}-{stamp}.json", json.dumps(full, indent=1))
        if len(subjects) == 1:
            if args.json:
                print(json.dumps(rep.to_json()))
            else:
                print(rep.table())
            return 0
        if say:
            print(rep.table())
    from ..decoder.evaluation import across_subjects

    table, summary = across_subjects(reports)
    write_private_text(out / f"evaluation-across-{stamp}.json", json.dumps(summary, indent=1))
    print(json.dumps(summary) if args.json else table)
    return 0


def cmd_import(args) -> int:
    from ..protocol import load_protocol
    from ..recorder.importers import parse_events

    from ..errors import EegloopError

    if args.protocol is None:
        raise EegloopError("--protocol: needed to import (channels, sampling rate, epochs, preprocessing); "
                           "see protocols/n170.yaml")
    proto = load_protocol(args.protocol)
    _check_new_subject(args, args.subject)
    if args.channel_types and args.format in ("eeg-imagenet", "things-eeg2"):
        raise EegloopError(f"--channel-types: not with --format {args.format} (its files hold EEG channels only)")
    if args.images is not None and args.format not in ("eeg-imagenet", "things-eeg2"):
        raise EegloopError("--images: only with --format eeg-imagenet or things-eeg2 (recorded sessions know their "
                           "images)")
    for opt, given in (("--metadata", args.metadata), ("--max-images", args.max_images)):
        if given is not None and args.format != "things-eeg2":
            raise EegloopError(f"{opt}: only with --format things-eeg2")
    if args.format == "things-eeg2":  # one subject's preprocessed THINGS-EEG2 files (Gifford et al. 2022)
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
        db = _db(args)  # the files were read and checked first: a bad one leaves the database as it was
        info = {"format": "things-eeg2", "zero_shot_test_classes": test_classes,
                "groups": f"runs 1..: one per training repetition; runs {THINGS_EEG2_TEST_RUN}..: the test "
                          "repetitions in 4 equal consecutive groups; one block per run (the preprocessed files keep "
                          "no recording order)"}
        sid = import_epochset(db, args.subject, proto, es, source=[str(p.resolve()) for p in eeg_files.values()],
                              force=args.force, info=info)
        if stim is not None:
            db.add_stimuli(stim)
        train = es.runs < THINGS_EEG2_TEST_RUN
        parts = []
        for name, m in (("training", train), ("test", ~train)):
            if m.any():
                n_img = len(set(zip(es.labels[m], es.images[m])))
                parts.append(f"{name}: {n_img} images x {int(m.sum()) // n_img} repetitions, "
                             f"{len(set(es.labels[m]))} concepts")
        print(f"imported {len(es)} THINGS-EEG2 epochs ({'; '.join(parts)}) as session {sid} of {args.subject}"
              + (f" (first {args.max_images} images of each file)" if args.max_images else ""))
        runs = sorted(set(es.runs.tolist()))
        print(f"runs {', '.join(map(str, runs))}, one block each: the preprocessed files keep no recording order, "
              f"so each training repetition is a run (1..) and the test repetitions are runs {THINGS_EEG2_TEST_RUN}.. "
              "in 4 equal groups; block- or run-wise folds leave out repetitions of images the other folds also saw, "
              "not independent recording blocks")
        print(f"zero-shot split: {len(test_classes)} test concepts stored in the session's info "
              "(zero_shot_test_classes)" if test_classes else
              "zero-shot split: no test file imported, so no test concepts stored")
        print(f"stimulus images: {len(stim.images)} found under {args.images} and registered: the CLIP teacher can "
              "embed them" if stim is not None else
              "stimulus images: not given (--images DIR, the folder holding training_images/ and test_images/): "
              "kd_* models train without the CLIP teacher")
        return 0
    if args.format == "eeg-imagenet":
        from ..recorder.importers import import_epochset, read_eeg_imagenet

        if len(args.files) != 1:
            raise EegloopError("--format eeg-imagenet: give one .pth file")
        es, _ = read_eeg_imagenet(args.files[0], subject=args.eeg_subject, sfreq=proto.amplifier.sfreq)
        stim = None
        if args.images:
            from ..recorder.importers import locate_images

            stim, es = locate_images(es, args.images, proto.stimuli.extensions)
        db = _db(args)  # the file was read first: a bad one leaves the database (and its folder) as it was
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
    from ..recorder.importers import parse_channel_types, prepare_import, store_import

    channels = list(args.channels) if args.channels else None
    prepared = prepare_import(args.subject, proto, args.files, args.format, parse_events(args.events), channels,
                              args.eeg_stream, args.marker_stream, parse_channel_types(args.channel_types))
    db = _db(args)  # every file was read and cut first: a bad one leaves the database (and its folder) as it was
    sid = store_import(db, prepared, force=args.force)
    es = db.get_epochs(sid)
    from collections import Counter

    from ..errors import clip_text

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


# -- feedback ------------------------------------------------------------------------
def cmd_feedback(args) -> int:
    import dataclasses

    from ..feedback.loop import run_feedback

    proto = _protocol_for_run(args)
    if args.generator:
        proto = proto.replace(feedback=dataclasses.replace(proto.feedback, generator=args.generator))
    if args.format:
        proto = proto.replace(feedback=dataclasses.replace(proto.feedback, format=args.format))
    if args.retrieve_folder:  # relative to here, not to the protocol file
        proto = proto.replace(feedback=dataclasses.replace(proto.feedback,
                                                           retrieve_folder=str(Path(args.retrieve_folder).resolve())))
    if args.embedding_generator:
        g = args.embedding_generator
        proto = proto.replace(feedback=dataclasses.replace(
            proto.feedback, embedding_generator=str(Path(g).resolve()) if Path(g).expanduser().is_dir() else g))
    db = _db(args, create=False)  # needs the subject's model: an existing, up-to-date database
    with _console(args, proto):
        res = run_feedback(proto, args.subject, db, simulate=args.simulate, mode=args.mode, trials=args.trials,
                           progress=lambda m: print(m, flush=True))
    from ..feedback.cues import cue_honesty

    lat = res.latency_ms
    honesty = cue_honesty((r.get("cue_trained"), r["predicted"] == r["true_class"]) for r in res.rows
                          if not r["missing"] and r.get("scored", True)).describe()
    n_img = proto.feedback.images_per_trial
    fmt = f", rsvp bursts of {n_img} images" if n_img > 1 else ""
    if res.scored is not None:  # retrieve/embedding: the nearest candidate image's class against the cue's
        unscored = res.trials - res.scored
        print(f"feedback ({res.mode}{fmt}): {res.correct}/{res.scored} nearest images of the cue's class among "
              f"{res.candidates} candidates of {res.n_classes} classes"
              + (f" ({unscored} of never-trained or unlabelled classes, not scored)" if unscored else "")
              + f"; {res.missing} trials missing; latency from epoch complete: embedding "
              f"{lat['decode_ms']['median']:.1f} ms, ranked {lat['retrieve_ms']['median']:.1f} ms, image "
              f"{lat['image_ready_ms']['median']:.1f} ms, on screen {lat['to_screen_ms']['median']:.1f} ms (p95 "
              f"{lat['to_screen_ms']['p95']:.1f}); from the image's onset to its feedback on screen "
              f"{lat['onset_to_screen_ms']['median']:.0f} ms; session {res.session_id}")
        print(f"feedback cues: {honesty}")
        return 0
    print(f"feedback ({res.mode}{fmt}): {res.correct}/{res.trials} decoded as shown "
          f"(chance {1 / res.n_classes:.2f}); {res.missing} trials missing; "
          f"latency from epoch complete: decode {lat['decode_ms']['median']:.1f} ms, image "
          f"{lat['image_ready_ms']['median']:.1f} ms, on screen {lat['to_screen_ms']['median']:.1f} ms "
          f"(p95 {lat['to_screen_ms']['p95']:.1f}); from the image's onset to its feedback on screen "
          f"{lat['onset_to_screen_ms']['median']:.0f} ms; session {res.session_id}")
    print(f"feedback cues: {honesty}")
    return 0


def cmd_export_bids(args) -> int:
    from ..bids import export_bids

    db = _db(args, create=False)
    res = export_bids(db, args.subject, args.out, args.sessions, progress=lambda m: print(m, flush=True))
    print(f"BIDS dataset {args.out}: {len(res.runs)} runs, {res.n_events} stimulus events of subject {args.subject}"
          + "".join(f"; session {s} skipped: {why}" for s, why in res.skipped))
    return 0


def _protocols_for_models(args) -> list:
    from ..protocol import load_protocol, template_path, templates

    if args.protocol is not None:
        return [load_protocol(args.protocol)]
    return [load_protocol(template_path(t)) for t in templates()]


def cmd_models_list(args) -> int:
    from ..models_cache import cached_repos, needs

    for proto in _protocols_for_models(args):
        print(f"protocol {proto.name}:")
        for n in needs(proto):
            print(f"  {n.line()}  ({n.source})")
    repos = cached_repos()
    print("Hugging Face cache: " + (", ".join(f"{r} ({b / 1e9:.2f} GB)" for r, b in repos) if repos else "empty"))
    return 0


def cmd_models_download(args) -> int:
    from ..models_cache import download

    if args.protocol is None:
        from ..errors import EegloopError

        raise EegloopError("--protocol: which protocol's models to fetch (e.g. protocols/ferrante2023.yaml)")
    (proto,) = _protocols_for_models(args)
    after = download(proto, args.what, progress=lambda m: print(m, flush=True))
    for n in after:
        print(n.line())
    return 0


def cmd_check_signal(args) -> int:
    import json

    from ..lsl import configure_lsl
    from ..recorder.signal_check import check_signal

    proto = _protocol_for_run(args)
    if args.seconds is not None:
        import dataclasses

        from ..errors import EegloopError

        if not 1 <= args.seconds <= 600:  # also refuses nan
            raise EegloopError(f"--seconds: 1 to 600, got {args.seconds:g}")

        proto = proto.replace(signal_check=dataclasses.replace(proto.signal_check, seconds=args.seconds))
    configure_lsl(proto.amplifier.lsl_scope)
    sim = None
    if args.simulate:
        from ..recorder.simulator import VirtualAmplifier

        sim = VirtualAmplifier(proto.amplifier, proto.amplifier.simulate, listen_markers=False).start()
    try:
        res = check_signal(proto, progress=None if args.json else (lambda m: print(m, flush=True)))
    finally:
        if sim is not None:
            sim.stop()
    print(json.dumps(res.to_json()) if args.json else res.table())
    if res.verdict == "fail" and not args.json:
        print(f"signal check FAILED on {', '.join(res.failed())}: fix those electrodes before recording")
    return 1 if res.verdict == "fail" else 0


def cmd_check_timing(args) -> int:
    import json

    import numpy as np

    from ..timing_check import check_timing

    proto = _protocol_for_run(args)
    res = check_timing(proto, simulate=args.simulate, trials=args.trials,
                       progress=None if args.json else (lambda m: print(m, flush=True)))
    if args.plot is not None:
        _plot_delays(res, args.plot)
    if args.json:
        print(json.dumps(res.to_json()))
    else:
        for line in res.lines():
            print(line)
        counts, edges = np.histogram(res.delays_ms, bins=min(12, max(3, len(res.delays_ms) // 5)))
        for c, a, b in zip(counts, edges[:-1], edges[1:]):
            print(f"  {a:7.2f}-{b:7.2f} ms {'#' * int(round(40 * c / max(counts.max(), 1)))} {c}")
        print(f"put this in the protocol so that epochs start at the light, not at the marker:\n"
              f"  timing:\n    static_offset_ms: {res.suggested_offset_ms:g}")
    if res.n_found < 0.9 * res.n_stimuli:
        print(f"photodiode onsets found for only {res.n_found} of {res.n_stimuli} flashes: check the sensor",
              file=sys.stderr)
        return 1
    return 0


def _plot_delays(res, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .._files import atomic_path, umask_mode
    from ..errors import EegloopError
    from ..recorder.timing import plot_delays

    fig, ax = plt.subplots(figsize=(5, 3))
    plot_delays(ax, res, "flashes", bins=30)
    fig.tight_layout()
    try:
        with atomic_path(path, mode=umask_mode()) as tmp:  # the format from the suffix (.png, .pdf, .svg), kept by tmp
            fig.savefig(tmp, dpi=100, format=Path(path).suffix.lstrip(".").lower() or "png")
    except OSError as exc:
        raise EegloopError(f"--plot: cannot write {path} ({exc.strerror or type(exc).__name__})") from None
    finally:
        plt.close(fig)


# -- the visit ----------------------------------------------------------------------
def cmd_session(args) -> int:
    from ..session import run_visit

    proto = _protocol_for_run(args)
    _check_new_subject(args, args.subject)
    db = _db(args)
    with _console(args, proto):
        res = run_visit(proto, args.subject, db, simulate=args.simulate, resume=args.resume,
                        progress=lambda m: print(m, flush=True), feedback_mode=args.mode, force=args.force)
    if res.report is None:
        return 1
    print(f"session {res.session_id} completed; report: {res.report}")
    return 0


def cmd_demo(args) -> int:
    from ..demo import demo_protocol_path, run_demo
    from ..protocol import load_protocol

    with _console(args, load_protocol(demo_protocol_path())):
        run_demo(args.out, quick=args.quick, progress=lambda m: print(m, flush=True))
    return 0


@contextlib.contextmanager
def _console(args, proto=None, db=None):
    """The operator console around a command (``--console``, on by default), its URL printed first."""
    if not getattr(args, "console", False):
        yield None
        return
    from ..console import Console

    # --console-port, --console-host and --console-linger were checked by their types; main() tried the address
    con = Console(proto, db, host=args.console_host, port=args.console_port).start()
    print(f"console: {con.url}", flush=True)
    try:
        yield con
    finally:
        if args.console_linger > 0:
            print(f"console: still serving for {args.console_linger:g} s; Ctrl-C ends it", flush=True)
            try:
                import time

                time.sleep(args.console_linger)
            except KeyboardInterrupt:
                pass
        con.stop()


def cmd_console(args) -> int:
    import time

    db = _db(args, create=False)
    args.console = True
    with _console(args, None, db):
        try:
            while True:
                time.sleep(1.0)
        except KeyboardInterrupt:
            pass
    return 0


def cmd_report(args) -> int:
    from ..errors import EegloopError
    from ..report import write_report

    db = _db(args, create=False)
    try:
        path = write_report(db, args.session, args.out)
    except OSError as exc:  # disk full: the folder made for it is removed, an existing report is as it was
        raise EegloopError(f"--out: writing the report failed ({exc.strerror or type(exc).__name__}); nothing was "
                           "left half-written") from None
    print(f"report: {path}")
    return 0


def cmd_replay(args) -> int:
    from ..lsl import configure_lsl
    from ..protocol import load_protocol
    from ..recorder.importers import parse_events, read_recording
    from ..recorder.player import Player

    proto = load_protocol(args.protocol) if args.protocol else None
    configure_lsl(args.scope or (proto.amplifier.lsl_scope if proto else "machine"))
    channels = list(args.channels) if args.channels else None
    rec = read_recording(args.file, args.format, channels,  # the same decision as `import`
                         channel_types=proto.amplifier.channel_types if proto else None, protocol=proto)
    name = args.name or (proto.amplifier.stream_name if proto else "eegloop-replay")
    markers = args.marker_name or (proto.amplifier.marker_stream_name if proto else "eegloop-markers")
    sfreq = proto.amplifier.sfreq if proto and abs(proto.amplifier.sfreq - rec.sfreq) < 0.01 * rec.sfreq else None
    pl = Player(rec, name, markers, parse_events(args.events), speed=args.speed, sfreq=sfreq,
                block_s=proto.paradigm.block_s if proto else 25.0).start(wait_for_consumers=args.wait)
    print(f"replaying {args.file}: {len(rec.ch_names)} ch at {pl.sfreq:g} Hz as '{name}' + markers '{markers}', "
          f"{rec.duration / args.speed:.0f} s at speed {args.speed:g} (Ctrl-C stops)", flush=True)
    try:
        pl.wait()
    except KeyboardInterrupt:
        pl.stop()
    print(f"done: {pl.samples_pushed} samples, {pl.markers_pushed} markers")
    return 0


class UsageError(Exception):
    """A command line argparse refuses (a bad value, a missing or unknown argument): printed as one line."""

    def __init__(self, message: str, prog: str = "eegloop"):
        super().__init__(message)
        self.message, self.prog = message, prog

    def line(self) -> str:
        """``--speed: must be ...`` (argparse's ``argument --speed: ...`` named by the option's long form)."""
        import re

        m = re.match(r"argument ([^:]+): (.*)\Z", self.message, re.S)
        if m:
            name = max(m.group(1).split("/"), key=len)  # -v/--verbose -> --verbose
            return f"{name}: {m.group(2)}"
        return f"{self.message} (see: {self.prog} --help)"


class _Parser(argparse.ArgumentParser):
    """argparse, but a refusal is raised for :func:`main` to print as one line (no usage block, exit 2)."""

    def error(self, message):  # noqa: D401 - argparse's hook
        raise UsageError(message, self.prog)


def build_parser() -> argparse.ArgumentParser:
    """The whole command line: every command and option, each value checked by its type
    (:mod:`eegloop.cli_types`) while it is parsed. The contract test walks it."""
    from .types import (ChannelTypesMap, CommaList, DataFolder, DatabaseUrl, EventsMap, Host, InputFile, InputFolder, InputPath, Integer,
                            Number, OutputFile, OutputFolder, Port, SubjectCode, Text, UniqueItems)
    from ..protocol import templates
    from ..stimuli import SYNTH_CLASSES

    subject = SubjectCode(legacy=True)  # codes added before the letters-and-digits rule stay usable
    session_id = Integer(1, 2**31 - 1)
    protocol_file = InputFile("a protocol file (.yaml)")
    seed = Integer(0, 2**32 - 1)
    stream_name = Text("an LSL stream name", 128)
    channels = CommaList(Text("a channel name", 64), "channel names", max_items=1024)
    scopes = ["machine", "link", "site", "organization", "global"]

    parser = _Parser(
        prog="eegloop",
        description="Closed-loop EEG visual-decoding experiments: protocol -> paradigm + recorder -> "
                    "database -> decoder -> feedback.",
    )
    parser.add_argument("--version", action="version", version=f"eegloop {__version__}")
    common = _Parser(add_help=False)
    common.add_argument("--db", default=None, type=DatabaseUrl(),
                        help="SQLAlchemy URL (default: $EEGLOOP_DB or sqlite in --data)")
    common.add_argument("--data", default=None, type=DataFolder(),
                        help="data folder (default: $EEGLOOP_DATA or ./eegloop-data)")
    common.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    visit = _Parser(add_help=False)  # commands that run a protocol with a subject
    visit.add_argument("--protocol", type=protocol_file, required=True)
    visit.add_argument("--subject", type=subject, required=True, help="pseudonymous subject code")
    visit.add_argument("--simulate", action="store_true", help="start the virtual amplifier in this process")
    console = _Parser(add_help=False)  # commands that serve the operator console
    console.add_argument("--console", action=argparse.BooleanOptionalAction, default=True,
                         help="serve the operator console (live traces, phase, controls) and print its URL")
    console.add_argument("--console-port", type=Port(), default=0, help="its port (default: a free one)")
    console.add_argument("--console-host", type=Host(), default="127.0.0.1",
                         help="its address (default 127.0.0.1; elsewhere every request needs the URL's token)")
    console.add_argument("--console-linger", type=Number(0, 86_400, unit="seconds"), default=0.0, metavar="SECONDS",
                         help="keep serving this long after the visit (the report stays linked)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser("protocol", help="check or describe protocol files")
    psub = p.add_subparsers(dest="action", metavar="ACTION")
    psub.required = True
    c = psub.add_parser("check", parents=[common], help="validate a protocol (and its stimulus files)")
    c.add_argument("file", metavar="FILE", type=protocol_file)
    c.add_argument("--design-only", action="store_true",
                   help="validate everything but the stimulus files and print the implied design")
    c.set_defaults(func=cmd_protocol_check)
    c = psub.add_parser("new", parents=[common], help="start a protocol from a shipped template")
    c.add_argument("file", metavar="FILE", type=OutputFile("the new protocol file", suffixes=(".yaml", ".yml")),
                   help="the new protocol file (.yaml)")
    c.add_argument("--from", dest="template", default="interleaved", choices=templates(),
                   help="template: demo, ferrante2023 (the paper, blocked), interleaved (the honest default), n170, "
                        "things-eeg2 (imports of the public dataset), zero-shot (the EEG encoder on a simulated subject)")
    c.add_argument("--force", action="store_true", help="replace the file if it exists")
    c.set_defaults(func=cmd_protocol_new)
    c = psub.add_parser("schema", parents=[common], help="print every protocol field with its default")
    c.set_defaults(func=cmd_protocol_schema)
    c = psub.add_parser("show", parents=[common], help="print a protocol with all defaults filled in")
    c.add_argument("file", metavar="FILE", type=protocol_file)
    c.set_defaults(func=cmd_protocol_show)

    p = sub.add_parser("stimuli", help="stimulus sets")
    ssub = p.add_subparsers(dest="action", metavar="ACTION")
    ssub.required = True
    c = ssub.add_parser("synth", parents=[common], help="draw distinct procedural images per class")
    c.add_argument("--classes", type=Integer(2, len(SYNTH_CLASSES)), default=4,
                   help=f"number of classes (2-{len(SYNTH_CLASSES)})")
    c.add_argument("--per-class", type=Integer(1, 100_000), default=20, help="images per class")
    c.add_argument("--out", type=OutputFolder("the stimulus folder (created if needed)"), required=True,
                   help="output folder (one sub-folder per class)")
    c.add_argument("--size", type=Integer(16, 2048, "pixels"), default=256, help="image edge in pixels (16-2048)")
    c.add_argument("--seed", type=seed, default=0)
    c.set_defaults(func=cmd_stimuli_synth)

    c = sub.add_parser("simulate", parents=[common], help="run the virtual amplifier (a simulated subject on LSL)")
    c.add_argument("--protocol", type=protocol_file,
                   help="take amplifier and amplifier.simulate settings from a protocol")
    c.add_argument("--name", type=stream_name, help="LSL stream name (default eegloop-sim)")
    c.add_argument("--channels", type=Integer(1, 1024), help="EEG channels (default 128)")
    # the simulated subject's 14-70 Hz drift band needs more than 31 Hz; the protocol's bound above
    c.add_argument("--sfreq", type=Number(32, 100_000, unit="Hz"), help="sampling rate, Hz (default 1000)")
    c.add_argument("--snr", type=Number(0, 1000), help="class response amplitude relative to background")
    c.add_argument("--class-signal", type=Number(0, 1), help="0 removes all class information")
    c.add_argument("--block-drift", type=Number(0, 1e6, unit="µV"),
                   help="per-block offset independent of class, µV (confound)")
    c.add_argument("--onset-channel", action="store_true", help="add a STIM channel marking each onset sample")
    c.add_argument("--seed", type=seed)
    c.add_argument("--scope", choices=scopes, help="LSL scope (default machine)")
    c.add_argument("--duration", type=Number(0, 1e6, lo_open=True, unit="seconds"),
                   help="stop after this many seconds (default: until Ctrl-C)")
    c.set_defaults(func=cmd_simulate)

    c = sub.add_parser("record", parents=[common, visit, console], help="run the paradigm and record EEG + markers")
    c.add_argument("--resume", action="store_true",
                   help="continue the subject's interrupted session: every block not completely stored is shown again")
    c.add_argument("--force", action="store_true",
                   help="record even when the signal check fails on some channels (the check is stored)")
    c.set_defaults(func=cmd_record)

    c = sub.add_parser("train", parents=[common], help="quick-train the subject's decoder and register it")
    c.add_argument("--subject", type=subject, required=True)
    c.add_argument("--sessions", type=session_id, nargs="+", action=UniqueItems,
                   help="session ids (default: all of the subject's)")
    c.add_argument("--no-teacher", action="store_true", help="plain cross-entropy, no CLIP distillation")
    c.add_argument("--encoder", action="store_true",
                   help="train the EEG -> CLIP-embedding encoder instead (zero-shot retrieval, feedback modes "
                        "retrieve and embedding); targets: the teacher's CLIP image embeddings")
    c.set_defaults(func=cmd_train)

    c = sub.add_parser("evaluate", parents=[common], help="cross-validate by whole blocks/runs, chance beside")
    who = c.add_mutually_exclusive_group(required=True)
    who.add_argument("--subject", type=subject)
    who.add_argument("--subjects", type=CommaList(subject, "subject codes"),
                     help="comma-separated subjects: the paper's table, mean (std) across them")
    who.add_argument("--all", action="store_true", help="every subject in the database")
    c.add_argument("--permutations", type=Integer(0, 10_000), default=None,
                   help="label-shuffled refits per method and subject for a permutation p-value (e.g. 100)")
    c.add_argument("--sessions", type=session_id, nargs="+", action=UniqueItems)
    c.add_argument("--split", choices=["block", "run", "random"], default=None,
                   help="folds leave whole blocks/runs out (default: the protocol's); random is INFLATED")
    c.add_argument("--folds", type=Integer(2, 1000), default=None)
    c.add_argument("--shuffle-labels", action="store_true", help="permutation control: should score at chance "
                   "(with --zero-shot: training epochs get randomly permuted images' embeddings)")
    c.add_argument("--zero-shot", action="store_true",
                   help="the EEG encoder on classes it never saw: whole classes and their blocks held out, k-way "
                        "identification among the held-out images (2, 50, 200, all), chance and permutation p "
                        "(--permutations, default 1000 for this); an HTML report with retrieval curves")
    c.add_argument("--test-classes", metavar="IDS", type=CommaList(Text("a class id", 128), "class ids", max_items=100_000),
                   help="--zero-shot: comma-separated classes to hold out (default: the data's own test split, "
                        "e.g. THINGS-EEG2's, else a random encoder.test_share of the classes)")
    c.add_argument("--baselines", action="store_true", help="also the paper's baselines (Table 1)")
    c.add_argument("--methods", type=CommaList(Text("a method name (letters, digits, _)", 64, pattern=r"[A-Za-z0-9_]+"), "method names", max_items=100),
                   help="comma-separated methods instead (e.g. auto,riemann,kd_stft)")
    c.add_argument("--budget", type=Number(0, 864_000, unit="seconds"), default=None, metavar="SECONDS",
                   help="wall-clock target per subject: the networks share what the other rows leave and a fit "
                        "that reaches its share stops, named in the output (default: the protocol's "
                        "decoder.evaluate_budget_s, 150 s; 0: train every network fully)")
    c.add_argument("--ablation", choices=["teacher"],
                   help="teacher: each distilling method (auto, kd_*) also without the teacher on the same folds; "
                        "paired difference and its p")
    c.add_argument("--json", action="store_true", help="print the results as one JSON line")
    c.set_defaults(func=cmd_evaluate)

    c = sub.add_parser("import", parents=[common],
                       help="import recordings (XDF, MNE formats, CSV) or datasets (EEG-ImageNet, THINGS-EEG2) as a "
                            "session")
    c.add_argument("files", metavar="FILES", nargs="+", action=UniqueItems,
                   type=InputPath("a recording file (or a THINGS-EEG2 subject folder)"),
                   help="recordings; eeg-imagenet: the .pth file; things-eeg2: a subject folder "
                        "(sub-01/) or its preprocessed_eeg_{training,test}.npy")
    c.add_argument("--subject", type=subject, required=True)
    c.add_argument("--format", choices=["xdf", "mne", "csv", "eeg-imagenet", "things-eeg2"])
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
    c.add_argument("--channels", type=channels, help="comma-separated channels to keep (e.g. TP9,AF7,AF8,TP10)")
    c.add_argument("--channel-types", type=ChannelTypesMap(), metavar="LABEL=TYPE,...",
                   help="retype channels (eeg, eog, ecg, emg, misc, stim, resp; only eeg is decoded), e.g. "
                        "'Right AUX=misc': over the file's own types and the protocol's amplifier.channel_types")
    c.add_argument("--protocol", type=protocol_file, help="protocol describing the recording (channels, sfreq, epochs)")
    c.add_argument("--eeg-stream", type=Text("an XDF stream name or type", 256), help="XDF: EEG stream name or type")
    c.add_argument("--marker-stream", type=Text("an XDF stream name or type", 256),
                   help="XDF: marker stream name or type")
    c.add_argument("--force", action="store_true",
                   help="import a file even if the same bytes were imported before (copies inflate scores)")
    c.set_defaults(func=cmd_import)

    model_ref = Text("a diffusers model folder or a cached hub id", 1024)
    modes = ["live", "bank", "stimulus", "retrieve", "embedding"]
    c = sub.add_parser("feedback", parents=[common, visit, console], help="closed-loop block: decode each epoch, show its image")
    c.add_argument("--mode", choices=modes,
                   help="default: the protocol's feedback.mode; retrieve and embedding use the subject's EEG encoder")
    c.add_argument("--trials", type=Integer(1, 10_000), help="default: the protocol's feedback.trials")
    c.add_argument("--generator", type=model_ref,
                   help="diffusers model folder or cached hub id (overrides feedback.generator)")
    c.add_argument("--retrieve-folder", type=InputFolder("a folder of candidate images"), metavar="DIR",
                   help="retrieve/embedding: candidate images, any depth, sub-folders name classes (overrides "
                        "feedback.retrieve_folder; default: the stimuli)")
    c.add_argument("--embedding-generator", type=model_ref, metavar="MODEL",
                   help="embedding: Stable unCLIP folder or cached hub id (overrides feedback.embedding_generator)")
    c.add_argument("--format", choices=["cue", "rsvp"],
                   help="cue: one image per trial; rsvp: a burst of feedback.rsvp_images at the training pace "
                        "(default: the protocol's feedback.format)")
    c.set_defaults(func=cmd_feedback)

    c = sub.add_parser("session", parents=[common, visit, console], help="a whole visit: record, quick-train, feedback, report")
    c.add_argument("--resume", action="store_true", help="continue the subject's interrupted session")
    c.add_argument("--mode", choices=modes, help="feedback mode (default: the protocol's)")
    c.add_argument("--force", action="store_true",
                   help="record even when the signal check fails on some channels (the check is stored)")
    c.set_defaults(func=cmd_session)

    c = sub.add_parser("check-signal", parents=[common],
                       help="every electrode pass/warn/fail: flat, saturated, line noise, RMS, drift (exit 1 on fail)")
    c.add_argument("--protocol", type=protocol_file, required=True)
    c.add_argument("--simulate", action="store_true", help="check the virtual amplifier (its bad-channel switches)")
    c.add_argument("--seconds", type=Number(1, 600, unit="seconds"), help="default: the protocol's signal_check.seconds")
    c.add_argument("--json", action="store_true")
    c.set_defaults(func=cmd_check_signal)

    c = sub.add_parser("check-timing", parents=[common],
                       help="measure the display's marker-to-photon delay with a photodiode on the patch")
    c.add_argument("--protocol", type=protocol_file, required=True)
    c.add_argument("--simulate", action="store_true",
                   help="against the virtual amplifier (its photodiode follows amplifier.simulate.display_latency_ms)")
    c.add_argument("--trials", type=Integer(5, 10_000), help="flashes (default: the protocol's timing.check_trials)")
    c.add_argument("--plot", type=OutputFile("the plot file", suffixes=(".png", ".pdf", ".svg")), metavar="PNG",
                   help="also draw the delays' histogram into this file (.png, .pdf or .svg)")
    c.add_argument("--json", action="store_true")
    c.set_defaults(func=cmd_check_timing)

    p = sub.add_parser("models", help="the CLIP and Stable Diffusion weights a protocol needs")
    msub = p.add_subparsers(dest="action", metavar="ACTION")
    msub.required = True
    c = msub.add_parser("list", parents=[common], help="what each protocol needs and what is cached here")
    c.add_argument("--protocol", type=protocol_file, help="one protocol (default: every shipped template)")
    c.set_defaults(func=cmd_models_list)
    c = msub.add_parser("download", parents=[common],
                        help="fetch a protocol's missing weights into the usual caches (needs internet)")
    c.add_argument("what", metavar="WHAT", nargs="?", choices=["clip", "generator", "all"], default="all")
    c.add_argument("--protocol", type=protocol_file)
    c.set_defaults(func=cmd_models_download)

    p = sub.add_parser("export", help="share data in the field's formats")
    esub = p.add_subparsers(dest="format", metavar="FORMAT")
    esub.required = True
    c = esub.add_parser("bids", parents=[common], help="a subject's recorded runs as a BIDS EEG dataset (MNE-BIDS)")
    c.add_argument("--subject", type=subject, required=True)
    c.add_argument("--out", type=OutputFolder("the BIDS root folder"), required=True,
                   help="the BIDS root folder (created; files replaced)")
    c.add_argument("--sessions", type=session_id, nargs="+", action=UniqueItems,
                   help="only these sessions (default: all of the subject's)")
    c.set_defaults(func=cmd_export_bids)

    c = sub.add_parser("demo", parents=[common, console], help="the whole visit on the simulator, SQLite, in a few minutes")
    c.add_argument("--out", type=OutputFolder("the demo's folder"), default="eegloop-demo",
                   help="output folder (default ./eegloop-demo)")
    c.add_argument("--quick", action="store_true", help="an even shorter variant (used by the tests)")
    c.set_defaults(func=cmd_demo)

    c = sub.add_parser("console", parents=[common, console],
                       help="serve the operator console for browsing past sessions and their reports (Ctrl-C ends)")
    c.set_defaults(func=cmd_console)

    c = sub.add_parser("report", parents=[common], help="write a session's self-contained HTML report")
    c.add_argument("--session", type=session_id, required=True)
    c.add_argument("--out", type=OutputFolder("the report's folder"), help="folder (default: DATA/reports/session-NNNN)")
    c.set_defaults(func=cmd_report)

    c = sub.add_parser("replay", parents=[common], help="stream a recording as live LSL EEG + markers")
    c.add_argument("file", metavar="FILE", type=InputFile("a recording file (XDF, CSV, or any format MNE reads)"))
    c.add_argument("--speed", type=Number(0, 1000, lo_open=True, unit="(1 is real time)"), default=1.0,
                   help="how much faster than real time")
    c.add_argument("--format", choices=["xdf", "mne", "csv"])
    c.add_argument("--events", type=EventsMap(), help="marker value -> class ('1=house,2=face'): sent as stim_on markers")
    c.add_argument("--channels", type=channels, help="comma-separated channels to stream")
    c.add_argument("--protocol", type=protocol_file, help="take stream names, sfreq and block length from a protocol")
    c.add_argument("--name", type=stream_name, help="EEG stream name")
    c.add_argument("--marker-name", type=stream_name, help="marker stream name")
    c.add_argument("--scope", choices=scopes)
    c.add_argument("--wait", type=Number(0, 3600, unit="seconds"), default=0.0,
                   help="wait up to this many seconds for a recorder to connect")
    c.set_defaults(func=cmd_replay)

    p = sub.add_parser("db", help="create or upgrade the database schema")
    dsub = p.add_subparsers(dest="action", metavar="ACTION")
    dsub.required = True
    for name, text in (("init", "create the schema"), ("upgrade", "upgrade the schema to this version")):
        c = dsub.add_parser(name, parents=[common], help=text)
        c.set_defaults(func=cmd_db)

    p = sub.add_parser("subject", help="subjects (pseudonymous codes only)")
    sbs = p.add_subparsers(dest="action", metavar="ACTION")
    sbs.required = True
    c = sbs.add_parser("add", parents=[common], help="add a subject by code")
    c.add_argument("code", metavar="CODE", type=SubjectCode())
    c.set_defaults(func=cmd_subject_add)
    c = sbs.add_parser("list", parents=[common], help="list subjects")
    c.set_defaults(func=cmd_subject_list)
    _show_ranges(parser)
    return parser


def _show_ranges(parser: argparse.ArgumentParser, seen: set | None = None) -> None:
    """``--help`` says what every option accepts: its type's description after its help."""
    from .types import ArgType

    seen = set() if seen is None else seen
    for a in parser._actions:
        if isinstance(a, argparse._SubParsersAction):
            for sub in a.choices.values():
                _show_ranges(sub, seen)
        elif isinstance(a.type, ArgType) and id(a) not in seen and a.help is not argparse.SUPPRESS:
            seen.add(id(a))  # the parents' actions are shared by the commands that take them
            a.help = (f"{a.help} [{a.type.describe()}]" if a.help else a.type.describe()).replace("%", "%%")


def _print_error(msg: str) -> None:
    """``eegloop: error: ...`` on ONE line, whatever the message holds."""
    from ..errors import clip_text

    line = "; ".join(part.strip() for part in msg.splitlines() if part.strip())
    print(f"eegloop: error: {clip_text(line, 4000)}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)  # every value is checked here, by its type (eegloop.cli_types)
    except UsageError as exc:
        _print_error(exc.line())
        return EXIT_USER_ERROR
    set_log_level("info" if getattr(args, "verbose", False) else "warning")
    _OPENED.clear()
    try:
        if getattr(args, "console", False):  # where the console would listen: before any work
            from .types import check_listen

            check_listen(args.console_host, args.console_port)
        return int(args.func(args) or 0)
    except EegloopError as exc:
        _print_error(str(exc))
        return EXIT_USER_ERROR
    except Exception as exc:
        # a database that became locked or unreachable mid-command is the user's to fix, not a bug
        msg = _OPENED[-1].user_error(exc) if _OPENED else None
        if msg is None:
            raise
        _print_error(msg)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("eegloop: interrupted", file=sys.stderr)
        return 130
    finally:
        for db in _OPENED:  # close the connections: SQLite folds its WAL back into the file
            db.close()
        _OPENED.clear()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
