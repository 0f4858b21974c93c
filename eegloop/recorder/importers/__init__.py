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
re-exports, lazily.
"""
from ..._lazy import lazy_exports

_LAZY = {  # name -> its module: imported on first use, so the CLI's parser (which reads formats()) stays light
    'read_csv': 'csv_reader',
    'cut_epochs': 'cutting',
    'locate_images': 'eeg_imagenet',
    'read_eeg_imagenet': 'eeg_imagenet',
    'IGNORE': 'events',
    'marker_class': 'events',
    'parse_events': 'events',
    'ImportFormat': 'registry',
    'format_names': 'registry',
    'formats': 'registry',
    'read_recording': 'formats',
    'read_mne': 'mne_reader',
    'DataImportError': 'recording',
    'Recording': 'recording',
    'RecordingError': 'recording',
    'check_recording': 'recording',
    'parse_channel_types': 'recording',
    'SourceRun': 'source_file',
    'source_as_brainvision': 'source_file',
    'PreparedImport': 'storing',
    'import_epochset': 'storing',
    'import_recordings': 'storing',
    'prepare_import': 'storing',
    'store_import': 'storing',
    'THINGS_EEG2_TEST_RUN': 'things_eeg2',
    'locate_things_images': 'things_eeg2',
    'read_things_eeg2': 'things_eeg2',
    'things_eeg2_files': 'things_eeg2',
    'read_xdf': 'xdf_reader',
}

__all__ = list(_LAZY)


__getattr__, __dir__ = lazy_exports(__name__, _LAZY)
