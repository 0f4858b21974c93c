"""A role in its own process: how a child is started, talked to, watched and stopped.

One visit runs as several processes (see :mod:`eegloop.roles`). This module is their common plumbing, on both
sides of one duplex pipe per child:

- **parent side**, :class:`Child`: starts the child with the ``spawn`` method (the only one on Windows and
  macOS), sends it typed commands and waits for their replies (:meth:`Child.call`, :meth:`Child.request`), hands
  every event the child sends to a callback, and watches it: a child that exits, or stops sending heartbeats
  while its CPU time stands still, is *failed* at once with a one-line reason (:attr:`Child.failure`), and every
  caller waiting on it gets :class:`ChildFailed`.
- **child side**, :func:`serve` and :class:`Role`: the child dies with its parent (Linux: the kernel's
  parent-death signal, so also after SIGKILL of the parent; elsewhere a thread watching the parent), ignores
  Ctrl-C (the parent stops it in order), forwards its log records and sends a heartbeat every
  :data:`HEARTBEAT_S`. Commands run one at a time on the child's main thread, except *control* commands
  (abort, pause, ...), which its reader thread applies at once, while a long command (a run of blocks) is going
  on. Everything the child sends goes through one sender thread, so its main thread never waits on the pipe.

Why not a process pool or a framework: the roles are long-lived, stateful and few (four), each owns resources
that must be released in a set order (a window, LSL outlets, a raw file, a database writer), and a dead one must
be noticed within a second; ``multiprocessing``'s ``Process`` and ``Pipe`` give exactly that and nothing more.
"""
from __future__ import annotations

import itertools
import logging
import os
import queue
import signal
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from .._logging import logger
from .._worker import Worker
from ..errors import EegloopError
from .process_state import cpu_seconds, process_state

__all__ = ["Child", "ChildFailed", "ChildError", "Role", "serve", "HEARTBEAT_S", "HANG_S"]

HEARTBEAT_S = 0.1  # how often a child says it is alive
HANG_S = 1.0  # no heartbeat for this long while its CPU time stands still: the child is hung (stopped, deadlocked)
SILENT_MAX_S = 10.0  # no heartbeat for this long, busy or not: hung (a loop that never lets its threads run)
FRAME_STALL_S = 5.0  # a frame loop (a run, a feedback block) without a frame for this long: hung (a GL call stuck)
START_TIMEOUT_S = 120.0  # spawning, importing and setting up a role (torch, PsychoPy) on a loaded machine


class ChildFailed(EegloopError):
    """A child process died, hung or could not start; the message says which and why (one line)."""


class ChildError(RuntimeError):
    """A bug in a child process (an exception that is not one of eegloop's errors): its traceback is in the
    message, as a bug's traceback is everywhere else in eegloop."""


# -- messages on the pipe --------------------------------------------------------------------------------------
@dataclass
class Request:
    id: int
    command: Any
    reply: bool = True  # False: fire and forget (controls)


@dataclass
class Reply:
    id: int
    value: Any = None
    error: Optional[BaseException] = None


@dataclass
class Ready:
    pid: int
    info: Any = None


@dataclass
class Heartbeat:
    t: float
    stalled_s: Optional[float] = None  # a frame loop running: seconds since its last frame (None: none running)


@dataclass
class LogLine:
    level: int
    name: str
    text: str


@dataclass
class StartFailed:
    error: BaseException


_STOP = object()


# -- parent side ------------------------------------------------------------------------------------------------
@dataclass
class _Pending:
    done: threading.Event = field(default_factory=threading.Event)
    reply: Optional[Reply] = None


class Pending:
    """A command sent to a child whose reply has not been waited for yet (:meth:`Child.request`)."""

    def __init__(self, child: "Child", rid: int, slot: _Pending):
        self.child, self.id, self._slot = child, rid, slot

    def done(self) -> bool:
        return self._slot.done.is_set()

    def result(self, timeout: Optional[float] = None):
        """The reply's value; the child's error re-raised; :class:`ChildFailed` if the child died meanwhile."""
        if not self._slot.done.wait(timeout):
            raise ChildFailed(f"the {self.child.name} process did not answer within {timeout:g} s")
        rep = self._slot.reply
        if rep.error is not None:
            raise rep.error
        return rep.value


