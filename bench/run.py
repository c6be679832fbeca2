"""``python -m bench.run [--quick] [--plots]``: what the streaming layer costs,
measured against baselines in the same run (``make bench``, ``make bench-quick``).

* **throughput**: tokens per second of one stream at a time, for the agent
  and the workflow over the offline model (no delay) and for the agent over
  the OpenAI client against ``tests/fake_openai.py`` in its own process.
  Three variants, interleaved round by round: the framework's stream
  consumed in this process (``inprocess``), the app over HTTP (``http``),
  and the seeds' naive handler on the same server (``seed``, see
  ``bench/server.py``). Ratios are taken within each round.
* **concurrency**: N agent streams paced at 20 tokens/s opened at once,
  on a fresh server per burst: errors, added gap per token, time to first
  byte, CPU per token, RSS per open stream.
* **startup**: ``import function_app`` in a fresh interpreter, and the size
  of the runtime install.

Every figure is the median over rounds with its min and max. Results go to
``bench/results/latest.json`` (and a timestamped copy); ``--plots`` draws
PNGs beside it. See ``bench/README.md`` for the method.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import httpx
import psutil

from bench.common import RESULTS_DIR, ROOT, FakeModelProcess, machine, percentile, write_results
from bench.fake_model import API_KEY, MODEL
from bench.server import SEED_AGENT_PATH, SEED_WORKFLOW_PATH
from tests.support import hermetic_environ

MESSAGES = {
    "agent": "What is the weather in Seattle, Paris, Oslo, Tokyo and Lima?",
    "workflow": "Research the weather in Seattle, Paris, Oslo, Tokyo and Lima and write a short report",
}
APP_PATHS = {"agent": "/api/agent/stream", "workflow": "/api/workflow/stream"}
SEED_PATHS = {"agent": SEED_AGENT_PATH, "workflow": SEED_WORKFLOW_PATH}
TEXT_MARK = b'data: {"text"'  # a text event, in the app's SSE and in the seeds' (whose JSON has a space)
DONE_MARK = b"event: done"
LAST_CHUNK = b"\r\n0\r\n\r\n"  # the end of a chunked body
PACE_S = 0.05  # 20 tokens/s
LEVELS = (50, 100, 150, 200, 300)
SEED_LEVEL = 100  # the seeds' handler is measured at this many streams, beside the app
OFFLINE_VALUES = {"MODEL_PROVIDER": "offline", "OFFLINE_MODEL_DELAY_MS": "0"}
HEAVY_PAUSE_S = 0.2  # between blocks: lets the previous block's stragglers (closing sockets) settle


# --------------------------------------------------------------------------------------------------
# A lean HTTP/1.1 client: the driver must cost far less than what it measures
# --------------------------------------------------------------------------------------------------


@dataclass
class Stream:
    status: int = 0
    tokens: int = 0
    done: bool = False  # the app's terminal `done` event arrived
    ttfb: float | None = None  # seconds to the first body byte
    total: float = 0.0
    gaps: list[float] = field(default_factory=list)  # seconds between consecutive text events
    error: str | None = None


class _StreamProtocol(asyncio.Protocol):
    """Sends a request and counts text events in the raw body as it
    arrives, without parsing JSON: a read costs a few µs, so hundreds of
    streams do not make the driver the bottleneck. With ``Connection: close``
    the response ends with the connection; on a kept-alive connection it
    ends with the last chunk of its chunked body, and :meth:`send` starts
    the next request on the same connection."""

    def __init__(self, request: bytes, finished: asyncio.Future[None], keep_gaps: bool) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self._reset(request, finished, keep_gaps)

    def _reset(self, request: bytes, finished: asyncio.Future[None], keep_gaps: bool) -> None:
        self.request = request
        self.finished = finished
        self.keep_gaps = keep_gaps
        self.result = Stream()
        self.start = time.perf_counter()
        self.head = b""
        self.in_body = False
        self.tail = b""
        self.last_token: float | None = None

    def send(self, request: bytes, finished: asyncio.Future[None]) -> None:
        self._reset(request, finished, False)
        assert self.transport is not None
        self.transport.write(request)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        transport.write(self.request)  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        now = time.perf_counter()
        if not self.in_body:
            self.head += data
            end = self.head.find(b"\r\n\r\n")
            if end < 0:
                return
            self.result.status = int(self.head[9:12])
            data, self.in_body = self.head[end + 4 :], True
            if not data:
                return
        if self.result.ttfb is None:
            self.result.ttfb = now - self.start
        chunk = self.tail + data
        tokens = chunk.count(TEXT_MARK)
        if tokens:
            if self.keep_gaps and self.last_token is not None:
                self.result.gaps.append(now - self.last_token)
                self.result.gaps.extend([0.0] * (tokens - 1))
            self.last_token = now
            self.result.tokens += tokens
        if DONE_MARK in chunk:
            self.result.done = True
        self.tail = chunk[-16:]
        if chunk.endswith(LAST_CHUNK) and not self.finished.done():
            self.result.total = time.perf_counter() - self.start
            self.finished.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.result.total = self.result.total or time.perf_counter() - self.start
        if exc is not None:
            self.result.error = f"{type(exc).__name__}: {exc}"
        if not self.finished.done():
            self.finished.set_result(None)


def _request(port: int, path: str, message: str, *, close: bool) -> bytes:
    body = json.dumps({"message": message}).encode()
    connection = "Connection: close\r\n" if close else ""
    return (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n{connection}\r\n"
    ).encode() + body


async def _finish(protocol: _StreamProtocol, finished: asyncio.Future[None], timeout: float) -> Stream:
    try:
        await asyncio.wait_for(finished, timeout)
    except TimeoutError:
        if protocol.transport is not None:
            protocol.transport.close()
        protocol.result.error = "timed out"
    result = protocol.result
    if result.error is None and result.status != 200:
        result.error = f"HTTP {result.status}"
    return result


async def stream(port: int, path: str, message: str, *, keep_gaps: bool = False, timeout: float = 120.0) -> Stream:
    """POST ``{"message": ...}`` to ``path`` on a connection of its own
    (``Connection: close``) and read the stream to its end."""
    loop = asyncio.get_running_loop()
    finished: asyncio.Future[None] = loop.create_future()
    request = _request(port, path, message, close=True)
    try:
        _, protocol = await loop.create_connection(
            lambda: _StreamProtocol(request, finished, keep_gaps), "127.0.0.1", port
        )
    except OSError as exc:
        return Stream(error=f"connect: {exc}")
    return await _finish(protocol, finished, timeout)


class KeptAlive:
    """Streams one after another on one kept-alive connection, as the
    Functions host's proxy sends requests to the worker (a pooled
    ``SocketsHttpHandler``): the worker does not pay a connection per run."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.protocol: _StreamProtocol | None = None

    async def stream(self, path: str, message: str, *, timeout: float = 120.0) -> Stream:
        loop = asyncio.get_running_loop()
        finished: asyncio.Future[None] = loop.create_future()
        request = _request(self.port, path, message, close=False)
        protocol = self.protocol
        if protocol is None or protocol.closed:
            _, protocol = await loop.create_connection(
                lambda: _StreamProtocol(request, finished, False), "127.0.0.1", self.port
            )
            self.protocol = protocol
        else:
            protocol.send(request, finished)
        return await _finish(protocol, finished, timeout)


