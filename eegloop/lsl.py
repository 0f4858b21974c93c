"""Lab Streaming Layer set-up shared by the paradigm, recorder and simulator.

liblsl reads its configuration once, at its first call. :func:`configure_lsl`
must therefore run before anything else touches LSL; every eegloop entry point
calls it with the protocol's ``amplifier.lsl_scope``. ``machine`` keeps every
query and connection on 127.0.0.1 (demo, tests, one-PC set-ups); ``link`` is
for an amplifier on another PC of the lab network.
"""
from __future__ import annotations

import json
import os

from ._logging import logger
from .errors import StreamError

__all__ = ["configure_lsl", "lsl_config_text", "resolve_stream", "local_clock"]

_configured: str | None = None


_LSL_DEFAULT_PORTS = (16571, 16572, 32)  # liblsl's own: discovery port, first port, number of ports


def lsl_ports() -> tuple[int, int, int]:
    """(discovery port, first port, number of ports) of liblsl: its defaults (16571, 16572, 32), or a block of
    its own from ``EEGLOOP_LSL_PORTS=DISCOVERY_PORT`` (the ports after it, 32 of them: an LSL "network" that
    no other program's streams reach, for two rigs or two test runs on one machine; every process of a visit
    inherits it)."""
    raw = os.environ.get("EEGLOOP_LSL_PORTS", "").strip()
    if not raw:
        return _LSL_DEFAULT_PORTS
    try:
        port = int(raw)
    except ValueError:
        port = -1
    if not 1024 <= port <= 65535 - 33:
        raise StreamError(f"EEGLOOP_LSL_PORTS: must be a port from 1024 to {65535 - 33} (LSL's discovery port; "
                          f"the 32 after it carry the streams), got {raw[:40]!r}")
    return port, port + 1, 32


def lsl_config_text(scope: str = "machine") -> str:
    """The ``lsl_api.cfg`` content eegloop uses for ``scope``."""
    # machine scope: the multicast (discovery) listener binds to loopback too; liblsl's unicast UDP and TCP
    # data ports still listen on all interfaces (liblsl has no setting for them: a lab network needs a firewall)
    listen = "ListenAddress = 127.0.0.1\n" if scope == "machine" else ""
    discovery, base, n = lsl_ports()
    ports = ("" if (discovery, base, n) == _LSL_DEFAULT_PORTS  # liblsl's defaults: nothing to say
             else f"MulticastPort = {discovery}\nBasePort = {base}\nPortRange = {n}\n")
    return (f"[ports]\nIPv6 = disable\n{ports}\n[multicast]\nResolveScope = {scope}\n{listen}\n"
            "[log]\nlevel = -2\n")


def configure_lsl(scope: str = "machine") -> None:
    """Configure liblsl's discovery scope; call before any other LSL call.

    A later call with another scope has no effect on liblsl (it is configured
    once per process) and logs a warning.
    """
    global _configured
    if _configured is not None:
        if _configured != scope:
            logger.warning("LSL already configured with scope %r in this process; %r ignored", _configured, scope)
        return
    text = lsl_config_text(scope)
    # child processes (simulate, replay) inherit the same scope through an env var
    os.environ["EEGLOOP_LSL_SCOPE"] = scope
    if not os.environ.get("LSLAPICFG"):
        # another liblsl in this process or its children (MNE-LSL ships its own) reads this file at its first
        # call: it keeps the same scope, so nothing of theirs looks beyond this machine either
        import atexit
        import tempfile

        try:
            fd, cfg = tempfile.mkstemp(prefix="eegloop-lsl_api-", suffix=".cfg")  # private, never a followed link
            with os.fdopen(fd, "w") as fh:
                fh.write(text)
            os.environ["LSLAPICFG"] = cfg
            atexit.register(lambda: os.path.exists(cfg) and os.unlink(cfg))
        except OSError as exc:
            logger.warning("could not write an lsl_api.cfg for other LSL libraries: %s", exc)
    import pylsl

    pylsl.set_config_content(text)
    _configured = scope
    logger.info("LSL configured: ResolveScope=%s, IPv6 disabled", scope)


