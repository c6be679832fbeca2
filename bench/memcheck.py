"""``python -m bench.memcheck [--runs 200]``: does a run leave memory behind?
In-process, no HTTP, about 20 s.

Runs ``run_agent`` and ``run_workflow`` (through ``guard``) over
``OfflineChatClient(delay=0)`` ``--runs`` times each after a warm-up, and
reports what is still alive afterwards: live objects by type (``gc``); then
``--traced`` more runs under ``tracemalloc`` give the allocations still
alive, with their tracebacks.
A quick stand-in for ``bench.soak`` when hunting a per-request leak: the
soak says *that* RSS grows, this says *what* grows.

Exit status 1 when any object type grew by at least one instance per run
(something is kept for every request), else 0. JSON:
``bench/results/memcheck-<timestamp>.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import sys
import time
import tracemalloc
from collections import Counter
from typing import Any

from bench.common import machine, write_results
from llm.offline import OfflineChatClient
from settings import ModelSettings
from streaming.pipeline import guard
from streaming.request import RunRequest
from streaming.runners import run_agent, run_workflow

SETTINGS = ModelSettings(provider="offline", model="offline-demo")
OWN_FILES = ("memcheck.py", "tracemalloc.py")  # this check's own allocations are not the app's


def live_types() -> Counter[str]:
    gc.collect()
    return Counter(f"{type(o).__module__}.{type(o).__qualname__}" for o in gc.get_objects())


def where_allocated(type_names: list[str]) -> dict[str, list[str]]:
    """For each type, the allocation traceback of one live instance created while tracing."""
    wanted = set(type_names)
    found: dict[str, list[str]] = {}
    for obj in gc.get_objects():
        name = f"{type(obj).__module__}.{type(obj).__qualname__}"
        if name in wanted and name not in found:
            traceback = tracemalloc.get_object_traceback(obj)
            if traceback is not None and not any(f.filename.endswith(OWN_FILES) for f in traceback):
                found[name] = [str(frame) for frame in traceback][-8:]
    return found


async def runs(client: OfflineChatClient, n: int) -> None:
    for _ in range(n):
        agent = run_agent(RunRequest("What is the weather in Seattle?"), client, SETTINGS)
        async for _event in guard(agent, deadline_s=60, run_id="memcheck"):
            pass
        workflow = run_workflow(RunRequest("Research the weather in Oslo and write a short brief"), client, SETTINGS)
        async for _event in guard(workflow, deadline_s=60, run_id="memcheck"):
            pass


async def check(n: int, warmup: int, traced: int) -> dict[str, Any]:
    client = OfflineChatClient(delay=0)
    await runs(client, warmup)
    # Live objects by type, over n runs (fast: no tracing).
    before = live_types()
    start = time.perf_counter()
    await runs(client, n)
    elapsed = time.perf_counter() - start
    after = live_types()
    grown = {k: after[k] - before[k] for k in after if after[k] - before[k] >= n // 4}
    # Where the surviving memory was allocated, over fewer runs (tracing is slow).
    tracemalloc.start(12)
    snapshot0 = tracemalloc.take_snapshot()
    await runs(client, traced)
    gc.collect()
    snapshot1 = tracemalloc.take_snapshot()
    origins = where_allocated(list(grown)[:6])
    tracemalloc.stop()
    stats = snapshot1.compare_to(snapshot0, "traceback")
    net = sum(s.size_diff for s in stats)
    top = [
        {
            "kib": round(s.size_diff / 1024, 1),
            "blocks": s.count_diff,
            "traceback": [str(f) for f in s.traceback][-8:],
        }
        for s in stats[:5]
    ]
    return {
        "runs": n,
        "elapsed_s": round(elapsed, 1),
        "objects_grown": dict(sorted(grown.items(), key=lambda kv: -kv[1])),
        "objects_per_run": {k: round(v / n, 2) for k, v in sorted(grown.items(), key=lambda kv: -kv[1])},
        "traced_runs": traced,
        "tracemalloc_net_kib": round(net / 1024, 1),
        "bytes_per_run": round(net / traced),
        "top_allocations": top,
        "grown_types_allocated_at": origins,
        "env": {k: v for k, v in os.environ.items() if k.startswith(("OTEL_", "ENABLE_INSTRUMENTATION"))},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.memcheck", description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=200, help="agent + workflow runs counted")
    parser.add_argument("--traced", type=int, default=20, help="runs traced with tracemalloc (slow)")
    parser.add_argument("--warmup", type=int, default=30, help="runs before measuring")
    args = parser.parse_args(argv)
    if not 10 <= args.runs <= 5000 or not 1 <= args.traced <= 500 or not 0 <= args.warmup <= 1000:
        parser.error("--runs must be 10..5000, --traced 1..500 and --warmup 0..1000")
    result = asyncio.run(check(args.runs, args.warmup, args.traced))
    leaking = {k: v for k, v in result["objects_per_run"].items() if v >= 1}
    print(f"\n  {args.runs} agent + {args.runs} workflow runs in {result['elapsed_s']} s (after {args.warmup} warm-up)")
    print(
        f"  still allocated after {args.traced} more traced pairs: {result['tracemalloc_net_kib']} KiB, "
        f"{result['bytes_per_run']} B per pair"
    )
    print("  live objects grown (per agent+workflow pair):")
    for name, per_run in list(result["objects_per_run"].items())[:10]:
        print(f"    {per_run:>7.2f}  {name}")
    if not result["objects_per_run"]:
        print("    none")
    for name, frames in result["grown_types_allocated_at"].items():
        print(f"  a live {name} was allocated at (innermost last):")
        for frame in frames[-6:]:
            print(f"      {frame}")
    if not result["grown_types_allocated_at"]:
        print("  top allocations still alive:")
        for row in result["top_allocations"][:3]:
            print(f"    {row['kib']} KiB in {row['blocks']} blocks, from:")
            for frame in row["traceback"][-4:]:
                print(f"      {frame}")
    path = write_results(
        "memcheck",
        {"command": " ".join(["python -m bench.memcheck", *sys.argv[1:]]), "machine": machine(), **result},
    )
    print(f"  {'LEAK: ' + ', '.join(leaking) if leaking else 'no per-run growth'}")
    print(f"  results: {path}")
    return 1 if leaking else 0


if __name__ == "__main__":
    raise SystemExit(main())