# --------------------------------------------------------------------------------------------------
# The server under test, in its own process
# --------------------------------------------------------------------------------------------------


class BenchServer:
    """``python -m bench.server`` (the app as devhost serves it, plus the
    seed handlers) on a free port, with its own settings file."""

    def __init__(self, values: dict[str, str], *, http: str = "auto") -> None:
        self.port = 0
        self._dir = tempfile.TemporaryDirectory(prefix="bench-")
        settings = Path(self._dir.name) / "local.settings.json"
        values = {"STREAM_AUTH_LEVEL": "anonymous", "WEATHER_PROVIDER": "offline", **values}
        settings.write_text(json.dumps({"Values": values}))
        self._port_file = Path(self._dir.name) / "port"
        self._log = (Path(self._dir.name) / "server.log").open("wb")
        args = ["--port-file", str(self._port_file), "--settings", str(settings), "--http", http]
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bench.server", *args],
            cwd=ROOT,
            env=hermetic_environ(),
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        self.ps = psutil.Process(self.process.pid)

    def wait_ready(self, timeout: float = 60.0) -> BenchServer:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"bench server exited:\n{self.logs()}")
            if not self.port and self._port_file.exists():
                self.port = int(self._port_file.read_text() or 0)
            try:
                if self.port and httpx.get(f"http://127.0.0.1:{self.port}/api/health", timeout=1).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"bench server did not start:\n{self.logs()}")

    def cpu(self) -> float:
        """CPU seconds of the server so far: from the scheduler's nanosecond
        counters (Linux), which short blocks need; else psutil's 10 ms ticks."""
        try:
            tasks = Path(f"/proc/{self.ps.pid}/task").iterdir()
            return sum(int((task / "schedstat").read_text().split()[0]) for task in tasks) / 1e9
        except (OSError, ValueError):
            times = self.ps.cpu_times()
            return times.user + times.system

    def rss(self) -> int:
        return self.ps.memory_info().rss

    def logs(self) -> str:
        return (Path(self._dir.name) / "server.log").read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()
        self._dir.cleanup()