class Child:
    """One role in a child process, seen from the parent.

    Parameters
    ----------
    name : str
        The role's name in messages (``presenter``, ``acquisition``, ...).
    role : str
        ``"module:Class"`` of the :class:`Role` the child runs.
    kwargs : dict
        Its constructor's arguments (pickled; ``multiprocessing`` queues may be among them).
    on_event : callable
        Called with ``(child, event)`` for every event the child sends (on this child's reader thread: be quick).
    """

    def __init__(self, name: str, role: str, kwargs: dict, on_event: Callable[["Child", Any], None]):
        self.name, self.role, self.kwargs, self.on_event = name, role, kwargs, on_event
        self.proc = None
        self.pid: Optional[int] = None
        self.info: Any = None
        self.failure: Optional[str] = None
        self.closing = False
        self.last_beat = time.monotonic()
        self.stalled_s: Optional[float] = None  # the child's frame loop without a frame for this long
        self._conn = None
        self._ids = itertools.count(1)
        self._pending: dict[int, _Pending] = {}
        self._lock = threading.Lock()  # the pending replies and the failure
        self._proc_lock = threading.Lock()  # waiting for the process (see _exitcode)
        self._send_lock = threading.Lock()  # the pipe (a send may block: never while holding _lock)
        self._ready = threading.Event()
        self._start_error: Optional[BaseException] = None
        self._events: "queue.SimpleQueue" = queue.SimpleQueue()
        self._cpu = (-1.0, time.monotonic())  # (CPU seconds, when they last grew)

    # -- lifecycle ------------------------------------------------------------------------------------------
    def spawn(self) -> "Child":
        """Start the process (returns at once; :meth:`wait_ready` waits for its set-up)."""
        import multiprocessing as mp
        import types

        ctx = mp.get_context("spawn")
        self._conn, child_conn = ctx.Pipe(duplex=True)
        level = logger.getEffectiveLevel()
        self.proc = ctx.Process(target=serve, args=(self.role, child_conn, self.kwargs, os.getpid(), level),
                                name=f"eegloop-{self.name}", daemon=True)
        # a spawned child re-runs the parent's __main__ script (as __mp_main__) unless it is hidden: a user's
        # script calling eegloop without an ``if __name__ == "__main__"`` guard would start its visit again in
        # every child. The children need nothing from it (they run eegloop's roles only).
        main = sys.modules.get("__main__")
        sys.modules["__main__"] = types.ModuleType("__main__")
        # born ignoring Ctrl-C (an ignored signal stays ignored across exec, and Python keeps it so): the parent
        # stops its children in order, and a Ctrl-C while one starts prints no traceback of it
        sigint = _ignore_sigint()
        try:
            self.proc.start()
        finally:
            if main is not None:
                sys.modules["__main__"] = main
            if sigint is not None:
                signal.signal(signal.SIGINT, sigint)
        child_conn.close()
        # what the child was given travelled with it: the parent keeps no reference (multiprocessing queues
        # among the arguments are then released when the rig drops them, not reported as leaked at exit)
        self.kwargs, self.proc._args = None, ()
        self.pid = self.proc.pid
        self.last_beat = time.monotonic()
        # both end with the child: the reader at the pipe's end, the dispatcher at close()'s None
        self._reader = Worker.of(lambda _w: self._read(), f"eegloop-{self.name}-reader").start()
        self._dispatcher = Worker.of(lambda _w: self._dispatch(), f"eegloop-{self.name}-events").start()
        return self

    def wait_ready(self, timeout: float = START_TIMEOUT_S) -> Any:
        """Wait until the child's role is set up; its ``info``. Raises the child's start error or
        :class:`ChildFailed` (at once when the process ends before it is ready)."""
        deadline = time.monotonic() + timeout
        while not self._ready.wait(0.05):
            if self._start_error is not None:
                raise self._start_error
            if self.failure is not None:
                raise ChildFailed(self.failure)
            ended = self._exitcode() is not None and self.check(time.monotonic())
            if ended:
                self.fail(f"{ended} while starting")
                raise ChildFailed(self.failure)
            if time.monotonic() > deadline:
                self.fail(f"the {self.name} process did not start within {timeout:g} s")
                self.kill()
                raise ChildFailed(self.failure)
        return self.info

    # every wait for (and reaping of) the process goes through one lock: multiprocessing's Popen is not safe
    # when two threads reap at once (one of them is told "not yet ended" about a process already gone)
    def _exitcode(self) -> Optional[int]:
        with self._proc_lock:
            return self.proc.exitcode

    def _join(self, timeout: float) -> None:
        with self._proc_lock:
            self.proc.join(timeout)

    @property
    def alive(self) -> bool:
        return self.proc is not None and self._exitcode() is None

    def close(self, timeout: float = 10.0, command: Any = None) -> None:
        """Ask the child to finish (``command``, default its role's close) and wait; terminate, then kill, a child
        that does not end in ``timeout`` s. Never raises."""
        if self.proc is None:
            return
        self.closing = True
        if self.alive and self.failure is None:
            try:
                self.call(command if command is not None else Close(), timeout=timeout)
            except Exception as exc:
                logger.warning("closing the %s process: %s", self.name, exc)
        if self.alive:
            self._join(max(0.1, min(timeout, 5.0)))
        if self.alive:
            logger.warning("the %s process did not end: terminating it", self.name)
            self.proc.terminate()
            self._join(2)
        if self.alive:
            self.proc.kill()
            self._join(2)
        self._fail_pending(f"the {self.name} process was closed")
        self._events.put(None)
        try:
            self._conn.close()
        except Exception:
            pass

    def kill(self) -> None:
        """End the child at once (SIGKILL): for a child that failed or hangs."""
        if self.proc is not None and self.alive:
            self.proc.kill()
            self._join(2)

    # -- commands -------------------------------------------------------------------------------------------
    def request(self, command: Any) -> Pending:
        """Send ``command``; a :class:`Pending` for its reply."""
        rid = next(self._ids)
        slot = _Pending()
        with self._lock:
            if self.failure is not None:
                raise ChildFailed(self.failure)
            self._pending[rid] = slot
        try:
            with self._send_lock:
                self._conn.send(Request(rid, command))
        except (OSError, EOFError, ValueError) as exc:
            with self._lock:
                self._pending.pop(rid, None)
            raise ChildFailed(self.failure or f"the {self.name} process cannot be reached: {exc}") from None
        return Pending(self, rid, slot)

    def call(self, command: Any, timeout: Optional[float] = 60.0) -> Any:
        """Send ``command`` and wait for its reply (see :meth:`Pending.result`)."""
        return self.request(command).result(timeout)

    def control(self, command: Any) -> None:
        """Send ``command`` without waiting for a reply (the child applies controls at once); never raises."""
        if self.failure is not None or self._conn is None:
            return
        try:
            with self._send_lock:
                self._conn.send(Request(next(self._ids), command, reply=False))
        except (OSError, EOFError, ValueError):
            pass

    # -- watching -------------------------------------------------------------------------------------------
    def fail(self, reason: str) -> bool:
        """Mark the child failed (once) and every caller waiting on it; False if it already was."""
        with self._lock:
            if self.failure is not None:
                return False
            self.failure = reason
        self._fail_pending(reason)
        return True

    def _fail_pending(self, reason: str) -> None:
        with self._lock:
            pending, self._pending = self._pending, {}
        for slot in pending.values():
            slot.reply = Reply(-1, error=ChildFailed(reason))
            slot.done.set()

    def check(self, now: float) -> Optional[str]:
        """Why the child must be considered failed now (it ended, or it hangs), or None."""
        if self.proc is None or self.closing or self.failure is not None:
            return None
        code = self._exitcode()
        if code is not None:
            try:
                how = f"was killed by signal {signal.Signals(-code).name}" if code < 0 else f"exited with code {code}"
            except ValueError:
                how = f"exited with code {code}"
            return f"the {self.name} process {how}"
        silent = now - self.last_beat
        # its CPU time is read only once the heartbeats are late: read every 20 ms for every child it was the
        # monitor's main cost (its thread: 4.05 s of CPU under cProfile in a 70 s demo visit, 1.25 s without the
        # reading; load beside the presenter while it records);
        # the first reading of a silence counts as growth, so a child is called hung HANG_S after that at the earliest
        cpu = cpu_seconds(self.pid) if silent > 2 * HEARTBEAT_S else None
        if cpu is not None and cpu != self._cpu[0]:
            self._cpu = (cpu, now)  # when its CPU time last grew
        if silent > HANG_S and self._ready.is_set() and not self._unread():
            # silent and idle: stopped or deadlocked; silent but busy (a long call holding the GIL) or waiting for a
            # core on a loaded machine (runnable): given longer. Heartbeats waiting in the pipe mean this process
            # was slow to read them, not that the child is silent.
            state = process_state(self.pid)
            stuck = state == "stopped" or (state != "running" and cpu is not None and now - self._cpu[1] > HANG_S)
            if stuck or silent > SILENT_MAX_S:
                return f"the {self.name} process stopped responding (no heartbeat for {silent:.1f} s)"
        stalled = self.stalled_s
        if stalled is not None and stalled > FRAME_STALL_S:
            return f"the {self.name} process's frame loop stopped (no frame for {stalled:.1f} s)"
        return None

    def _unread(self) -> bool:
        """Whether messages from the child wait in the pipe (the reading thread has not had its turn)."""
        try:
            return self._conn is not None and self._conn.poll(0)
        except (OSError, ValueError, EOFError):
            return False

    def _read(self) -> None:
        """The pipe, read as fast as it comes (a slow event handler never delays a heartbeat)."""
        conn = self._conn
        while True:
            try:
                msg = conn.recv()
            except (EOFError, OSError):
                break
            except Exception as exc:  # a message that does not unpickle: a bug, not a reason to stop listening
                logger.error("message from the %s process: %s", self.name, exc)
                continue
            self.last_beat = time.monotonic()
            if isinstance(msg, Heartbeat):
                self.stalled_s = msg.stalled_s
            elif isinstance(msg, Reply):
                with self._lock:
                    slot = self._pending.pop(msg.id, None)
                if slot is not None:
                    slot.reply = msg
                    slot.done.set()
            elif isinstance(msg, LogLine):
                logger.log(msg.level, "[%s] %s", self.name, msg.text)
            elif isinstance(msg, Ready):
                self.info = msg.info
                self._ready.set()
            elif isinstance(msg, StartFailed):
                self._start_error = msg.error
            else:
                self._events.put(msg)
        # the pipe is closed: the process is ending; nobody waits for a reply that cannot come
        reason = None
        if self.proc is not None:  # how it ended: its pipe closes a moment before its exit status is there
            deadline = time.monotonic() + 2.0
            while reason is None and self.failure is None and not self.closing and time.monotonic() < deadline:
                reason = self.check(time.monotonic()) if self._exitcode() is not None else None
                if reason is None:
                    time.sleep(0.005)
        self._fail_pending(self.failure or reason or f"the {self.name} process closed its connection")

    def _dispatch(self) -> None:
        while True:
            msg = self._events.get()
            if msg is None:
                return
            try:
                self.on_event(self, msg)
            except Exception as exc:  # a handler's bug must not stop the others
                logger.error("event %s from the %s process: %s", type(msg).__name__, self.name, exc)


