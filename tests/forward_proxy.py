"""A tiny HTTP forward proxy on 127.0.0.1 that delivers every request to one upstream.

``demo.http`` addresses ``http://localhost:7071`` as written; tests must not use port 7071. A client
told to use this proxy (httpyac: the ``request_proxy`` variable) sends ``GET http://localhost:7071/...``
here, and the proxy forwards it, in origin form, to the app under test on its free port, streaming
the answer back byte for byte. The file under test stays unchanged, and the proxy records which URLs
the client asked for.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from urllib.parse import urlsplit

HOST = "127.0.0.1"
_HOP_BY_HOP = (b"connection:", b"proxy-connection:", b"keep-alive:", b"proxy-authorization:")


class ForwardProxy:
    """Use as a context manager; ``url`` is the proxy's address, ``requested`` the URLs asked for."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.requested: list[str] = []
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def __enter__(self) -> ForwardProxy:
        self._thread = threading.Thread(target=lambda: asyncio.run(self._serve()), daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the forward proxy did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._loop is not None and self._stop is not None:
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(10)

    async def _serve(self) -> None:
        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        server = await asyncio.start_server(self._handle, HOST, 0)
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        async with server:
            await self._stop.wait()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            writer.close()
            return
        request_line, *header_lines = head[:-4].split(b"\r\n")
        method, target, version = request_line.split(b" ", 2)
        self.requested.append(target.decode())
        parts = urlsplit(target.decode())
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        headers = [line for line in header_lines if not line.lower().startswith(_HOP_BY_HOP)]
        # One request per connection keeps the forwarding byte-exact and simple.
        forwarded = b"\r\n".join([b" ".join([method, path.encode(), version]), *headers, b"Connection: close"])
        upstream_reader, upstream_writer = await asyncio.open_connection(HOST, self.upstream_port)
        upstream_writer.write(forwarded + b"\r\n\r\n")

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            with contextlib.suppress(ConnectionError):
                while data := await source.read(65536):
                    sink.write(data)
                    await sink.drain()

        upload = asyncio.create_task(pipe(reader, upstream_writer))
        await pipe(upstream_reader, writer)
        upload.cancel()
        for stream in (writer, upstream_writer):
            stream.close()
            with contextlib.suppress(ConnectionError):
                await stream.wait_closed()