# --------------------------------------------------------------------------------------------------
# Throughput: in-process vs the app over HTTP vs the seed handler, interleaved
# --------------------------------------------------------------------------------------------------


def inprocess_runner(kind: str, client: Any) -> Callable[[], Awaitable[int]]:
    """The framework's own stream for ``kind``, consumed here: the floor
    every HTTP variant builds on. Returns the text chunks of one run."""
    from agent_framework import AgentResponseUpdate

    from settings import run_limits
    from streaming.runners import _agents
    from tools import OfflineWeatherProvider
    from workflows import build_research_workflow

    # The offline sample weather, as the app under test uses (WEATHER_PROVIDER=offline below):
    # the benchmark measures the streaming layer, not a weather service.
    agent, researcher, writer = _agents(client, OfflineWeatherProvider(), run_limits().max_output_tokens)

    async def agent_run() -> int:
        return sum([1 async for update in agent.run(MESSAGES["agent"], stream=True) if update.text])

    async def workflow_run() -> int:
        tokens = 0
        async for event in build_research_workflow(researcher, writer).run(MESSAGES["workflow"], stream=True):
            if event.type in ("intermediate", "output") and isinstance(event.data, AgentResponseUpdate):
                tokens += bool(event.data.text)
        return tokens

    return agent_run if kind == "agent" else workflow_run


async def timed_block(run_once: Callable[[], Awaitable[int]], seconds: float, server: BenchServer | None) -> dict:
    """Runs back to back for at least ``seconds``. ``tokens_per_s`` is per
    CPU-second of the process that runs the agent (this one in-process, the
    server over HTTP): what one core delivers, which other work on a shared
    machine cannot inflate or deflate the way it does wall time (a
    two-process pipeline gets two shares of a busy machine, one process
    one). Wall-clock tokens/s is kept beside it."""
    cpu = server.cpu if server else time.process_time
    cpu0, start = cpu(), time.perf_counter()
    tokens = runs = 0
    while runs < 2 or time.perf_counter() - start < seconds:
        tokens += await run_once()
        runs += 1
    wall, cpu_s = time.perf_counter() - start, cpu() - cpu0
    return {
        "tokens_per_s": tokens / cpu_s,
        "wall_tokens_per_s": tokens / wall,
        "cpu_us_per_token": cpu_s / tokens * 1e6,
        "tokens_per_run": tokens / runs,
    }


def http_runner(
    server: BenchServer, path: str, message: str, *, keep_alive: bool = True
) -> Callable[[], Awaitable[int]]:
    """One stream per call: on one kept-alive connection (as in Azure, where
    the host's proxy pools its connections to the worker), or on a new
    connection each time (``keep_alive=False``)."""
    connection = KeptAlive(server.port)

    async def run_once() -> int:
        if keep_alive:
            result = await connection.stream(path, message)
        else:
            result = await stream(server.port, path, message)
        if result.error or not result.tokens:
            raise RuntimeError(f"{path}: {result.error or 'no text'}\n{server.logs()[-2000:]}")
        return result.tokens

    return run_once


async def throughput(kind: str, server: BenchServer, client: Any, rounds: int, seconds: float) -> dict:
    """One kind (agent, workflow or openai), its variants interleaved."""
    model_kind = "agent" if kind == "openai" else kind
    variants = {
        "inprocess": inprocess_runner(model_kind, client),
        "http": http_runner(server, APP_PATHS[model_kind], MESSAGES[model_kind]),
        "seed": http_runner(server, SEED_PATHS[model_kind], MESSAGES[model_kind]),
        "http_close": http_runner(server, APP_PATHS[model_kind], MESSAGES[model_kind], keep_alive=False),
    }
    for run_once in variants.values():  # warm-up: imports, pools, first-call paths
        await run_once()
    per_round: list[dict[str, dict]] = []
    for _ in range(rounds):
        order = list(variants)
        random.shuffle(order)
        row = {}
        for name in order:
            row[name] = await timed_block(variants[name], seconds, None if name == "inprocess" else server)
            await asyncio.sleep(HEAVY_PAUSE_S)
        per_round.append(row)

    def series(variant: str, key: str) -> list[float]:
        return [r[variant][key] for r in per_round if r[variant].get(key) is not None]

    def ratio(a: str, b: str, key: str = "tokens_per_s") -> list[float]:
        return [r[a][key] / r[b][key] for r in per_round]

    return {
        "inprocess_tokens_per_s": summary(series("inprocess", "tokens_per_s")),
        "http_tokens_per_s": summary(series("http", "tokens_per_s")),
        "seed_tokens_per_s": summary(series("seed", "tokens_per_s")),
        "http_vs_inprocess": summary(ratio("http", "inprocess"), 3),
        "seed_vs_inprocess": summary(ratio("seed", "inprocess"), 3),
        "http_vs_seed": summary(ratio("http", "seed"), 3),
        "http_cpu_us_per_token": summary(series("http", "cpu_us_per_token")),
        # A new connection per run (what a client without a pool costs the worker):
        "http_close_vs_inprocess": summary(ratio("http_close", "inprocess"), 3),
        "http_close_cpu_us_per_token": summary(series("http_close", "cpu_us_per_token")),
        "seed_cpu_us_per_token": summary(series("seed", "cpu_us_per_token")),
        "inprocess_cpu_us_per_token": summary(series("inprocess", "cpu_us_per_token")),
        "wall_tokens_per_s": {v: summary(series(v, "wall_tokens_per_s")) for v in variants},
        "wall_http_vs_inprocess": summary(ratio("http", "inprocess", "wall_tokens_per_s"), 3),
        "wall_http_vs_seed": summary(ratio("http", "seed", "wall_tokens_per_s"), 3),
        "tokens_per_run": {v: round(statistics.median(series(v, "tokens_per_run")), 1) for v in variants},
        "rounds": rounds,
    }


