"""``eegloop report`` and ``eegloop export bids``: a session's HTML report, a subject's runs in BIDS."""
from __future__ import annotations

from .common import SESSION_ID, SUBJECT, Parents, action_parsers, open_db, say
from .types import OutputFolder, UniqueItems


def add_parser(commands, parents: Parents) -> None:
    """Add ``export`` (and its formats) and ``report`` to the top-level sub-parsers."""
    esub = action_parsers(commands, "export", "share data in the field's formats", dest="format", metavar="FORMAT")
    c = esub.add_parser("bids", parents=[parents.common], help="a subject's recorded runs as a BIDS EEG dataset (MNE-BIDS)")
    c.add_argument("--subject", type=SUBJECT, required=True)
    c.add_argument("--out", type=OutputFolder("the BIDS root folder"), required=True,
                   help="the BIDS root folder (created; files replaced)")
    c.add_argument("--sessions", type=SESSION_ID, nargs="+", action=UniqueItems,
                   help="only these sessions (default: all of the subject's)")
    c.set_defaults(run=run)

    c = commands.add_parser("report", parents=[parents.common], help="write a session's self-contained HTML report")
    c.add_argument("--session", type=SESSION_ID, required=True)
    c.add_argument("--out", type=OutputFolder("the report's folder"), help="folder (default: DATA/reports/session-NNNN)")
    c.set_defaults(run=run)


def run(args) -> int:
    """Run ``eegloop export bids`` or ``eegloop report``."""
    return {"export": bids, "report": report}[args.command](args)


def bids(args) -> int:
    from ..bids import export_bids

    db = open_db(args, create=False)
    res = export_bids(db, args.subject, args.out, args.sessions, progress=say)
    print(f"BIDS dataset {args.out}: {len(res.runs)} runs, {res.n_events} stimulus events of subject {args.subject}"
          + "".join(f"; session {s} skipped: {why}" for s, why in res.skipped))
    return 0


def report(args) -> int:
    from ..errors import EegloopError
    from ..report import write_report

    db = open_db(args, create=False)
    try:
        path = write_report(db, args.session, args.out)
    except OSError as exc:  # disk full: the folder made for it is removed, an existing report is as it was
        raise EegloopError(f"--out: writing the report failed ({exc.strerror or type(exc).__name__}); nothing was "
                           "left half-written") from None
    print(f"report: {path}")
    return 0
