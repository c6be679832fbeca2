"""What ``bench.soak`` and ``bench.run`` share: the fake model in its own
process, the app on the local host pointed at it, one SSE stream read and
checked against the event contract, and process measurements (psutil).

Everything listens on and connects to 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import select
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Coroutine
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil

from bench.fake_model import API_KEY, MODEL
from tests.support import AppServer

ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = ROOT / "bench" / "results"

AGENT_PATH = "/api/agent/stream"
WORKFLOW_PATH = "/api/workflow/stream"
CITIES = ("Seattle", "Paris", "Oslo", "Tokyo", "Lima", "Cairo", "Denver", "Madrid", "Nairobi", "Quito")
# Model calls per stream against the fake (its default responder): the agent
# asks for get_weather, then answers; the workflow's researcher does the same
# and the writer answers once. More requests than this means SDK retries.
MODEL_CALLS = {"agent": 2, "workflow": 3}
TERMINAL = ("done", "error")


# --------------------------------------------------------------------------------------------------
# The fake model, in a process of its own
# --------------------------------------------------------------------------------------------------


class FakeModelProcess:
    """``python -m bench.fake_model`` as a child process, driven over its stdin/stdout."""

    def __init__(self, *, chunk_delay: float, max_seconds: float) -> None:
        self.chunk_delay = chunk_delay
        self.max_seconds = max_seconds
        self.process: subprocess.Popen[str] | None = None
        self.port = 0
        self.base_url = ""
        self._lock = threading.Lock()

    def start(self, timeout: float = 20.0) -> FakeModelProcess:
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bench.fake_model",
                "--chunk-delay",
                str(self.chunk_delay),
                "--max-seconds",
                str(self.max_seconds),
            ],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            bufsize=1,
        )
        ready = self._read_line(timeout)
        if not ready.get("ready"):
            self.stop()
            raise RuntimeError(f"fake model did not start: {ready!r}")
        self.port = int(ready["port"])
        self.base_url = str(ready["base_url"])
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def _read_line(self, timeout: float) -> dict[str, Any]:
        assert self.process is not None and self.process.stdout is not None
        ready, _, _ = select.select([self.process.stdout], [], [], timeout)
        if not ready:
            raise TimeoutError("fake model did not answer")
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError("fake model exited")
        return json.loads(line)

    def stats(self, timeout: float = 10.0) -> dict[str, Any]:
        """``{"open_streams", "cancelled_streams", "requests", "errors"}`` (blocking, milliseconds)."""
        assert self.process is not None and self.process.stdin is not None
        with self._lock:
            self.process.stdin.write("stats\n")
            self.process.stdin.flush()
            return self._read_line(timeout)

    async def stats_async(self) -> dict[str, Any]:
        return await asyncio.to_thread(self.stats)

    async def wait_no_open_streams(self, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        stats = await self.stats_async()
        while stats["open_streams"] and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
            stats = await self.stats_async()
        return stats

    def stop(self) -> None:
        process = self.process
        if process is None or process.poll() is not None:
            return
        with contextlib.suppress(OSError, ValueError):
            assert process.stdin is not None
            process.stdin.write("quit\n")
            process.stdin.flush()
            process.stdin.close()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def start_app(fake: FakeModelProcess, *, log_level: str = "info", extra_env: list[str] | None = None) -> AppServer:
    """The app (``python -m devhost``) with the fake as its OpenAI-compatible
    model; ``extra_env`` (``KEY=VALUE`` strings) goes into its environment."""
    values = {
        "OPENAI_BASE_URL": fake.base_url,
        "OPENAI_API_KEY": API_KEY,
        "OPENAI_MODEL": MODEL,
        "STREAM_AUTH_LEVEL": "anonymous",
    }
    env = {"LOG_LEVEL": log_level}
    for item in extra_env or ():
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--app-env wants KEY=VALUE, got {item!r}")
        env[key] = value
    return AppServer(values, env=env).start()


# --------------------------------------------------------------------------------------------------
# One stream, read to its end and checked
# --------------------------------------------------------------------------------------------------


@dataclass
class StreamResult:
    kind: str  # "agent" or "workflow"
    started: float  # seconds since the run's t0
    ok: bool = False
    status: int | None = None
    error: str | None = None
    terminal: str | None = None  # "done", "error" or None (cut short)
    ttfb: float | None = None  # seconds to the first body byte
    ttft: float | None = None  # seconds to the first text event
    total: float | None = None  # seconds to the end of the body
    events: int = 0
    body_bytes: int = 0
    pings: int = 0
    counts: dict[str, int] = field(default_factory=dict)

    def as_row(self) -> dict[str, Any]:
        return asdict(self)


class _SSEReader:
    """Incremental SSE parser (WHATWG rules the app relies on) that also
    checks the contract as events arrive: ids 1, 2, 3...; one terminal
    event, last."""

    def __init__(self) -> None:
        self.buffer = b""
        self.name = ""
        self.data: list[str] = []
        self.event_id: str | None = None
        self.events: list[tuple[str, Any]] = []
        self.problems: list[str] = []
        self.pings = 0

    def feed(self, chunk: bytes) -> list[tuple[str, Any]]:
        self.buffer += chunk
        new: list[tuple[str, Any]] = []
        *lines, self.buffer = self.buffer.split(b"\n")
        for raw in lines:
            line = raw.decode("utf-8").removesuffix("\r")
            if line == "":
                if self.data:
                    new.append(self._dispatch())
                self.name, self.data, self.event_id = "", [], None
                continue
            if line.startswith(":"):
                self.pings += 1
                continue
            key, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if key == "event":
                self.name = value
            elif key == "data":
                self.data.append(value)
            elif key == "id":
                self.event_id = value
        return new

    def _dispatch(self) -> tuple[str, Any]:
        name = self.name or "message"
        try:
            data = json.loads("\n".join(self.data))
        except ValueError:
            self.problems.append(f"event {len(self.events) + 1}: data is not JSON")
            data = None
        expected = str(len(self.events) + 1)  # ids are "<run token>:<n>"
        if (self.event_id or "").rpartition(":")[2] != expected and len(self.problems) < 5:
            self.problems.append(f"event id {self.event_id!r}, expected {expected}")
        if self.events and self.events[-1][0] in TERMINAL and len(self.problems) < 5:
            self.problems.append(f"event {name!r} after the terminal event")
        self.events.append((name, data))
        return name, data


def message_for(kind: str, n: int) -> str:
    city = CITIES[n % len(CITIES)]
    if kind == "agent":
        return f"What is the weather in {city}?"
    return f"Research the weather in {city} and write a short brief"


async def run_stream(client: httpx.AsyncClient, kind: str, n: int, t0: float) -> StreamResult:
    """POST one stream, read every event, check it; never raises (bar cancellation)."""
    path = AGENT_PATH if kind == "agent" else WORKFLOW_PATH
    start = time.perf_counter()
    result = StreamResult(kind=kind, started=start - t0)
    reader = _SSEReader()
    try:
        async with client.stream("POST", path, json={"message": message_for(kind, n)}) as response:
            result.status = response.status_code
            if response.status_code != 200:
                body = (await response.aread())[:200]
                result.error = f"HTTP {response.status_code}: {body!r}"
                return result
            async for chunk in response.aiter_raw():
                now = time.perf_counter()
                if result.ttfb is None:
                    result.ttfb = now - start
                result.body_bytes += len(chunk)
                for name, _ in reader.feed(chunk):
                    if name == "message" and result.ttft is None:
                        result.ttft = now - start
            result.total = time.perf_counter() - start
    except httpx.HTTPError as exc:
        result.error = f"{type(exc).__name__}: {exc}"[:300]
    except Exception as exc:  # a bug in the driver must show up as an error, not a crash
        result.error = f"driver {type(exc).__name__}: {exc}"[:300]
    result.events = len(reader.events)
    result.pings = reader.pings
    result.counts = dict(Counter(name for name, _ in reader.events))
    result.terminal = reader.events[-1][0] if reader.events and reader.events[-1][0] in TERMINAL else None
    if result.terminal == "error" and result.error is None:
        result.error = f"error event: {json.dumps(reader.events[-1][1])[:200]}"
    if reader.buffer.strip() and result.error is None:
        result.error = "body ended in the middle of an event"
    if reader.problems and result.error is None:
        result.error = "contract: " + "; ".join(reader.problems)
    if result.terminal is None and result.error is None:
        result.error = "stream ended without a terminal event"
    result.ok = result.error is None and result.terminal == "done" and result.counts.get("message", 0) > 0
    if not result.ok and result.error is None:
        result.error = "done without any text"
    return result


async def probe_and_count(app: AppServer, fake: FakeModelProcess, settle: float) -> dict[str, Any]:
    """Settle, count, run one probe stream, count again (see the module docstring)."""
    assert app.process is not None
    pid = app.process.pid
    await asyncio.sleep(settle)
    before_probe = resources(pid, app_port=app.port, fake_port=fake.port)
    async with make_client(app.url, 2, 30.0) as client:
        probe = await run_stream(client, "agent", 0, time.perf_counter())
    await asyncio.sleep(1.0)
    after = resources(pid, app_port=app.port, fake_port=fake.port)
    return {"before_probe": before_probe, "after_probe": after, "probe_ok": probe.ok, "probe_error": probe.error}


def make_client(base_url: str, connections: int, read_timeout: float) -> httpx.AsyncClient:
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    timeout = httpx.Timeout(connect=30.0, read=read_timeout, write=30.0, pool=60.0)
    return httpx.AsyncClient(base_url=base_url, limits=limits, timeout=timeout, trust_env=False)


# --------------------------------------------------------------------------------------------------
# Measurements
# --------------------------------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float | None:
    """Linear-interpolated percentile (``q`` in 0..100); ``None`` for no values."""
    if not values:
        return None
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    position = (len(ordered) - 1) * q / 100
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def distribution(values: list[float], scale: float = 1000.0) -> dict[str, float | None]:
    """p50/p95/p99/max, by default in milliseconds."""

    def scaled(v: float | None) -> float | None:
        return None if v is None else round(v * scale, 1)

    return {
        "p50": scaled(percentile(values, 50)),
        "p95": scaled(percentile(values, 95)),
        "p99": scaled(percentile(values, 99)),
        "max": scaled(max(values) if values else None),
        "n": len(values),
    }


def resources(pid: int, *, app_port: int, fake_port: int) -> dict[str, Any]:
    """The app process's open files and sockets, by kind."""
    proc = psutil.Process(pid)
    with proc.oneshot():
        rss = proc.memory_info().rss
        fds = proc.num_fds()
        threads = proc.num_threads()
    conns = proc.net_connections(kind="inet")
    listening = [c for c in conns if c.status == psutil.CONN_LISTEN]
    inbound = [c for c in conns if c.status != psutil.CONN_LISTEN and c.laddr and c.laddr.port == app_port]
    upstream = [c for c in conns if c.raddr and c.raddr.port == fake_port]
    other = [c for c in conns if c not in listening and c not in inbound and c not in upstream]
    return {
        "rss_mib": round(rss / 2**20, 1),
        "fds": fds,
        "threads": threads,
        "sockets": len(conns),
        "listening": len(listening),
        "inbound": len(inbound),
        "upstream": len(upstream),
        "upstream_by_state": dict(Counter(c.status for c in upstream)),
        "inbound_by_state": dict(Counter(c.status for c in inbound)),
        "other": len(other),
    }


