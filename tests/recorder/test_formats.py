"""Any amplifier's stream: every LSL numeric format read into float32 µV, units from the stream's description.

Plain pylsl outlets stand in for third-party amplifier apps (eegloop's own simulator only sends float32 µV).
"""
from __future__ import annotations

import time
import uuid

import numpy as np
import pytest

from eegloop.lsl import configure_lsl

configure_lsl("machine")

import pylsl  # noqa: E402

from eegloop.errors import StreamError  # noqa: E402
from eegloop.protocol import protocol_from_dict  # noqa: E402
from eegloop.recorder.acquisition import Acquisition  # noqa: E402

FORMATS = {"float32": (pylsl.cf_float32, np.float32), "double64": (pylsl.cf_double64, np.float64),
           "int32": (pylsl.cf_int32, np.int32), "int16": (pylsl.cf_int16, np.int16), "int8": (pylsl.cf_int8, np.int8)}


def outlet(name, n_ch, sf, fmt, labels=None, units=None, types=None):
    info = pylsl.StreamInfo(name, "EEG", n_ch, sf, fmt, f"src-{name}")
    if labels is not None:
        chans = info.desc().append_child("channels")
        for i, lab in enumerate(labels):
            c = chans.append_child("channel")
            c.append_child_value("label", lab)
            if units is not None:
                c.append_child_value("unit", units[i])
            c.append_child_value("type", (types or ["EEG"] * n_ch)[i])
    return pylsl.StreamOutlet(info)


def amp(name, n_ch, sf, **kw):
    return protocol_from_dict({"stimuli": {"folder": "x"},
                               "amplifier": {"stream_name": name, "channels": n_ch, "sfreq": sf,
                                             "source_id": f"src-{name}", "resolve_timeout_s": 3, **kw}}).amplifier


def pull_some(acq, out, block, n_wanted):
    got = []
    deadline = time.monotonic() + 10
    while sum(x.shape[1] for x in got) < n_wanted and time.monotonic() < deadline:
        out.push_chunk(block)
        time.sleep(0.05)
        data, _ = acq.pull()
        if data is not None:
            got.append(data)
    return np.concatenate(got, axis=1)


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_every_numeric_format_is_read_as_float32_microvolts(fmt):
    cf, dt = FORMATS[fmt]
    name = f"fmt-{fmt}-{uuid.uuid4().hex[:6]}"
    values = np.array([[1, -2, 3, 100]], dtype=dt).repeat(25, 0)  # (samples, channels)
    out = outlet(name, 4, 250, cf, ["C3", "C4", "Pz", "Oz"], ["microvolts"] * 4)
    acq = Acquisition(amp(name, 4, 250)).connect(markers=False)
    try:
        data = pull_some(acq, out, values, 50)
    finally:
        acq.close()
    assert data.dtype == np.float32 and data.shape[0] == 4
    assert np.array_equal(data[:, 0], [1, -2, 3, 100]) and (data == data[:, :1]).all()
    assert acq.ch_names == ["C3", "C4", "Pz", "Oz"]


def test_units_from_the_description_scale_to_microvolts():
    name = f"units-{uuid.uuid4().hex[:6]}"
    units = ["V", "millivolts", "uV", "nV", ""]
    sample = np.array([[2e-5, 0.02, 20.0, 20_000.0, 20.0]])  # 20 µV in each channel's own unit
    out = outlet(name, 5, 250, pylsl.cf_double64, [f"E{i}" for i in range(5)], units)
    acq = Acquisition(amp(name, 5, 250)).connect(markers=False)
    try:
        data = pull_some(acq, out, sample.repeat(25, 0), 25)
    finally:
        acq.close()
    assert np.allclose(data, 20.0, rtol=1e-5)


def test_unknown_unit_refused_and_protocol_labels_for_an_unlabelled_stream():
    name = f"bad-{uuid.uuid4().hex[:6]}"
    out = outlet(name, 2, 250, pylsl.cf_float32, ["C3", "GSR"], ["microvolts", "microsiemens"])
    with pytest.raises(StreamError, match="channel 'GSR' is in 'microsiemens', not a voltage"):
        Acquisition(amp(name, 2, 250)).connect(markers=False)
    del out
    name = f"nolab-{uuid.uuid4().hex[:6]}"
    out = outlet(name, 3, 250, pylsl.cf_float32)
    acq = Acquisition(amp(name, 3, 250, channel_names=["Fz", "Cz", "Pz"])).connect(markers=False)
    assert acq.ch_names == ["Fz", "Cz", "Pz"]
    acq.close()
    with pytest.raises(StreamError, match="has 3 channels and no labels; amplifier.channel_names lists 2"):
        Acquisition(amp(name, 2, 250, channel_names=["Fz", "Cz"])).connect(markers=False)
    del out


