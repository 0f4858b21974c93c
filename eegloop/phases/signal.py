"""The signal check before a visit: every electrode pass/warn/fail, a fail refusing the visit unless forced."""
from __future__ import annotations

from ..bus import BUS, Phase, SignalChecked
from ..protocol import Protocol
from .context import SignalCheckFailed, VisitContext, VisitPhase

__all__ = ["SignalCheckPhase", "gate_on_signal"]


class SignalCheckPhase(VisitPhase):
    """Every electrode pass/warn/fail before anything is written (``signal_check.before_visit``); a fail refuses
    the visit unless forced."""

    name = "signal check"

    def run(self, ctx: VisitContext) -> None:
        if ctx.protocol.signal_check.before_visit:
            ctx.signal_check = gate_on_signal(ctx.protocol, ctx.say, ctx.force, eeg_source_id=ctx.rig.eeg_source_id)


def gate_on_signal(protocol: Protocol, say, force: bool, eeg_source_id: str | None = None):
    """Run the signal check, show its table, and refuse (:class:`SignalCheckFailed`) on a fail unless ``force``."""
    from ..recorder.signal_check import check_signal

    BUS.publish(Phase("signal check"))
    check = check_signal(protocol, progress=say, eeg_source_id=eeg_source_id)
    BUS.publish(SignalChecked(check))
    say(check.table())
    if check.verdict == "fail":
        bad = check.failed()
        names = ", ".join(bad[:8]) + (f" and {len(bad) - 8} more" if len(bad) > 8 else "")
        if not force:
            raise SignalCheckFailed(f"signal check failed on {len(bad)} channel(s): {names}; fix those electrodes "
                                    "and start again, or record anyway with --force (stored with the session)")
        say(f"signal check FAILED on {names}: recording anyway (--force); the check is stored with the session")
    return check
