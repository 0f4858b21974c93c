"""Private folders and files, written whole or not at all.

Folders eegloop creates are ``0700`` and files it writes ``0600``, whatever the
umask; folders that already existed keep their mode (they are the user's).

Nothing is left half-written: :func:`atomic_path` gives a temporary sibling of
a file that is renamed over it (``os.replace``) only when everything was
written, so an existing file is never left truncated; :func:`new_folders`
removes again the folders a command created when the command fails.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

__all__ = ["DIR_MODE", "FILE_MODE", "private_dir", "private_file", "write_private_text", "atomic_path",
           "atomic_write_text", "atomic_write_bytes", "new_folders", "remove_created", "umask_mode"]

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
    """``Path.write_text`` into a ``0600`` file, atomically (:func:`atomic_write_text`)."""
    return atomic_write_text(path, text, encoding=encoding)


@contextlib.contextmanager
def atomic_path(path: str | Path, mode: int = FILE_MODE) -> Iterator[Path]:
    """A temporary sibling of ``path`` to write into; renamed over ``path`` when the block ends without error.

    The sibling is created empty with ``mode`` (``0600`` by default) in the same folder, so the rename is
    atomic: readers see the old file or the whole new one, never a truncated one. On an error the sibling
    is removed and ``path`` is as it was. The suffix is kept (``.eegloop-tmp-*.png``) so that writers
    that choose a format by the file name (matplotlib, Pillow) choose the same one.
    """
    path = Path(path)
    # a short name whatever the target's length (a name of 255 bytes has no room for a prefix)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".eegloop-tmp-", suffix=path.suffix[:16])
    os.close(fd)
    tmp = Path(tmp)
    try:
        os.chmod(tmp, mode)
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def umask_mode(mode: int = 0o666) -> int:
    """``mode`` as ``open()`` would give a new file under this process's umask (for files that are not the
    subject's: protocols, stimuli, plots a user asked for)."""
    current = os.umask(0)
    os.umask(current)
    return mode & ~current


def atomic_write_bytes(path: str | Path, data: bytes, mode: int = FILE_MODE) -> Path:
    """Write ``data`` to ``path`` through :func:`atomic_path` (a ``0600`` file by default); returns ``path``."""
    path = Path(path)
    with atomic_path(path, mode) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
    return path


def atomic_write_text(path: str | Path, text: str, encoding: str = "utf-8", mode: int = FILE_MODE) -> Path:
    """Write ``text`` to ``path`` through :func:`atomic_path` (a ``0600`` file by default); returns ``path``."""
    return atomic_write_bytes(path, text.encode(encoding), mode)


def remove_created(created: list) -> None:
    """Remove what a failed command created: ``created`` lists folders (and files), outermost first."""
    for p in created:  # the outermost first: removing it removes everything inside
        p = Path(p)
        with contextlib.suppress(OSError):
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            elif os.path.lexists(p):
                p.unlink()


@contextlib.contextmanager
def new_folders(path: str | Path, private: bool = True) -> Iterator[list]:
    """``mkdir -p path`` for the block; every folder it created is removed again if the block fails.

    Yields the list of folders created (outermost first); the block may append folders and files it
    creates inside folders that existed already, and they are removed on failure too. Folders that
    existed before are never removed. ``private``: created folders are ``0700``.
    """
    created: list = []
    try:
        if private:
            private_dir(path, created)
        else:
            path = Path(path)
            missing = []
            p = path
            while not os.path.lexists(p):
                missing.append(p)
                if p.parent == p:
                    break
                p = p.parent
            path.mkdir(parents=True, exist_ok=True)
            created.extend(reversed(missing))
        yield created
    except BaseException:
        remove_created(created)
        raise