async def compare_http(rounds: int, seconds: float) -> dict[str, Any]:
    """The app's agent stream over uvicorn's h11 and httptools parsers (the
    Functions extension's uvicorn takes httptools when it is installed),
    servers interleaved round by round."""
    servers = {http: BenchServer(OFFLINE_VALUES, http=http) for http in ("h11", "httptools")}
    try:
        for server in servers.values():
            await asyncio.to_thread(server.wait_ready)
        runners = {h: http_runner(s, APP_PATHS["agent"], MESSAGES["agent"]) for h, s in servers.items()}
        for run_once in runners.values():
            await run_once()
        rows: dict[str, list[dict]] = {h: [] for h in servers}
        for _ in range(rounds):
            for http in random.sample(list(servers), len(servers)):
                rows[http].append(await timed_block(runners[http], seconds, servers[http]))
    finally:
        for server in servers.values():
            server.stop()
    out: dict[str, Any] = {
        h: {key: summary([r[key] for r in rows[h]]) for key in ("tokens_per_s", "cpu_us_per_token")} for h in rows
    }
    out["httptools_vs_h11"] = summary(
        [t["tokens_per_s"] / h["tokens_per_s"] for t, h in zip(rows["httptools"], rows["h11"], strict=True)], 3
    )
    return out


def summary(values: list[float], digits: int = 1) -> dict[str, Any]:
    """The median with its min and max (``None`` when nothing was measured)."""
    if not values:
        return {"median": None, "min": None, "max": None, "n": 0}
    return {
        "median": round(statistics.median(values), digits),
        "min": round(min(values), digits),
        "max": round(max(values), digits),
        "n": len(values),
    }


# --------------------------------------------------------------------------------------------------
# Concurrency: N paced agent streams opened at once, a fresh server per burst
# --------------------------------------------------------------------------------------------------


async def paced_server() -> BenchServer:
    """A fresh, warmed-up server with the paced offline model.
    ``MAX_CONCURRENT_RUNS`` (default 64) answers 503 past its cap: raised,
    to measure what one worker holds."""
    paced = {"MODEL_PROVIDER": "offline", "OFFLINE_MODEL_DELAY_MS": str(int(PACE_S * 1000))}
    server = BenchServer({**paced, "MAX_CONCURRENT_RUNS": "1000"})
    await asyncio.to_thread(server.wait_ready)
    await stream(server.port, APP_PATHS["agent"], "Weather in Oslo?")  # warm-up: imports, agents
    return server


