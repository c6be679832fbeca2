"""Runners in-process: shared agents, no per-request residue."""

from __future__ import annotations

import asyncio
import gc
from collections import Counter

from llm.offline import OfflineChatClient
from settings import model_settings
from streaming.events import Done, TextDelta
from streaming.pipeline import guard
from streaming.request import RunRequest
from streaming.runners import run_agent, run_workflow

SETTINGS = model_settings({})


async def run_both(client: OfflineChatClient, city: str) -> list:
    events = []
    for runner in (run_agent, run_workflow):
        events += [
            e
            async for e in guard(runner(RunRequest(f"Weather in {city}"), client, SETTINGS), deadline_s=10, run_id="t")
        ]
    return events


def live_objects() -> Counter[str]:
    gc.collect()
    return Counter(f"{type(o).__module__}.{type(o).__qualname__}" for o in gc.get_objects())


async def test_runs_leave_no_objects_behind() -> None:
    """Each request used to register new telemetry instruments (a new agent
    and tool per request), which OpenTelemetry's default provider keeps
    forever: about 3 KB per request. Nothing may grow with the run count."""
    client = OfflineChatClient(delay=0)
    for _ in range(3):  # warm-up: caches, the shared agents
        await run_both(client, "Oslo")
    runs = 30
    # A cache that fills once (the ABC caches isinstance() refills after an
    # earlier test, in any order, registered a class) grows in one window of
    # runs; a leak grows in every window.
    windows = []
    for window in range(3):
        before = live_objects()
        for i in range(runs):
            await run_both(client, f"City{window}-{i}")
        grown = {name: n - before[name] for name, n in live_objects().items() if n - before[name] >= runs}
        if not grown:
            return
        windows.append(grown)
    raise AssertionError(f"objects kept per run, in every window of {runs} runs: {windows}")


async def test_shared_agents_serve_concurrent_runs_independently() -> None:
    client = OfflineChatClient(delay=0.001)
    cities = ["Oslo", "Lima", "Cairo", "Perth", "Quito"]
    outcomes = await asyncio.gather(*(run_both(client, city) for city in cities))
    for city, events in zip(cities, outcomes, strict=True):
        assert sum(isinstance(e, Done) for e in events) == 2
        text = "".join(e.text for e in events if isinstance(e, TextDelta))
        assert city in text and not any(other in text for other in cities if other != city)
