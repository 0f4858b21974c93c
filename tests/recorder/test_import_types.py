"""Imports read every channel's type and unit as live acquisition does; only EEG is cut and decoded (issue 25).

Needs no shared data: the files are written here (MNE, a minimal XDF writer, CSV).
"""
from __future__ import annotations

import numpy as np
import pytest

from eegloop.protocol import protocol_from_dict
from eegloop.recorder.importers import DataImportError, cut_epochs, read_recording
from xdfkit import write_xdf


def protocol(channels, sfreq, **amp):
    return protocol_from_dict({"stimuli": {"folder": "x"}, "paradigm": {"block_s": 20, "image_s": 1},
                               "amplifier": {"channels": channels, "sfreq": sfreq, **amp},
                               "epochs": {"tmin": 0.0, "tmax": 0.5, "margin_s": 0.1},
                               "preprocessing": {"bandpass_hz": [0.5, 40], "notch_hz": None,
                                                 "stft_window_ms": 200, "stft_hop_ms": 100}})


def test_mne_formats_import(tmp_path):
    """Anything MNE reads: every channel with its type; electrodes from volts to µV; only EEG is cut."""
    import mne

    rng = np.random.default_rng(0)
    info = mne.create_info(["C3", "C4", "EOG1", "STI"], 250.0, ["eeg", "eeg", "eog", "stim"])
    x = rng.standard_normal((4, 250 * 30)) * 1e-5
    x[3] = 0
    onsets = np.arange(250, 250 * 29, 125)
    x[3, onsets] = np.tile([1, 2], len(onsets))[:len(onsets)]
    raw = mne.io.RawArray(x, info, verbose=False)
    raw.save(tmp_path / "r_raw.fif", verbose=False)
    rec = read_recording(tmp_path / "r_raw.fif")
    assert rec.ch_names == ["C3", "C4", "EOG1", "STI"] and rec.ch_types == ["eeg", "eeg", "eog", "stim"]
    assert rec.eeg_names == ["C3", "C4"] and len(rec.markers) == len(onsets)
    np.testing.assert_allclose(rec.data[2], x[2] * 1e6, rtol=1e-5)  # an EOG electrode: µV too
    assert np.array_equal(rec.data[3][onsets], x[3][onsets])  # the stim channel keeps its values
    blocks, _ = cut_epochs(rec, protocol(2, 250), {"1": "left", "2": "right"}, 1)
    eps = [e for b in blocks for e in b.epochs]
    assert len(eps) == len(onsets) and eps[0].channel_names == ["C3", "C4"]
    np.testing.assert_allclose(eps[0].data, x[:2, onsets[0] - 25:onsets[0] - 25 + eps[0].data.shape[1]] * 1e6,
                               rtol=1e-5)
    # a protocol that retypes an EEG channel (amplifier.channel_types) leaves one EEG channel to decode
    rec = read_recording(tmp_path / "r_raw.fif", channel_types={"c4": "misc"})
    assert rec.eeg_names == ["C3"] and rec.ch_types[1] == "misc"


def test_non_finite_samples_refused_in_any_format(tmp_path):
    import mne

    info = mne.create_info(["C3", "C4", "STI"], 250.0, ["eeg", "eeg", "stim"])
    x = np.random.default_rng(0).standard_normal((3, 250 * 10)) * 1e-5
    x[2] = 0
    x[2, 500] = 1
    x[1, 700] = np.nan
    mne.io.RawArray(x, info, verbose=False).save(tmp_path / "n_raw.fif", verbose=False)
    with pytest.raises(DataImportError, match=r"1 non-finite samples \(NaN/inf\), first in channel 'C4' at sample 700"):
        read_recording(tmp_path / "n_raw.fif")


def _xdf(tmp_path, units, types, labels=("C3", "C4", "EXG1", "Diode"), name="rec.xdf"):
    sf, n = 250.0, 250 * 20
    rng = np.random.default_rng(1)
    x = rng.standard_normal((len(labels), n)).astype(np.float32)
    markers = [(100.0 + t, "1" if k % 2 else "2") for k, t in enumerate(np.arange(1, 18, 0.5))]
    return write_xdf(tmp_path / name, x, sf, 100.0, markers, list(labels), units, types), x


