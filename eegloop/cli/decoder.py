"""``eegloop train`` and ``eegloop evaluate``: a subject's decoder (and EEG encoder), trained or cross-validated."""
from __future__ import annotations

import sys

from .common import SESSION_ID, SUBJECT, Parents, open_db, say, say_to_stderr, silent
from ..protocol.schema import GROUP_NAME
from .types import CommaList, Integer, Number, Text, UniqueItems


def add_parser(commands, parents: Parents) -> None:
    """Add ``train`` and ``evaluate`` to the top-level sub-parsers."""
    c = commands.add_parser("train", parents=[parents.common], help="quick-train the subject's decoder and register it")
    c.add_argument("--subject", type=SUBJECT, required=True)
    c.add_argument("--sessions", type=SESSION_ID, nargs="+", action=UniqueItems,
                   help="session ids (default: all of the subject's)")
    c.add_argument("--no-teacher", action="store_true", help="plain cross-entropy, no CLIP distillation")
    c.add_argument("--encoder", action="store_true",
                   help="train the EEG -> CLIP-embedding encoder instead (zero-shot retrieval, feedback modes "
                        "retrieve and embedding); targets: the teacher's CLIP image embeddings")
    c.add_argument("--group-model", metavar="NAME", type=Text("a group model name", 64, pattern=GROUP_NAME.pattern),
                   default=None, help="start from this group model (`eegloop pretrain`): aligned to the subject on "
                                      "their own epochs and blended with their own model (decoder.group_model)")
    c.add_argument("--group-weight", metavar="W", type=Number(0, 1), default=None,
                   help="the group model's weight in the blend (default: chosen on inner folds among 1, 0.75, 0.5, "
                        "0.25, 0; 1: zero calibration, the subject's labels unused)")
    c.set_defaults(run=run)
    _add_evaluate(commands, parents)


def _add_evaluate(commands, parents: Parents) -> None:
    c = commands.add_parser("evaluate", parents=[parents.common], help="cross-validate by whole blocks/runs, chance beside")
    who = c.add_mutually_exclusive_group(required=True)
    who.add_argument("--subject", type=SUBJECT)
    who.add_argument("--subjects", type=CommaList(SUBJECT, "subject codes"),
                     help="comma-separated subjects: the paper's table, mean (std) across them")
    who.add_argument("--all", action="store_true", help="every subject in the database")
    c.add_argument("--permutations", type=Integer(0, 10_000), default=None,
                   help="label-shuffled refits per method and subject for a permutation p-value (e.g. 100)")
    c.add_argument("--sessions", type=SESSION_ID, nargs="+", action=UniqueItems)
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
                        "decoder.evaluate_budget_s, 150 s; 0: train every network fully and let auto's selection "
                        "compare every candidate, whatever decoder.select_budget_s says: numbers that do not depend "
                        "on the machine's speed). With --calibration-curve: the comparison's budget in each fit "
                        "(default decoder.select_budget_s; 0: none)")
    c.add_argument("--ablation", choices=["teacher"],
                   help="teacher: each distilling method (auto, kd_*) also without the teacher on the same folds; "
                        "paired difference and its p")
    where = c.add_mutually_exclusive_group()
    where.add_argument("--cluster", type=SchedulerAddress(), metavar="tcp://HOST:PORT",
                       help="run the fits on this Dask scheduler's workers (`dask scheduler`, `dask worker ADDR` on "
                            "machines with eegloop installed); the epochs are sent from here")
    where.add_argument("--workers", type=Integer(0, 1024), default=None, metavar="N",
                       help="run the fits on a Dask LocalCluster of N worker processes on 127.0.0.1 (0: here, one "
                            "after another; default: one per core for several subjects, a network or --permutations)")
    group = c.add_mutually_exclusive_group()
    group.add_argument("--calibration-curve", action="store_true",
                       help="with --subject S: the score against minutes of S's own data (0, 2, 5, 10, 20, all), "
                            "whole blocks/runs held out, with and without --group-model, chance and permutation p "
                            "(--permutations, default 10) beside; a table, a plot in reports/")
    group.add_argument("--loso", action="store_true",
                       help="with --subjects A,B,... (2 or more): each subject scored (zero calibration) by a group "
                            "model trained in memory on the other subjects with group consent; chance and permutation "
                            "p (--permutations, default 1000); with --zero-shot (3 or more): each subject's zero-shot "
                            "identification by an EEG encoder trained on the other consenting subjects")
    c.add_argument("--group-model", metavar="NAME", type=Text("a group model name", 64),
                   help="--calibration-curve: the stored group model (eegloop pretrain) to adapt; it must not hold "
                        "the subject's epochs")
    c.add_argument("--method", choices=["riemann", "conv1d", "lstm"], default=None,
                   help="--loso: the group model's method (default riemann)")
    c.add_argument("--json", action="store_true", help="print the results as one JSON line")
    c.set_defaults(run=run)