async def burst(n: int, server: BenchServer, path: str = APP_PATHS["agent"]) -> dict[str, Any]:
    """``n`` streams opened at once on ``server``, which is stopped afterwards.
    The seed handler (``path`` = its route) sends no ``done``: its streams
    count as complete when they end cleanly with text."""
    seed = path == SEED_PATHS["agent"]
    try:
        await asyncio.sleep(0.3)
        rss0, cpu0, busy0, driver0 = server.rss(), server.cpu(), machine_busy(), time.process_time()
        started = time.perf_counter()
        peak = rss0
        tasks = [asyncio.create_task(stream(server.port, path, MESSAGES["agent"], keep_gaps=True)) for _ in range(n)]
        while not all(t.done() for t in tasks):  # RSS while the streams are open
            peak = max(peak, server.rss())
            await asyncio.sleep(0.1)
        cpu = server.cpu() - cpu0
        others = machine_busy() - busy0 - cpu - (time.process_time() - driver0)
        wall = time.perf_counter() - started
        results = [t.result() for t in tasks]
    finally:
        server.stop()
    ok = [r for r in results if r.error is None and (r.done or seed) and r.tokens]
    gaps = [g - PACE_S for r in ok for g in r.gaps]
    ttfb = [r.ttfb for r in ok if r.ttfb is not None]
    tokens = sum(r.tokens for r in results)
    return {
        "errors": n - len(ok),
        "added_gap_p50_ms": round(1000 * (percentile(gaps, 50) or 0.0), 1),
        "added_gap_p99_ms": round(1000 * (percentile(gaps, 99) or 0.0), 1),
        "ttfb_p50_ms": round(1000 * (percentile(ttfb, 50) or 0.0), 1),
        "ttfb_p99_ms": round(1000 * (percentile(ttfb, 99) or 0.0), 1),
        "cpu_us_per_token": round(cpu / tokens * 1e6, 1) if tokens else None,
        "rss_kib_per_stream": round((peak - rss0) / 1024 / n, 1),
        # Other work on the machine during the burst (100 = one core): gaps on a busy machine are waiting for a core.
        "others_cpu_pct": round(100 * max(0.0, others) / wall, 1),
        "first_error": next((r.error or "no done event" for r in results if r not in ok), None),
    }


async def concurrency(levels: tuple[int, ...], rounds: int) -> dict[str, Any]:
    per_level: dict[int, list[dict]] = {n: [] for n in levels}
    baseline: list[dict] = []  # the seed handler at SEED_LEVEL streams, in the same rounds
    for _ in range(rounds):  # levels interleaved: drift on the machine hits all alike
        # Started together (idle servers cost nothing during the bursts), each used for one burst.
        servers = await asyncio.gather(*(paced_server() for _ in (*levels, SEED_LEVEL)))
        for n, server in zip(levels, servers[:-1], strict=True):
            per_level[n].append(await burst(n, server))
        baseline.append(await burst(SEED_LEVEL, servers[-1], SEED_PATHS["agent"]))
    out: dict[str, Any] = {"pace_tokens_per_s": round(1 / PACE_S), "rounds": rounds, "levels": {}}
    for n, rows in per_level.items():
        level = {key: summary([r[key] for r in rows if r[key] is not None]) for key in rows[0] if key != "first_error"}
        level["first_error"] = next((r["first_error"] for r in rows if r["first_error"]), None)
        out["levels"][str(n)] = level
    good = [n for n, rows in per_level.items() if out["levels"][str(n)]["errors"]["max"] == 0]
    good = [n for n in good if out["levels"][str(n)]["added_gap_p99_ms"]["median"] <= 50]
    out["max_streams_p99_50ms"] = max(good, default=0)
    # The seeds' handler under the same load: what the framework and uvicorn cost on their own.
    keys = ("errors", "added_gap_p99_ms", "cpu_us_per_token", "rss_kib_per_stream")
    out["seed"] = {"streams": SEED_LEVEL, **{k: summary([r[k] for r in baseline if r[k] is not None]) for k in keys}}
    if SEED_LEVEL in per_level:
        for key in ("cpu_us_per_token", "rss_kib_per_stream"):  # within each round
            pairs = zip(per_level[SEED_LEVEL], baseline, strict=True)
            out[f"{key}_vs_seed"] = summary([a[key] / b[key] for a, b in pairs if a[key] and b[key]], 3)
    # What one core could carry at this pace from CPU per token alone: a figure other work cannot distort.
    cpu = statistics.median(level["cpu_us_per_token"]["median"] for level in out["levels"].values())
    out["streams_per_core_at_pace"] = round(1e6 / (cpu * out["pace_tokens_per_s"])) if cpu else None
    return out


# --------------------------------------------------------------------------------------------------
# Start-up
# --------------------------------------------------------------------------------------------------


def machine_busy() -> float:
    """CPU seconds the whole machine has spent busy (all cores)."""
    t = psutil.cpu_times()
    return t.user + t.system + getattr(t, "nice", 0.0) + getattr(t, "irq", 0.0) + getattr(t, "softirq", 0.0)


def import_seconds(module: str = "function_app") -> tuple[float, float]:
    """``import <module>`` in a fresh interpreter: wall and CPU seconds (CPU
    time is what a busy machine cannot stretch)."""
    code = (
        f"import time; t, c = time.perf_counter(), time.process_time(); import {module}; "
        "print(time.perf_counter() - t, time.process_time() - c)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=hermetic_environ(), capture_output=True, text=True, check=True
    )
    wall, cpu = out.stdout.strip().splitlines()[-1].split()
    return float(wall), float(cpu)


