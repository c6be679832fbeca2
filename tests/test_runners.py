"""Runners in-process: shared agents, no per-request residue."""

from __future__ import annotations

import asyncio
import gc
import json
from collections import Counter
from dataclasses import replace
from typing import Any

import pytest

from agents import WEATHER_AGENT_NAME
from llm.offline import OfflineChatClient
from settings import StreamSettings, model_settings
from streaming import runners
from streaming.events import AgentCompleted, AgentStarted, Done, Error, TextDelta, ToolCall, ToolResult
from streaming.pipeline import guard
from streaming.request import RunRequest
from streaming.runners import run_agent, run_workflow
from tests.support import refusing_port
from tools import OfflineWeatherProvider

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


@pytest.mark.parametrize("runner", [run_agent, run_workflow])
@pytest.mark.parametrize("own_provider", [False, True], ids=["shared agents", "a provider of its own"])
async def test_every_model_call_is_held_to_max_output_tokens(
    monkeypatch: pytest.MonkeyPatch, runner: Any, own_provider: bool
) -> None:
    """The offline model honours the limit as a hosted one does (a word a
    token): each answer cut there, the run's ``done`` says ``length``."""
    monkeypatch.setenv("MAX_OUTPUT_TOKENS", "2")
    extra = {"provider": OfflineWeatherProvider()} if own_provider else {}
    request = RunRequest("Weather in Oslo and Lima?")
    events = [e async for e in runner(request, OfflineChatClient(delay=0), SETTINGS, **extra)]
    assert isinstance(events[-1], Done) and events[-1].finish_reason == "length"
    monkeypatch.setenv("MAX_OUTPUT_TOKENS", "4096")
    events = [e async for e in runner(request, OfflineChatClient(delay=0), SETTINGS, **extra)]
    assert isinstance(events[-1], Done) and events[-1].finish_reason == "stop"


@pytest.mark.parametrize("runner", [run_agent, run_workflow])
async def test_a_run_stops_at_max_run_output_chars(monkeypatch: pytest.MonkeyPatch, runner: Any) -> None:
    monkeypatch.setenv("MAX_RUN_OUTPUT_CHARS", "5")
    run = runner(RunRequest("Weather in Oslo?"), OfflineChatClient(delay=0), SETTINGS)
    events = [e async for e in guard(run, deadline_s=10, run_id="t")]
    assert isinstance(events[-1], Error) and events[-1].code == "output_too_long"
    assert sum(len(e.text) for e in events if isinstance(e, TextDelta)) <= 5


async def test_the_agent_run_is_framed_by_its_agent_and_ends_naming_the_model() -> None:
    """``done`` names the model the service said answered, else the one the
    settings asked for (here the model names none)."""
    named = replace(SETTINGS, model="offline-named")
    client = OfflineChatClient(delay=0)
    client.model_id = ""  # a service that does not say which model answered
    events = [e async for e in run_agent(RunRequest("Weather in Oslo?"), client, named)]
    assert (events[0], events[-2]) == (AgentStarted(WEATHER_AGENT_NAME), AgentCompleted(WEATHER_AGENT_NAME))
    assert (events[-1].provider, events[-1].model) == ("offline", "offline-named")  # type: ignore[attr-defined]
    workflow = [e async for e in run_workflow(RunRequest("Weather in Oslo?"), client, named)]
    assert (workflow[-1].provider, workflow[-1].model) == ("offline", "offline-named")  # type: ignore[attr-defined]


async def test_shared_agents_use_the_weather_provider_the_settings_choose(monkeypatch: pytest.MonkeyPatch) -> None:
    """``WEATHER_PROVIDER`` is read per request: Open-Meteo here, at an
    address where nothing answers, so its tool call fails (the offline data
    would have answered)."""
    with refusing_port() as port:
        monkeypatch.setenv("WEATHER_PROVIDER", "open-meteo")
        monkeypatch.setenv("GEOCODING_API_BASE_URL", f"http://127.0.0.1:{port}/v1")
        monkeypatch.setenv("WEATHER_API_BASE_URL", f"http://127.0.0.1:{port}/v1")
        events = [e async for e in run_agent(RunRequest("Weather in Oslo?"), OfflineChatClient(delay=0), SETTINGS)]
    assert [r.is_error for r in events if isinstance(r, ToolResult)] == [True]


async def test_an_ag_ui_requests_client_tools_are_offered_to_the_agent() -> None:
    from streaming.agui import parse_run_input
    from tests.agui_support import run_input, user

    notice = {"name": "show_notice", "description": "Shows a notice.", "parameters": {"type": "object"}}
    body = run_input([user('Please show_notice {"text": "Hello"}')], tools=[notice])
    request = parse_run_input(json.dumps(body).encode(), "application/json", StreamSettings())
    events = [e async for e in run_agent(request, OfflineChatClient(delay=0), SETTINGS)]
    assert [(e.tool, e.arguments) for e in events if isinstance(e, ToolCall)] == [("show_notice", {"text": "Hello"})]
    assert isinstance(events[-1], Done)


@pytest.mark.parametrize("runner", [run_agent, run_workflow])
async def test_leaving_a_run_closes_its_model_call(runner: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Leaving the loop early does not close the model's HTTP call by
    itself: the runner closes the framework stream it opened."""
    from agents.weather import INSTRUCTIONS
    from llm import create_chat_client
    from tests.fake_openai import FakeOpenAI, text_response

    with FakeOpenAI(api_key="k") as fake:
        env = {"OPENAI_BASE_URL": fake.openai_base_url, "OPENAI_API_KEY": "k", "OPENAI_MODEL": "m"}
        settings = model_settings({**env, "MODEL_MAX_RETRIES": "0"})
        fake.enqueue(text_response(" ".join(f"w{i}" for i in range(400)), delay=0.02))
        closed: list[Any] = []
        close_stream = runners.close_stream

        async def spy(stream: Any) -> None:
            closed.append(stream)
            await close_stream(stream)

        monkeypatch.setattr(runners, "close_stream", spy)
        run = runner(RunRequest("Tell me about Oslo"), create_chat_client(settings), settings)
        async for event in run:
            if isinstance(event, TextDelta):
                break
        await run.aclose()
        assert await fake.wait_for_no_open_streams_async(5.0) and fake.cancelled_streams == 1
        assert len(closed) == 1 and callable(closed[0].close), "the stream it opened, closed by the runner"
        if runner is run_agent:
            assert fake.requests[0].json["messages"][0] == {"role": "system", "content": INSTRUCTIONS}


async def test_close_stream_closes_swallows_a_failure_and_gives_up_a_hang(monkeypatch: pytest.MonkeyPatch) -> None:
    closed: list[str] = []

    class Stream:
        def __init__(self, how: str) -> None:
            self.how = how

        async def close(self) -> None:
            if self.how == "hangs":
                try:
                    await asyncio.sleep(30)
                except asyncio.CancelledError:
                    closed.append("given up")
                    raise
            closed.append(self.how)
            if self.how == "fails":
                raise RuntimeError("the connection was already gone")

    monkeypatch.setattr(runners, "CLOSE_TIMEOUT_S", 0.2)
    for how in ("closes", "fails", "hangs"):
        await asyncio.wait_for(runners.close_stream(Stream(how)), 5)
        assert how == "hangs" or closed[-1] == how, "closed by now"
    await asyncio.sleep(0.1)
    assert closed == ["closes", "fails", "given up"], "a close that hangs is given up, not left running"