def test_xdf_channel_types_and_units_from_the_stream_description(tmp_path):
    """A LabRecorder file: C3 in volts, C4 in MNE-LSL's power of ten (-3: mV), an EOG in µV, a photodiode in
    lux: electrodes scaled to µV, the diode kept as it is, two EEG channels cut into epochs."""
    path, x = _xdf(tmp_path, ["V", "-3", "microvolts", "lux"], ["EEG", "eeg", "EOG", "photodiode"])
    rec = read_recording(path)
    assert rec.ch_types == ["eeg", "eeg", "eog", "misc"] and rec.units == ["µV", "µV", "µV", "lux"]
    np.testing.assert_allclose(rec.data[0], x[0] * 1e6, rtol=1e-6)
    np.testing.assert_allclose(rec.data[1], x[1] * 1e3, rtol=1e-6)
    np.testing.assert_array_equal(rec.data[2:], x[2:])
    blocks, _ = cut_epochs(rec, protocol(2, 250), {"1": "a", "2": "b"}, 1)
    eps = [e for b in blocks for e in b.epochs]
    assert eps and all(e.data.shape[0] == 2 and e.channel_names == ["C3", "C4"] for e in eps)
    # an electrode in a unit that is no voltage: refused in one line, unless the protocol retypes it
    path, _ = _xdf(tmp_path, ["V", "V", "kOhm", "lux"], ["EEG", "EEG", "EEG", "misc"], name="bad.xdf")
    with pytest.raises(DataImportError, match=r"EEG channel 'EXG1' is in 'kOhm', not a voltage") as exc:
        read_recording(path)
    assert "\n" not in str(exc.value)
    rec = read_recording(path, channel_types={"EXG1": "misc"})
    assert rec.eeg_names == ["C3", "C4"] and rec.units[2] == "kOhm"


def _csv(tmp_path):
    sf, n = 256.0, 256 * 30
    rng = np.random.default_rng(2)
    t = np.arange(n) / sf
    x = rng.standard_normal((5, n)) * 10
    mk = np.zeros(n)
    mk[np.arange(256, n - 512, 256)] = np.tile([1, 2], 100)[:len(np.arange(256, n - 512, 256))]
    rows = np.column_stack([t, x.T, mk])
    path = tmp_path / "muse.csv"
    with open(path, "w") as fh:
        fh.write("timestamps,TP9,AF7,AF8,TP10,Right AUX,Marker0\n")
        np.savetxt(fh, rows, delimiter=",", fmt="%.6f")
    return path


def test_csv_channel_types_through_the_cli(tmp_path, capsys):
    """--channel-types types a CSV's auxiliary column: only the four electrodes are decoded."""
    import yaml

    from eegloop.cli import main
    from eegloop.database import Database

    path = _csv(tmp_path)
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(
        {"stimuli": {"folder": "x", "classes": {"house": "house", "face": "face"}},
         "paradigm": {"block_s": 20, "image_s": 1.0, "pause_s": 0, "images_per_class": 20, "runs": 2},
         "amplifier": {"channels": 4, "sfreq": 256},
         "epochs": {"tmin": -0.1, "tmax": 0.5, "margin_s": 0.2}}))
    args = ["import", str(path), "--subject", "m1", "--format", "csv", "--events", "1=house,2=face",
            "--protocol", str(tmp_path / "p.yaml"), "--data", str(tmp_path / "d")]
    rc = main(args)
    err = capsys.readouterr().err
    assert rc == 2 and "5 EEG channels (TP9, AF7, AF8, TP10, Right AUX)" in err and "--channel-types" in err
    assert not (tmp_path / "d" / "eegloop.db").exists()
    rc = main(args + ["--channel-types", "Right AUX=eeg-ish"])
    err = capsys.readouterr().err
    assert rc == 2 and "--channel-types: 'Right AUX': type 'eeg-ish' is not one of" in err
    rc = main(args + ["--channel-types", "Right AUX=misc"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    db = Database(None, data_dir=tmp_path / "d")
    es = db.load_epochs("m1")
    assert es.channel_names == ["TP9", "AF7", "AF8", "TP10"] and len(es) > 20
    run = db.get_runs(1)[0]
    assert run.info["ch_types"] == ["eeg"] * 4 + ["misc"] and run.info["channels"][-1] == "Right AUX"


def test_bad_inputs_are_named(tmp_path):
    """Needs no shared data: a Muse-like CSV written here."""
    path = _csv(tmp_path)
    rec = read_recording(path, "csv", ["TP9", "AF7", "AF8", "TP10"])
    with pytest.raises(DataImportError, match="sampled at 256 Hz, the protocol expects 500 Hz"):
        cut_epochs(rec, protocol(4, 500), {"1": "house", "2": "face"}, 1)
    with pytest.raises(DataImportError, match="channel Cz not found"):
        read_recording(path, "csv", ["Cz"])
    with pytest.raises(DataImportError, match="file not found"):
        read_recording(tmp_path / "none.csv")
    empty = tmp_path / "e.csv"
    empty.write_text("timestamps,TP9,Marker0\n")
    with pytest.raises(DataImportError, match="no samples"):
        read_recording(empty)
