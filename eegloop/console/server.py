"""The console's web server: Starlette under uvicorn, in a background thread of the visit's process."""
from __future__ import annotations

import asyncio
import json
import secrets
import threading
import time
from importlib import resources
from pathlib import Path
from typing import Optional

from .._logging import logger
from .._worker import Worker
from ..bus import CONTROLS
from ..errors import EegloopError
from .state import ConsoleState

LOCAL = ("127.0.0.1", "::1", "localhost")
UPDATE_S = 0.08  # the page's updates: 12.5 a second (the goal: at least 10)


class Console:
    """A console server for the visit running in this process (or, with ``db``, for browsing past sessions).

    Parameters
    ----------
    protocol : Protocol | None
        Its ``signal_check`` thresholds grade the live quality; its notch frequency is the line frequency.
    db : Database | None
        Past sessions and their reports (``eegloop console``).
    host, port : str, int
        Where to listen (127.0.0.1 and a free port by default).
    """

    def __init__(self, protocol=None, db=None, host: str = "127.0.0.1", port: int = 0):
        self.host, self.port = host, int(port)
        self.token = secrets.token_urlsafe(18)
        self.local = host in LOCAL
        self.db = db
        line = (protocol.preprocessing.notch_hz or 50.0) if protocol is not None else 50.0
        self.state = ConsoleState(protocol.signal_check if protocol is not None else None, line)
        self._server = None
        self._serving: Optional[Worker] = None  # uvicorn's loop
        self._quality: Optional[Worker] = None  # the live quality, once a second
        self._stop = threading.Event()  # the page's event streams end

    # -- lifecycle ---------------------------------------------------------------------
    @property
    def url(self) -> str:
        import socket

        host = self.host if self.local else socket.gethostname()  # reachable from the lab's other machines
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{self.port}/?token={self.token}"

    def start(self) -> "Console":
        import uvicorn

        CONTROLS.reset()
        self.state.attach()
        cfg = uvicorn.Config(self.app(), host=self.host, port=self.port, log_level="warning", access_log=False,
                             lifespan="off", ws="none")
        self._server = uvicorn.Server(cfg)
        self._server.install_signal_handlers = lambda: None  # the visit's process keeps its own Ctrl-C
        self._serving = Worker.of(lambda _w: self._server.run(), "eegloop-console")
        self._serving.log_errors = False  # uvicorn says itself why it could not listen; the line below says it too
        self._serving.start()
        deadline = time.monotonic() + 10
        while not self._server.started and self._serving.alive and time.monotonic() < deadline:
            time.sleep(0.02)
        if not self._server.started:
            self.state.detach()
            raise EegloopError(f"--console-port: the console could not listen on {self.host}:{self.port} "
                               "(in use? choose another port, or --no-console)")
        self.port = self._server.servers[0].sockets[0].getsockname()[1]
        self._quality = Worker.of(self._quality_loop, "eegloop-console-quality").start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._quality is not None:
            self._quality.request_stop()
        self.state.detach()
        if self._server is not None:
            self._server.should_exit = True
        if self._serving is not None:
            self._serving.join(5)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def _quality_loop(self, worker: Worker) -> None:
        while not worker.wait_stop(1.0):
            try:
                self.state.update_quality()
            except Exception as exc:  # the quality view must never end the visit
                logger.debug("console quality: %s", exc)

    # -- the app -----------------------------------------------------------------------
    def _allowed(self, request) -> bool:
        """Every endpoint needs the token (the URL printed once at start, as Jupyter does), on 127.0.0.1 too: a
        lab PC is shared, and live EEG, feedback images, past sessions and reports are a subject's data."""
        given = request.query_params.get("token") or request.headers.get("x-eegloop-token", "")
        return secrets.compare_digest(given.encode(), self.token.encode())

    def app(self):
        from starlette.applications import Starlette
        from starlette.responses import FileResponse, HTMLResponse, JSONResponse, PlainTextResponse, StreamingResponse
        from starlette.routing import Route

        page = self._page()
        refused = PlainTextResponse("eegloop console: a valid token is required", status_code=403)

        async def index(request):
            return HTMLResponse(page) if self._allowed(request) else refused

        async def events(request):
            if not self._allowed(request):
                return refused

            return StreamingResponse(self._stream(request), media_type="text/event-stream",
                                     headers={"Cache-Control": "no-store"})

        async def control(request):
            if not self._allowed(request):
                return refused
            action = request.path_params["action"]
            if action == "pause":
                CONTROLS.request_pause()
            elif action == "resume":
                CONTROLS.resume()
            elif action == "abort":
                CONTROLS.abort()
            else:
                return PlainTextResponse("unknown action", status_code=404)
            logger.warning("console: %s requested by the operator", action)
            return JSONResponse({"ok": True, "action": action})

        async def report(request):
            if not self._allowed(request):
                return refused
            fin = self.state.finished or {}
            path = Path(fin["report"]) if fin.get("report") else None
            if path is None and self.db is not None and request.query_params.get("session"):
                path = self._session_report(request.query_params["session"])
            if path is None or not path.is_file():
                return PlainTextResponse("no report yet", status_code=404)
            return FileResponse(path, media_type="text/html")

        async def image(request):
            if not self._allowed(request):
                return refused
            k = request.path_params["k"]
            if not 0 <= k < len(self.state.images) or not Path(self.state.images[k]).is_file():
                return PlainTextResponse("no such image", status_code=404)
            return FileResponse(self.state.images[k])

        async def sessions(request):
            if not self._allowed(request):
                return refused
            if self.db is None:
                return JSONResponse([])
            rows = [{"id": s.id, "subject": s.subject, "kind": s.kind, "protocol": s.protocol_name,
                     "status": s.status, "started": f"{s.started_at:%Y-%m-%d %H:%M}"}
                    for s in self.db.list_sessions()]
            return JSONResponse(rows)

        return Starlette(routes=[Route("/", index), Route("/events", events),
                                 Route("/control/{action}", control, methods=["POST"]), Route("/report", report),
                                 Route("/image/{k:int}", image), Route("/sessions", sessions)])

    @staticmethod
    def _page() -> str:
        """The console's page with its script inside: one request, which carries the token."""
        static = resources.files("eegloop.console") / "static"
        script = (static / "console.js").read_text(encoding="utf-8")
        return (static / "index.html").read_text(encoding="utf-8").replace(
            '<script src="console.js"></script>', f"<script>\n{script}\n</script>")

    async def _stream(self, request):
        """The page's server-sent events: a snapshot of the state every :data:`UPDATE_S`, until the page goes or
        the console stops."""
        since = max(0, self.state.seq - int(self.state.rate * 10))
        loop = asyncio.get_running_loop()
        nxt = loop.time()
        while not self._stop.is_set():
            snap = self.state.snapshot(since)
            since = snap["seq"]
            try:
                text = json.dumps(snap, allow_nan=False, default=str)
            except ValueError:  # a NaN somewhere: this update is skipped, not the stream
                text = json.dumps({"seq": since, "skipped": True})
            yield f"data: {text}\n\n"
            if await request.is_disconnected():
                break
            nxt = max(nxt + UPDATE_S, loop.time())  # a steady rate, whatever each update cost
            await asyncio.sleep(nxt - loop.time())

    def _session_report(self, sid: str) -> Optional[Path]:
        from ..report import write_report

        try:
            return write_report(self.db, int(sid))
        except (ValueError, EegloopError) as exc:
            logger.warning("console: report of session %r: %s", sid, exc)
            return None