def _ignore_sigint():
    """Ignore SIGINT for now (the main thread only); the handler to put back, or None."""
    if threading.current_thread() is not threading.main_thread():
        return None
    try:
        return signal.signal(signal.SIGINT, signal.SIG_IGN)
    except (ValueError, OSError):
        return None


# -- child side -------------------------------------------------------------------------------------------------
@dataclass
class Close:
    """Finish the role and end the process (every role)."""


class Link:
    """The child's end of the pipe: everything it sends goes through one sender thread."""

    def __init__(self, conn):
        self.conn = conn
        self._out: "queue.SimpleQueue" = queue.SimpleQueue()
        self._sender = Worker.of(lambda _w: self._send_loop(), "eegloop-link-sender").start()  # ends at flush()

    def send(self, msg: Any) -> None:
        self._out.put(msg)

    def emit(self, event: Any) -> None:
        """An event for the parent (a dataclass of :mod:`eegloop.roles.messages` or the bus)."""
        self._out.put(event)

    def _send_loop(self) -> None:
        while True:
            msg = self._out.get()
            if msg is _STOP:
                return
            try:
                self.conn.send(msg)
            except (OSError, EOFError, ValueError):  # the parent is gone: the watchdog ends this process
                return
            except Exception as exc:  # an unpicklable value: say so instead of losing the reply
                if isinstance(msg, Reply):
                    self.conn.send(Reply(msg.id, error=EegloopError(f"reply could not be sent: {exc}")))

    def flush(self, timeout: float = 2.0) -> None:
        self._out.put(_STOP)
        self._sender.join(timeout)


