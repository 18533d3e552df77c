"""The service's HTTP API (FastAPI) and the dashboard it serves.

Everything lives under ``/api/v1`` and is described at ``/api/v1/openapi.json``. Reads are
open when ``allow_view`` is set (a service bound to this machine) and need the token
otherwise; every POST needs ``Authorization: Bearer <token>`` (401 without, 403 with a wrong
one). A failure is ``{"error": "<one line>"}`` with a status from the error's class
(:data:`STATUS`). ``/api/v1/events`` is a server-sent-event stream of the service's events
(board changes, committed records, alerts), one JSON object per ``data:`` line.

The page at ``/`` is ``static/index.html``; ``/static/plotly.min.js`` is the bundle the
installed ``plotly`` package ships, so the dashboard needs no network beyond the service.
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
from collections.abc import AsyncIterator, Callable
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Protocol

from fastapi import APIRouter, Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException

from sicell import __version__
from sicell.errors import SicellError, UsageError
from sicell.service.auth import token_matches
from sicell.service.datadir import check_name

API = "/api/v1"
STATIC_DIR = Path(__file__).resolve().parent / "static"
MAX_UPLOAD = 256 * 1024  # bytes of a schedule TOML
MAX_RECORDS = 20_000  # rows per records() page
_FILE_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,199}")
SSE_QUEUE = 2000  # events buffered per client before it is told to catch up
KEEPALIVE_S = 15.0

# HTTP status of a SicellError: the first class of its MRO named here. Names, not classes, so
# errors.py can grow (UnknownBoardError, PortOwnedError) without this table importing them.
STATUS: dict[str, int] = {
    "UnknownBoardError": 404,
    "UnknownRunError": 404,
    "RunExistsError": 409,
    "PortOwnedError": 409,
    "BoardBusyError": 409,
    "RunMismatchError": 409,
    "BoardError": 409,
    "BoardTimeoutError": 504,
    "TransportError": 503,
    "StoreSchemaError": 400,
    "StoreError": 500,
    "ScheduleError": 400,
    "UsageError": 400,
    "SicellError": 409,
}


class Subscription(Protocol):
    def get(self, timeout: float) -> dict[str, Any] | None: ...
    def close(self) -> None: ...


class ServiceLike(Protocol):
    """What the API uses of :class:`sicell.service.core.Service` (all thread-safe)."""

    def boards(self) -> list[dict[str, Any]]: ...
    def board(self, board_id: str) -> dict[str, Any]: ...
    def control(self, board_id: str, op: str, args: dict[str, Any], who: str) -> dict[str, Any]: ...
    def plan(self, board_id: str, toml_text: str) -> dict[str, Any]: ...
    def start(self, board_id: str, toml_text: str, name: str, who: str) -> dict[str, Any]: ...
    def runs(self) -> list[dict[str, Any]]: ...
    def run(self, name: str) -> dict[str, Any]: ...
    def records(self, name: str, since_seq: int, limit: int) -> dict[str, Any]: ...
    def cycles(self, name: str) -> list[dict[str, Any]]: ...
    def dqdv(self, name: str, cycle: int) -> dict[str, Any]: ...
    def report(self, name: str) -> Path: ...
    def subscribe(self) -> Subscription: ...


def one_line(text: str) -> str:
    return "; ".join(ln.strip() for ln in str(text).splitlines() if ln.strip()) or "error"


def status_of(err: SicellError) -> int:
    for cls in type(err).__mro__:
        if cls.__name__ in STATUS:
            return STATUS[cls.__name__]
    return 409


def _error(status: int, text: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": one_line(text)}, status_code=status, headers=headers)


def check_run_name(name: str) -> str:
    """``name`` when it is a plain run name (nothing that could leave the runs folder)."""
    return check_name(name)


def _who(request: Request) -> str:
    client = request.client
    return f"http {client.host}" if client else "http"


# ---- auth -------------------------------------------------------------------------------------
_BEARER = HTTPBearer(
    auto_error=False, description="the token in the service's token file (sicell serve says where)"
)
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(_BEARER)]


def _token_check(token: str | None, *, for_control: bool) -> Callable[..., None]:
    def check(cred: Credentials) -> None:
        if token is None:
            raise HTTPException(403, "control is off: the service runs without a token")
        if cred is None:
            what = "this call" if for_control else "reading from this service"
            raise HTTPException(
                401,
                f"{what} needs the header Authorization: Bearer <token> "
                "(the token is in the service's token file)",
                headers={"WWW-Authenticate": "Bearer"},
            )
        if not token_matches(token, cred.credentials):
            raise HTTPException(403, "wrong token")

    return check


def _open(request: Request) -> None:
    """Reads need nothing (the service is bound to this machine)."""


# ---- server-sent events ----------------------------------------------------------------------
def _sse(event: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(event, separators=(",", ":")).encode() + b"\n\n"


async def event_stream(sub: Subscription, closing: threading.Event) -> AsyncIterator[bytes]:
    """The SSE body: a thread waits on ``sub`` and hands events to this coroutine; a client
    that falls ``SSE_QUEUE`` events behind gets ``{"type": "overflow"}`` (fetch what you
    missed) instead of the dropped ones."""
    loop = asyncio.get_running_loop()
    q: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    stop = threading.Event()
    dropped = threading.Event()

    def put(ev: dict[str, Any]) -> None:
        if q.qsize() >= SSE_QUEUE:
            dropped.set()
        else:
            q.put_nowait(ev)

    def pump() -> None:
        try:
            while not stop.is_set() and not closing.is_set():
                ev = sub.get(0.5)
                if ev is not None:
                    loop.call_soon_threadsafe(put, ev)
        except RuntimeError:  # the event loop closed under us: the server is gone, so are we
            pass
        finally:
            sub.close()

    threading.Thread(target=pump, name="sicell-sse", daemon=True).start()
    try:
        yield b"retry: 2000\n" + _sse({"type": "hello", "version": __version__})
        idle = 0.0
        while not closing.is_set():
            try:
                ev = await asyncio.wait_for(q.get(), 1.0)
            except TimeoutError:
                idle += 1.0
                if idle >= KEEPALIVE_S:
                    idle = 0.0
                    yield b": keepalive\n\n"
                continue
            idle = 0.0
            if dropped.is_set():
                dropped.clear()
                while not q.empty():
                    q.get_nowait()
                yield _sse({"type": "overflow"})
                continue
            yield _sse(ev)
    finally:
        stop.set()


# ---- the app ---------------------------------------------------------------------------------
async def _toml_body(request: Request) -> str:
    body = await request.body()
    if not body.strip():
        raise UsageError("empty upload: send the schedule's TOML text as the request body")
    if len(body) > MAX_UPLOAD:
        raise UsageError(f"the schedule is {len(body)} bytes; at most {MAX_UPLOAD} are accepted")
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError as e:
        raise UsageError(f"the schedule is not UTF-8 text (byte {e.start})") from None


_TOML_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "the schedule, as TOML text (host/docs/schedule.md)",
        "content": {"application/toml": {"schema": {"type": "string"}}},
    }
}


def make_app(
    service: ServiceLike,
    token: str | None,
    *,
    allow_view: bool,
    allowed_hosts: list[str] | None = None,
) -> FastAPI:
    """The FastAPI app over ``service``. ``token``: what POSTs (and reads, unless
    ``allow_view``) must present; None turns control off. ``allowed_hosts``: Host header
    values to accept (a guard against DNS rebinding on a local bind); None accepts any."""
    app = FastAPI(
        title="sicell service",
        version=__version__,
        description="Boards, runs and live events of a `sicell serve` lab service.",
        openapi_url=f"{API}/openapi.json",
        docs_url=None,  # the interactive docs load their scripts from a CDN
        redoc_url=None,
    )
    closing = threading.Event()
    app.state.closing = closing
    if allowed_hosts is not None:
        _install_host_check(app, allowed_hosts)

    control_auth = _token_check(token, for_control=True)
    view_auth = _open if allow_view else _token_check(token, for_control=False)
    view = APIRouter(prefix=API, dependencies=[Depends(view_auth)])
    ctl = APIRouter(prefix=API, dependencies=[Depends(control_auth)])
    _install_errors(app)

    @view.get("/boards", summary="every board the service knows")
    def boards() -> list[dict[str, Any]]:
        return service.boards()

    @view.get("/boards/{board_id}", summary="one board")
    def board(board_id: str) -> dict[str, Any]:
        return service.board(board_id)

    @view.get("/runs", summary="every run database in the data directory")
    def runs() -> list[dict[str, Any]]:
        return service.runs()

    @view.get("/runs/{name}", summary="one run")
    def run(name: str) -> dict[str, Any]:
        return service.run(check_run_name(name))

    @view.get("/runs/{name}/records", summary="samples after a sequence number")
    def records(
        name: str,
        since: Annotated[int, Query(ge=0, description="return records with seq > since")] = 0,
        limit: Annotated[int, Query(ge=1, le=MAX_RECORDS)] = 5000,
    ) -> JSONResponse:
        return JSONResponse(service.records(check_run_name(name), since, limit))

    @view.get("/runs/{name}/cycles", summary="capacities and Coulombic efficiency per cycle")
    def cycles(name: str) -> list[dict[str, Any]]:
        return service.cycles(check_run_name(name))

    @view.get("/runs/{name}/dqdv", summary="dQ/dV of one cycle")
    def dqdv(name: str, cycle: Annotated[int, Query(ge=0)]) -> JSONResponse:
        return JSONResponse(service.dqdv(check_run_name(name), cycle))

    @view.get("/runs/{name}/report", summary="the run's HTML report (made on demand)")
    def report(name: str) -> RedirectResponse:
        html = service.report(check_run_name(name))  # made (or found cached) first
        return RedirectResponse(f"{API}/runs/{name}/report/{html.name}", status_code=307)

    @view.get("/runs/{name}/report/{file}", summary="a file of the run's report")
    def report_file(name: str, file: str) -> FileResponse:
        html = service.report(check_run_name(name))
        if not _FILE_NAME.fullmatch(file) or not (html.parent / file).is_file():
            raise HTTPException(404, f"the report of {name} has no file {file[:100]!r}")
        return FileResponse(html.parent / file)

    @view.get(
        "/events",
        summary="live events (server-sent events, one JSON object per data line)",
        response_class=StreamingResponse,
        responses={
            200: {
                "description": 'events of type "board", "records", "alert"; "resync" or '
                '"overflow" when this client missed some (read boards and records again)',
                "content": {"text/event-stream": {"schema": {"type": "string"}}},
            }
        },
    )
    def events() -> StreamingResponse:
        return StreamingResponse(
            event_stream(service.subscribe(), closing),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    def steer(op: str) -> Callable[[str, Request], dict[str, Any]]:
        def do(board_id: str, request: Request) -> dict[str, Any]:
            return service.control(board_id, op, {}, _who(request))

        return do

    for path, op in (("pause", "pause"), ("continue", "resume"), ("stop", "stop")):
        ctl.add_api_route(
            f"/boards/{{board_id}}/{path}",
            steer(op),
            methods=["POST"],
            summary=f"{path} the board's run",
            name=path,
        )

    @ctl.post("/boards/{board_id}/calibrate", summary="show or set the board's calibration")
    async def calibrate(board_id: str, request: Request) -> dict[str, Any]:
        raw = await request.body()
        try:
            args = json.loads(raw) if raw.strip() else {}
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise UsageError(f"the body is not JSON: {e}") from None
        if not isinstance(args, dict):
            raise UsageError("the body must be a JSON object of calibration arguments")
        return await asyncio.to_thread(service.control, board_id, "calibrate", args, _who(request))

    @ctl.post(
        "/boards/{board_id}/plan",
        summary="check a schedule against the board, computed currents shown; starts nothing",
        openapi_extra=_TOML_BODY,
    )
    async def plan(board_id: str, request: Request) -> dict[str, Any]:
        text = await _toml_body(request)
        return await asyncio.to_thread(service.plan, board_id, text)

    @ctl.post(
        "/boards/{board_id}/runs",
        summary="start a run of the schedule (same checks as plan) into runs/<name>.db",
        openapi_extra=_TOML_BODY,
        status_code=201,
    )
    async def start(
        board_id: str,
        request: Request,
        name: Annotated[str, Query(description="run name: 1-80 of A-Z a-z 0-9 . _ -")],
    ) -> dict[str, Any]:
        check_run_name(name)
        text = await _toml_body(request)
        return await asyncio.to_thread(service.start, board_id, text, name, _who(request))

    app.include_router(view)
    app.include_router(ctl)
    _install_page(app)
    return app


def _install_host_check(app: FastAPI, hosts: list[str]) -> None:
    allowed = {h.lower() for h in hosts}

    @app.middleware("http")
    async def host_check(request: Request, call_next: Any) -> Any:
        host = request.headers.get("host", "").lower()
        name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
        if name not in allowed and host not in allowed:
            return _error(400, f"Host {host[:100]!r} is not served here")
        return await call_next(request)


def _install_errors(app: FastAPI) -> None:
    async def sicell_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, SicellError)
        return _error(status_of(exc), str(exc))

    async def http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, HTTPException)
        text = exc.detail if exc.status_code != 404 or exc.detail != "Not Found" else None
        if text is None:
            text = f"no such path: {request.url.path}"
        elif exc.status_code == 405:
            text = f"{request.method} is not allowed on {request.url.path}"
        return _error(exc.status_code, str(text), getattr(exc, "headers", None))

    async def bad_request(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        errs = exc.errors()
        if not errs:
            return _error(400, "bad request")
        e = errs[0]
        where = ".".join(str(p) for p in e.get("loc", ()) if p not in ("query", "path"))
        return _error(400, f"{where}: {e.get('msg', 'invalid')}")

    async def bug(request: Request, exc: Exception) -> JSONResponse:
        return _error(500, f"bug in sicell: {type(exc).__name__}: {exc} (please report it)")

    app.add_exception_handler(SicellError, sicell_error)
    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(RequestValidationError, bad_request)
    app.add_exception_handler(Exception, bug)


CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data: blob:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'"
)


def plotly_js() -> Path:
    """The plotly.js bundle of the installed ``plotly`` package."""
    path = Path(str(resources.files("plotly") / "package_data" / "plotly.min.js"))
    if not path.is_file():
        raise UsageError(f"{path}: missing; reinstall the plotly package")
    return path


def _install_page(app: FastAPI) -> None:
    headers = {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff"}

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", headers=headers)

    @app.get("/static/plotly.min.js", include_in_schema=False)
    def plotly() -> FileResponse:
        return FileResponse(plotly_js(), media_type="text/javascript", headers=headers)

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")


class BackgroundServer:
    """``app`` served by uvicorn on a thread of this process (tests, the benchmark);
    ``port=0`` picks a free port. ``url`` is set once it accepts connections."""

    def __init__(self, app: FastAPI, host: str = "127.0.0.1", port: int = 0) -> None:
        import uvicorn

        self.app = app
        self.host = host
        config = uvicorn.Config(
            app, host=host, port=port, log_level="warning", timeout_graceful_shutdown=2
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="sicell-http", daemon=True)
        self.url = ""

    def start(self, timeout: float = 20.0) -> str:
        import time

        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise UsageError(f"the HTTP server on {self.host} did not start")
            time.sleep(0.02)  # polling the server's own flag; it has no event to wait on
        port = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://{self.host}:{port}"
        return self.url

    def close(self) -> None:
        self.app.state.closing.set()
        self.server.should_exit = True
        self.thread.join(10)

    def __enter__(self) -> BackgroundServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
