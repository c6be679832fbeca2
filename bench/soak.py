"""``python -m bench.soak [--minutes 10] [--concurrency 20]``: a steady number
of concurrent streams for minutes, watching the app's memory.

The fake model in a process of its own, the
app (``python -m devhost``) pointed at it, this process driving. Each of
``--concurrency`` workers runs one stream after another (agent and workflow
in turn), every event read and checked, until the time is up; then the
streams in flight finish.

Every ``--sample-every`` seconds (5) the app's RSS, open fds and sockets are
sampled. Reported: the RSS series (start, after warm-up, end, max), its
least-squares slope after warm-up (KiB per minute), streams completed and
errored, per-minute throughput and latency; and, after a settle and one
probe stream, fds and sockets against the baseline.

Threshold (stated, and in the JSON): the run fails when any stream errored
or did not end with ``done``, when fds/sockets did not come back, or when
the least-squares line through the RSS samples after warm-up rises faster
than ``--max-slope-kib-min`` (1024 KiB/min) or by more than
``--max-growth-mib`` over the post-warm-up time (8 MiB). The slope is only
judged when at least 3 minutes follow the warm-up: the app's RSS climbs for
about its first minute under load, so ``--minutes 1`` checks errors and
fds, not leaks (``tests/test_runners.py`` finds a per-request leak in
seconds). Warm-up: ``--warmup`` seconds, by default 20% of the run, at
least 15 s and at most 120 s. (For scale, on the 2-core machine the README describes: a clean app
settles near 150 KiB/min, the per-request leak it found grows 2.3 MiB/min at
the default concurrency.)

Exit status: 0 pass, 1 fail, 2 hard time limit. JSON:
``bench/results/soak-<timestamp>.json``. ``--minutes 1`` is a quick check.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import time
from collections import Counter
from typing import Any

import psutil

from bench.common import (
    MODEL_CALLS,
    FakeModelProcess,
    StreamResult,
    add_shared_args,
    distribution,
    fmt,
    log_problems,
    machine,
    make_client,
    print_verdict,
    probe_and_count,
    run_stream,
    run_with_hard_limit,
    start_app,
    warm_up,
    write_results,
)
from tests.support import AppServer

SLOPE_MIN_WINDOW_MIN = 3  # the slope is only judged over at least this many minutes


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="how long to keep the load on")
    parser.add_argument("--concurrency", type=int, default=20, help="streams in flight at all times")
    add_shared_args(parser)
    parser.add_argument("--sample-every", type=float, default=5.0, help="RSS sampling interval, seconds")
    parser.add_argument("--warmup", type=float, default=None, help="seconds excluded from the trend (default: 20%%)")
    parser.add_argument("--max-growth-mib", type=float, default=8.0, help="allowed RSS growth after warm-up, MiB")
    parser.add_argument(
        "--max-slope-kib-min", type=float, default=1024.0, help="allowed RSS slope after warm-up, KiB per minute"
    )
    args = parser.parse_args(argv)
    if not 0.25 <= args.minutes <= 120:
        parser.error("--minutes must be between 0.25 and 120")
    if not 1 <= args.concurrency <= 1000:
        parser.error("--concurrency must be between 1 and 1000")
    if not 1 <= args.sample_every <= 60:
        parser.error("--sample-every must be between 1 and 60 seconds")
    duration = args.minutes * 60
    if args.warmup is None:
        args.warmup = min(120.0, max(15.0, 0.2 * duration))
    if args.warmup >= duration:
        parser.error("--warmup must be shorter than the run")
    return args


def least_squares(points: list[tuple[float, float]]) -> tuple[float, float] | None:
    """Slope and intercept of the least-squares line through ``points``."""
    n = len(points)
    if n < 2:
        return None
    mean_x = sum(x for x, _ in points) / n
    mean_y = sum(y for _, y in points) / n
    sxx = sum((x - mean_x) ** 2 for x, _ in points)
    if sxx == 0:
        return None
    slope = sum((x - mean_x) * (y - mean_y) for x, y in points) / sxx
    return slope, mean_y - slope * mean_x


class Soak:
    def __init__(self, args: argparse.Namespace, app: AppServer, fake: FakeModelProcess) -> None:
        assert app.process is not None
        self.args = args
        self.app = app
        self.fake = fake
        self.proc = psutil.Process(app.process.pid)
        self.fake_proc = psutil.Process(fake.pid)
        self.driver_proc = psutil.Process()
        self.results: list[StreamResult] = []
        self.samples: list[dict[str, Any]] = []
        self.t0 = 0.0

    async def worker(self, client: Any, index: int, stop_at: float) -> None:
        n = index
        while time.perf_counter() < stop_at:
            kind = "agent" if n % 2 == 0 else "workflow"
            self.results.append(await run_stream(client, kind, n, self.t0))
            n += self.args.concurrency

    def sample(self) -> dict[str, Any]:
        with self.proc.oneshot():
            rss = self.proc.memory_info().rss
            fds = self.proc.num_fds()
            cpu = self.proc.cpu_percent(None)
        return {
            "t_s": round(time.perf_counter() - self.t0, 1),
            "rss_kib": rss // 1024,
            "fds": fds,
            "sockets": len(self.proc.net_connections(kind="inet")),
            "cpu_pct": round(cpu, 1),
            # Since the previous sample; 100% = one core (machine: all cores).
            "fake_cpu_pct": round(self.fake_proc.cpu_percent(None), 1),
            "driver_cpu_pct": round(self.driver_proc.cpu_percent(None), 1),
            "machine_cpu_pct": round(psutil.cpu_percent(None) * (psutil.cpu_count() or 1), 1),
            "completed": len(self.results),
            "errors": sum(1 for r in self.results if not r.ok),
        }

    async def sampler(self, stop: asyncio.Event) -> None:
        for proc in (self.proc, self.fake_proc, self.driver_proc):
            proc.cpu_percent(None)
        psutil.cpu_percent(None)
        while True:
            self.samples.append(self.sample())
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), self.args.sample_every)
                return

    async def run(self) -> float:
        duration = self.args.minutes * 60
        async with make_client(self.app.url, self.args.concurrency + 8, self.args.read_timeout) as client:
            self.t0 = time.perf_counter()
            stop_at = self.t0 + duration
            stop = asyncio.Event()
            sampler = asyncio.create_task(self.sampler(stop))
            workers = [asyncio.create_task(self.worker(client, i, stop_at)) for i in range(self.args.concurrency)]
            # In-flight streams get read timeout + 30 s to finish after the end.
            _, pending = await asyncio.wait(workers, timeout=duration + self.args.read_timeout + 30)
            for task in pending:
                task.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
            wall = time.perf_counter() - self.t0
            stop.set()
            await sampler
            self.samples.append(self.sample())
            if pending:
                self.results.extend(
                    StreamResult(kind="?", started=0.0, error="worker cancelled at the time limit") for _ in pending
                )
        return wall


def _avg(samples: list[dict[str, Any]], key: str) -> float:
    values = [s[key] for s in samples[1:] if key in s]  # the first sample has no interval behind it
    return round(sum(values) / len(values), 1) if values else 0.0


def per_minute(results: list[StreamResult]) -> list[dict[str, Any]]:
    buckets: dict[int, list[StreamResult]] = {}
    for r in results:
        buckets.setdefault(int(r.started // 60), []).append(r)
    rows = []
    for minute in sorted(buckets):
        rs = buckets[minute]
        rows.append(
            {
                "minute": minute + 1,
                "started": len(rs),
                "errors": sum(1 for r in rs if not r.ok),
                "ttft_ms": distribution([r.ttft for r in rs if r.ttft is not None]),
                "total_ms": distribution([r.total for r in rs if r.total is not None]),
            }
        )
    return rows


async def run(args: argparse.Namespace) -> int:
    duration = args.minutes * 60
    fake = FakeModelProcess(chunk_delay=args.chunk_delay, max_seconds=duration + args.read_timeout + 600).start()
    app: AppServer | None = None
    try:
        app = start_app(fake, log_level=args.log_level, extra_env=args.app_env)
        if not await warm_up(app):
            return 1
        baseline = await probe_and_count(app, fake, args.settle)
        fake_before = await fake.stats_async()
        print(
            f"soak: {args.concurrency} concurrent streams for {args.minutes:g} min "
            f"(warm-up {args.warmup:g} s, sampling every {args.sample_every:g} s) ...",
            flush=True,
        )
        soak = Soak(args, app, fake)
        wall = await soak.run()
        fake_after_load = await fake.wait_no_open_streams(args.settle)
        after = await probe_and_count(app, fake, args.settle)
        fake_after = await fake.stats_async()
        problems = log_problems(app)
        return report(args, soak, wall, baseline, after, fake_before, fake_after_load, fake_after, problems)
    finally:
        if app is not None:
            app.close()
        fake.stop()


def report(
    args: argparse.Namespace,
    soak: Soak,
    wall: float,
    baseline: dict[str, Any],
    after: dict[str, Any],
    fake_before: dict[str, Any],
    fake_after_load: dict[str, Any],
    fake_after: dict[str, Any],
    problems: list[str],
) -> int:
    results, samples = soak.results, soak.samples
    errors = [r for r in results if not r.ok]
    post = [(s["t_s"] / 60, s["rss_kib"]) for s in samples if s["t_s"] >= args.warmup]
    fit = least_squares(post)
    slope = fit[0] if fit else None  # KiB per minute
    window_min = (post[-1][0] - post[0][0]) if len(post) > 1 else 0.0
    growth_mib = slope * window_min / 1024 if slope is not None else None
    at_warmup = post[0][1] if post else None
    completed_after_warmup = sum(1 for r in results if r.started >= args.warmup)
    per_min_rate = completed_after_warmup / window_min if window_min else None
    base, now = baseline["after_probe"], after["after_probe"]
    # A slope over a short window measures the warm-up, not a leak: the app's
    # RSS still climbs for about a minute at the default load.
    slope_check = f"RSS slope after warm-up <= {args.max_slope_kib_min:g} KiB/min"
    if window_min >= SLOPE_MIN_WINDOW_MIN:
        slope_ok = slope is not None and slope <= args.max_slope_kib_min
    else:
        slope_check += f" (skipped: under {SLOPE_MIN_WINDOW_MIN} min after warm-up)"
        slope_ok = True
    expected_calls = sum(MODEL_CALLS.get(r.kind, 0) for r in results) + MODEL_CALLS["agent"]
    checks = {
        "no stream errored": not errors,
        f"RSS growth after warm-up <= {args.max_growth_mib:g} MiB": growth_mib is not None
        and growth_mib <= args.max_growth_mib,
        slope_check: slope_ok,
        "app fds back to baseline": now["fds"] <= base["fds"] + args.fd_slack,
        "app sockets back to baseline": now["sockets"] <= base["sockets"] + args.fd_slack,
        "fake: no open stream after the load": fake_after_load["open_streams"] == 0,
        "fake: no stream cancelled by the app": fake_after["cancelled_streams"] == fake_before["cancelled_streams"],
        "probe after the load ok": after["probe_ok"],
    }
    rss = [s["rss_kib"] for s in samples]
    summary = {
        "minutes": args.minutes,
        "concurrency": args.concurrency,
        "wall_s": round(wall, 1),
        "completed": len(results),
        "ok": len(results) - len(errors),
        "errors": len(errors),
        "error_kinds": dict(Counter((r.error or "")[:120] for r in errors).most_common(10)),
        "streams_per_s": round(len(results) / wall, 2) if wall else None,
        "events": sum(r.events for r in results),
        "ttft_ms": distribution([r.ttft for r in results if r.ttft is not None]),
        "total_ms": distribution([r.total for r in results if r.total is not None]),
        "rss_mib": {
            "start": round(rss[0] / 1024, 1) if rss else None,
            "after_warmup": round(at_warmup / 1024, 1) if at_warmup is not None else None,
            "end": round(rss[-1] / 1024, 1) if rss else None,
            "max": round(max(rss) / 1024, 1) if rss else None,
        },
        "warmup_s": args.warmup,
        "slope_kib_per_min": round(slope, 1) if slope is not None else None,
        "growth_after_warmup_mib": round(growth_mib, 2) if growth_mib is not None else None,
        "bytes_per_stream_from_slope": round(slope * 1024 / per_min_rate, 1) if slope and per_min_rate else None,
        "threshold": (
            f"after warm-up, least-squares RSS slope <= {args.max_slope_kib_min:g} KiB/min "
            f"and fitted growth (slope x duration) <= {args.max_growth_mib:g} MiB"
        ),
        "app_cpu_pct_avg": _avg(samples, "cpu_pct"),
        "fake_cpu_pct_avg": _avg(samples, "fake_cpu_pct"),
        "driver_cpu_pct_avg": _avg(samples, "driver_cpu_pct"),
        "others_cpu_pct_avg": round(
            _avg(samples, "machine_cpu_pct")
            - _avg(samples, "cpu_pct")
            - _avg(samples, "fake_cpu_pct")
            - _avg(samples, "driver_cpu_pct"),
            1,
        ),
        "model_requests": fake_after["requests"] - fake_before["requests"],
        "model_requests_expected": expected_calls,
        "resources": {"baseline": baseline, "after": after},
        "fake_stats": {"before": fake_before, "after_load": fake_after_load, "after": fake_after},
        "app_log_warnings_and_errors": {"count": len(problems), "samples": problems[:10]},
        "checks": checks,
        "passed": all(checks.values()),
    }
    path = write_results(
        "soak",
        {
            "command": " ".join(["python -m bench.soak", *sys.argv[1:]]),
            "config": vars(args),
            "machine": machine(),
            "summary": summary,
            "per_minute": per_minute(results),
            "samples": samples,
        },
    )
    print_table(summary, samples)
    print(f"results: {path}")
    return 0 if summary["passed"] else 1


def print_table(s: dict[str, Any], samples: list[dict[str, Any]]) -> None:
    r = s["rss_mib"]
    base = s["resources"]["baseline"]["after_probe"]
    now = s["resources"]["after"]["after_probe"]
    rows = [
        ("duration / concurrency", f"{s['wall_s']} s / {s['concurrency']}"),
        ("streams completed (ok / errors)", f"{s['completed']} ({s['ok']} / {s['errors']})"),
        ("streams per s", fmt(s["streams_per_s"])),
        ("time to first text p50 / p95 / p99", f"{fmt(s['ttft_ms']['p50'])} / {fmt(s['ttft_ms']['p95'])} / "
                                                f"{fmt(s['ttft_ms']['p99'])} ms"),
        ("stream duration p50 / p95 / p99", f"{fmt(s['total_ms']['p50'])} / {fmt(s['total_ms']['p95'])} / "
                                             f"{fmt(s['total_ms']['p99'])} ms"),
        ("CPU avg: app / fake / driver / other processes", f"{fmt(s['app_cpu_pct_avg'], '%')} / "
                                                            f"{fmt(s['fake_cpu_pct_avg'], '%')} / "
                                                            f"{fmt(s['driver_cpu_pct_avg'], '%')} / "
                                                            f"{fmt(s['others_cpu_pct_avg'], '%')}"),
        ("RSS start / after warm-up / end / max", f"{fmt(r['start'])} / {fmt(r['after_warmup'])} / "
                                                   f"{fmt(r['end'])} / {fmt(r['max'])} MiB"),
        (f"RSS slope after warm-up ({s['warmup_s']:g} s)", fmt(s["slope_kib_per_min"], " KiB/min")),
        ("fitted growth after warm-up", fmt(s["growth_after_warmup_mib"], " MiB")),
        ("  per stream (slope / rate)", fmt(s["bytes_per_stream_from_slope"], " B")),
        ("model requests (expected)", f"{s['model_requests']} ({s['model_requests_expected']})"),
        ("app fds: baseline / after", f"{base['fds']} / {now['fds']}"),
        ("app sockets: baseline / after", f"{base['sockets']} / {now['sockets']}"),
        ("app log warnings/errors", str(s["app_log_warnings_and_errors"]["count"])),
    ]  # fmt: skip
    width = max(len(name) for name, _ in rows)
    print()
    series = ", ".join(f"{x['t_s']:.0f}s:{x['rss_kib'] / 1024:.1f}" for x in samples[:: max(1, len(samples) // 12)])
    print(f"  RSS MiB over time: {series}")
    for name, value in rows:
        print(f"  {name:<{width}}  {value}")
    for kind, count in s["error_kinds"].items():
        print(f"  ! {count} x {kind}")
    print_verdict(s)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return run_with_hard_limit(
        "bench.soak", run(args), int(args.minutes * 60 + args.read_timeout + 3 * args.settle + 180)
    )


if __name__ == "__main__":
    raise SystemExit(main())