def _git(*args: str) -> str:
    try:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def machine() -> dict[str, Any]:
    """Where and on what code the numbers were taken (git read-only)."""
    return {
        "cpus": os.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "git_commit": _git("rev-parse", "--short", "HEAD"),
        "git_uncommitted": _git("status", "--porcelain").splitlines(),
    }


def write_results(prefix: str, data: dict[str, Any]) -> Path:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{prefix}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(data, indent=2, default=str) + "\n")
    return path


def fmt(value: Any, unit: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.1f}{unit}"
    return f"{value}{unit}"


def run_with_hard_limit(name: str, main: Coroutine[Any, Any, int], hard_limit_s: int) -> int:
    """Run ``main`` under a SIGALRM backstop: whatever hangs (start-up,
    shutdown), the process ends, with exit status 2. The children stop on
    their own (AppServer in its finally blocks, the fake when its stdin
    closes)."""

    def on_alarm(signum: int, frame: Any) -> None:
        print(f"{name}: hard time limit ({hard_limit_s} s) reached", file=sys.stderr)
        raise SystemExit(2)

    signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(hard_limit_s)
    try:
        return asyncio.run(main)
    finally:
        signal.alarm(0)


def add_shared_args(parser: argparse.ArgumentParser) -> None:
    """The options of ``soak``."""
    parser.add_argument("--chunk-delay", type=float, default=0.05, help="the fake model's pace per chunk, seconds")
    parser.add_argument("--settle", type=float, default=6.0, help="wait after the load before counting fds, seconds")
    parser.add_argument("--fd-slack", type=int, default=4, help="extra fds/sockets allowed over the baseline")
    parser.add_argument("--read-timeout", type=float, default=60.0, help="client read timeout per stream, seconds")
    parser.add_argument("--log-level", default="info", help="the app's log level (as `make run`: info)")
    parser.add_argument(
        "--app-env", action="append", default=[], metavar="KEY=VALUE", help="extra environment for the app (repeatable)"
    )


async def warm_up(app: AppServer) -> bool:
    """One agent and one workflow stream: imports, the shared chat client
    and its pool, first-call paths. False (and why, on stderr) if either failed."""
    async with make_client(app.url, 4, 30.0) as client:
        t0 = time.perf_counter()
        warm = [await run_stream(client, kind, 0, t0) for kind in ("agent", "workflow")]
    if not all(r.ok for r in warm):
        print("warm-up failed:", [r.error for r in warm], file=sys.stderr)
        return False
    return True


def log_problems(app: AppServer) -> list[str]:
    """The app's log lines at WARNING or above, and tracebacks."""
    return [line for line in app.logs().splitlines() if " ERROR " in line or "Traceback" in line or " WARNING " in line]


def print_verdict(summary: dict[str, Any]) -> None:
    for name, passed in summary["checks"].items():
        print(f"  [{'ok' if passed else 'FAIL'}] {name}")
    print(f"  {'PASSED' if summary['passed'] else 'FAILED'}")