class SchedulerAddress(Text):
    """``--cluster``: a Dask scheduler's address, ``tcp://HOST:PORT`` (:func:`eegloop.cluster.parse_address`)."""

    def __init__(self):
        super().__init__("a Dask scheduler address tcp://HOST:PORT", 300)

    def __call__(self, text: str) -> str:
        import argparse

        from ..cluster import parse_address
        from ..errors import EegloopError

        text = super().__call__(text)
        try:
            return str(parse_address(text))
        except EegloopError as exc:  # argparse names the option itself
            raise argparse.ArgumentTypeError(str(exc).removeprefix("--cluster: ")) from None


def run(args) -> int:
    """Run ``eegloop train`` or ``eegloop evaluate``."""
    return {"train": train, "evaluate": evaluate}[args.command](args)


# -- train --------------------------------------------------------------------------
def train(args) -> int:
    from ..decoder import heldout_line, honest_estimate, quick_train

    db = open_db(args, create=False)
    if args.encoder:
        return _train_encoder(db, args)
    res = quick_train(db, args.subject, args.sessions, protocol=_with_group(db, args), progress=True,
                      use_teacher=not args.no_teacher, exclude_images=_feedback_cues(db, args))
    m = res.metrics
    for line in _trained_lines(res):
        print(line)
    from ..decoder.groupstart import group_line

    if group_line(m):
        print(group_line(m))
    print(heldout_line(m))
    est = honest_estimate(db, args.subject, m["method"])
    if m.get("zero_calibration"):
        pass  # the line above is the estimate: the group model scored on epochs nothing was fitted to
    elif m.get("group"):  # a blend: evaluate --subject scores the own methods, not the group model
        print(f"honest estimate: run `eegloop evaluate --calibration-curve --subject {args.subject} --group-model "
              f"{m['group']['name']}` (whole blocks or runs left out, with and without the group model)")
    elif est:
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


def _with_group(db, args):
    """The subject's stored protocol with ``--group-model``/``--group-weight`` set (None: neither given); the
    group model is checked before any work."""
    if args.group_model is None and args.group_weight is None:
        return None
    from dataclasses import replace

    from ..decoder import subject_protocol
    from ..decoder.group import subject_labels
    from ..decoder.groupstart import check_group_classes, check_group_start, check_not_trained_on
    from ..errors import EegloopError

    if args.group_model is None:
        raise EegloopError("--group-weight: given without --group-model (a weight of which group model?)")
    if not db.group_model_exists(args.group_model):
        raise EegloopError(f"--group-model: no group model named {args.group_model!r} (list them: eegloop pretrain "
                           "--list)")
    proto = subject_protocol(db, args.subject, args.sessions)[0]
    proto = replace(proto, decoder=replace(proto.decoder, group_model=args.group_model,
                                           group_weight=args.group_weight))
    ids = args.sessions or [x.id for x in db.list_sessions(args.subject)]
    check_group_classes(db, args.group_model, subject_labels(db, args.subject, ids), "--group-model",
                        f"{args.subject}'s epochs")
    check_group_start(db, proto, warn=False)  # quick_train warns, after its own refusals
    check_not_trained_on(db, proto, args.subject, ids, option="--group-model")
    return proto


