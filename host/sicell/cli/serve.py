"""``sicell serve``: the lab service in the foreground (boards, runs, HTTP API, dashboard)."""

from __future__ import annotations

import signal
import socket
from pathlib import Path
from types import FrameType

import click

from sicell.errors import SicellError, UsageError

_LOCAL_NAMES = ["localhost", "127.0.0.1", "::1", "[::1]"]


def _listen(host: str, port: int) -> socket.socket:
    """A listening socket on host:port (bound before any board is touched)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as e:
        raise UsageError(f"--host {host}: {e.strerror}") from None
    family, kind, proto, _, addr = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(addr)
        sock.listen(128)
    except OSError as e:
        sock.close()
        raise SicellError(f"cannot listen on {host}:{port}: {e.strerror}") from None
    sock.set_inheritable(True)
    return sock


def _url(host: str, port: int) -> str:
    if host in ("0.0.0.0", "::", ""):
        host = socket.gethostname()
    elif ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}"


def _sigterm(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # stop like Ctrl-C: the HTTP server first, then the service


@click.command()
@click.option(
    "--data",
    "data_dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="data directory: runs/, reports/, service.json, audit.log, the token file",
)
@click.option(
    "--port", "-p", "ports", multiple=True, help="a board: serial device or emu:// URL (repeat)"
)
@click.option("--scan", is_flag=True, help="also find the RP2040 boards on USB, by serial number")
@click.option(
    "--host", default="127.0.0.1", show_default=True, help="address the HTTP server binds"
)
@click.option(
    "--http-port", default=8642, show_default=True, type=click.IntRange(0, 65535), help="0: any"
)
@click.option(
    "--token-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="the control token (made, mode 0600, if missing)  [default: DATA/token]",
)
@click.option(
    "--no-token",
    is_flag=True,
    help="no control token: the API only reads (allowed on a local --host only)",
)
@click.option(
    "--alert-command",
    metavar="CMD",
    help="run on each alert (trip, interruption, stall, host loss); env SICELL_ALERT_*",
)
@click.option("--webhook", metavar="URL", help="POST each alert as JSON to this URL")
def serve(
    data_dir: Path,
    ports: tuple[str, ...],
    scan: bool,
    host: str,
    http_port: int,
    token_file: Path | None,
    no_token: bool,
    alert_command: str | None,
    webhook: str | None,
) -> None:
    """Own the boards given (--port) or found (--scan), run one session per board, and serve
    the HTTP API (/api/v1) and the live dashboard on HOST:HTTP-PORT.

    Runs go into DATA/runs/<name>.db. After a restart the service reattaches to the runs
    still going on the boards. Viewing is open on a local --host; pause, continue, stop and
    starting runs need the token (HTTP header Authorization: Bearer <token>). A non-local
    --host needs the token for viewing too, and is refused with --no-token.
    Stop with Ctrl-C or SIGTERM: the runs go on on the boards.
    """
    import uvicorn

    from sicell.service.api import make_app
    from sicell.service.auth import default_token_file, is_local_host, load_token

    local = is_local_host(host)
    if no_token and not local:
        raise UsageError(
            f"--host {host} is reachable from other machines: it needs a token "
            "(drop --no-token; the token file is made for you)"
        )
    if no_token and token_file is not None:
        raise UsageError("give --token-file or --no-token, not both")
    if not ports and not scan:
        raise UsageError("no boards: give --port PORT (repeat for more) and/or --scan")
    data_dir.mkdir(parents=True, exist_ok=True)
    tfile = None if no_token else (token_file or default_token_file(data_dir))
    token = None if tfile is None else load_token(tfile)

    sock = _listen(host, http_port)
    from sicell.service.core import Service

    service = Service(
        data_dir, list(ports), scan_serial=scan, alert_command=alert_command, webhook=webhook
    )
    try:
        service.start()
        allowed = [*_LOCAL_NAMES, host] if local else None
        app = make_app(service, token, allow_view=local, allowed_hosts=allowed)
        url = _url(host, sock.getsockname()[1])
        click.echo(f"sicell serve: {len(service.boards())} boards, data in {data_dir}")
        click.echo(f"dashboard: {url}/")
        click.echo(f"API: {url}/api/v1 (described at {url}/api/v1/openapi.json)")
        if tfile is not None:
            click.echo(f"control token: in {tfile} (send it as Authorization: Bearer <token>)")
        else:
            click.echo("control token: none (--no-token): the API only reads")
        config = uvicorn.Config(
            app, log_level="warning", access_log=False, timeout_graceful_shutdown=2
        )
        old = signal.signal(signal.SIGTERM, _sigterm)
        try:
            uvicorn.Server(config).run(sockets=[sock])
        except KeyboardInterrupt:
            pass  # Ctrl-C or SIGTERM, caught by the server and raised again once it stopped
        finally:
            signal.signal(signal.SIGTERM, old)
            app.state.closing.set()
    finally:
        sock.close()
        service.close()
    click.echo("sicell serve: stopped; the runs go on on the boards")
