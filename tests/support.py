"""Test support: the app served by the real local host in a subprocess,
and small SSE helpers. Everything listens on 127.0.0.1 only."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"

# Read by the app or the libraries it uses, but set by the platform (Azure,
# the Functions host, OpenTelemetry, this machine) rather than by a user of
# the app: not in the README's configuration table, never inherited either.
# CONTAINER_NAME makes the Functions worker believe it runs in Azure.
PLATFORM_VARIABLES = frozenset(
    {
        "CONTAINER_NAME",
        "FUNCTIONS_WORKER_PROCESS_COUNT",
        "PYTHON_ENABLE_INIT_INDEXING",
    }
)
# Whole families: the OpenAI SDK and the Agent Framework read more of these
# on their own (OPENAI_ORG_ID, AZURE_OPENAI_AD_TOKEN, ...), and OpenTelemetry
# reads any OTEL_*.
PLATFORM_PREFIXES = ("OPENAI_", "AZURE_OPENAI_", "OTEL_", "ENABLE_INSTRUMENTATION", "ENABLE_SENSITIVE_DATA")

_SETTING_NAME = re.compile(r"`([A-Z][A-Z0-9]*(?:_[A-Z0-9]+)*)`")
_SETTING_PREFIX = re.compile(r"`([A-Z][A-Z0-9]*_)\*`")  # `OTEL_*`: a family of settings

# Weather defaults for every served app: the offline sample data, and should
# a test choose Open-Meteo without pointing it at tests/fake_open_meteo.py, a
# closed loopback port rather than the internet. A test's values override these.
NO_NETWORK_URL = "http://127.0.0.1:9/v1"
WEATHER_DEFAULTS = {
    "WEATHER_PROVIDER": "offline",
    "GEOCODING_API_BASE_URL": NO_NETWORK_URL,
    "WEATHER_API_BASE_URL": NO_NETWORK_URL,
}


@dataclass(frozen=True)
class SettingRow:
    """One row of the README's configuration table."""

    name: str
    default: str  # as written: `text` in backticks, or a number and its range: 10 (1–60)
    meaning: str
    names: tuple[str, ...] = ()  # every name in the first cell (a row may list several)
    prefixes: tuple[str, ...] = ()  # families in the first cell: `OTEL_*` -> "OTEL_"

    @property
    def mentioned(self) -> set[str]:
        """The setting and every other setting name its row mentions (aliases)."""
        return {self.name, *self.names, *_SETTING_NAME.findall(self.meaning)}


