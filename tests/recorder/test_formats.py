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