def test_channel_types_from_the_stream_and_the_protocol():
    """EOG, a photodiode, a trigger and a GSR sensor beside two electrodes: only the electrodes are decoded,
    every channel is stored, each in its unit; the protocol can retype what the stream mislabels."""
    name = f"types-{uuid.uuid4().hex[:6]}"
    labels = ["C3", "C4", "HEOG", "Photo", "TRIG", "GSR"]
    out = outlet(name, 6, 250, pylsl.cf_float32, labels, ["uV", "uV", "mV", "V", "", "microsiemens"],
                 ["EEG", "EEG", "EOG", "EEG", "Trigger", "EEG"])
    sample = np.array([[5.0, 6.0, 0.1, 2.0, 1.0, 3.0]])
    acq = Acquisition(amp(name, 2, 250, channel_types={"gsr": "misc"}), photodiode="Photo").connect(markers=False)
    try:
        data = pull_some(acq, out, sample.repeat(25, 0), 25)
    finally:
        acq.close()
    assert acq.ch_types == ["eeg", "eeg", "eog", "misc", "stim", "misc"] and acq.eeg_idx == [0, 1]
    assert acq.photo_idx == 3 and acq.stim_idx == [4]
    # voltages in µV (the EOG's mV and the photodiode's V too), the GSR and the trigger in their own units
    assert np.allclose(data[:, 0], [5.0, 6.0, 100.0, 2e6, 1.0, 3.0])
    assert acq.out_units == ["µV", "µV", "µV", "µV", "", "microsiemens"]
    # without the protocol's retyping the GSR is an electrode that is not in volts: refused, with the way out
    with pytest.raises(StreamError, match="EEG channel 'GSR' is in 'microsiemens'.*amplifier.channel_types"):
        Acquisition(amp(name, 2, 250), photodiode="Photo").connect(markers=False)
    with pytest.raises(StreamError, match="amplifier.channel_types: no channel 'veog'"):
        Acquisition(amp(name, 2, 250, channel_types={"VEOG": "eog"})).connect(markers=False)
    with pytest.raises(StreamError, match="timing.photodiode_channel: no channel 'Diode'"):
        Acquisition(amp(name, 2, 250, channel_types={"gsr": "misc"}), photodiode="Diode").connect(markers=False)
    del out


def test_mne_lsl_player_replaying_a_recording(tmp_path):
    """A third-party outlet: MNE-LSL's PlayerLSL replays a float64 recording in volts with MNE's channel types and
    its numeric units; the recorder stores it sample for sample, in µV, and decodes only the EEG."""
    import mne
    from mne_lsl.player import PlayerLSL

    from eegloop.recorder.recorder import Recorder

    sf, n = 256.0, 256 * 30
    rng = np.random.default_rng(3)
    x = np.vstack([rng.standard_normal((2, n)) * 2e-5, np.arange(n) * 1e-6, (np.arange(n) % 64 == 0) * 1.0])
    raw = mne.io.RawArray(x, mne.create_info(["C3", "C4", "EOG1", "STI"], sf, ["eeg", "eeg", "eog", "stim"]),
                          verbose="error")
    fif = tmp_path / "rec_raw.fif"
    raw.save(fif, verbose="error")
    name = f"player-{uuid.uuid4().hex[:6]}"
    # the protocol's defaults (stream_type EEG, no source id): the player says type 'eeg'
    proto = protocol_from_dict({"stimuli": {"folder": "x"}, "epochs": {"tmax": 0.3, "margin_s": 0.1},
                                "amplifier": {"stream_name": name, "channels": 2, "sfreq": sf,
                                              "resolve_timeout_s": 5}})
    assert proto.amplifier.stream_type == "EEG" and proto.amplifier.source_id is None
    player = PlayerLSL(fif, chunk_size=16, name=name, source_id=f"src-{name}")
    player.start()
    try:
        # channels of several types: the player declares no stream type; found by its name all the same
        assert Acquisition(proto.amplifier).connect(markers=False).eeg_inlet.info().type() == ""
        rec = Recorder(proto, raw_dir=tmp_path / "raw").connect(markers=False)
        rec.start()
        rec.begin_run(1)
        time.sleep(3.0)
        rec.end_run(wait=False)
        stats = rec.stop()
    finally:
        player.stop()
    assert rec.acq.ch_types == ["eeg", "eeg", "eog", "stim"] and rec.eeg_names == ["C3", "C4"]
    assert stats.samples_received > 2 * sf and stats.lost_samples == 0
    got = mne.io.read_raw_brainvision(rec.raw_files[0], preload=True, verbose="error")
    v = got.get_data()  # volts again, as MNE reads the µV the recorder wrote
    first = int(round(v[2, 0] * 1e6))  # the EOG channel counts samples: where the recording joined the replay
    k = v.shape[1]
    assert np.array_equal(np.round(v[2] * 1e6), np.arange(first, first + k) % n)
    idx = np.arange(first, first + k) % n
    assert np.allclose(v[:2], x[:2, idx], rtol=1e-5, atol=1e-11)
    assert np.array_equal(v[3] > 0.5, x[3, idx] > 0.5)


