"""The operator console in a real browser (Chromium via Playwright) during real simulated visits."""
from __future__ import annotations

import re
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

from browser import browser_page
from eegloop.database import Database


def _start(cmd) -> tuple[subprocess.Popen, str]:
    """Start an eegloop command and return it with its console URL (read from its first line)."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return proc, _url_of(proc)


def _url_of(proc) -> str:
    """The console URL from the process's output; the rest of its output is then read into ``proc.lines`` by a
    thread (a full pipe would stall the visit)."""
    import threading

    deadline = time.monotonic() + 60
    proc.lines = []
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        proc.lines.append(line)
        m = re.search(r"console: (http://\S+)", line)
        if m:
            threading.Thread(target=lambda: proc.lines.extend(proc.stdout), daemon=True).start()
            return m.group(1)
        if not line and proc.poll() is not None:
            break
    proc.kill()
    pytest.fail("no console URL printed")


def _drain(proc, timeout) -> str:
    proc.wait(timeout)
    time.sleep(0.2)  # the reader thread takes the last lines
    return "".join(proc.lines)


def watch_visit(proc, classes) -> None:
    """Follow a visit's console in Chromium (the URL is the process's first line): the traces change between two
    reads of the canvas, the phase runs recording -> quick-train -> feedback -> completed, a feedback image loads
    with its decoded class, and the report link serves the report."""
    url = _url_of(proc)
    phases, canvases = [], []
    with browser_page() as page:
        page.goto(url)
        deadline = time.monotonic() + 300
        seen_image = None
        while time.monotonic() < deadline and not page.query_selector("#reportlink"):
            if proc.poll() is not None:
                time.sleep(0.2)  # the reader thread takes the last lines
                pytest.fail(f"the visit ended (exit {proc.returncode}) without a report link; phases {phases}; "
                            f"its output:\n{''.join(proc.lines)[-4000:]}")
            ph = page.inner_text("#phase")
            if not phases or phases[-1] != ph:
                phases.append(ph)
            if len(canvases) < 2 and ph.startswith("recording"):
                canvases.append(page.eval_on_selector("#traces", "c => c.toDataURL()"))
                if len(canvases) == 2 and canvases[0] == canvases[1]:
                    canvases.pop()  # the same frame twice: read again
                page.wait_for_timeout(300)
            if seen_image is None and page.query_selector("#fbimage"):
                page.wait_for_function("document.querySelector('#fbimage').naturalWidth > 0")
                seen_image = page.inner_text("#decoded")
            page.wait_for_timeout(100)
        assert page.query_selector("#reportlink"), (phases, "".join(proc.lines)[-4000:])
        phases.append(page.inner_text("#phase"))
        rep = page.request.get(url.split("?")[0] + page.get_attribute("#reportlink", "href"))
        assert rep.status == 200 and "eegloop — session" in rep.text()
        quality = page.inner_text("#quality")
    order = [next((i for i, p in enumerate(phases) if p.startswith(name)), None)
             for name in ("recording", "quick-train", "feedback", "visit completed")]
    assert None not in order and order == sorted(order), phases
    assert len(canvases) == 2  # the traces changed between two reads of the canvas
    assert seen_image in classes
    assert "Fp1" in quality and "pass" in quality


def test_console_abort_and_token(tmp_path, display, short_protocol):
    """Bound beyond loopback, the console refuses a request without its token; the abort button ends the recording
    cleanly: status aborted, the completed blocks stored."""
    proto = short_protocol(paradigm={"images_per_class": 12, "runs": 1, "block_s": 0.6, "pause_s": 0.5})
    (tmp_path / "p.yaml").write_text(proto.to_yaml())
    proc, url = _start([sys.executable, "-m", "eegloop", "record", "--protocol", str(tmp_path / "p.yaml"),
                        "--subject", "C2", "--simulate", "--data", str(tmp_path / "d"), "--console-host", "0.0.0.0"])
    port = re.search(r":(\d+)/", url).group(1)
    token = url.split("token=")[1]
    local = f"http://127.0.0.1:{port}"
    try:
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"{local}/", timeout=5)
        assert refused.value.code == 403
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(urllib.request.Request(f"{local}/control/abort", method="POST"), timeout=5)
        assert refused.value.code == 403
        with browser_page() as page:
            page.on("dialog", lambda d: d.accept())
            page.goto(f"{local}/?token={token}")
            page.wait_for_function("document.querySelector('#stats').innerText.match(/epochs [1-9]/)", timeout=60_000)
            page.click("#abort")
            out = _drain(proc, 60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 1 and "recording ABORTED" in out, out  # record's exit status for an aborted run
    db = Database(f"sqlite:///{tmp_path / 'd' / 'eegloop.db'}", data_dir=tmp_path / "d")
    (s,) = db.list_sessions("C2")
    blocks = db.get_blocks(s.id)
    assert db.get_session(s.id).status == "aborted"
    assert any(b.status == "done" for b in blocks) and len(blocks) < 4  # stopped early, completed blocks kept


def test_console_pause_and_resume_hold_the_next_block(tmp_path, display, short_protocol):
    """Pause from the console during a real simulated recording: the presenter (its own process) stops after the
    current block and shows the pause screen; the next block starts only after resume, and the session completes
    with every block."""
    from eegloop.lsl import configure_lsl, local_clock

    configure_lsl("machine")
    proto = short_protocol(paradigm={"images_per_class": 9, "runs": 1, "block_s": 0.6, "pause_s": 0.3})
    (tmp_path / "p.yaml").write_text(proto.to_yaml())
    proc, url = _start([sys.executable, "-m", "eegloop", "record", "--protocol", str(tmp_path / "p.yaml"),
                        "--subject", "C3", "--simulate", "--data", str(tmp_path / "d")])
    try:
        with browser_page() as page:
            page.goto(url)
            page.wait_for_function("document.querySelector('#stats').innerText.match(/epochs [1-9]/)", timeout=60_000)
            page.click("#pause")
            page.wait_for_function("document.querySelector('#phase').innerText.startsWith('paused')", timeout=30_000)
            paused_at = local_clock()
            page.wait_for_timeout(1500)  # held: nothing new is shown meanwhile
            resumed_at = local_clock()
            page.click("#resume")
            out = _drain(proc, 60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out
    assert "paused by the operator after block" in out and "resumed by the operator" in out
    db = Database(f"sqlite:///{tmp_path / 'd' / 'eegloop.db'}", data_dir=tmp_path / "d")
    (s,) = db.list_sessions("C3")
    assert db.get_session(s.id).status == "recorded"
    assert [b.status for b in db.get_blocks(s.id)] == ["done"] * 3
    starts = sorted(e.lsl_time for e in db.get_events(s.id, "block_start"))
    before = [t for t in starts if t < paused_at]
    after = [t for t in starts if t > paused_at]
    assert before and after and len(before) + len(after) == 3
    assert not [t for t in starts if paused_at < t < resumed_at]  # the pause held the next block
    assert min(after) > resumed_at


def test_console_browses_past_sessions(tmp_path):
    """`eegloop console` on an existing database: its sessions listed, each one's report written and served."""
    import json

    from eegloop.protocol import load_protocol

    from conftest import REPO

    db = Database(f"sqlite:///{tmp_path / 'eegloop.db'}", data_dir=tmp_path)
    db.get_or_add_subject("B1")
    sid = db.create_session("B1", load_protocol(REPO / "protocols" / "demo.yaml"))
    proc, url = _start([sys.executable, "-m", "eegloop", "console", "--data", str(tmp_path)])
    try:
        base, token = url.split("?")[0], url.split("token=")[1]
        assert url.startswith("http://127.0.0.1:")
        rows = json.load(urllib.request.urlopen(f"{base}sessions?token={token}", timeout=10))
        assert [(r["id"], r["subject"], r["protocol"]) for r in rows] == [(sid, "B1", "demo")]
        page = urllib.request.urlopen(f"{base}report?session={sid}&token={token}", timeout=30).read().decode()
        assert f"eegloop — session {sid}, subject B1" in page
        # every endpoint needs the token, even on 127.0.0.1 (a lab PC is shared), a wrong one too
        for path, method in (("", "GET"), ("events", "GET"), ("sessions", "GET"), (f"report?session={sid}", "GET"),
                             ("image/0", "GET"), ("control/pause", "POST")):
            for bad in ("", "token=wrong&", "token=%C3%A9&"):
                sep = "&" if "?" in path else "?"
                with pytest.raises(urllib.error.HTTPError) as refused:
                    urllib.request.urlopen(urllib.request.Request(f"{base}{path}{sep}{bad}".rstrip("?&"),
                                                                  method=method), timeout=5)
                assert refused.value.code == 403, (path, bad)
        assert sum("token=" in line for line in proc.lines) == 1  # the URL is printed once
    finally:
        proc.terminate()
        proc.wait(10)