class _ForwardLogs(logging.Handler):
    def __init__(self, link: Link):
        super().__init__()
        self.link = link

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.link.send(LogLine(record.levelno, record.name, record.getMessage()))
        except Exception:
            pass


class Role:
    """What a child process does: one method ``on_<Command>`` per command type it takes.

    ``controls`` lists the command types applied at once on the reader thread (they must only set flags);
    :meth:`idle` runs on the main thread whenever no command has come for :attr:`idle_s` seconds.
    """

    name = "child"
    controls: tuple = ()
    idle_s: Optional[float] = None

    def __init__(self, link: Link):
        self.link = link
        self.running = True

    def info(self) -> Any:
        """What the parent gets once the role is set up (:meth:`Child.wait_ready`)."""
        return None

    def handle(self, command: Any) -> Any:
        fn = getattr(self, f"on_{type(command).__name__}", None)
        if fn is None:
            raise EegloopError(f"the {self.name} process does not take {type(command).__name__}")
        return fn(command)

    def on_Close(self, _cmd: Close) -> None:
        self.running = False
        self.close()

    def idle(self) -> None:
        pass

    def stalled(self) -> Optional[float]:
        """While a frame loop runs: seconds since its last frame (sent with each heartbeat); None otherwise."""
        return None

    def close(self) -> None:
        """Release what the role holds (the process ends after it)."""