def readme_settings(readme: Path = README) -> list[SettingRow]:
    """The rows of the table under the README's "## Configuration" heading:
    the one list of the app's settings the tests isolate and check."""
    text = readme.read_text(encoding="utf-8")
    section = text.split("\n## Configuration\n", 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("| `") and len(cells) >= 3:
            names = tuple(_SETTING_NAME.findall(cells[0]))
            if names:
                prefixes = tuple(_SETTING_PREFIX.findall(cells[0]))
                rows.append(SettingRow(names[0], cells[1], " | ".join(cells[2:]), names, prefixes))
    if not rows:
        raise AssertionError("no settings table under '## Configuration' in README.md")
    return rows


def app_variables() -> frozenset[str]:
    """Every environment variable the tests must control: the README's
    settings (and the names their rows mention) and the platform's."""
    return frozenset().union(*(row.mentioned for row in readme_settings())) | PLATFORM_VARIABLES


def documented_prefixes() -> tuple[str, ...]:
    """Families of settings the README's table names as ``X_*`` (``OTEL_*``)."""
    return tuple(p for row in readme_settings() for p in row.prefixes)


def is_app_variable(name: str, names: frozenset[str] | None = None) -> bool:
    return name in (app_variables() if names is None else names) or name.startswith(PLATFORM_PREFIXES)


def hermetic_environ(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """``environ`` (default: this process's) without any setting of the app:
    what a server under test starts from, whatever the developer's shell has."""
    environ = os.environ if environ is None else environ
    names = app_variables()
    return {k: v for k, v in environ.items() if not is_app_variable(k, names)}


# ------------------------------------------------------------------------------ mutation testing

# mutmut (``make mutate``) chooses the tests for each mutant from the functions
# a test ran in-process. A server under test runs the code in another process:
# under mutmut's stats run, the server records what it ran in a file, and each
# test that used the server is credited with it (see tests/conftest.py).
MUTMUT_STATS = os.environ.get("MUTANT_UNDER_TEST") == "stats"
_SERVE_RECORDING_HITS = """
import atexit, json, os, runpy, signal, sys
import mutmut.mutation.trampoline as trampoline
hits, record = set(), trampoline.record_trampoline_hit
def recording(name, *args, **kwargs):
    hits.add(name)
    return record(name, *args, **kwargs)
def stop(signum, frame):  # uvicorn re-raises SIGTERM once shut down: exit, running atexit
    raise SystemExit(0)
trampoline.record_trampoline_hit = recording
atexit.register(lambda: open(os.environ["MUTMUT_SERVER_HITS"], "w").write(json.dumps(sorted(hits))))
signal.signal(signal.SIGTERM, stop)
sys.argv = ["devhost", *sys.argv[1:]]
runpy.run_module("devhost", run_name="__main__")
"""
RUNNING_SERVERS: list[AppServer] = []


class AppServer:
    """``python -m devhost`` on a loopback port of its own choosing (port 0:
    no race for a port picked in advance), with its own settings file
    (``values`` and ``host`` become ``local.settings.json``'s ``Values`` and
    ``Host``) and extra environment variables ``env``. Nothing of the
    developer's shell that the app reads reaches it (:func:`hermetic_environ`)."""

    def __init__(
        self,
        values: Mapping[str, str] | None = None,
        *,
        env: Mapping[str, str] | None = None,
        host: Mapping[str, Any] | None = None,
    ) -> None:
        self.port = 0
        self._dir = tempfile.TemporaryDirectory(prefix="devhost-")
        self.settings_file = Path(self._dir.name) / "local.settings.json"
        settings = {"Values": {**WEATHER_DEFAULTS, **(values or {})}, "Host": dict(host or {})}
        self.settings_file.write_text(json.dumps(settings))
        self.log_file = Path(self._dir.name) / "devhost.log"
        self.port_file = Path(self._dir.name) / "port"
        self.hits_file = Path(self._dir.name) / "mutmut-hits.json"
        self._env = hermetic_environ()
        self._env.update({"PYTHONUNBUFFERED": "1", "MUTMUT_SERVER_HITS": str(self.hits_file), **(env or {})})
        self.process: subprocess.Popen[bytes] | None = None
        self.users: set[str] = set()  # the tests that talked to it (for mutmut)

    @property
    def url(self) -> str:
        if not self.port:
            raise RuntimeError("the server is not started")
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60.0) -> AppServer:
        self._log = self.log_file.open("wb")
        args = ["--port", "0", "--port-file", str(self.port_file), "--settings", str(self.settings_file)]
        command = ["-c", _SERVE_RECORDING_HITS] if MUTMUT_STATS else ["-m", "devhost"]
        self.process = subprocess.Popen(
            [sys.executable, *command, *args], cwd=ROOT, env=self._env, stdout=self._log, stderr=subprocess.STDOUT
        )
        RUNNING_SERVERS.append(self)
        current = os.environ.get("PYTEST_CURRENT_TEST", "").rsplit(" ", 1)[0]
        if current:
            self.users.add(current)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"devhost exited early:\n{self.logs()}")
            if not self.port and self.port_file.exists():
                self.port = int(self.port_file.read_text() or 0)
            try:
                if self.port and httpx.get(f"{self.url}/api/health", timeout=1).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.05)
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
        if self in RUNNING_SERVERS:
            RUNNING_SERVERS.remove(self)
            if MUTMUT_STATS:
                record_server_hits(self)
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


def record_server_hits(server: AppServer) -> None:
    """Credit every test that used ``server`` with the functions it ran."""
    from mutmut.state import state

    if not server.hits_file.exists():
        return
    for function in json.loads(server.hits_file.read_text()):
        state().tests_by_mangled_function_name[function].update(user.removeprefix("mutants/") for user in server.users)


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


REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"


@contextlib.contextmanager
def refusing_port() -> Iterator[int]:
    """A loopback port that refuses connections (bound, never listening),
    held for the block so no other process can start listening on it."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


class RedisServer:
    """``redis-server`` on a free loopback port: no persistence, no config
    file. Redis cannot bind port 0 and report it, so a port is picked and,
    should another process take it first, picked again."""

    ATTEMPTS = 5

    def __init__(self) -> None:
        self.port = 0
        self.url = ""
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 10.0) -> RedisServer:
        for _ in range(self.ATTEMPTS):
            with socket.socket() as sock:
                sock.bind(("127.0.0.1", 0))
                self.port = sock.getsockname()[1]
            self.url = f"redis://127.0.0.1:{self.port}/0"
            self.process = subprocess.Popen(
                [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and self.process.poll() is None:
                try:
                    with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as sock:
                        sock.sendall(b"PING\r\n")
                        if sock.recv(16).startswith(b"+PONG"):
                            return self
                except OSError:
                    time.sleep(0.05)
            self.stop()  # it exited (the port was taken) or never answered: another port
        raise RuntimeError(f"redis-server ({REDIS_SERVER}) did not start on loopback in {self.ATTEMPTS} attempts")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)
