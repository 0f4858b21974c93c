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


def lsl_config_text(scope: str = "machine") -> str:
    """The ``lsl_api.cfg`` content eegloop uses for ``scope``."""
    return f"[ports]\nIPv6 = disable\n\n[multicast]\nResolveScope = {scope}\n\n[log]\nlevel = -2\n"


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
                   source_id: str | None = None):
    """Find one stream by name (and type); raise one clear StreamError if absent.

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
    """
    ensure_configured()
    import pylsl

    timeout = max(timeout, 1.0)
    if source_id:
        found = pylsl.resolve_byprop("source_id", source_id, minimum=1, timeout=timeout)
    elif name:
        found = pylsl.resolve_byprop("name", name, minimum=1, timeout=timeout)
    else:
        found = pylsl.resolve_byprop("type", stype, minimum=1, timeout=timeout)
    if stype and name:
        found = [s for s in found if s.type() == stype] or found
    if not found:
        ident = f"name '{name}'" if name else f"type '{stype}'"
        raise StreamError(f"no {what} with {ident} found on LSL within {timeout:g} s; {how}")
    if len(found) > 1:
        logger.warning("%d %ss named %r found; using the first (%s)", len(found), what, name, found[0].hostname())
    return found[0]


def parse_marker(text: str) -> dict:
    """A marker string as a dict: eegloop's JSON markers, or ``{"event": "marker", "value": text}``."""
    try:
        d = json.loads(text)
        if isinstance(d, dict) and "event" in d:
            return d
    except (ValueError, TypeError):
        pass
    return {"event": "marker", "value": text}