def test_mne_lsl_player_of_eeg_alone_is_found_with_the_protocol_defaults(tmp_path):
    """MNE-LSL's player of an all-EEG recording publishes type 'eeg': the protocol's default stream_type 'EEG'
    finds it (liblsl compares types case-sensitively; eegloop does not)."""
    import mne
    from mne_lsl.player import PlayerLSL

    sf = 256.0
    x = np.random.default_rng(4).standard_normal((2, 256 * 10)) * 1e-5
    fif = tmp_path / "eeg_raw.fif"
    mne.io.RawArray(x, mne.create_info(["C3", "C4"], sf, "eeg"), verbose="error").save(fif, verbose="error")
    name = f"extplayer-{uuid.uuid4().hex[:6]}"
    proto = protocol_from_dict({"stimuli": {"folder": "x"}, "amplifier": {"stream_name": name, "channels": 2,
                                                                          "sfreq": sf}})
    assert proto.amplifier.stream_type == "EEG" and proto.amplifier.source_id is None
    player = PlayerLSL(fif, chunk_size=16, name=name)
    player.start()
    try:
        acq = Acquisition(proto.amplifier).connect(markers=False)
        assert acq.eeg_inlet.info().type() == "eeg" and acq.eeg_inlet.info().name() == name
        assert acq.eeg_names == ["C3", "C4"]
        acq.close()
    finally:
        player.stop()


def test_types_match_whatever_their_case_and_a_miss_lists_the_near_ones():
    """A stream is found by name with its type in any case, or by type alone; one not found names the streams of
    that name with another type and of that type with another name, with host and source id."""
    import socket

    tag = uuid.uuid4().hex[:6]
    low, up = f"eeg-{tag}", f"EEG-{tag.upper()}"  # a type of this test's own, in two cases
    eeg = pylsl.StreamOutlet(pylsl.StreamInfo(f"amp-{tag}", low, 2, 250, pylsl.cf_float32, f"src-amp-{tag}"))
    other = pylsl.StreamOutlet(pylsl.StreamInfo(f"aux-{tag}", "Markers", 1, 0, pylsl.cf_string, f"src-aux-{tag}"))
    try:
        acq = Acquisition(amp(f"amp-{tag}", 2, 250, source_id=None, stream_type=up)).connect(markers=False)
        assert acq.eeg_inlet.info().name() == f"amp-{tag}"
        acq.close()
        from eegloop.lsl import resolve_stream

        found = resolve_stream(None, up, 3, "EEG stream", "start it")  # by type alone, liblsl's match folded
        assert found.type() == low and found.name() == f"amp-{tag}"
        with pytest.raises(StreamError) as exc:  # the name of a marker stream, the type of the EEG one
            Acquisition(amp(f"aux-{tag}", 2, 250, source_id=None, stream_type=up,
                            resolve_timeout_s=1)).connect(markers=False)
        msg = str(exc.value)
        assert f"no EEG stream with name 'aux-{tag}' type '{up}' found" in msg and "\n" not in msg
        host = socket.gethostname()
        assert f"name right, type 'Markers': 'aux-{tag}' (Markers) on {host}, source id 'src-aux-{tag}'" in msg
        assert f"type right, name 'amp-{tag}': 'amp-{tag}' ({low}) on {host}, source id 'src-amp-{tag}'" in msg
        with pytest.raises(StreamError, match=f"another source id: 'amp-{tag}' \\({low}\\)"):
            Acquisition(amp(f"amp-{tag}", 2, 250, source_id="nope", stream_type=up,
                            resolve_timeout_s=1)).connect(markers=False)
    finally:
        del eeg, other