def runtime_install_mb() -> float:
    """Installed size of every package ``requirements.txt`` pins for this
    Python (what a deployment ships), from the installed distributions."""
    from packaging.requirements import Requirement

    total = 0
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if not line or line.startswith("-"):
            continue
        requirement = Requirement(line)
        if requirement.marker and not requirement.marker.evaluate():
            continue
        try:
            dist = metadata.distribution(requirement.name)
        except metadata.PackageNotFoundError:  # an out-of-date venv: count what is there, name what is not
            print(f"runtime_install_mb: {requirement.name} is not installed (run `make .venv/.dev`)", file=sys.stderr)
            continue
        total += sum(dist.locate_file(f).stat().st_size for f in dist.files or () if dist.locate_file(f).exists())
    return round(total / 1e6, 1)


def startup(samples: int = 5) -> dict[str, Any]:
    times, floor = [], []
    for _ in range(samples):  # interleaved with the floor: what every streaming app imports before its own code
        times.append(import_seconds())
        floor.append(import_seconds("azure.functions, azurefunctions.extensions.http.fastapi"))
    return {
        "import_function_app_s": summary([wall for wall, _ in times], 3),
        "import_function_app_cpu_s": summary([cpu for _, cpu in times], 3),
        "import_functions_library_cpu_s": summary([cpu for _, cpu in floor], 3),
        "runtime_install_mb": runtime_install_mb(),
    }


# --------------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------------


def fig(s: dict[str, Any], unit: str = "") -> str:
    if s["median"] is None:
        return "-"
    return f"{s['median']:,}{unit} ({s['min']:,}-{s['max']:,})"


def print_table(results: dict[str, Any]) -> None:
    print("\nthroughput, one stream at a time, tokens per CPU-second of the process running the agent:")
    print("median (min-max) over interleaved rounds; wall-clock figures are in the JSON")
    cols = ("inprocess_tokens_per_s", "http_tokens_per_s", "seed_tokens_per_s", "http_vs_inprocess")
    cols += ("seed_vs_inprocess", "http_vs_seed", "http_cpu_us_per_token", "http_close_vs_inprocess")
    for kind, row in results["throughput"].items():
        print(f"  {kind}")
        for col in cols:
            print(f"    {col:24} {fig(row[col])}")
    server = results.get("server")
    if server:
        print("\nserver (agent over HTTP, tokens per CPU-second; CPU µs per token):")
        for http in ("h11", "httptools"):
            print(f"    {http:10} {fig(server[http]['tokens_per_s'])}; {fig(server[http]['cpu_us_per_token'])}")
        print(f"    httptools_vs_h11 {fig(server['httptools_vs_h11'])}")
    conc = results.get("concurrency")
    if conc:
        print(f"\nconcurrency: agent streams paced at {conc['pace_tokens_per_s']} tokens/s, opened at once")
        keys = ("errors", "added_gap_p50_ms", "added_gap_p99_ms", "ttfb_p50_ms", "cpu_us_per_token")
        keys += ("rss_kib_per_stream", "others_cpu_pct")
        print("  " + f"{'streams':>8} " + " ".join(f"{k:>22}" for k in keys))
        for n, level in conc["levels"].items():
            print("  " + f"{n:>8} " + " ".join(f"{fig(level[k]):>22}" for k in keys))
        print(f"  max_streams_p99_50ms: {conc['max_streams_p99_50ms']}", end="")
        print(f"; streams one core carries at this pace (from CPU per token): {conc['streams_per_core_at_pace']}")
        seed = conc.get("seed")
        if seed:
            print(f"  the seeds' handler at {seed['streams']} streams:", end="")
            print(f" CPU per token {fig(seed['cpu_us_per_token'])} µs,", end="")
            print(f" RSS per stream {fig(seed['rss_kib_per_stream'])} KiB,", end="")
            print(f" p99 added gap {fig(seed['added_gap_p99_ms'])} ms")
            for key in ("cpu_us_per_token_vs_seed", "rss_kib_per_stream_vs_seed"):
                if key in conc:
                    print(f"    app / seed, {key[: -len('_vs_seed')]}: {fig(conc[key])}")
    start = results["startup"]
    print(f"\nstartup: import function_app {fig(start['import_function_app_s'], ' s')}", end="")
    print(f" (CPU {fig(start['import_function_app_cpu_s'], ' s')};", end="")
    floor = fig(start["import_functions_library_cpu_s"], " s")
    print(f" azure.functions and its FastAPI extension alone: {floor})", end="")
    print(f"; runtime install {start['runtime_install_mb']} MB")
    print(f"machine: {results['machine']['cpus']} CPUs, load average {results['machine']['load_average']}")


