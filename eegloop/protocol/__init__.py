"""Protocol files: one validated YAML schema with defaults for every section.

A protocol describes a whole visit: which images (``stimuli``), how they are
shown (``paradigm``), where the EEG comes from (``amplifier``), how it is cut
(``epochs``), filtered (``preprocessing``) and decoded (``teacher``,
``training``), and what the subject sees in closed loop (``feedback``).

Every field has a default, so a protocol only states what differs. Loading is
strict: an unknown key, a wrong type, an out-of-range value or an inconsistent
design raises :class:`~eegloop.errors.ProtocolError` whose message names the
file and the field path, e.g.::

    protocols/x.yaml: paradigm.image_s: must be > 0, got -0.5

Use :func:`load_protocol` to read a file, :meth:`Protocol.to_yaml` to write
the complete, self-describing protocol back (round-trips),
:func:`protocol_from_dict` for protocols built in code, and
:func:`stored_protocol` for the YAML a session stored in the database.

The package: ``schema`` (one dataclass per section, :class:`Protocol`),
``design`` (what a paradigm implies), ``loading`` (types and bounds, the
readers), ``checks`` (fields against each other), ``safe_yaml`` (YAML from
untrusted bytes, bounded) and ``templates`` (the shipped protocols).
"""
from .design import Design
from .loading import load_protocol, protocol_from_dict, stored_protocol
from .safe_yaml import MAX_YAML_BYTES, parse_yaml_text, read_yaml_file
from .schema import (
    CHANNEL_TYPES, DECODER_MODELS, AmplifierConfig, DecoderConfig, EncoderConfig, EpochsConfig, FeedbackConfig,
    ParadigmConfig, PreprocessingConfig, Protocol, ScreenConfig, SignalCheckConfig, SimulateConfig, StimuliConfig,
    TeacherConfig, TimingConfig, TrainingConfig, describe_schema,
)
from .templates import TEMPLATES_DIR, template_path, templates

__all__ = [
    "Protocol", "StimuliConfig", "ScreenConfig", "ParadigmConfig", "SimulateConfig", "AmplifierConfig",
    "EpochsConfig", "PreprocessingConfig", "TeacherConfig", "TrainingConfig", "EncoderConfig", "DecoderConfig",
    "FeedbackConfig", "SignalCheckConfig", "TimingConfig", "Design", "load_protocol", "protocol_from_dict",
    "stored_protocol", "CHANNEL_TYPES", "DECODER_MODELS", "MAX_YAML_BYTES", "TEMPLATES_DIR", "describe_schema",
    "parse_yaml_text", "read_yaml_file", "template_path", "templates",
]
