"""Shared fixtures: offline hub, LSL on this machine only, a real PostgreSQL when it can start."""
from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

# before anything imports huggingface_hub or pylsl
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.pop("EEGLOOP_DB", None)
os.environ.pop("EEGLOOP_DATA", None)
# the training-settings calibration caches per machine: the tests keep theirs apart from the user's
os.environ["EEGLOOP_CACHE_DIR"] = tempfile.mkdtemp(prefix="eegloop-tests-cache-")
# tests run two at a time (pytest-xdist): each worker gets an LSL port block of its own, so a test that opens
# hundreds of outlets in one worker cannot take the 32 ports the other's streams are found on (a stream that finds
# them taken gets a random port no query reaches); the tests run alone afterwards keep liblsl's defaults
_worker = os.environ.get("PYTEST_XDIST_WORKER", "")
if _worker.startswith("gw") and _worker[2:].isdigit():
    os.environ["EEGLOOP_LSL_PORTS"] = str(20000 + 100 * int(_worker[2:]))
    # the workers share the cores already: one core's worth each (folds one after another, one intra-op thread),
    # as the processes they start inherit; two loky fold workers and two torch threads in each of two test
    # workers cost more CPU than they give. tests/decoder/test_decoder.py runs the parallel folds on purpose.
    for _var in ("EEGLOOP_JOBS", "EEGLOOP_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ.setdefault(_var, "1")
else:
    os.environ.pop("EEGLOOP_LSL_PORTS", None)
# belt and braces: any LSL use in the tests stays on this machine, even one that forgot configure_lsl()
from eegloop.lsl import lsl_config_text  # noqa: E402 (imports no LSL library)

_cfg = Path(tempfile.gettempdir()) / f"eegloop-tests-lsl_api{'-' + _worker if _worker else ''}.cfg"
_cfg.write_text(lsl_config_text("machine"))
os.environ["LSLAPICFG"] = str(_cfg)

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def postgres_url():
    """A throw-away PostgreSQL server on 127.0.0.1 (Debian's postgresql package)."""
    initdbs = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not initdbs:
        pytest.skip("PostgreSQL server not installed (apt-get install postgresql); .ci/run installs it")
    try:
        import psycopg  # noqa: F401
    except ImportError:
        pytest.skip("psycopg not installed (pip install 'psycopg[binary]')")
    bindir = Path(initdbs[-1]).parent
    tmp = Path(tempfile.mkdtemp(prefix="eegloop-pg-"))
    datadir = tmp / "data"
    as_pg: list[str] = []
    if os.geteuid() == 0:
        if shutil.which("runuser") is None:
            pytest.skip("running as root without runuser: cannot start PostgreSQL as the postgres user")
        shutil.chown(tmp, "postgres")
        tmp.chmod(0o700)
        as_pg = ["runuser", "-u", "postgres", "--"]
    port = _free_port()
    subprocess.run(as_pg + [str(bindir / "initdb"), "-D", str(datadir), "-A", "trust", "-U", "postgres"],
                   check=True, capture_output=True)
    opts = f"-c listen_addresses=127.0.0.1 -p {port} -k {tmp} -c fsync=off"
    subprocess.run(as_pg + [str(bindir / "pg_ctl"), "-D", str(datadir), "-o", opts, "-l", str(tmp / "log"),
                            "-w", "start"], check=True, capture_output=True)
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(as_pg + [str(bindir / "pg_ctl"), "-D", str(datadir), "-m", "immediate", "stop"],
                       capture_output=True)
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture
def fresh_postgres_db(postgres_url):
    """A new, empty database on the session's server."""
    import psycopg

    name = f"t{int(time.time() * 1e6)}"
    with psycopg.connect(postgres_url.replace("+psycopg", ""), autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return postgres_url.rsplit("/", 1)[0] + f"/{name}"


def pytest_collection_modifyitems(config, items):
    """Start the longest tests first, so that the suite does not end on one long test while the other workers
    wait: ``@pytest.mark.slow(weight=N)`` (a whole visit, a real dataset's fits: tens of seconds), then any test
    that opens a window (``display``: a visit or a presentation), then the rest, each group in collection order
    (a stable sort: the same order in every xdist worker, as xdist requires)."""
    def rank(item):
        slow = item.get_closest_marker("slow")
        if slow is not None:
            return -1 - slow.kwargs.get("weight", 1)
        return -1 if "display" in getattr(item, "fixturenames", ()) else 0

    items.sort(key=rank)


@pytest.fixture
def sqlite_url(tmp_path):
    return f"sqlite:///{tmp_path / 'eegloop.db'}"


@pytest.fixture(scope="session")
def display():
    """An X display for PsychoPy: the real one, or Xvfb started for the test session."""
    from eegloop.errors import EegloopError
    from eegloop.paradigm.display import ensure_display

    try:
        return ensure_display()
    except EegloopError as exc:
        pytest.skip(str(exc))


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


@pytest.fixture
def short_protocol(tmp_path):
    """A tiny real-time protocol (drawn stimuli, short blocks, small window, unique LSL names);
    call it with section overrides, merged key by key."""
    import uuid

    from eegloop.protocol import protocol_from_dict

    def make(**sections):
        tag = uuid.uuid4().hex[:8]
        base = {
            "name": "short",
            "stimuli": {"folder": str(tmp_path / "stim"), "synthesize": True, "synth_size_px": 64,
                        "classes": {"circle": "red circle", "square": "blue square"}},
            "paradigm": {"block_s": 0.6, "image_s": 0.1, "pause_s": 0.1, "images_per_class": 6, "runs": 2,
                         "order": "interleaved", "wait_for_space": False, "instructions": "",
                         "screen": {"fullscreen": False, "size": [320, 240], "image_size_px": 128}},
            "amplifier": {"stream_name": f"eeg-{tag}", "marker_stream_name": f"mk-{tag}", "channels": 8,
                          "sfreq": 250, "simulate": {"seed": 2, "snr": 0.6}},
            "epochs": {"tmin": 0.0, "tmax": 0.3, "margin_s": 0.1},
            "teacher": {"enabled": False},
            "signal_check": {"before_visit": False},  # the tests of the check itself turn it on
        }
        return protocol_from_dict(_merge(base, sections), source=str(tmp_path / "short.yaml"))

    return make
