"""``python -m bench.load [--streams 300] [--duration-limit 120]``: a burst of
concurrent streams against the app, every event read and checked.

Set-up: the fake OpenAI-compatible model (``bench.fake_model``, pacing its
chunks ``--chunk-delay`` apart) runs in a process of its own and the app runs
as ``python -m devhost`` (``tests.support.AppServer``) pointed at it; this
process only drives the load. The app's CPU and memory are then its own
(psutil on its pid), and neither the model nor the driver share its GIL.

All ``--streams`` streams (half ``/api/agent/stream``, half
``/api/workflow/stream``) are opened at once. Reported: errors, streams that
ended with ``done``, time to first byte and to first text (p50/p95/p99),
wall time, the app's peak RSS and CPU; then, once every stream has ended and
after ``--settle`` seconds, whether the app's open file descriptors and
sockets came back to their baseline and the fake has no open stream left.

Baseline and "after" are taken the same way: wait ``--settle`` seconds (more
than the fake's 5 s keep-alive, so idle upstream connections have been
closed by the fake), run one probe stream (which lets the app's HTTP pool
drop the connections the fake closed), close the client, wait a second,
count. The count before the probe is reported too.

Exit status: 0 when every stream ended with ``done`` and no error, and the
resources came back within ``--fd-slack``; 1 otherwise; 2 on the overall
time limit. Results: ``bench/results/load-<timestamp>.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from typing import Any

from bench.common import (
    MODEL_CALLS,
    FakeModelProcess,
    Sampler,
    StreamResult,
    add_shared_args,
    distribution,
    fmt,
    log_problems,
    machine,
    make_client,
    print_verdict,
    probe_and_count,
    resources,
    run_stream,
    run_with_hard_limit,
    start_app,
    warm_up,
    write_results,
)
from tests.support import AppServer


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.load", description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, default=300, help="concurrent streams (half agent, half workflow)")
    parser.add_argument("--duration-limit", type=float, default=120.0, help="hard limit for the burst, seconds")
    add_shared_args(parser)
    args = parser.parse_args(argv)
    if not 1 <= args.streams <= 2000:
        parser.error("--streams must be between 1 and 2000")
    if not 5 <= args.duration_limit <= 1800:
        parser.error("--duration-limit must be between 5 and 1800 seconds")
    return args


async def burst(app: AppServer, args: argparse.Namespace) -> tuple[list[StreamResult], float]:
    n = args.streams
    kinds = ["agent" if i % 2 == 0 else "workflow" for i in range(n)]
    async with make_client(app.url, n + 8, args.read_timeout) as client:
        t0 = time.perf_counter()
        tasks = [asyncio.create_task(run_stream(client, kind, i, t0)) for i, kind in enumerate(kinds)]
        try:
            results = await asyncio.wait_for(asyncio.gather(*tasks), timeout=args.duration_limit)
        except TimeoutError:
            results = []
            for task, kind in zip(tasks, kinds, strict=True):
                if task.done() and not task.cancelled():
                    results.append(task.result())
                else:
                    task.cancel()
                    results.append(StreamResult(kind=kind, started=0.0, error="unfinished at --duration-limit"))
            await asyncio.gather(*tasks, return_exceptions=True)
        wall = time.perf_counter() - t0
    return list(results), wall


async def run(args: argparse.Namespace) -> int:
    fake = FakeModelProcess(chunk_delay=args.chunk_delay, max_seconds=args.duration_limit + 300).start()
    app: AppServer | None = None
    try:
        app = start_app(fake, log_level=args.log_level, extra_env=args.app_env)
        assert app.process is not None
        pid = app.process.pid
        if not await warm_up(app):
            return 1
        baseline = await probe_and_count(app, fake, args.settle)
        fake_before = await fake.stats_async()

        print(
            f"burst: {args.streams} concurrent streams (chunk delay {args.chunk_delay * 1000:.0f} ms) ...", flush=True
        )
        with Sampler({"app": pid, "fake": fake.pid, "driver": os.getpid()}) as sampler:
            results, wall = await burst(app, args)
        end_state = resources(pid, app_port=app.port, fake_port=fake.port)
        fake_after_burst = await fake.wait_no_open_streams(args.settle)
        after = await probe_and_count(app, fake, args.settle)
        fake_after = await fake.stats_async()
        app_log_errors = log_problems(app)
        return report(
            args, results, wall, sampler, baseline, end_state, after, fake_before, fake_after_burst, fake_after,
            app_log_errors,
        )  # fmt: skip
    finally:
        if app is not None:
            app.close()
        fake.stop()


def report(
    args: argparse.Namespace,
    results: list[StreamResult],
    wall: float,
    sampler: Sampler,
    baseline: dict[str, Any],
    end_state: dict[str, Any],
    after: dict[str, Any],
    fake_before: dict[str, Any],
    fake_after_burst: dict[str, Any],
    fake_after: dict[str, Any],
    app_log_errors: list[str],
) -> int:
    ok = [r for r in results if r.ok]
    errors = [r for r in results if r.error]
    done = [r for r in results if r.terminal == "done"]
    events = sum(r.events for r in results)
    app = sampler.summary("app")
    base, now = baseline["after_probe"], after["after_probe"]
    expected_calls = sum(MODEL_CALLS[r.kind] for r in results) + MODEL_CALLS["agent"]  # + the "after" probe
    model_requests = fake_after["requests"] - fake_before["requests"]

    checks = {
        "no stream errored": not errors,
        "every stream ended with done": len(done) == len(results),
        "fake: no open stream after the burst": fake_after_burst["open_streams"] == 0,
        "fake: no stream cancelled by the app": fake_after["cancelled_streams"] == fake_before["cancelled_streams"],
        "app fds back to baseline": now["fds"] <= base["fds"] + args.fd_slack,
        "app sockets back to baseline": now["sockets"] <= base["sockets"] + args.fd_slack,
        "app inbound connections closed": now["inbound"] == 0,
        "probe after the burst ok": after["probe_ok"],
    }
    by_kind = {}
    for kind in ("agent", "workflow"):
        rows = [r for r in results if r.kind == kind]
        by_kind[kind] = {
            "streams": len(rows),
            "ok": sum(r.ok for r in rows),
            "ttfb_ms": distribution([r.ttfb for r in rows if r.ttfb is not None]),
            "ttft_ms": distribution([r.ttft for r in rows if r.ttft is not None]),
            "total_ms": distribution([r.total for r in rows if r.total is not None]),
            "events_per_stream": round(sum(r.events for r in rows) / len(rows), 1) if rows else None,
        }
    summary = {
        "streams": len(results),
        "ok": len(ok),
        "errors": len(errors),
        "ended_with_done": len(done),
        "error_samples": sorted({r.error or "" for r in errors})[:10],
        "wall_s": round(wall, 2),
        "events": events,
        "events_per_s": round(events / wall, 1) if wall else None,
        "ttfb_ms": distribution([r.ttfb for r in results if r.ttfb is not None]),
        "ttft_ms": distribution([r.ttft for r in results if r.ttft is not None]),
        "total_ms": distribution([r.total for r in results if r.total is not None]),
        "by_kind": by_kind,
        "app": {**app, "cpu_us_per_event": round(1e6 * app["cpu_seconds"] / events, 1) if events else None},
        "fake": sampler.summary("fake"),
        "driver": sampler.summary("driver"),
        "machine_cpu": sampler.others(),
        "model_requests": model_requests,
        "model_requests_expected": expected_calls,
        "resources": {"baseline": baseline, "at_end_of_burst": end_state, "after": after},
        "fake_stats": {"before": fake_before, "after_burst": fake_after_burst, "after": fake_after},
        "app_log_warnings_and_errors": {"count": len(app_log_errors), "samples": app_log_errors[:10]},
        "checks": checks,
        "passed": all(checks.values()),
    }
    path = write_results(
        "load",
        {
            "command": " ".join(["python -m bench.load", *sys.argv[1:]]),
            "config": vars(args),
            "machine": machine(),
            "summary": summary,
            "streams": [r.as_row() for r in results],
        },
    )
    print_table(summary)
    print(f"results: {path}")
    return 0 if summary["passed"] else 1


def print_table(s: dict[str, Any]) -> None:
    app, fake, driver = s["app"], s["fake"], s["driver"]
    base = s["resources"]["baseline"]["after_probe"]
    end = s["resources"]["at_end_of_burst"]
    raw = s["resources"]["after"]["before_probe"]
    now = s["resources"]["after"]["after_probe"]
    rows = [
        ("streams (ok / errors / ended with done)",
         f"{s['streams']} ({s['ok']} / {s['errors']} / {s['ended_with_done']})"),
        ("wall time", fmt(s["wall_s"], " s")),
        ("events (total, per s)", f"{s['events']:,} ({fmt(s['events_per_s'])}/s)"),
        ("time to first byte p50 / p95 / p99", _pcts(s["ttfb_ms"])),
        ("time to first text p50 / p95 / p99", _pcts(s["ttft_ms"])),
        ("stream duration p50 / p95 / p99", _pcts(s["total_ms"])),
        ("  agent: first text / duration p95", f"{fmt(s['by_kind']['agent']['ttft_ms']['p95'])} / "
                                                f"{fmt(s['by_kind']['agent']['total_ms']['p95'])} ms"),
        ("  workflow: first text / duration p95", f"{fmt(s['by_kind']['workflow']['ttft_ms']['p95'])} / "
                                                   f"{fmt(s['by_kind']['workflow']['total_ms']['p95'])} ms"),
        ("app peak RSS", fmt(app["peak_rss_mib"], " MiB")),
        ("app CPU peak / avg (100% = 1 core)", f"{fmt(app['peak_cpu_pct'], '%')} / {fmt(app['avg_cpu_pct'], '%')}"),
        ("app CPU per event", fmt(app["cpu_us_per_event"], " µs")),
        ("fake / driver / other processes CPU avg",
         f"{fmt(fake['avg_cpu_pct'], '%')} / {fmt(driver['avg_cpu_pct'], '%')} / "
         f"{fmt(s['machine_cpu']['others_cpu_pct'], '%')}"),
        ("model requests (expected)", f"{s['model_requests']} ({s['model_requests_expected']})"),
        ("app fds: baseline / peak / end / settled / after probe",
         f"{base['fds']} / {app['peak_fds']} / {end['fds']} / {raw['fds']} / {now['fds']}"),
        ("app sockets: baseline / end / settled / after probe",
         f"{base['sockets']} / {end['sockets']} / {raw['sockets']} / {now['sockets']}"),
        ("  upstream (to the fake): baseline / settled / after probe",
         f"{base['upstream']} / {raw['upstream']} {raw['upstream_by_state']} / {now['upstream']}"),
        ("fake open streams after (cancelled)",
         f"{s['fake_stats']['after']['open_streams']} ({s['fake_stats']['after']['cancelled_streams']})"),
        ("app log warnings/errors", str(s["app_log_warnings_and_errors"]["count"])),
    ]  # fmt: skip
    width = max(len(name) for name, _ in rows)
    print()
    for name, value in rows:
        print(f"  {name:<{width}}  {value}")
    for error in s["error_samples"]:
        print(f"  ! {error}")
    print_verdict(s)


def _pcts(d: dict[str, Any]) -> str:
    return f"{fmt(d['p50'])} / {fmt(d['p95'])} / {fmt(d['p99'])} ms"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return run_with_hard_limit("bench.load", run(args), int(args.duration_limit + 3 * args.settle + 120))


if __name__ == "__main__":
    raise SystemExit(main())
