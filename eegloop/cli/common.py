"""What the command groups share: the parser class whose refusals are one line, the options several commands take
(``--db``/``--data``, a visit's, the console's) and their argument types, the database a command opened, and the
checks that run before any work.

Light on purpose: every group module imports it while the command line is built, before any value is checked.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys

from ..errors import EegloopError
from .types import (CommaList, DatabaseUrl, DataFolder, Host, InputFile, Integer, Number, Port, SubjectCode,
                    Text)

EXIT_USER_ERROR = 2

# argument types more than one command takes (stateless: one instance serves every option)
SUBJECT = SubjectCode(legacy=True)  # codes added before the letters-and-digits rule stay usable
SESSION_ID = Integer(1, 2**31 - 1)
PROTOCOL_FILE = InputFile("a protocol file (.yaml)")
SEED = Integer(0, 2**32 - 1)
STREAM_NAME = Text("an LSL stream name", 128)
CHANNELS = CommaList(Text("a channel name", 64), "channel names", max_items=1024)
SCOPES = ["machine", "link", "site", "organization", "global"]
FEEDBACK_MODES = ["live", "bank", "stimulus", "retrieve", "embedding"]

OPENED: list = []  # the databases this command opened: main() words their lock/connection errors


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


class Parser(argparse.ArgumentParser):
    """argparse, but a refusal is raised for :func:`~eegloop.cli.main` to print as one line (no usage block,
    exit 2)."""

    def error(self, message):  # noqa: D401 - argparse's hook
        raise UsageError(message, self.prog)


@dataclasses.dataclass(frozen=True)
class Parents:
    """The option sets commands inherit (argparse ``parents=``), made once per :func:`build_parents`.

    Attributes
    ----------
    common : argparse.ArgumentParser
        ``--db``, ``--data``, ``--verbose``: every command.
    visit : argparse.ArgumentParser
        ``--protocol``, ``--subject``, ``--simulate``: commands that run a protocol with a subject.
    console : argparse.ArgumentParser
        ``--console`` and its port, host and linger: commands that serve the operator console.
    """

    common: argparse.ArgumentParser
    visit: argparse.ArgumentParser
    console: argparse.ArgumentParser


def build_parents() -> Parents:
    """The shared option sets, fresh: ``--help`` appends each option's range to its help text once per parser."""
    common = Parser(add_help=False)
    common.add_argument("--db", default=None, type=DatabaseUrl(),
                        help="SQLAlchemy URL (default: $EEGLOOP_DB or sqlite in --data)")
    common.add_argument("--data", default=None, type=DataFolder(),
                        help="data folder (default: $EEGLOOP_DATA or ./eegloop-data)")
    common.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    visit = Parser(add_help=False)  # commands that run a protocol with a subject
    visit.add_argument("--protocol", type=PROTOCOL_FILE, required=True)
    visit.add_argument("--subject", type=SUBJECT, required=True, help="pseudonymous subject code")
    visit.add_argument("--simulate", action="store_true", help="start the virtual amplifier in this process")
    console = Parser(add_help=False)  # commands that serve the operator console
    console.add_argument("--console", action=argparse.BooleanOptionalAction, default=True,
                         help="serve the operator console (live traces, phase, controls) and print its URL")
    console.add_argument("--console-port", type=Port(), default=0, help="its port (default: a free one)")
    console.add_argument("--console-host", type=Host(), default="127.0.0.1",
                         help="its address (default 127.0.0.1; elsewhere every request needs the URL's token)")
    console.add_argument("--console-linger", type=Number(0, 86_400, unit="seconds"), default=0.0, metavar="SECONDS",
                         help="keep serving this long after the visit (the report stays linked)")
    return Parents(common, visit, console)


def action_parsers(commands, name: str, help: str, dest: str = "action", metavar: str = "ACTION"):
    """A command with actions (``eegloop NAME ACTION``): the sub-parsers to add them to, one of them required."""
    p = commands.add_parser(name, help=help)
    actions = p.add_subparsers(dest=dest, metavar=metavar)
    actions.required = True
    return actions


def say(message: str) -> None:
    """A progress line, printed as it comes (the library's ``progress=`` callback)."""
    print(message, flush=True)


def say_to_stderr(message: str) -> None:
    """A progress line on stderr (``--json`` of a long command: the JSON alone on stdout, the progress still seen)."""
    print(message, file=sys.stderr, flush=True)


def silent(_message: str) -> None:
    """No progress lines (``--json``: the JSON alone on stdout); ``progress=None`` would send them to the
    ``eegloop.progress`` logger, which the CLI prints."""


def open_db(args, create: bool = True):
    """The database of ``--db``/``--data``. ``create=False`` for commands that only use an existing one: they
    never create a database (nor the data folder) and never migrate it."""
    from ..database import Database

    db = Database(args.db, data_dir=args.data, create=create)
    OPENED.append(db)
    return db


def check_new_subject(args, code: str) -> None:
    """Before anything is written: a subject code this command may add is letters and digits only. A code
    already in the database (added before that rule) stays usable."""
    from ..database import check_subject_code

    try:
        check_subject_code(code)
    except EegloopError as exc:
        try:
            open_db(args, create=False).get_subject(code)
        except EegloopError:
            raise exc from None


def protocol_for_run(args):
    """The protocol of a command that streams; ``--simulate`` gives it default simulator settings if it has none."""
    from ..protocol import SimulateConfig, load_protocol

    proto = load_protocol(args.protocol)
    if getattr(args, "simulate", False) and proto.amplifier.simulate is None:
        proto = proto.replace(amplifier=dataclasses.replace(proto.amplifier, simulate=SimulateConfig()))
    return proto