def ensure_configured() -> None:
    """Configure with the inherited or default (machine) scope if nobody did yet."""
    if _configured is None:
        configure_lsl(os.environ.get("EEGLOOP_LSL_SCOPE", "machine"))


def local_clock() -> float:
    ensure_configured()
    import pylsl

    return pylsl.local_clock()


def resolve_stream(name: str | None, stype: str | None, timeout: float, what: str, how: str,
                   source_id: str | None = None, hostname: str | None = None, unique: bool = False):
    """Find one stream by name (and type); raise one clear StreamError if absent.

    Types are compared case-insensitively (MNE-LSL's player says ``eeg``, most amplifier apps ``EEG``), and a
    stream found by its name that declares no type at all (MNE-LSL's player replaying channels of several types)
    is not refused for it. When no
    stream matches, the error lists the near misses — streams of that name with another type, of that type with
    another name, or either on another host or source id — each with its host and source id.

    Parameters
    ----------
    name, stype : str | None
        LSL name and type to match (None: any).
    timeout : float
        Seconds to look; streams of another process need >= 1 s.
    what : str
        Description used in the error ("EEG stream", "marker stream").
    how : str
        How to start it, shown in the error.
    source_id, hostname : str | None
        Pin the stream to this source id / host.
    unique : bool
        When several streams match, refuse with one line listing them (name, type, host, source id)
        instead of taking the first: recording another process's stream would be silent data corruption.
    """
    ensure_configured()
    import pylsl

    timeout = max(timeout, 1.0)

    def matching(found):
        out = [s for s in found if (not name or s.name() == name)
               and (same_type(s.type(), stype) or (name and not s.type()))]
        if source_id:
            out = [s for s in out if s.source_id() == source_id]
        if hostname:
            out = [s for s in out if s.hostname() == hostname]
        return out

    def query(minimum, wait):
        if source_id:
            return pylsl.resolve_byprop("source_id", source_id, minimum=minimum, timeout=wait)
        if name:
            return pylsl.resolve_byprop("name", name, minimum=minimum, timeout=wait)
        if stype and "'" not in stype:  # liblsl's own match is case-sensitive: an XPath that folds the case
            return pylsl.resolve_bypred(f"translate(type,'{_UPPER}','{_LOWER}')='{stype.lower()}'",
                                        minimum=minimum, timeout=wait)
        return pylsl.resolve_streams(wait_time=wait)

    found = matching(query(1, timeout))
    if unique and found and not source_id:
        # the first answer ends the query: listen longer for others of the same name. On one machine the first
        # wave (to 127.0.0.1:16571) reaches only the outlet opened last; the unicast wave 0.5 s later reaches every
        # outlet on a port of liblsl's range (16572-16603: kept free by releasing finished rigs, see
        # rig.release_lsl), so 1.6 s covers it and two more
        found = matching(query(len(found) + 1, 1.6)) or found
    if not found:
        ident = f"name '{name}'" if name else f"type '{stype}'"
        pins = "".join(f", {k} '{v}'" for k, v in (("source id", source_id), ("host", hostname)) if v)
        busy = lsl_ports_taken()
        _, base, n = lsl_ports()
        full = (f"; all {n} of LSL's ports ({base}-{base + n - 1}) "
                "are taken on this machine, so a stream started now may be unreachable: close LSL programs "
                "you do not need" if busy is not None and busy >= n else "")
        ident += f" type '{stype}'" if name and stype else ""
        near = near_misses(pylsl.resolve_streams(wait_time=1.0), name, stype, source_id, hostname)
        raise StreamError(f"no {what} with {ident}{pins} found on LSL within {timeout:g} s"
                          + (f"; near misses: {near}" if near else "") + f"; {how}{full}")
    if len(found) > 1:
        uniq = {s.uid() for s in found}  # one outlet may answer more than once
        if unique and len(uniq) > 1:
            listed = "; ".join(describe_stream(s) for s in found[:6])
            raise StreamError(f"{len(found)} {what}s match name '{name}' type '{stype}': {listed}; pin one with "
                              "amplifier.source_id or amplifier.hostname in the protocol")
        logger.warning("%d %ss named %r found; using the first (%s)", len(found), what, name, found[0].hostname())
    return found[0]


