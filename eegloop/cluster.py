"""Where independent tasks run: here, one after another; on a Dask ``LocalCluster`` of worker processes on this
machine; or on a lab's own Dask scheduler (``tcp://HOST:PORT``).

A caller hands over calls, ``(function, arguments)``; this module never knows what they compute. The results come
back in the order of the calls, whatever order the workers finish them in, so a caller that fixes each task's seed
gets the same numbers from every kind of executor. Large inputs that many tasks share (a subject's epochs and
features) are shipped once with :meth:`Executor.share` (``Client.scatter``): the workers never read the database,
which may be a SQLite file they cannot see.

The scheduling, the worker processes, their restarts and the data transfers are dask.distributed's; nothing here
schedules anything.
"""
from __future__ import annotations

import ipaddress
import logging
import re
import shutil
import tempfile
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

from ._logging import logger
from .errors import EegloopError, clip_text

__all__ = ["SchedulerAddress", "parse_address", "Executor", "open_executor", "DEFAULT_PORT"]

DEFAULT_PORT = 8786  # `dask scheduler`'s
_HOST_LABEL = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?")


@dataclass(frozen=True)
class SchedulerAddress:
    """A Dask scheduler's address: ``tcp://HOST:PORT``."""

    host: str
    port: int

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"tcp://{host}:{self.port}"


def parse_address(text: str, option: str = "--cluster") -> SchedulerAddress:
    """``tcp://HOST:PORT`` (HOST an IP address, ``[IPv6]`` or a host name; PORT 1-65535), else one line naming
    ``option``."""
    got = repr(clip_text(text, 60)) if text else "an empty value"
    why = f"{option}: a Dask scheduler address tcp://HOST:PORT (e.g. tcp://10.0.0.5:{DEFAULT_PORT}), got {got}"
    m = re.fullmatch(r"tcp://(\[[0-9A-Fa-f:.]+\]|[^:/\[\]]+):([0-9]{1,5})", str(text))
    if not m:
        raise EegloopError(why)
    host, port = m.group(1), int(m.group(2))
    if not 1 <= port <= 65535:
        raise EegloopError(f"{option}: the port must be 1-65535, got {port}")
    if host.startswith("["):
        host = host[1:-1]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise EegloopError(why) from None
        return SchedulerAddress(host, port)
    try:
        ipaddress.IPv4Address(host)
        return SchedulerAddress(host, port)
    except ValueError:
        pass
    labels = host[:-1].split(".") if host.endswith(".") else host.split(".")
    if not all(_HOST_LABEL.fullmatch(lab) for lab in labels) or re.fullmatch(r"[0-9.]+", host):
        raise EegloopError(why)
    return SchedulerAddress(host, port)


class Executor:
    """Runs calls serially (no client), on a ``LocalCluster`` it started, or on a scheduler's workers.

    Use :func:`open_executor`; as a context manager it closes what it started (a client it was handed is left
    open).
    """

    def __init__(self, client=None, cluster=None, scratch: Optional[str] = None, owned: bool = True,
                 kind: str = "serial"):
        self.client, self._cluster, self._scratch, self._owned, self.kind = client, cluster, scratch, owned, kind

    @property
    def slots(self) -> int:
        """How many tasks run at once: the workers' threads (1 when serial)."""
        if self.client is None:
            return 1
        return max(1, sum(self.client.nthreads().values()))

    def describe(self) -> str:
        """Where the tasks run, for a progress line: "in this process, one after another", "on a Dask ..."."""
        if self.client is None:
            return "in this process, one after another"
        n = len(self.client.nthreads())
        where = "a Dask LocalCluster on 127.0.0.1" if self.kind == "local" else \
            f"the Dask scheduler at {self.client.scheduler.address}"
        return f"on {where}: {n} worker{'s' * (n != 1)}, {self.slots} at once"

    def share(self, obj):
        """``obj`` as every task gets it: itself here, or a future of one copy on the cluster (sent once)."""
        if self.client is None:
            return obj
        return self.client.scatter(obj, hash=False)

    def map(self, fn: Callable, calls: Sequence[tuple], done: Optional[Callable[[int, object], None]] = None) -> list:
        """``[fn(*args) for args in calls]``, run where this executor runs them; ``done(i, result)`` as each one
        finishes (in any order). A task's error is raised here, the other tasks cancelled."""
        done = done or (lambda _i, _r: None)
        if self.client is None:
            out = []
            for i, args in enumerate(calls):
                out.append(fn(*args))
                done(i, out[-1])
            return out
        from distributed import as_completed

        futures = [self.client.submit(fn, *args, pure=False) for args in calls]
        index = {f.key: i for i, f in enumerate(futures)}
        out = [None] * len(futures)
        try:
            for fut in as_completed(futures, loop=self.client.loop):
                i = index[fut.key]
                out[i] = fut.result()
                done(i, out[i])
        except BaseException:
            self.client.cancel(futures)
            raise
        return out

    def close(self) -> None:
        if not self._owned:
            return
        try:
            if self.client is not None:
                self.client.close()
            if self._cluster is not None:
                self._cluster.close()
        finally:
            if self._scratch:
                shutil.rmtree(self._scratch, ignore_errors=True)
            self.client = self._cluster = self._scratch = None

    def __enter__(self) -> "Executor":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _start_method(preload: Sequence[str]) -> str:
    """How the worker processes start: forked from one server process that imported ``preload`` once (measured
    on 2 busy cores: each spawned worker spent 5-7 s of CPU importing torch, scipy and scikit-learn before its
    first fit), or spawned where there is no fork server (Windows)."""
    import multiprocessing

    if not preload or "forkserver" not in multiprocessing.get_all_start_methods():
        return "spawn"
    from distributed.utils import get_mp_context

    with _dask_config({"distributed.worker.multiprocessing-method": "forkserver"}):
        ctx = get_mp_context()  # sets dask's own preload once; ours replaces it (it holds dask's)
    ctx.set_forkserver_preload(["distributed", "numpy", *preload])  # no effect once the server runs: it has them
    return "forkserver"


