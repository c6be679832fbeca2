"""The offline model: deterministic, tool-using, streaming."""

from __future__ import annotations

import pytest
from agent_framework import Agent

from llm.offline import OfflineChatClient, find_places
from tools import OfflineWeatherProvider, WeatherError, make_weather_tool


@pytest.mark.parametrize(
    ("text", "places"),
    [
        ("What's the weather like in Seattle and Portland?", ["Seattle", "Portland"]),
        ("weather in paris", ["Paris"]),
        ("Tell me about New York and Rio de Janeiro", ["New York", "Rio de Janeiro"]),
        ("Is it raining in São Paulo?", ["São Paulo"]),
        ("Seattle, Seattle and seattle", ["Seattle"]),
        ("How are you?", []),
        ("", []),
    ],
)
def test_find_places(text, places) -> None:
    assert find_places(text) == places


async def test_weather_is_stable_per_city_and_plausible() -> None:
    provider = OfflineWeatherProvider()
    first, again, other = (
        await provider.current("Oslo"),
        await provider.current("  oslo "),
        await provider.current("Lima"),
    )
    assert (first.conditions, first.temperature_c) == (again.conditions, again.temperature_c)
    assert first != other
    for city in ("Oslo", "Lima", "Seattle", "Cairo", "Reykjavik"):
        report = await provider.current(city)
        assert -8 <= report.temperature_c <= 31 and 3 <= report.wind_kph < 50 and report.source == "offline sample data"


async def test_agent_calls_the_tool_once_per_place_and_answers_from_results() -> None:
    agent = Agent(client=OfflineChatClient(delay=0), name="w", tools=[make_weather_tool(OfflineWeatherProvider())])
    calls, texts = [], []
    async with agent.run("Weather in Cairo and Lima?", stream=True) as stream:
        async for update in stream:
            calls += [c.parse_arguments() for c in update.contents if c.type == "function_call"]
            texts += [c.text for c in update.contents if c.type == "text"]
    assert calls == [{"location": "Cairo"}, {"location": "Lima"}]
    cairo = await OfflineWeatherProvider().current("Cairo")
    assert f"Cairo: {cairo.conditions}, {cairo.temperature_c} °C" in "".join(texts)
    assert len(texts) > 10


async def test_without_a_place_it_asks() -> None:
    agent = Agent(client=OfflineChatClient(delay=0), name="w", tools=[make_weather_tool(OfflineWeatherProvider())])
    response = await agent.run("How are you?")
    assert "Which place" in response.text


async def test_tool_rejects_an_empty_location() -> None:
    weather = make_weather_tool(OfflineWeatherProvider())
    with pytest.raises(Exception, match="at least 1 character"):
        await weather.invoke(arguments={"location": ""})


class BrokenProvider:
    name = "broken"

    async def current(self, location: str):
        if location == "Atlantis":
            raise ConnectionError("weather service down")
        return await OfflineWeatherProvider().current(location)


class SlowProvider:
    name = "slow"

    async def current(self, location: str):
        import asyncio

        await asyncio.sleep(5)


async def test_a_failing_tool_is_reported_and_the_agent_still_answers() -> None:
    from settings import model_settings
    from streaming.events import TextDelta, ToolResult
    from streaming.request import RunRequest
    from streaming.runners import run_agent

    events = [
        e
        async for e in run_agent(
            RunRequest("Weather in Atlantis and Oslo?"),
            OfflineChatClient(delay=0),
            model_settings({}),
            provider=BrokenProvider(),
        )
    ]
    results = {e.result["location"] if not e.is_error else "failed": e for e in events if isinstance(e, ToolResult)}
    assert set(results) == {"Oslo", "failed"}
    assert results["failed"].is_error and "weather service down" not in str(results["failed"].result)
    text = "".join(e.text for e in events if isinstance(e, TextDelta))
    assert "Oslo:" in text and "could not get the weather for Atlantis" in text


async def test_a_slow_tool_times_out_as_a_tool_error() -> None:
    weather = make_weather_tool(SlowProvider(), timeout_s=0.05)
    # A message the model can relay, not a bare TimeoutError ("Function failed.").
    with pytest.raises(WeatherError, match=r"^The weather lookup for 'Oslo' took longer than 0.05 seconds"):
        await weather.invoke(arguments={"location": "Oslo"})