def markdown(results: dict[str, Any]) -> str:
    """The README's table, from a results file (``python -m bench.run --markdown FILE``)."""

    def m(s: dict[str, Any]) -> str:
        if s["median"] is None:
            return "-"
        return f"{s['median']:,}" if s["min"] == s["max"] else f"{s['median']:,} ({s['min']:,}-{s['max']:,})"

    t = results["throughput"]
    rows = ["| throughput (tokens per CPU-second) | agent | workflow | openai |", "| --- | --- | --- | --- |"]
    for key in ("inprocess_tokens_per_s", "http_tokens_per_s", "seed_tokens_per_s", "http_vs_inprocess"):
        rows.append(f"| `{key}` | " + " | ".join(m(t[k][key]) for k in ("agent", "workflow", "openai")) + " |")
    for key in ("seed_vs_inprocess", "http_vs_seed", "http_cpu_us_per_token", "http_close_vs_inprocess"):
        rows.append(f"| `{key}` | " + " | ".join(m(t[k][key]) for k in ("agent", "workflow", "openai")) + " |")
    conc = results["concurrency"]
    rows += ["", "| concurrent agent streams (20 tokens/s) | " + " | ".join(conc["levels"]) + " |"]
    rows.append("| --- |" + " --- |" * len(conc["levels"]))
    for key in ("errors", "added_gap_p50_ms", "added_gap_p99_ms", "ttfb_p50_ms", "cpu_us_per_token"):
        rows.append(f"| `{key}` | " + " | ".join(m(v[key]) for v in conc["levels"].values()) + " |")
    rss = " | ".join(m(v["rss_kib_per_stream"]) for v in conc["levels"].values())
    rows.append(f"| `rss_kib_per_stream` | {rss} |")
    others = " | ".join(m(v["others_cpu_pct"]) if "others_cpu_pct" in v else "-" for v in conc["levels"].values())
    rows.append(f"| other work on the machine, % of a core | {others} |")

    seed = conc.get("seed")
    if seed:
        n = seed["streams"]
        rows.append(f"| the seeds' handler at {n} streams: `cpu_us_per_token`, `rss_kib_per_stream` |")
        pad = " |" * (len(conc["levels"]) - 1)
        rows[-1] += f" {m(seed['cpu_us_per_token'])}, {m(seed['rss_kib_per_stream'])} |{pad}"
        if "cpu_us_per_token_vs_seed" in conc:
            rows.append(f"| app / seed at {n} streams: CPU per token, RSS per stream |")
            rows[-1] += f" {m(conc['cpu_us_per_token_vs_seed'])}, {m(conc['rss_kib_per_stream_vs_seed'])} |{pad}"

    start, mach = results["startup"], results["machine"]
    rows += [
        "",
        f"`max_streams_p99_50ms`: {conc['max_streams_p99_50ms']}; streams one core carries at this pace "
        f"(from CPU per token): {conc.get('streams_per_core_at_pace', '-')}. Start-up: `import function_app` "
        f"{m(start['import_function_app_s'])} s wall, {m(start['import_function_app_cpu_s'])} s CPU "
        f"(`azure.functions` and its FastAPI extension alone: {m(start['import_functions_library_cpu_s'])} s CPU); "
        f"runtime install {start['runtime_install_mb']} MB.",
        "",
        f"Machine: {mach['cpus']} vCPUs, {mach['memory_gib']} GiB, Python {mach['python']}, {mach['platform']}; "
        f"load average {mach['load_average']} at the end; commit `{mach['git_commit']}`; "
        f"{results['settings']['rounds']} throughput rounds, {results['settings']['concurrency_rounds']} "
        "bursts per level; median (min-max).",
    ]
    return "\n".join(rows)


