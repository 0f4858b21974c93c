"""``eegloop db init|upgrade`` and ``eegloop subject add|list``: the database and its subjects."""
from __future__ import annotations

from .common import Parents, action_parsers, open_db
from .types import SubjectCode


def add_parser(commands, parents: Parents) -> None:
    """Add ``db`` and ``subject`` and their actions to the top-level sub-parsers."""
    dsub = action_parsers(commands, "db", "create or upgrade the database schema")
    for name, text in (("init", "create the schema"), ("upgrade", "upgrade the schema to this version")):
        c = dsub.add_parser(name, parents=[parents.common], help=text)
        c.set_defaults(run=run)
    sbs = action_parsers(commands, "subject", "subjects (pseudonymous codes only)")
    c = sbs.add_parser("add", parents=[parents.common], help="add a subject by code")
    c.add_argument("code", metavar="CODE", type=SubjectCode())
    c.set_defaults(run=run)
    c = sbs.add_parser("list", parents=[parents.common], help="list subjects")
    c.set_defaults(run=run)


def run(args) -> int:
    """Run ``eegloop db ACTION`` or ``eegloop subject ACTION``."""
    if args.command == "db":
        return schema(args)
    return {"add": subject_add, "list": subject_list}[args.action](args)


def schema(args) -> int:
    """``db init`` and ``db upgrade``: opening the database creates or upgrades its schema."""
    db = open_db(args)
    print(f"database {db.safe_url}: schema at revision {db.revision()} (head {db.head_revision()}); "
          f"tables: {', '.join(t for t in db.table_names() if t != 'alembic_version')}")
    return 0


def subject_add(args) -> int:
    from ..database import check_subject_code

    check_subject_code(args.code)  # before the database (and its folder) is created
    subj = open_db(args).add_subject(args.code)
    print(f"added subject {subj.code} (id {subj.id})")
    return 0


def subject_list(args) -> int:
    subjects = open_db(args, create=False).list_subjects()
    if not subjects:
        print("no subjects yet (add one with: eegloop subject add CODE)")
    for s in subjects:
        print(f"{s.code}\t{s.n_sessions} session(s)\tadded {s.created_at:%Y-%m-%d %H:%M}")
    return 0
