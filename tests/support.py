"""Test support: the app served by the real local host in a subprocess,
and small SSE helpers. Everything listens on 127.0.0.1 only."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent

# Settings that would point the app at a real model: never inherited.
MODEL_VARIABLES = (
    "MODEL_PROVIDER",
    "AZURE_OPENAI_ENDPOINT",
    "AZURE_OPENAI_BASE_URL",
    "AZURE_OPENAI_API_KEY",
    "AZURE_OPENAI_CHAT_DEPLOYMENT_NAME",
    "AZURE_OPENAI_CHAT_COMPLETION_MODEL",
    "AZURE_OPENAI_MODEL",
    "AZURE_OPENAI_API_VERSION",
    "OPENAI_API_KEY",
    "OPENAI_BASE_URL",
    "OPENAI_MODEL",
    "OPENAI_CHAT_COMPLETION_MODEL",
    "WEBSITE_INSTANCE_ID",
    "WEATHER_PROVIDER",
    "GEOCODING_API_BASE_URL",
    "WEATHER_API_BASE_URL",
    "WEATHER_CACHE_SECONDS",
    "WEATHER_TIMEOUT_SECONDS",
)

# Weather defaults for every served app: the offline sample data, and should
# a test choose Open-Meteo without pointing it at tests/fake_open_meteo.py, a
# closed loopback port rather than the internet. A test's values override these.
NO_NETWORK_URL = "http://127.0.0.1:9/v1"
WEATHER_DEFAULTS = {
    "WEATHER_PROVIDER": "offline",
    "GEOCODING_API_BASE_URL": NO_NETWORK_URL,
    "WEATHER_API_BASE_URL": NO_NETWORK_URL,
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class AppServer:
    """``python -m devhost`` on a free loopback port, with its own settings
    file (``values`` and ``host`` become ``local.settings.json``'s
    ``Values`` and ``Host``) and extra environment variables ``env``."""

    def __init__(
        self,
        values: Mapping[str, str] | None = None,
        *,
        env: Mapping[str, str] | None = None,
        host: Mapping[str, Any] | None = None,
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._dir = tempfile.TemporaryDirectory(prefix="devhost-")
        self.settings_file = Path(self._dir.name) / "local.settings.json"
        settings = {"Values": {**WEATHER_DEFAULTS, **(values or {})}, "Host": dict(host or {})}
        self.settings_file.write_text(json.dumps(settings))
        self.log_file = Path(self._dir.name) / "devhost.log"
        self._env = {k: v for k, v in os.environ.items() if k not in MODEL_VARIABLES}
        self._env.update({"PYTHONUNBUFFERED": "1", **(env or {})})
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30.0) -> AppServer:
        self._log = self.log_file.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "devhost", "--port", str(self.port), "--settings", str(self.settings_file)],
            cwd=ROOT,
            env=self._env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"devhost exited early:\n{self.logs()}")
            try:
                if httpx.get(f"{self.url}/api/health", timeout=1).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"devhost did not start within {timeout} s:\n{self.logs()}")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if getattr(self, "_log", None):
            self._log.close()

    def close(self) -> None:
        self.stop()
        self._dir.cleanup()

    def logs(self) -> str:
        return self.log_file.read_text(errors="replace") if self.log_file.exists() else ""

    def __enter__(self) -> AppServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass
class SSEEvent:
    event: str  # "message" for unnamed events, as browsers name them
    data: Any
    id: str | None = None


def parse_sse(lines: Iterable[str]) -> list[SSEEvent]:
    """Parse SSE lines (as ``httpx.Response.iter_lines`` yields them) into
    events, following the WHATWG rules we rely on; comments are skipped."""
    events: list[SSEEvent] = []
    name, data, event_id = "", [], None
    for line in lines:
        if line == "":
            if data:
                events.append(SSEEvent(name or "message", json.loads("\n".join(data)), event_id))
            name, data, event_id = "", [], None
            continue
        if line.startswith(":"):
            continue
        field, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if field == "event":
            name = value
        elif field == "data":
            data.append(value)
        elif field == "id":
            event_id = value
    return events


def stream_events(
    client: httpx.Client, path: str, *, json_body: Any = None, params: Any = None, headers: Any = None
) -> tuple[httpx.Response, list[SSEEvent]]:
    """POST (with ``json_body``) or GET a stream and parse all its events."""
    method = "POST" if json_body is not None else "GET"
    with client.stream(method, path, json=json_body, params=params, headers=headers) as response:
        if response.status_code != 200:
            response.read()
            return response, []
        return response, parse_sse(response.iter_lines())


def text_of(events: Iterable[SSEEvent], agent: str | None = None) -> str:
    return "".join(
        e.data["text"] for e in events if e.event == "message" and (agent is None or e.data["agent"] == agent)
    )
