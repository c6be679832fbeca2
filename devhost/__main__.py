"""``python -m devhost [--port N]``: serve the function app on
http://localhost:7071 with real streaming, like ``func start``."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import socket
import sys
from pathlib import Path

import uvicorn

from devhost.app import ROOT, RedactQuery, create_app


def bind(host: str, port: int) -> socket.socket:
    """The listening socket, bound before serving so that port 0 (any free
    port) can be reported. With ``TCP_NODELAY``, which accepted connections
    inherit: asyncio sets it only on sockets created as TCP, and
    ``socket.create_server`` leaves the protocol 0, so without it each
    small write (an SSE event) would wait on Nagle against the client's
    delayed ACK, up to 40 ms."""
    sock = socket.create_server((host, port), family=socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devhost", description=__doc__)
    parser.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "7071")))
    parser.add_argument(
        "--settings", type=Path, default=None, help="settings file (default: local.settings.json beside the app)"
    )
    parser.add_argument("--log-level", default=os.environ.get("LOG_LEVEL", "info"))
    parser.add_argument(
        "--port-file", type=Path, default=None, help="write the port served here (with --port 0: a free port)"
    )
    args = parser.parse_args(argv)

    sys.path.insert(0, str(ROOT))
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app, served = create_app(settings_file=args.settings, bound=args.host)
    # Bound here, before serving, so that port 0 (any free port) can be
    # reported: a port picked in advance could be taken by then.
    sock = bind(args.host, args.port)
    port = sock.getsockname()[1]
    shown = "localhost" if args.host in ("127.0.0.1", "0.0.0.0", "::") else args.host
    print("\nFunctions:\n", flush=True)
    for fn, path in served:
        print(f"\t{fn.name}: [{','.join(fn.methods)}] http://{shown}:{port}{path}", flush=True)
    print(flush=True)
    config = uvicorn.Config(
        app, host=args.host, port=port, log_level=args.log_level.lower(), timeout_graceful_shutdown=5
    )  # configures logging: the filter goes on after it
    logging.getLogger("uvicorn.access").addFilter(RedactQuery())
    if args.port_file:  # written whole, then renamed: a reader never sees half of it
        partial = args.port_file.with_suffix(".partial")
        partial.write_text(str(port))
        partial.replace(args.port_file)
    server = uvicorn.Server(config)
    with contextlib.suppress(KeyboardInterrupt):
        server.run(sockets=[sock])
    return 0 if server.started else 3  # uvicorn's own exit code for a failed start


if __name__ == "__main__":
    raise SystemExit(main())
