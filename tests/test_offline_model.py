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


async def test_the_tool_gives_a_provider_the_time_the_readme_states(monkeypatch: pytest.MonkeyPatch) -> None:
    """README: a tool that "takes over N s" fails; the call gets N seconds, no less, no more."""
    import asyncio
    import re

    from tests.support import README

    stated = re.search(r"the tool fails or takes over (\d+(?:\.\d+)?) s", README.read_text(encoding="utf-8"))
    assert stated, "README's failure table names the tool's time limit"
    granted: list[float] = []
    real_timeout = asyncio.timeout

    def recording_timeout(delay: float | None):
        granted.append(delay)
        return real_timeout(delay)

    monkeypatch.setattr(asyncio, "timeout", recording_timeout)
    await make_weather_tool(OfflineWeatherProvider()).invoke(arguments={"location": "Oslo"})
    assert granted == [float(stated[1])]


@pytest.mark.parametrize("places", [["Oslo"], ["Oslo", "Lima"], ["Oslo", "Lima", "Cairo", "Perth", "Quito"]])
async def test_the_writer_writes_a_four_line_poem(places: list[str]) -> None:
    """README: the writer writes "a four-line poem if you asked for one", whatever the number of places."""
    import json

    from agent_framework import Content, Message

    reports = [(await OfflineWeatherProvider().current(p)).as_dict() for p in places]
    messages = [
        Message(role="user", contents=[f"Research the weather in {' and '.join(places)} and write a poem"]),
        Message(
            role="tool",
            contents=[
                Content.from_function_result(call_id=f"c{i}", result=json.dumps(r)) for i, r in enumerate(reports)
            ],
        ),
    ]
    poem = OfflineChatClient._write("write a poem", messages)
    lines = poem.split("\n")
    assert len(lines) == 4 and all(line.strip() for line in lines), poem
    for report in reports:
        assert report["location"] in poem
    assert f"{reports[0]['temperature_c']} degrees" in lines[0] and reports[0]["conditions"] in lines[0]


@pytest.mark.parametrize(
    ("city", "report"),
    [
        ("Oslo", ("windy", 5, 12, 60)),
        ("Tokyo", ("snow showers", -5, 22, 36)),
        ("Tromsø", ("rain", 31, 4, 65)),
        ("Nairobi", ("fog", 4, 4, 92)),
        ("Perth", ("light rain", 20, 26, 94)),
        ("Hanoi", ("windy", 24, 23, 72)),
    ],
)
async def test_the_same_city_always_gets_the_same_weather(city: str, report: tuple) -> None:
    """The README promises stable sample data per city: these values are the promise, kept across versions."""
    found = await OfflineWeatherProvider().current(f"  {city.lower()}  ")
    assert (found.conditions, found.temperature_c, found.wind_kph, found.humidity_pct) == report
    assert found.as_dict() == {
        "location": city.lower(),
        "conditions": report[0],
        "temperature_c": report[1],
        "wind_kph": report[2],
        "humidity_pct": report[3],
        "source": "offline sample data",
    }


def _tool_turn(*reports: dict) -> list:
    import json

    from agent_framework import Content, Message

    results = [Content.from_function_result(call_id=f"c{i}", result=json.dumps(r)) for i, r in enumerate(reports)]
    return [Message(role="tool", contents=results)]


def test_the_writer_s_brief_says_what_to_wear() -> None:
    cold = {"location": "Oslo", "conditions": "windy", "temperature_c": 5, "wind_kph": 12}
    warm = {"location": "Lima", "conditions": "sunny", "temperature_c": 12, "wind_kph": 3}
    assert OfflineChatClient._write("a report", _tool_turn(cold, warm)) == (
        "Weather brief. Oslo: windy, 5 °C, wind 12 km/h; Lima: sunny, 12 °C, wind 3 km/h. "
        "Pack a layer and check again later: conditions change."
    )
    assert OfflineChatClient._write("a report", _tool_turn(warm)) == (
        "Weather brief. Lima: sunny, 12 °C, wind 3 km/h. Light clothing will do and check again later: "
        "conditions change."
    )
    assert OfflineChatClient._write("a report", _tool_turn({"location": "Nowhere"})) == (
        "Weather brief. Nowhere: unknown, ? °C, wind ? km/h. Light clothing will do and check again later: "
        "conditions change."
    )


def test_the_writer_without_weather_reports() -> None:
    from agent_framework import Message

    findings = [Message(role="assistant", contents=["First."]), Message(role="assistant", contents=["Found it."])]
    assert OfflineChatClient._write("anything", findings) == "In short: Found it."
    assert OfflineChatClient._write("  hello  ", []) == "This is the offline demo model. You asked: hello"
    assert OfflineChatClient._write("   ", []) == "This is the offline demo model. You asked: (nothing)"