def _trained_lines(res) -> list[str]:
    """What ``train`` prints of quick_train's result: the model, how its method was chosen, the epochs dropped
    and the training run."""
    from ..decoder.selection import Selection

    m = res.metrics
    sel = Selection.from_json(m["selection"])
    lines = [f"model {res.model_id}: {res.path}"]
    if sel.n_folds:
        lines.append(f"decoder: {m['method']}, chosen by " + sel.describe())
    else:
        lines.append(f"decoder: {m['method']}" + (f" ({sel.note})" if sel.note else ""))
    rej = m["rejection"]
    if rej["rejected"]:
        lines.append(f"artifacts: {rej['rejected']} of {rej['rejected'] + rej['kept']} epochs dropped "
                     f"(epochs.reject_uv {rej['reject_uv']}, flat_uv {rej['flat_uv']})")
    if m.get("epochs_run") is not None:
        teacher = (f"teacher accuracy {m['teacher_top1']:.3f}, alpha {m.get('alpha')}"
                   if m.get("teacher_top1") is not None else "no teacher (alpha 1)")
        lines.append(f"trained in {m['seconds']:.1f} s on {m['n_train']} epochs ({m['epochs_run']} epochs run, best "
                     f"{m['best_epoch']}; {m['device']}, {m['threads']} threads; {teacher})")
    else:
        lines.append(f"trained in {m['seconds']:.1f} s on {m['n_train'] + m['n_heldout']} epochs")
    return lines


def _feedback_cues(db, args) -> set:
    """The images the subject's feedback block uses as cues (its stored protocol's ``feedback.cue_share``): kept
    out of training, as the visit keeps them, so that the feedback's accuracy stays an honest estimate."""
    from ..decoder import subject_protocol
    from ..stimuli import feedback_cue_shas

    return feedback_cue_shas(subject_protocol(db, args.subject, args.sessions)[0])


def _train_encoder(db, args) -> int:
    from ..decoder import train_encoder

    def show(rec):
        if rec["epoch"] == 1 or rec["epoch"] % 10 == 0:
            print(f"encoder epoch {rec['epoch']}/{rec['planned']}: loss {rec['train_loss']:.3f}"
                  + (f", held-out blocks loss {rec['val_loss']:.3f}, top-1 {rec['val_top1']:.3f}" if "val_loss" in rec
                     else "") + f" ({rec['seconds']:.1f} s)", flush=True)

    res = train_encoder(db, args.subject, args.sessions, progress=show, exclude_images=_feedback_cues(db, args))
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


# -- evaluate -----------------------------------------------------------------------
def evaluate(args) -> int:
    from datetime import datetime

    from .._files import private_dir

    db = open_db(args, create=False)
    if args.zero_shot and args.loso:
        return _evaluate_zero_shot_loso(db, args)
    if args.calibration_curve or args.loso or args.group_model or args.method:
        return _evaluate_group(db, args)
    subjects = _subjects(args, db)
    _check_methods(args)  # before any work: no folder made, no epochs read
    progress = silent if args.json else say  # --json: the JSON alone on stdout
    if args.zero_shot:
        out = private_dir(db.data_dir / "reports")
        return _evaluate_zero_shot(db, args, subjects, progress, out, datetime.now().strftime("%Y%m%d-%H%M%S"))
    from contextlib import nullcontext

    from ..cluster import open_executor
    from ..decoder.tasks import preload_for

    # the scheduler is reached (or the local cluster started) before any epoch is read or folder made: an address
    # nobody answers at is one line, and nothing changed. Neither option: evaluate_subjects chooses (serial or a
    # LocalCluster, by the work).
    chosen = args.cluster is not None or args.workers is not None
    preload = preload_for(args.methods if args.methods and not args.baselines else None)
    with open_executor(args.cluster, args.workers, preload=preload) if chosen else nullcontext() as ex:
        out = private_dir(db.data_dir / "reports")
        return _evaluate_methods(db, args, subjects, progress, out, datetime.now().strftime("%Y%m%d-%H%M%S"), ex)