def _dask_config(values: dict):
    import dask

    return dask.config.set(values)


def _local(workers: int, threads: int, preload: Sequence[str] = ()) -> Executor:
    """A ``LocalCluster`` of ``workers`` processes bound to 127.0.0.1 only, no dashboard, its scratch folder a
    temporary one removed on close; each worker runs one task at a time with ``threads`` intra-op threads."""
    from distributed import Client, LocalCluster

    scratch = tempfile.mkdtemp(prefix="eegloop-dask-")
    try:
        with _dask_config({"distributed.worker.multiprocessing-method": _start_method(preload)}):
            cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                                   dashboard_address=None, local_directory=scratch, silence_logs=logging.ERROR,
                                   env={"EEGLOOP_THREADS": str(threads)},
                                   # no dashboard; the scheduler's health routes on a free port, not 8787
                                   scheduler_kwargs={"dashboard_address": "127.0.0.1:0"})
        client = Client(cluster, set_as_default=False)
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise
    logger.info("dask: LocalCluster with %d workers on 127.0.0.1 (%d threads each)", workers, threads)
    return Executor(client, cluster, scratch, kind="local")


def _remote(address: SchedulerAddress, timeout: float) -> Executor:
    from distributed import Client

    logging.getLogger("distributed").setLevel(logging.ERROR)  # its retry warnings: the one line below says it
    try:
        client = Client(str(address), timeout=timeout, set_as_default=False)
    except (OSError, TimeoutError) as exc:
        raise EegloopError(f"--cluster: no Dask scheduler answered at {address} within {timeout:g} s "
                           f"({clip_text(exc, 80)}); start one with `dask scheduler`") from None
    if not client.nthreads():
        client.close()
        raise EegloopError(f"--cluster: the Dask scheduler at {address} has no workers; start them with "
                           f"`dask worker {address}` on machines where eegloop is installed")
    logger.info("dask: scheduler %s with %d workers", address, len(client.nthreads()))
    return Executor(client, kind="scheduler")


def open_executor(cluster=None, workers: Optional[int] = None, timeout: float = 10.0,
                  threads: Optional[int] = None, preload: Sequence[str] = ()) -> Executor:
    """Where tasks will run.

    Parameters
    ----------
    cluster : str | SchedulerAddress | distributed.Client | Executor | None
        A scheduler's address (``tcp://HOST:PORT``: connected to within ``timeout`` seconds, else one line), a
        client or executor the caller made (used, never closed here), or None.
    workers : int | None
        Start a ``LocalCluster`` of that many worker processes on 127.0.0.1 (with ``cluster`` None); 0, or neither
        given: serial, in this process.
    threads : int | None
        Intra-op threads of each local worker (default: the cores shared out among the workers).
    preload : sequence of str
        Modules the local workers' tasks import: imported once, by the process the workers are forked from.
    """
    import os

    if isinstance(cluster, Executor):
        return Executor(cluster.client, owned=False, kind=cluster.kind)
    if cluster is not None and workers is not None:
        raise EegloopError("--cluster and --workers: give one (a scheduler's workers are its own)")
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or not 0 <= workers <= 1024):
        raise EegloopError(f"--workers: 0 to 1024 worker processes, got {clip_text(workers, 40)!r}")
    if cluster is None:
        if not workers:
            return Executor()
        return _local(workers, threads or max(1, (os.cpu_count() or 1) // workers), preload)
    if isinstance(cluster, (str, SchedulerAddress)):
        address = cluster if isinstance(cluster, SchedulerAddress) else parse_address(cluster)
        return _remote(address, timeout)
    from distributed import Client

    if isinstance(cluster, Client):
        return Executor(cluster, owned=False, kind="scheduler")
    raise EegloopError(f"--cluster: an address tcp://HOST:PORT or a distributed.Client, got {type(cluster).__name__}")
