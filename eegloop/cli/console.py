"""``eegloop console``, and the operator console around the commands that take ``--console``."""
from __future__ import annotations

import contextlib

from .common import Parents, open_db


def add_parser(commands, parents: Parents) -> None:
    """Add ``console`` to the top-level sub-parsers."""
    c = commands.add_parser("console", parents=[parents.common, parents.console],
                            help="serve the operator console for browsing past sessions and their reports (Ctrl-C ends)")
    c.set_defaults(run=run)


def run(args) -> int:
    """Serve the console over the database until Ctrl-C."""
    import time

    db = open_db(args, create=False)
    args.console = True
    with console_around(args, None, db):
        try:
            while True:
                time.sleep(1.0)
        except KeyboardInterrupt:
            pass
    return 0


@contextlib.contextmanager
def console_around(args, proto=None, db=None):
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
