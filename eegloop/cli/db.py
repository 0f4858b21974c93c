"""``eegloop db init|upgrade`` and ``eegloop subject add|list|consent|group-models``: the database, its subjects,
their group consent and the group models holding their data."""
from __future__ import annotations

from .common import SUBJECT, Parents, action_parsers, open_db
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
    c = sbs.add_parser("list", parents=[parents.common], help="list subjects (sessions, group consent)")
    c.set_defaults(run=run)
    c = sbs.add_parser("consent", parents=[parents.common],
                       help="record whether the subject agreed that their EEG enters group models")
    c.add_argument("code", metavar="CODE", type=SUBJECT)
    c.add_argument("--group", choices=["yes", "no"], required=True,
                   help="yes: their epochs may train group models (eegloop pretrain); no: not (the default)")
    c.set_defaults(run=run)
    c = sbs.add_parser("group-models", parents=[parents.common],
                       help="list every group model trained on the subject's EEG (--delete: delete them)")
    c.add_argument("code", metavar="CODE", type=SUBJECT)
    c.add_argument("--delete", action="store_true", help="delete them: their files and their database rows")
    c.set_defaults(run=run)


def run(args) -> int:
    """Run ``eegloop db ACTION`` or ``eegloop subject ACTION``."""
    if args.command == "db":
        return schema(args)
    return {"add": subject_add, "list": subject_list, "consent": subject_consent,
            "group-models": subject_group_models}[args.action](args)


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
    db = open_db(args, create=False)
    subjects = db.list_subjects()
    consent = {c.code: c.word for c in db.subject_consents()}
    if not subjects:
        print("no subjects yet (add one with: eegloop subject add CODE)")
    for s in subjects:
        print(f"{s.code}\t{s.n_sessions} session(s)\tgroup consent {consent.get(s.code, 'no')}\t"
              f"added {s.created_at:%Y-%m-%d %H:%M}")
    return 0


def subject_consent(args) -> int:
    """``subject consent S --group yes|no``: the new state; withdrawing says which group models still hold the
    subject's data and how to delete them."""
    db = open_db(args, create=False)
    before, after = db.set_subject_consent(args.code, args.group == "yes")
    change = "unchanged" if before.group == after.group else f"was {before.word}"
    print(f"{after.code}: group consent {after.word} ({change})")
    if not after.group:
        held = db.list_group_models(args.code)
        if held:
            print(f"{len(held)} group model(s) still hold {after.code}'s data: {', '.join(r.name for r in held)}; "
                  f"delete them with: eegloop subject group-models {after.code} --delete")
        else:
            print(f"no group model holds {after.code}'s data")
    return 0


def subject_group_models(args) -> int:
    """``subject group-models S [--delete]``: every group model trained on the subject's data."""
    from .group import group_model_lines

    db = open_db(args, create=False)
    held = db.list_group_models(args.code)  # one line for an unknown subject, before anything is deleted
    if not held:
        print(f"no group model holds {args.code}'s data")
        return 0
    from ..decoder.group import dependent_models

    dependents = dependent_models(db, args.code)
    if args.delete:
        from ..decoder.group import delete_group_models

        gone = delete_group_models(db, args.code, dependents)
        print(f"deleted {len(gone)} group model(s) trained on {args.code}'s data (files and database rows): "
              f"{', '.join(r.name for r in gone)}")
        blended = [m for rec in gone for m in dependents.get(rec.id, [])]
        if blended:
            print(f"{len(blended)} subject model(s) blended them and must be trained again (the group model tuned "
                  f"to each, deleted with it): {_dependents_text(blended)}")
        return 0
    print(f"{len(held)} group model(s) hold {args.code}'s data (delete them with: eegloop subject group-models "
          f"{args.code} --delete):")
    for rec in held:
        for line in group_model_lines(rec):
            print(line)
        if dependents.get(rec.id):
            print(f"  blended into {len(dependents[rec.id])} subject model(s), which deleting it leaves to be "
                  f"trained again: {_dependents_text(dependents[rec.id])}")
    return 0


def _dependents_text(models) -> str:
    return ", ".join(f"{m.subject} (model {m.id}{', tuned file' if tuned is not None else ''})" for m, tuned in models)
