"""eegloop: closed-loop EEG visual-decoding experiments, end to end.

protocol -> paradigm + recorder -> database -> decoder -> feedback.

What the command line does, a notebook does with ``import eegloop``::

    import eegloop
    proto = eegloop.load_protocol("protocols/demo.yaml")
    db = eegloop.Database("sqlite:///eegloop-demo/eegloop.db")
    es = db.load_epochs("S01")                    # an EpochSet; es.to_mne() for MNE
    report = eegloop.evaluate(es, proto, methods=["auto", "riemann"])
    print(report.table())
    model = eegloop.quick_train(db, "S01")
    eegloop.print_progress()                      # the long functions' progress lines, printed (or verbose=)
    dec = eegloop.OnlineDecoder(model.path)       # one epoch -> class probabilities

The names below load on first use, so ``import eegloop`` stays light (no torch, no PsychoPy until needed).
"""
from __future__ import annotations

from ._lazy import lazy_exports
from ._logging import logger, set_log_level
from ._version import __version__  # one home: eegloop/_version.py
from .errors import EegloopError, ProtocolError

# public name -> module that defines it (loaded on first access, PEP 562)
_LAZY = {
    "Protocol": "protocol", "load_protocol": "protocol", "protocol_from_dict": "protocol",
    "Database": "database",
    "Epoch": "types", "EpochSet": "types",
    "StimulusSet": "stimuli", "load_stimuli": "stimuli", "synthesize_stimuli": "stimuli",
    "make_schedule": "paradigm.schedule",
    "VirtualAmplifier": "recorder.simulator", "simulate_epochs": "recorder.simulator",
    "read_recording": "recorder.importers", "check_recording": "recorder.importers",
    "import_recordings": "recorder.importers",
    "parse_events": "recorder.importers", "import_epochset": "recorder.importers",
    "check_signal": "recorder.signal_check", "check_timing": "timing_check", "export_bids": "bids",
    "quick_train": "decoder", "evaluate": "decoder", "OnlineDecoder": "decoder", "EvalReport": "decoder",
    "record_session": "session", "run_visit": "session", "Visit": "session", "VisitContext": "session",
    "phases_for": "session", "Rig": "rig",
    "run_feedback": "feedback.loop",
    "write_report": "report",
    "print_progress": "progress", "use_log_level": "progress", "SessionStatus": "database",
    "stored_protocol": "protocol", "method_names": "decoder.methods",
}

__all__ = ["__version__", "logger", "set_log_level", "EegloopError", "ProtocolError", *_LAZY]


__getattr__, __dir__ = lazy_exports(__name__, _LAZY)