def _check_group_request(args, db) -> list[str]:
    """``--calibration-curve`` / ``--loso``: the options they take, checked before any work; the subjects."""
    from ..decoder.calibration import check_curve_request
    from ..decoder.loso import plan_loso
    from ..errors import EegloopError

    if args.group_model and not args.calibration_curve:
        raise EegloopError("--group-model: only with --calibration-curve")
    if args.method and not args.loso:
        raise EegloopError("--method: only with --loso (the group model's method)")
    mode = "--calibration-curve" if args.calibration_curve else "--loso"
    others = [name for name, on in (("--zero-shot", args.zero_shot), ("--methods", args.methods),
                                    ("--baselines", args.baselines), ("--ablation", args.ablation),
                                    ("--shuffle-labels", args.shuffle_labels),
                                    ("--budget", args.budget is not None and args.loso)) if on]
    if others:
        raise EegloopError(f"{mode}: not with {others[0]} (it scores the protocol's default and the group model, "
                           "here)")
    if getattr(args, "sessions", None):  # every session of each subject: the curve's minutes and folds span them
        raise EegloopError(f"{mode}: not with --sessions (it uses every session of "
                           f"{'the subject' if args.calibration_curve else 'each subject'})")
    default_perms = args.permutations is None
    if args.calibration_curve:
        if not args.subject:
            raise EegloopError("--calibration-curve: needs --subject S (one subject's curve)")
        if args.split == "random":
            raise EegloopError("--split: the calibration curve holds whole blocks or runs out (block or run)")
    elif not args.subjects:
        raise EegloopError("--loso: needs --subjects A,B,... (at least 2)")
    subjects = _subjects(args, db)
    if default_perms:
        args.permutations = 10 if args.calibration_curve else 1000
    if args.calibration_curve:
        check_curve_request(db, subjects[0], args.group_model)
    else:
        plan_loso(db, subjects, args.method or "riemann")
    return subjects


def _evaluate_group(db, args) -> int:
    """``evaluate --calibration-curve`` and ``evaluate --loso``: a table (or one JSON line) and files in reports/."""
    import json
    from datetime import datetime

    from .._files import private_dir, write_private_text
    from ..decoder.calibration import calibration_curve, plot_curve
    from ..decoder.loso import loso

    subjects = _check_group_request(args, db)
    progress = say_to_stderr if args.json else say  # minutes of fits: progress even when stdout is the JSON
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    if args.loso:
        rep = loso(db, subjects, args.method or "riemann", args.permutations, progress=progress,
                   cluster=args.cluster, workers=args.workers)
        return _write_and_show(args, rep, private_dir(db.data_dir / "reports") / f"loso-{stamp}.json")
    curve = calibration_curve(db, subjects[0], args.group_model, args.split, args.folds, args.permutations,
                              progress=progress, cluster=args.cluster, workers=args.workers, budget_s=args.budget)
    out = private_dir(db.data_dir / "reports")
    path = out / f"calibration-{subjects[0]}-{stamp}.json"
    curve.png = plot_curve(curve, path.with_suffix(".png"))
    write_private_text(path, json.dumps({**curve.full_json(), "plot": str(curve.png)}, indent=1))
    if args.json:
        print(json.dumps(curve.to_json()))
    else:
        print(curve.table())
        print(f"report: {path} (plot: {curve.png})")
    return 0


def _check_methods(args) -> None:
    """``--methods`` against the registry (evaluate says the same), and none with ``--zero-shot``."""
    from ..decoder.methods import method_names
    from ..errors import EegloopError, short_repr

    if args.zero_shot:
        if args.baselines or args.methods or args.ablation:
            raise EegloopError("--zero-shot: evaluates the EEG encoder only (no --methods/--baselines/--ablation)")
        if args.cluster or args.workers is not None:
            raise EegloopError("--zero-shot: runs here (no --cluster/--workers)")
        return
    unknown = [m for m in args.methods or () if m not in method_names()]
    if unknown:
        raise EegloopError(f"--methods: unknown method {short_repr(unknown[0])}; "
                           f"choose from {', '.join(method_names())}")