_UPPER, _LOWER = "ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz"


def same_type(found: str, wanted: str | None) -> bool:
    """An LSL content type matches the one asked for, whatever its case (None or "": any type)."""
    return not wanted or (found or "").casefold() == wanted.casefold()


def describe_stream(s) -> str:
    """One stream in words: name, type, host, source id."""
    return f"'{s.name()}' ({s.type() or 'no type'}) on {s.hostname()}, source id '{s.source_id()}'"


def near_misses(streams, name: str | None, stype: str | None, source_id: str | None = None,
                hostname: str | None = None, limit: int = 6) -> str:
    """The streams a search for (name, type, source id, host) just missed, in words ("" when none).

    Same name with another type; same type with another name; name and type right on another host or source id.
    """
    out, seen = [], set()
    for s in streams:
        if s.uid() in seen or describe_stream(s) in seen:  # one outlet answering twice, or restarted alike
            continue
        seen.update((s.uid(), describe_stream(s)))
        name_ok = bool(name) and s.name() == name
        type_ok = bool(stype) and same_type(s.type(), stype)
        if name_ok and stype and not type_ok and s.type():
            out.append(f"name right, type {s.type() or 'none'!r}: {describe_stream(s)}")
        elif type_ok and name and not name_ok:
            out.append(f"type right, name {s.name()!r}: {describe_stream(s)}")
        elif (name_ok or not name) and (type_ok or not stype) and (source_id or hostname):
            out.append(f"another {'source id' if source_id and s.source_id() != source_id else 'host'}: "
                       f"{describe_stream(s)}")
    out.sort(key=lambda line: not line.startswith("name right"))  # the name's own streams first
    more = f"; and {len(out) - limit} more" if len(out) > limit else ""
    return "; ".join(out[:limit]) + more


def lsl_ports_taken(this_process: bool = False) -> int | None:
    """How many of liblsl's UDP ports are in use on this machine, or by this process alone (from /proc/net/udp
    and the process's open sockets; None where unreadable).

    Every outlet's service socket and every query binds one; when all are taken a new outlet falls back to a
    random port that other processes' queries reach only by chance."""
    mine = None
    if this_process:
        try:
            fds = os.listdir("/proc/self/fd")
        except OSError:
            return None
        mine = set()
        for fd in fds:
            try:
                link = os.readlink(f"/proc/self/fd/{fd}")
            except OSError:  # closed meanwhile (the listing's own descriptor)
                continue
            if link.startswith("socket:["):
                mine.add(link[8:-1])
    _, base, n = lsl_ports()
    ports, read = set(), False
    for table in ("/proc/net/udp", "/proc/net/udp6"):
        try:
            with open(table) as fh:
                rows = fh.read().splitlines()[1:]
        except OSError:
            continue
        read = True
        for row in rows:
            f = row.split()
            try:
                port = int(f[1].rsplit(":", 1)[1], 16)
            except (IndexError, ValueError):
                continue
            if base <= port < base + n and (mine is None or (len(f) > 9 and f[9] in mine)):
                ports.add(port)
    return len(ports) if read else None


def parse_marker(text: str) -> dict:
    """A marker string as a dict: eegloop's JSON markers, or ``{"event": "marker", "value": text}``."""
    try:
        d = json.loads(text)
        if isinstance(d, dict) and "event" in d:
            return d
    except (ValueError, TypeError):
        pass
    return {"event": "marker", "value": text}