def _die_with_parent(parent_pid: int) -> None:
    """The child ends when its parent does, even when the parent is SIGKILLed."""
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
        except Exception:
            pass
    if os.getppid() != parent_pid:  # the parent died before the line above took effect
        os._exit(1)

    import multiprocessing as mp

    parent = mp.parent_process()

    def watch(_worker):  # every platform: the parent's sentinel becomes ready when it ends
        try:
            from multiprocessing.connection import wait

            if parent is not None:
                wait([parent.sentinel])
            else:
                while os.getppid() == parent_pid:
                    time.sleep(0.2)
        except Exception:
            pass
        os._exit(1)

    Worker.of(watch, "eegloop-parent-watch").start()


def _name_process(role_path: str) -> None:
    """``eegloop/<role>`` in ps, top and the like (Linux: the main thread's name, at most 15 characters)."""
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            name = f"eegloop/{PROCESS_NAMES.get(role_path.rsplit(':', 1)[-1], 'child')}".encode()[:15]
            ctypes.CDLL(None).prctl(15, ctypes.c_char_p(name), 0, 0, 0)  # PR_SET_NAME
        except Exception:
            pass


#: the name each role's process shows in ps/top (Linux), after "eegloop/"
PROCESS_NAMES = {"PresenterRole": "present", "AcquisitionRole": "acquire", "AmplifierRole": "amp",
                 "WorkerRole": "worker"}


