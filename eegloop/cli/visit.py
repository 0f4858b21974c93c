"""``eegloop record``, ``eegloop session`` and ``eegloop demo``: a subject's visit, or part of one."""
from __future__ import annotations

from .common import Parents, check_new_subject, open_db, protocol_for_run
from .console import console_around
from .types import OutputFolder


def add_parser(commands, parents: Parents) -> None:
    """Add ``record``, ``session`` and ``demo`` to the top-level sub-parsers."""
    from .common import FEEDBACK_MODES

    visit = [parents.common, parents.visit, parents.console]
    c = commands.add_parser("record", parents=visit, help="run the paradigm and record EEG + markers")
    c.add_argument("--resume", action="store_true",
                   help="continue the subject's interrupted session: every block not completely stored is shown again")
    c.add_argument("--force", action="store_true",
                   help="record even when the signal check fails on some channels (the check is stored)")
    c.set_defaults(run=run)

    c = commands.add_parser("session", parents=visit, help="a whole visit: record, quick-train, feedback, report")
    c.add_argument("--resume", action="store_true", help="continue the subject's interrupted session")
    c.add_argument("--mode", choices=FEEDBACK_MODES, help="feedback mode (default: the protocol's)")
    c.add_argument("--force", action="store_true",
                   help="record even when the signal check fails on some channels (the check is stored)")
    c.set_defaults(run=run)

    c = commands.add_parser("demo", parents=[parents.common, parents.console],
                            help="the whole visit on the simulator, SQLite, in a few minutes")
    c.add_argument("--out", type=OutputFolder("the demo's folder"), default="eegloop-demo",
                   help="output folder (default ./eegloop-demo)")
    c.add_argument("--quick", action="store_true", help="an even shorter variant (used by the tests)")
    c.set_defaults(run=run)


def run(args) -> int:
    """Run ``eegloop record``, ``session`` or ``demo``."""
    return {"record": record, "session": session, "demo": demo}[args.command](args)


def record(args) -> int:
    proto = protocol_for_run(args)
    check_new_subject(args, args.subject)
    db = open_db(args)
    with console_around(args, proto):
        return _record(args, proto, db)


def _record(args, proto, db) -> int:
    from ..session import record_session

    if args.resume:
        from ..database.claim import SessionClaim
        from ..session import resumable_session

        sid, done = resumable_session(db, args.subject, proto)
        with SessionClaim(db, sid):  # a second --resume of the same session refuses here
            print(f"resuming session {sid}: {len(done)} complete block(s) kept; the others are shown again",
                  flush=True)
            res = record_session(proto, args.subject, db, simulate=args.simulate, session_id=sid, skip_blocks=done,
                                 force=args.force)
    else:
        res = record_session(proto, args.subject, db, simulate=args.simulate, force=args.force)
    for line in recording_lines(res):
        print(line)
    return 1 if res.aborted else 0


def recording_lines(res) -> list[str]:
    """What ``record`` prints of its :class:`~eegloop.session.RecordResult`: one summary line, then its raw files."""
    from ..session import steal_note

    state = "ABORTED" if res.aborted else "done"
    return [f"recording {state}: session {res.session_id}, {res.epochs}/{res.expected_epochs} epochs, "
            f"{res.samples_received} samples ({res.lost_samples} lost), {res.dropped_frames} dropped frames, "
            f"image duration median {res.stim_duration_ms_median:.1f} ms (max error "
            f"{res.stim_duration_ms_max_abs_error:.1f} ms) at {res.frame_rate_hz:.2f} Hz"
            f"{steal_note(res.cpu_steal_pct_max)}"] + [f"raw: {f}" for f in res.raw_files]


def session(args) -> int:
    from ..session import run_visit

    from ..decoder.groupstart import check_group_start

    proto = protocol_for_run(args)
    check_new_subject(args, args.subject)
    db = open_db(args)
    check_group_start(db, proto)  # before the console starts
    with console_around(args, proto):
        res = run_visit(proto, args.subject, db, simulate=args.simulate, resume=args.resume,
                        feedback_mode=args.mode, force=args.force)
    if res.report is None:
        return 1
    print(f"session {res.session_id} completed; report: {res.report}")
    return 0


def demo(args) -> int:
    from ..demo import demo_protocol_path, run_demo
    from ..protocol import load_protocol

    with console_around(args, load_protocol(demo_protocol_path())):
        run_demo(args.out, quick=args.quick)
    return 0
