"""The signal check: each bad-electrode switch of the virtual amplifier gets its own verdict, good channels pass."""
from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import yaml

from eegloop.protocol import SignalCheckConfig
from eegloop.recorder.signal_check import assess

REPO = Path(__file__).resolve().parents[2]


def test_every_bad_channel_kind_is_caught_over_lsl(tmp_path):
    stream = f"sc-{uuid.uuid4().hex[:8]}"
    proto = {"name": "sc", "stimuli": {"folder": "x"},
             "amplifier": {"stream_name": stream, "channels": 8, "sfreq": 250,
                           "simulate": {"flat_channels": [2], "noisy_channels": [3], "drifting_channels": [5],
                                        "saturated_channels": [7], "impedances": True, "high_impedance_channels": [4]}},
             "signal_check": {"seconds": 3, "impedance_stream": f"{stream}-impedance"}}
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(proto))
    r = subprocess.run([sys.executable, "-m", "eegloop", "check-signal", "--protocol", str(tmp_path / "p.yaml"),
                        "--simulate", "--json"], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert r.returncode == 1, r.stderr  # a failed check is not a bad input: 1, not 2
    res = json.loads(r.stdout.strip().splitlines()[-1])
    by = {i + 1: c for i, c in enumerate(res["channels"])}
    assert res["verdict"] == "fail" and len(by) == 8
    assert by[2]["verdict"] == "fail" and by[2]["reasons"][0].startswith("flat")
    assert by[3]["verdict"] == "fail" and by[3]["reasons"][0].startswith("50 Hz line noise")
    assert by[5]["verdict"] == "fail" and by[5]["reasons"][0].startswith("drifting")
    assert by[7]["verdict"] == "fail" and by[7]["reasons"] == [r_ for r_ in by[7]["reasons"] if "saturated" in r_]
    assert by[4]["verdict"] == "fail" and by[4]["reasons"] == ["impedance 120 kΩ >= 50"]  # an impedance stream
    assert all(by[k]["verdict"] == "pass" and 2 <= by[k]["impedance_kohm"] <= 12 for k in (1, 6, 8)), by
    assert 2.9 <= res["seconds"] <= 3.1


def test_warn_thresholds_and_the_table():
    sf, n = 250.0, 1000
    t = np.arange(n) / sf
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, n)) * 5
    x[1] += 70 * np.sqrt(2) * np.sin(2 * np.pi * 60 * t)  # 70 µV RMS at 60 Hz: a warning where the line is 60 Hz
    x[2] += 100 * t  # 100 µV/s: a warning
    res = assess(x, sf, ["A", "B", "C"], SignalCheckConfig(), line_hz=60.0)
    v = [c.verdict for c in res.channels]
    assert v == ["pass", "warn", "warn"] and res.verdict == "warn"
    assert abs(res.channels[1].line_uv - 70) < 5 and abs(res.channels[2].drift_uv_s - 100) < 5
    table = res.table()
    assert "60 Hz line noise 70 >= 50" in table and "3 channels, 4.0 s at 250 Hz: 1 pass, 2 warn, 0 fail" in table


def test_bad_channel_switch_outside_the_montage_names_the_field():
    import pytest

    from eegloop.errors import ProtocolError
    from eegloop.protocol import protocol_from_dict

    with pytest.raises(ProtocolError, match=r"amplifier.simulate.noisy_channels: channel 9 is not one of 1..8"):
        protocol_from_dict({"stimuli": {"folder": "x"},
                            "amplifier": {"channels": 8, "sfreq": 250, "simulate": {"noisy_channels": [9]}}})