def _subjects(args, db) -> list[str]:
    """The subjects ``evaluate`` scores (``--subject``, ``--subjects`` or ``--all``), its numbers checked first."""
    from ..errors import EegloopError, clip_text

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
    return subjects


def _evaluate_zero_shot(db, args, subjects, progress, out, stamp) -> int:
    import json

    from .._files import write_private_text
    from ..report import write_zero_shot_report

    for subject in subjects:
        if len(subjects) > 1 and progress:
            progress(f"== {subject} ==")
        rep, sids = _zero_shot_one(db, subject, args, progress)
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


def _evaluate_zero_shot_loso(db, args) -> int:
    """``evaluate --zero-shot --loso --subjects A,B,C``: each subject's zero-shot identification by an encoder
    trained on the other subjects with group consent (:mod:`eegloop.decoder.zeroshot_subjects`)."""
    from datetime import datetime

    from .._files import private_dir
    from ..decoder import stimulus_embeddings_for
    from ..decoder.loso import plan_loso
    from ..decoder.zeroshot_subjects import zero_shot_loso
    from ..errors import EegloopError

    others = [name for name, on in (("--methods", args.methods), ("--baselines", args.baselines),
                                    ("--ablation", args.ablation), ("--calibration-curve", args.calibration_curve),
                                    ("--group-model", args.group_model), ("--method", args.method),
                                    ("--cluster", args.cluster), ("--workers", args.workers is not None),
                                    ("--sessions", getattr(args, "sessions", None)))
              if on]
    if others:
        raise EegloopError(f"--zero-shot --loso: not with {others[0]}")
    if not args.subjects:
        raise EegloopError("--loso: needs --subjects A,B,C (at least 3)")
    subjects = _subjects(args, db)
    train_on = plan_loso(db, subjects, min_train=2, same_classes=False)  # before any work: who may train whose encoder (group consent)
    progress = silent if args.json else say
    data, proto, test = {}, None, list(args.test_classes) if args.test_classes else None
    for subject in subjects:
        p, sids, es = _recorded_epochs(db, subject, args)
        proto = proto or p
        if test is None:
            test = _recorded_test_classes(db, subject, sids)
        data[subject] = (es, stimulus_embeddings_for(db, p, es.images)[0])
    rep = zero_shot_loso(data, proto, test_classes=test, permutations=200 if args.permutations is None else
                         args.permutations, budget_s=args.budget, shuffle_images=args.shuffle_labels,
                         progress=progress, train_on=train_on)
    out = private_dir(db.data_dir / "reports")
    return _write_and_show(args, rep, out / f"zero-shot-loso-{datetime.now().strftime('%Y%m%d-%H%M%S')}.json")


def _evaluate_methods(db, args, subjects, progress, out, stamp, executor) -> int:
    import json

    from .._files import write_private_text
    from ..decoder.evaluation import across_subjects, evaluate_subjects

    inputs, sessions = {}, {}
    for subject in subjects:  # every subject's epochs read here, once: the workers never open the database
        inputs[subject], sessions[subject] = _evaluation_input(db, subject, args)
    reports = evaluate_subjects(inputs, split=args.split, n_folds=args.folds, shuffle_labels=args.shuffle_labels,
                                progress=progress, permutations=args.permutations, budget_s=args.budget,
                                ablation=args.ablation, cluster=executor)
    for subject, rep in reports.items():
        full = {**rep.to_json(), "subject": subject, "sessions": sessions[subject], "summary": rep.summary(),
                "folds": rep.methods, "confusion": rep.confusion, "classes": rep.classes, "chance": rep.chance,
                "notes": rep.notes}
        write_private_text(out / f"evaluation-{subject}-{stamp}.json", json.dumps(full, indent=1))
        if len(subjects) == 1:
            print(json.dumps(rep.to_json()) if args.json else rep.table())
            return 0
        if not args.json:
            print(f"== {subject} ==")
            print(rep.table())
    table, summary = across_subjects(reports)
    write_private_text(out / f"evaluation-across-{stamp}.json", json.dumps(summary, indent=1))
    print(json.dumps(summary) if args.json else table)
    return 0


