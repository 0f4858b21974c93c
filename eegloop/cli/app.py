"""The ``eegloop`` command line. Thin: parse, call one function, print.

Each command group is a module of this package with ``add_parser(commands, parents)``, which declares its
commands and their options, and ``run(args)``, which calls the public API and prints the result.
:func:`build_parser` is the loop over the groups; :func:`main` parses, runs and words the errors.

Errors meant for the user (:class:`~eegloop.errors.EegloopError`) are printed
as one line ``eegloop: error: ...`` with exit status 2; anything else is a bug
and keeps its traceback.
"""
from __future__ import annotations

import argparse
import sys

from .._logging import set_log_level
from .._version import __version__
from ..progress import print_progress
from ..errors import EegloopError
from . import check, console, db, decoder, feedback, group, imports, models, protocol, report, stimuli, streams, visit
from .common import EXIT_USER_ERROR, OPENED, Parser, UsageError, build_parents

GROUPS = (protocol, stimuli, streams, visit, decoder, group, imports, feedback, check, models, report, console, db)

# the order `eegloop --help` lists the commands in (and argparse's "choose from" when one is mistyped)
COMMANDS = ("protocol", "stimuli", "simulate", "record", "train", "evaluate", "pretrain", "import", "feedback",
            "session", "check-signal", "check-timing", "models", "export", "demo", "console", "report", "replay", "db",
            "subject")


def build_parser() -> argparse.ArgumentParser:
    """The whole command line: every command and option, each value checked by its type
    (:mod:`eegloop.cli.types`) while it is parsed. The contract test walks it."""
    parser = Parser(
        prog="eegloop",
        description="Closed-loop EEG visual-decoding experiments: protocol -> paradigm + recorder -> "
                    "database -> decoder -> feedback.",
    )
    parser.add_argument("--version", action="version", version=f"eegloop {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True
    parents = build_parents()
    for command_group in GROUPS:
        command_group.add_parser(commands, parents)
    _in_order(commands, COMMANDS)
    _show_ranges(parser)
    return parser


def _in_order(commands: argparse._SubParsersAction, names: tuple) -> None:
    """List the commands in ``names``' order, whichever group added them."""
    added = dict(commands.choices)
    if set(added) != set(names):  # a command added without a place in COMMANDS, or a place without its command
        raise RuntimeError(f"COMMANDS and the groups' commands differ: {sorted(set(added) ^ set(names))}")
    commands.choices.clear()
    commands.choices.update((name, added[name]) for name in names)
    place = {name: i for i, name in enumerate(names)}
    commands._choices_actions.sort(key=lambda a: place[a.dest])


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
    """Run one ``eegloop`` command line; its exit status (0, 1 for a failed check or aborted recording,
    2 for a user error, 130 on Ctrl-C)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)  # every value is checked here, by its type (eegloop.cli.types)
    except UsageError as exc:
        _print_error(exc.line())
        return EXIT_USER_ERROR
    set_log_level("info" if getattr(args, "verbose", False) else "warning")
    stop_printing = print_progress()  # the library's progress lines (eegloop.progress), on stdout as they come
    OPENED.clear()
    try:
        if getattr(args, "console", False):  # where the console would listen: before any work
            from .types import check_listen

            check_listen(args.console_host, args.console_port)
        return int(args.run(args) or 0)
    except EegloopError as exc:
        _print_error(str(exc))
        return EXIT_USER_ERROR
    except Exception as exc:
        # a database that became locked or unreachable mid-command is the user's to fix, not a bug
        msg = OPENED[-1].user_error(exc) if OPENED else None
        if msg is None:
            raise
        _print_error(msg)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("eegloop: interrupted", file=sys.stderr)
        return 130
    finally:
        stop_printing()
        for opened in OPENED:  # close the connections: SQLite folds its WAL back into the file
            opened.close()
        OPENED.clear()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
