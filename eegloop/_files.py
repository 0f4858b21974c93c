"""Private folders and files: what eegloop writes about subjects is for its owner only.

Folders eegloop creates are ``0700`` and files it writes ``0600``, whatever the
umask; folders that already existed keep their mode (they are the user's).
"""
from __future__ import annotations

import os
from pathlib import Path

__all__ = ["DIR_MODE", "FILE_MODE", "private_dir", "private_file", "write_private_text"]

DIR_MODE = 0o700
FILE_MODE = 0o600


def private_dir(path: str | Path, created: list | None = None) -> Path:
    """``mkdir -p path`` where every folder created here is ``0700``; returns ``path``.

    Folders that exist already are left as they are. The folders created are
    appended to ``created`` (outermost first) when it is given.
    """
    path = Path(path)
    missing = []
    p = path
    while not os.path.lexists(p):
        missing.append(p)
        if p.parent == p:
            break
        p = p.parent
    for d in reversed(missing):
        try:
            d.mkdir(mode=DIR_MODE)
        except FileExistsError:
            if not d.is_dir():
                raise
            continue  # made by someone else meanwhile: not ours to change
        os.chmod(d, DIR_MODE)  # mkdir's mode went through the umask
        if created is not None:
            created.append(d)
    path.mkdir(exist_ok=True)  # exists now; raises FileExistsError if it is a file
    return path


def private_file(path: str | Path, create: bool = False) -> Path:
    """Make the file at ``path`` readable and writable by its owner only (``0600``).

    With ``create``, an empty file is created first if there is none (it is
    never truncated), so that what is written into it later is private from
    the first byte.
    """
    path = Path(path)
    if create:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT, FILE_MODE)
        os.close(fd)
    os.chmod(path, FILE_MODE)
    return path


def write_private_text(path: str | Path, text: str, encoding: str = "utf-8") -> Path:
    """``Path.write_text`` into a ``0600`` file."""
    path = private_file(path, create=True)
    path.write_text(text, encoding=encoding)
    return path
