"""``eegloop feedback``: a closed-loop block (decode each epoch, show its image)."""
from __future__ import annotations

from pathlib import Path

from .common import FEEDBACK_MODES, Parents, open_db, protocol_for_run
from .console import console_around
from .types import InputFolder, Integer, Text


def add_parser(commands, parents: Parents) -> None:
    """Add ``feedback`` to the top-level sub-parsers."""
    model_ref = Text("a diffusers model folder or a cached hub id", 1024)
    c = commands.add_parser("feedback", parents=[parents.common, parents.visit, parents.console],
                            help="closed-loop block: decode each epoch, show its image")
    c.add_argument("--mode", choices=FEEDBACK_MODES,
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
    c.set_defaults(run=run)


def run(args) -> int:
    """Run ``eegloop feedback``: the protocol with the options over its feedback section, then the block."""
    from ..feedback.loop import run_feedback

    proto = _protocol(args)
    db = open_db(args, create=False)  # needs the subject's model: an existing, up-to-date database
    with console_around(args, proto):
        res = run_feedback(proto, args.subject, db, simulate=args.simulate, mode=args.mode, trials=args.trials)
    for line in feedback_lines(res, proto.feedback.images_per_trial):
        print(line)
    return 0


def _protocol(args):
    """The protocol, its feedback section overridden by ``--generator``, ``--format``, ``--retrieve-folder`` and
    ``--embedding-generator``."""
    import dataclasses

    proto = protocol_for_run(args)
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
    return proto


def feedback_lines(res, n_img: int) -> list[str]:
    """What ``feedback`` prints of its result: the score and latencies, then the cues' honesty."""
    from ..feedback.cues import cue_honesty

    lat = res.latency_ms
    honesty = cue_honesty((r.get("cue_trained"), r["predicted"] == r["true_class"]) for r in res.rows
                          if not r["missing"] and r.get("scored", True)).describe()
    fmt = f", rsvp bursts of {n_img} images" if n_img > 1 else ""
    if res.scored is not None:  # retrieve/embedding: the nearest candidate image's class against the cue's
        unscored = res.trials - res.scored
        score = (f"feedback ({res.mode}{fmt}): {res.correct}/{res.scored} nearest images of the cue's class among "
                 f"{res.candidates} candidates of {res.n_classes} classes"
                 + (f" ({unscored} of never-trained or unlabelled classes, not scored)" if unscored else "")
                 + f"; {res.missing} trials missing; latency from epoch complete: embedding "
                 f"{lat['decode_ms']['median']:.1f} ms, ranked {lat['retrieve_ms']['median']:.1f} ms, image "
                 f"{lat['image_ready_ms']['median']:.1f} ms, on screen {lat['to_screen_ms']['median']:.1f} ms (p95 "
                 f"{lat['to_screen_ms']['p95']:.1f}); from the image's onset to its feedback on screen "
                 f"{lat['onset_to_screen_ms']['median']:.0f} ms; session {res.session_id}")
    else:
        score = (f"feedback ({res.mode}{fmt}): {res.correct}/{res.trials} decoded as shown "
                 f"(chance {1 / res.n_classes:.2f}); {res.missing} trials missing; "
                 f"latency from epoch complete: decode {lat['decode_ms']['median']:.1f} ms, image "
                 f"{lat['image_ready_ms']['median']:.1f} ms, on screen {lat['to_screen_ms']['median']:.1f} ms "
                 f"(p95 {lat['to_screen_ms']['p95']:.1f}); from the image's onset to its feedback on screen "
                 f"{lat['onset_to_screen_ms']['median']:.0f} ms; session {res.session_id}")
    return [score, f"feedback cues: {honesty}"]