def serve(role_path: str, conn, kwargs: dict, parent_pid: int, log_level: int) -> None:
    """The child's main: set up, then take commands until :class:`Close` (or the parent's end)."""
    _die_with_parent(parent_pid)
    _name_process(role_path)
    try:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's: it stops the children in order
    except (ValueError, OSError):
        pass
    link = Link(conn)
    logger.handlers[:] = [_ForwardLogs(link)]
    logger.setLevel(log_level)
    logger.propagate = False
    holder: dict = {}
    Worker.of(lambda w: _beat(w, link, holder), "eegloop-heartbeat").start()
    role, info = _start_role(role_path, link, kwargs)
    holder["role"] = role
    inbox: "queue.Queue" = queue.Queue()
    Worker.of(lambda _w: _read_commands(conn, role, link, inbox), "eegloop-command-reader").start()
    link.send(Ready(os.getpid(), info))
    code = _take_commands(role, link, inbox)
    link.flush()
    conn.close()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass
    os._exit(code)  # no interpreter shutdown: libraries' atexit hooks (LSL, GL) belong to the role's close()


def _beat(worker: Worker, link: Link, holder: dict) -> None:
    """Tell the parent every :data:`HEARTBEAT_S` that the child is alive (with the frame loop's stall once the role
    is set up: ``holder["role"]``), until the process ends."""
    while not worker.stopping:
        role = holder.get("role")
        try:
            stalled = role.stalled() if role is not None else None
        except Exception:
            stalled = None
        link.send(Heartbeat(time.monotonic(), stalled))
        time.sleep(HEARTBEAT_S)


def _start_role(role_path: str, link: Link, kwargs: dict) -> tuple:
    """The role set up and its :meth:`Role.info`; a failure is sent to the parent and ends the process."""
    try:
        import importlib

        mod, cls = role_path.split(":")
        role: Role = getattr(importlib.import_module(mod), cls)(link, **kwargs)
        return role, role.info()
    except BaseException as exc:
        link.send(StartFailed(exc if isinstance(exc, EegloopError) else
                              ChildFailed(f"the {role_path.split(':')[1]} could not start: "
                                          f"{type(exc).__name__}: {exc}")))
        logger.debug("start failed: %s", traceback.format_exc())
        link.flush()
        os._exit(1)


def _read_commands(conn, role: "Role", link: Link, inbox: "queue.Queue") -> None:
    """The pipe from the parent: controls applied at once, every other command queued for the main thread; None
    queued when the parent closes its end."""
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):  # the parent closed its end
            inbox.put(None)
            return
        if isinstance(msg, Request) and isinstance(msg.command, role.controls):
            try:
                value = role.handle(msg.command)
                if msg.reply:
                    link.send(Reply(msg.id, value))
            except BaseException as exc:
                if msg.reply:
                    link.send(Reply(msg.id, error=_portable(exc)))
        else:
            inbox.put(msg)


def _take_commands(role: "Role", link: Link, inbox: "queue.Queue") -> int:
    """Commands one at a time on the main thread until the role is closed; the process's exit code."""
    while role.running:
        try:
            msg = inbox.get(timeout=role.idle_s) if role.idle_s else inbox.get()
        except queue.Empty:
            try:
                role.idle()
            except BaseException as exc:
                logger.error("%s: %s", role.name, exc)
            continue
        if msg is None:  # the parent is gone
            role.close()
            return 1
        try:
            value = role.handle(msg.command)
            if msg.reply:
                link.send(Reply(msg.id, value))
        except BaseException as exc:
            if not isinstance(exc, EegloopError):  # a bug: its traceback travels with the reply (ChildError)
                logger.debug("%s", traceback.format_exc())
            if msg.reply:
                link.send(Reply(msg.id, error=_portable(exc)))
    return 0


def _portable(exc: BaseException) -> BaseException:
    """``exc`` if it travels to the parent as it is (eegloop's own errors, rebuilt there from their message and
    attributes); any other exception is a bug: a :class:`ChildError` carrying the child's traceback."""
    if isinstance(exc, EegloopError):
        # rebuilt in the parent as cls(*args): only classes whose constructor takes the message alone
        plain = type(exc).__init__ in (BaseException.__init__, Exception.__init__)
        return exc if plain else EegloopError(str(exc))
    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    return ChildError(f"in a child process:\n{tb}")