def plot(results: dict[str, Any]) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    kinds = list(results["throughput"])
    variants = (("inprocess", "in-process"), ("http", "app over HTTP"), ("seed", "seed handler over HTTP"))
    fig_, ax = plt.subplots(figsize=(7, 3.6))
    width = 0.27
    for i, (key, label) in enumerate(variants):
        rows = [results["throughput"][k][f"{key}_tokens_per_s"] for k in kinds]
        medians = [r["median"] for r in rows]
        errors = [
            [m - r["min"] for m, r in zip(medians, rows, strict=True)],
            [r["max"] - m for m, r in zip(medians, rows, strict=True)],
        ]
        ax.bar([x + (i - 1) * width for x in range(len(kinds))], medians, width, yerr=errors, label=label, capsize=3)
    ax.set_xticks(range(len(kinds)), kinds)
    ax.set_ylabel("tokens per CPU-second")
    ax.legend()
    ax.set_title(f"Throughput by variant, median and min-max (load average {results['machine']['load_average'][1]})")
    fig_.tight_layout()
    paths.append(RESULTS_DIR / "throughput.png")
    fig_.savefig(paths[-1], dpi=110)
    conc = results.get("concurrency")
    if conc:
        fig_, ax = plt.subplots(figsize=(7, 3.6))
        levels = [int(n) for n in conc["levels"]]
        p99 = [conc["levels"][str(n)]["added_gap_p99_ms"] for n in levels]
        ax.errorbar(
            levels,
            [s["median"] for s in p99],
            yerr=[[s["median"] - s["min"] for s in p99], [s["max"] - s["median"] for s in p99]],
            marker="o",
            capsize=3,
            label="p99 added gap",
        )
        ax.axhline(50, color="grey", linestyle="--", label="50 ms")
        ax.set_xlabel("concurrent agent streams (20 tokens/s each)")
        ax.set_ylabel("added gap per token, p99 (ms)")
        ax.legend()
        ax.set_title(f"One worker under load (machine load average {results['machine']['load_average'][1]})")
        fig_.tight_layout()
        paths.append(RESULTS_DIR / "concurrency.png")
        fig_.savefig(paths[-1], dpi=110)
    plt.close("all")
    return paths


# --------------------------------------------------------------------------------------------------


def offline_client() -> Any:
    from llm.offline import OfflineChatClient

    return OfflineChatClient(delay=0)


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    from llm import create_chat_client
    from settings import model_settings

    results: dict[str, Any] = {"throughput": {}}
    offline = BenchServer(OFFLINE_VALUES, http=args.http)
    fake = FakeModelProcess(chunk_delay=0.0, max_seconds=900).start()
    openai_values = {"OPENAI_BASE_URL": fake.base_url, "OPENAI_API_KEY": API_KEY, "OPENAI_MODEL": MODEL}
    openai_server = BenchServer(openai_values, http=args.http)
    try:
        await asyncio.to_thread(offline.wait_ready)
        await asyncio.to_thread(openai_server.wait_ready)
        for kind in ("agent", "workflow"):
            print(f"throughput: {kind} ...", flush=True)
            results["throughput"][kind] = await throughput(kind, offline, offline_client(), args.rounds, args.seconds)
        print("throughput: openai ...", flush=True)
        client = create_chat_client(model_settings(openai_values))
        results["throughput"]["openai"] = await throughput("openai", openai_server, client, args.rounds, args.seconds)
    finally:
        offline.stop()
        openai_server.stop()
        fake.stop()
    if args.compare_http:
        print("server: h11 vs httptools ...", flush=True)
        results["server"] = await compare_http(args.rounds, args.seconds)
    print("concurrency ...", flush=True)
    results["concurrency"] = await concurrency(args.levels, args.concurrency_rounds)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer, shorter rounds (about a minute)")
    parser.add_argument("--plots", action="store_true", help="draw PNG plots into bench/results/")
    parser.add_argument("--http", default="auto", choices=("auto", "h11", "httptools"), help="uvicorn's HTTP parser")
    parser.add_argument("--compare-http", action="store_true", help="also h11 against httptools (full: always)")
    parser.add_argument("--rounds", type=int, help="throughput rounds (quick 5, full 11)")
    parser.add_argument("--seconds", type=float, help="seconds per variant per round (quick 0.3, full 1.0)")
    parser.add_argument("--concurrency-rounds", type=int, help="bursts per level (quick 1, full 3)")
    parser.add_argument("--levels", type=lambda s: tuple(int(x) for x in s.split(",")), default=LEVELS)
    parser.add_argument("--markdown", type=Path, metavar="FILE", help="print FILE's results as the README's table")
    args = parser.parse_args(argv)
    if args.markdown:
        print(markdown(json.loads(args.markdown.read_text())))
        return 0
    args.compare_http = args.compare_http or not args.quick
    args.rounds = args.rounds or (5 if args.quick else 11)
    args.seconds = args.seconds or (0.3 if args.quick else 1.0)
    args.concurrency_rounds = args.concurrency_rounds or (1 if args.quick else 3)
    started = time.perf_counter()
    results = asyncio.run(main_async(args))
    print("startup ...", flush=True)
    results["startup"] = startup()
    results["machine"] = machine()
    results["settings"] = {k: v for k, v in vars(args).items() if k != "plots"}
    results["duration_s"] = round(time.perf_counter() - started, 1)
    print_table(results)
    write_results("bench", results)
    (RESULTS_DIR / "latest.json").write_text(json.dumps(results, indent=2) + "\n")
    if args.plots:
        for path in plot(results):
            print(f"plot: {path.relative_to(ROOT)}")
    print(f"\n{markdown(results)}\n")
    print(f"wrote bench/results/latest.json in {results['duration_s']} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