async def test_usage_counts_the_prompt_and_the_answer() -> None:
    from agent_framework import Message

    client = OfflineChatClient(delay=0)
    response = await client.get_response([Message(role="user", contents=["three word prompt"])])
    assert response.text == "This is the offline demo model. You asked: three word prompt"
    usage = response.usage_details
    # a token per word of the prompt, per streamed piece of the answer (11 words)
    assert (usage["input_token_count"], usage["output_token_count"], usage["total_token_count"]) == (3, 11, 14)
    assert response.model == "offline-demo"


def test_the_poem_word_for_word() -> None:
    oslo = {"location": "Oslo", "conditions": "windy", "temperature_c": 5, "wind_kph": 12}
    assert OfflineChatClient._write("a poem", _tool_turn(oslo)) == (
        "In Oslo it is windy, 5 degrees in the air;\n"
        "the wind goes by at 12 km/h, light as a prayer;\n"
        "the wind keeps time at its own pace,\n"
        "and the day goes on with care."
    )
    assert OfflineChatClient._write("a POEM", _tool_turn({"location": "Lima"}, {"location": "Cairo"})) == (
        "In Lima it is quiet, ? degrees in the air;\n"
        "in Cairo the sky has its own affair;\n"
        "the wind keeps time at its own pace,\n"
        "and the day goes on with care."
    )


async def test_the_workflow_with_a_failing_provider_still_writes() -> None:
    from settings import model_settings
    from streaming.events import AgentCompleted, Done, ToolResult
    from streaming.request import RunRequest
    from streaming.runners import run_workflow

    events = [
        e
        async for e in run_workflow(
            RunRequest("Research Atlantis"), OfflineChatClient(delay=0), model_settings({}), provider=BrokenProvider()
        )
    ]
    results = [e for e in events if isinstance(e, ToolResult)]
    assert [(r.agent, r.is_error) for r in results] == [("researcher", True)]
    assert [e.agent for e in events if isinstance(e, AgentCompleted)] == ["researcher", "writer"]
    assert isinstance(events[-1], Done) and events[-1].provider == "offline"


def test_the_writer_uses_only_readable_successful_weather_reports() -> None:
    import json

    from agent_framework import Content, Message

    oslo = {"location": "Oslo", "conditions": "windy", "temperature_c": 5, "wind_kph": 12}
    lima = {"location": "Lima", "conditions": "sunny", "temperature_c": 20, "wind_kph": 3}
    failed = Content.from_function_result(call_id="f", result=json.dumps(lima), exception="boom")
    messages = [
        Message(role="assistant", contents=["Looking it up."]),
        Message(
            role="tool",
            contents=[
                Content.from_function_result(call_id="a", result="not json"),
                Content.from_function_result(call_id="b", result='["location"]'),
                failed,
                Content.from_function_result(call_id="c", result=oslo),  # an object, not its JSON
            ],
        ),
    ]
    assert OfflineChatClient._write("a report", messages) == (
        "Weather brief. Oslo: windy, 5 °C, wind 12 km/h. Pack a layer and check again later: conditions change."
    )


def test_the_writer_joins_an_answer_s_pieces_with_spaces() -> None:
    from agent_framework import Content, Message

    pieces = Message(role="assistant", contents=[Content.from_text("Sunny"), Content.from_text(""), "and warm."])
    assert OfflineChatClient._write("anything", [pieces]) == "In short: Sunny and warm."


async def test_a_place_s_name_is_tidied_not_changed() -> None:
    report = await OfflineWeatherProvider().current("  New \t York ")
    assert report.location == "New York"
    assert report == await OfflineWeatherProvider().current("New York")


async def test_cancelling_a_workflow_inside_a_slow_tool_cancels_the_tool() -> None:
    """A run cancelled (the client left, the deadline passed) inside the
    researcher's tool call cancels the call, not just the stream."""
    import asyncio

    from settings import model_settings
    from streaming.request import RunRequest
    from streaming.runners import run_workflow

    started, cancelled = asyncio.Event(), asyncio.Event()

    class Stuck:
        name = "stuck"

        async def current(self, location: str):
            started.set()
            try:
                await asyncio.sleep(30)
            except asyncio.CancelledError:
                cancelled.set()
                raise

    async def consume() -> None:
        async for _ in run_workflow(
            RunRequest("Research Oslo"), OfflineChatClient(delay=0), model_settings({}), provider=Stuck()
        ):
            pass

    task = asyncio.create_task(consume())
    await asyncio.wait_for(started.wait(), 10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.wait_for(cancelled.wait(), 2)
