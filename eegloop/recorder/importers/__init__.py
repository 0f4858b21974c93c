"""Bring your own recordings: XDF, anything MNE reads, CSV -> a session in the database.

Each file becomes a run; contiguous stretches of ``paradigm.block_s`` seconds
become blocks, so the honest folds (leave whole runs or blocks out) exist for
imported data too. Markers are mapped to classes by an events map
(``1=house,2=face`` or a YAML file); eegloop's own JSON markers carry their
class. Epochs are cut exactly as the recorder cuts them (``epochs`` window plus
margins) and stored with ``kind="imported"``; downstream (train, evaluate,
report) cannot tell them from recorded ones.

Every file is read and checked before anything is written, so a bad file
(empty stream, no markers, unknown marker value, clock reset inside an epoch,
wrong sampling rate) leaves the database unchanged.

One module per job: :mod:`.recording` (the :class:`Recording`, its errors, the usable-or-not decision),
:mod:`.events` (events maps), :mod:`.csv_reader`, :mod:`.xdf_reader`, :mod:`.mne_reader` (continuous
files), :mod:`.formats` (the registry of ``--format`` choices and :func:`read_recording`), :mod:`.cutting`
(epochs), :mod:`.storing` (one session in one transaction), :mod:`.eeg_imagenet` and :mod:`.things_eeg2`
(the two datasets), :mod:`.source_file` (a run's source re-read for the BIDS export). This package only
re-exports.
"""
from .csv_reader import read_csv
from .cutting import cut_epochs
from .eeg_imagenet import locate_images, read_eeg_imagenet
from .events import IGNORE, marker_class, parse_events
from .formats import ImportFormat, format_names, formats, read_recording
from .mne_reader import read_mne
from .recording import DataImportError, Recording, RecordingError, check_recording, parse_channel_types
from .source_file import SourceRun, source_as_brainvision
from .storing import PreparedImport, import_epochset, import_recordings, prepare_import, store_import
from .things_eeg2 import THINGS_EEG2_TEST_RUN, locate_things_images, read_things_eeg2, things_eeg2_files
from .xdf_reader import read_xdf

ImportError_ = DataImportError  # the old name, still used by eegloop/bids.py
_marker_class = marker_class  # the old name, still used by eegloop/recorder/player.py

__all__ = ["Recording", "DataImportError", "RecordingError", "parse_events", "parse_channel_types", "read_csv",
           "read_xdf", "read_mne", "read_recording", "check_recording", "ImportFormat", "formats", "format_names",
           "PreparedImport", "prepare_import", "store_import", "IGNORE", "marker_class",
           "cut_epochs", "import_recordings", "read_eeg_imagenet", "locate_images", "import_epochset",
           "things_eeg2_files", "read_things_eeg2", "locate_things_images", "THINGS_EEG2_TEST_RUN", "SourceRun",
           "source_as_brainvision"]
