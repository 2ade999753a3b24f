"""`rankflow server`: the REST API and web page on uvicorn, bound to 127.0.0.1 unless told otherwise."""

from __future__ import annotations

import os
import sys

from graphgen.errors import RankflowError
from rankflow.cli import _Parser


def parser() -> _Parser:
    ap = _Parser(prog="rankflow server", description="Serve the REST API (/docs) and the web page (/).")
    ap.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    ap.add_argument("--port", type=int, default=8000)
    ap.add_argument("--max-jobs", type=int, default=2, help="search jobs running at once")
    ap.add_argument("--timeout", type=float, default=60.0, help="seconds one request may compute")
    return ap


def _check_free(host: str, port: int) -> None:
    """Refuse a taken port or an unknown address with the one-line error before uvicorn starts (uvicorn
    would log its own error and exit 3)."""
    import socket

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        with socket.socket(infos[0][0], socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(infos[0][4])
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise RankflowError(f"cannot listen on {host}:{port}: {reason}", field="--host/--port",
                            fix="choose a free port (e.g. --port 8001) or an address of this machine") from None


def run(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    if not 0 < args.port < 65536:
        raise RankflowError(f"port {args.port} outside 1..65535", field="--port", fix="e.g. --port 8000")
    if args.max_jobs < 1 or not 0 < args.timeout < 86400:
        raise RankflowError("--max-jobs must be at least 1 and --timeout positive", field="--max-jobs/--timeout",
                            fix="e.g. --max-jobs 2 --timeout 60")
    try:
        import uvicorn

        from rankflow.server.app import Limits, create_app
    except ImportError:
        raise RankflowError("the server's packages are not installed", field="server",
                            fix="pip install -e '.[server]'") from None
    _check_free(args.host, args.port)
    app = create_app(Limits(request_timeout_s=args.timeout, max_jobs=args.max_jobs, job_workers=os.cpu_count() or 1))
    sys.stderr.write(f"Rankflow server on http://{args.host}:{args.port}/ (API documentation at /docs); Ctrl-C stops it\n")
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        sys.stderr.write(f"warning: listening on {args.host}: anyone who can reach this machine can run simulations "
                         "on it (the server has no authentication)\n")
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0