def _recorded_epochs(db, subject, args):
    """The subject's protocol, sessions and epochs of its recording blocks (not feedback trials)."""
    import numpy as np

    from ..decoder import subject_protocol
    from ..types import FEEDBACK_BLOCK_BASE

    proto, sids = subject_protocol(db, subject, args.sessions)
    es = db.load_epochs(subject, sids)
    es = es.subset(np.flatnonzero(es.blocks < FEEDBACK_BLOCK_BASE))  # recording blocks, not feedback trials
    return proto, sids, es


def _zero_shot_one(db, subject, args, progress):
    from ..decoder import stimulus_embeddings_for
    from ..decoder.zeroshot import zero_shot_evaluate

    proto, sids, es = _recorded_epochs(db, subject, args)
    test = list(args.test_classes) if args.test_classes else _recorded_test_classes(db, subject, sids)
    Z, model, _pre = stimulus_embeddings_for(db, proto, es.images)
    rep = zero_shot_evaluate(es, Z, proto, test_classes=test, split=args.split, n_folds=args.folds,
                             permutations=1000 if args.permutations is None else args.permutations,
                             budget_s=args.budget,
                             shuffle_images=args.shuffle_labels, progress=progress, clip_model=model)
    return rep, sids


def _recorded_test_classes(db, subject, sids) -> list | None:
    """The data's own zero-shot test split (THINGS-EEG2's test concepts), when an import of these sessions recorded
    one; else None. (``--test-classes`` is a list already: no empty or repeated items, types.CommaList.)"""
    named = [c for s in db.list_sessions(subject) if s.id in sids
             for c in (s.info or {}).get("zero_shot_test_classes") or []]
    return sorted(set(named)) or None


def _write_and_show(args, rep, path) -> int:
    """A leave-one-subject-out report: its JSON written to ``path`` (0600), then the table and the path, or with
    ``--json`` the JSON alone."""
    import json

    from .._files import write_private_text

    write_private_text(path, json.dumps(rep.to_json(), indent=1))
    if args.json:
        print(json.dumps(rep.to_json()))
    else:
        print(rep.table())
        print(f"report: {path}")
    return 0


def _evaluation_input(db, subject, args):
    """One subject's epochs, protocol, methods and teacher for :func:`~eegloop.decoder.evaluation.evaluate_subjects`,
    and its session ids."""
    from ..decoder import fit_teacher
    from ..decoder.evaluation import EvalInput, main_method
    from ..decoder.methods import BASELINES, distils
    from ..errors import EegloopError, ModelNotAvailableError

    proto, sids, es = _recorded_epochs(db, subject, args)
    methods = [main_method(proto)]
    if args.baselines:
        methods += [m for m in BASELINES if m not in methods]
    if args.methods:
        methods = list(args.methods)
    if args.ablation and not any(distils(m) for m in methods):
        raise EegloopError(f"--ablation teacher: none of the methods distils ({', '.join(methods)}); "
                           "add auto or a kd_* method")
    teacher = None
    if any(distils(m) for m in methods):
        try:
            teacher = fit_teacher(db, proto, es)
        except ModelNotAvailableError as exc:
            if args.ablation:
                raise EegloopError(f"--ablation teacher: {exc}") from None
            print(f"eegloop: warning: {exc}", file=sys.stderr)
    if args.ablation and teacher is None:
        raise EegloopError(f"--ablation teacher: subject {subject!r} has no teacher to compare with (teacher.enabled "
                           "is false in its protocol, or some epochs have no known stimulus image)")
    return EvalInput(es, proto, methods, teacher), sids
