"""The chat page resumes a run by itself when its connection drops, over
both transports, and says so. Headless Chromium talks to the app through a
loopback proxy that cuts the first stream connection in the middle."""

from __future__ import annotations

import contextlib
import re
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from playwright.sync_api import Page, expect

from tests.support import AppServer
from tests.test_browser import WAIT_MS, agent_texts, browser, open_chat, paced_app  # noqa: F401 - fixtures

pytestmark = pytest.mark.browser


class CuttingProxy:
    """A TCP proxy to ``target`` on 127.0.0.1 that, once, closes the first
    connection carrying a request for ``path`` after ``cut_after`` bytes of
    its response."""

    def __init__(self, target: int, path: bytes, cut_after: int) -> None:
        self.target, self.path, self.cut_after = target, path, cut_after
        self._server = socket.create_server(("127.0.0.1", 0))  # bound here: no other process can take it
        self.port = self._server.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.cuts = 0
        self._armed = True
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._sockets: list[socket.socket] = []
        self._closing = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._closing:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target))
            for sock in (client, upstream):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                self._sockets.append(sock)
            state = {"stream": False, "sent": 0}
            for args in ((client, upstream, True, state), (upstream, client, False, state)):
                thread = threading.Thread(target=self._pipe, args=args, daemon=True)
                thread.start()
                self._threads.append(thread)

    def _pipe(self, source: socket.socket, sink: socket.socket, upward: bool, state: dict) -> None:
        try:
            while data := source.recv(65536):
                if upward:
                    with self._lock:
                        if self._armed and self.path in data:
                            self._armed = False
                            state["stream"] = True
                    sink.sendall(data)
                    continue
                if state["stream"]:
                    room = self.cut_after - state["sent"]
                    if len(data) >= room:
                        sink.sendall(data[: max(room, 0)])
                        self.cuts += 1
                        raise ConnectionAbortedError
                    state["sent"] += len(data)
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()

    def close(self) -> None:
        self._closing = True
        self._server.close()
        for sock in self._sockets:
            with contextlib.suppress(OSError):
                sock.close()


@dataclass
class Proxied:
    url: str


@pytest.fixture
def proxy(paced_app: AppServer) -> Iterator[CuttingProxy]:  # noqa: F811
    server = CuttingProxy(paced_app.port, b"/api/agent/stream", cut_after=900)
    yield server
    server.close()


MESSAGE = "What's the weather in Seattle and Portland?"


def expected_answer(page: Page) -> str:
    """The same question, asked on a connection nobody cuts: the offline model is deterministic."""
    return page.evaluate(
        """async (message) => {
            const r = await fetch("/api/agent/stream", {method: "POST", headers: {"Content-Type": "application/json"},
                                   body: JSON.stringify({message})});
            const text = await r.text();
            return text.split("\\n").filter((l) => l.startsWith("data: ") && l.includes('"text"'))
                       .map((l) => JSON.parse(l.slice(6)).text).join("");
        }""",
        MESSAGE,
    )


@pytest.mark.parametrize("transport", ["fetch", "eventsource"])
def test_the_page_resumes_a_dropped_stream_and_says_so(
    paced_app: AppServer,  # noqa: F811
    proxy: CuttingProxy,
    open_chat,  # noqa: F811
    transport: str,
) -> None:
    log_start = len(paced_app.logs())
    page = open_chat(Proxied(proxy.url))
    page.get_by_label("Transport").select_option(transport)
    stream_urls: list[str] = []
    page.on("request", lambda r: stream_urls.append(f"{r.method} {r.url}") if "/stream" in r.url else None)
    box = page.get_by_role("textbox", name="Message")
    box.fill(MESSAGE)
    box.press("Enter")
    expect(page.get_by_test_id("done-info")).to_have_count(1, timeout=WAIT_MS)
    assert proxy.cuts == 1, "the proxy did not cut the stream"
    expect(page.get_by_test_id("resumed")).to_have_text(re.compile("resumed where it stopped"))
    expect(page.get_by_test_id("error")).to_have_count(0)
    expect(page.get_by_test_id("status")).to_have_text("Done.")
    assert len(page.get_by_test_id("tool-line").all()) == 2, "no event shown twice"
    requested = list(stream_urls)
    answer = agent_texts(page)["weather"]
    assert answer == expected_answer(page), "no gap, no duplicate"
    if transport == "fetch":
        assert len(requested) == 2 and requested[0].startswith("POST ")
        assert re.match(r"GET .*/api/runs/[\w-]{22}/stream$", requested[1])
    else:
        assert len(requested) == 2 and requested[0] == requested[1]  # EventSource's own reconnect
    # The agent ran once for the page's question (and once for expected_answer); the page's run was resumed.
    log = paced_app.logs()[log_start:]
    assert len(re.findall(r"run \S+: (?:GET|POST) /api/agent/stream via offline", log)) == 2, log[-3000:]
    assert len(re.findall(r"run \S+: resumed after event \d+", log)) == 1, log[-3000:]
