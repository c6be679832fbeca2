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
        ("Hello", []),
        ("Compare Seattle and Portland", ["Seattle", "Portland"]),
        ("I am in Oslo.", ["Oslo"]),
        ("Weather in Paris'", ["Paris"]),
        ("In Paris it rains", ["Paris"]),
        ("what is the weather for tomorrow in paris", ["Paris"]),
        ("Frankfurt am Main or Stratford upon Avon", ["Frankfurt am Main", "Stratford upon Avon"]),
        ("weather in paris tonight", ["Paris"]),  # README: "the word after 'in'"
        ("the weather for today at home in oslo", ["Home", "Oslo"]),
        ("Oslo, Lima, Cairo, Perth, Quito and Tokyo", ["Oslo", "Lima", "Cairo", "Perth", "Quito"]),
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


# ------------------------------------------------------------------------------------------ the model's behaviour
# Through its public face (``get_response``), with tools declared the way an AG-UI front end's are
# (no function on the server): the calls come back as the model made them, nothing runs them.


def _declared(*names: str) -> list:
    from agent_framework import FunctionTool

    schema = {"type": "object", "properties": {}}
    return [
        FunctionTool(name=name, description=f"{name}, declared only", func=None, input_model=schema) for name in names
    ]


async def _respond(*turns, tools: tuple[str, ...] = (), delay: float = 0, **options):
    """The offline model's answer to ``turns`` (plain strings are user messages)."""
    from agent_framework import Message

    messages = [Message(role="user", contents=[t]) if isinstance(t, str) else t for t in turns]
    if tools:
        options["tools"] = _declared(*tools)
    return await OfflineChatClient(delay=delay).get_response(messages, options=options)


def _calls(response) -> list[tuple[str, dict]]:
    return [(c.name, c.parse_arguments()) for m in response.messages for c in m.contents if c.type == "function_call"]


async def test_it_calls_the_weather_tool_per_place_in_one_turn_with_distinct_call_ids() -> None:
    response = await _respond("Compare Seattle and Rio de Janeiro, please", tools=("get_weather",))
    assert _calls(response) == [
        ("get_weather", {"location": "Seattle"}),
        ("get_weather", {"location": "Rio de Janeiro"}),
    ]
    assert response.finish_reason == "tool_calls" and response.text == ""
    ids = [c.call_id for m in response.messages for c in m.contents if c.type == "function_call"]
    again = await _respond("Weather in Oslo?", tools=("get_weather",))
    ids += [c.call_id for m in again.messages for c in m.contents if c.type == "function_call"]
    assert len(set(ids)) == 3 and all(ids), "a call id is never reused, within a response or across them"
    usage = response.usage_details
    assert usage["input_token_count"] == 7 and usage["total_token_count"] == 7 + usage["output_token_count"] > 7


async def test_a_named_client_tool_is_called_with_the_json_object_after_its_name() -> None:
    """README: "The offline model calls one of your tools when the message names it, with the JSON
    object after the name as arguments"; the object is not read as places."""
    asked = 'What is the weather in Oslo? Then please show_notice  {"text": "Pack a coat"} and Lima too'
    response = await _respond(asked, tools=("get_weather", "show_notice"))
    assert _calls(response) == [
        ("get_weather", {"location": "Oslo"}),
        ("get_weather", {"location": "Lima"}),
        ("show_notice", {"text": "Pack a coat"}),
    ]
    response = await _respond('show_notice {"text": "Pack a coat"}', tools=("get_weather", "show_notice"))
    assert _calls(response) == [("show_notice", {"text": "Pack a coat"})]


@pytest.mark.parametrize(
    ("text", "calls"),
    [
        ("please show_notice", [("show_notice", {})]),
        ("show_notice for Oslo", [("get_weather", {"location": "Oslo"}), ("show_notice", {})]),
        ('show_notice {"text": ', [("show_notice", {})]),  # broken JSON: no arguments, still called
        ("show_notice [1, 2]", [("show_notice", {})]),
        ("show_notices and re-show_notice and show_notice_all", []),  # only the whole name counts
    ],
)
async def test_which_client_tool_mentions_count(text: str, calls: list) -> None:
    response = await _respond(text, tools=("show_notice",))
    assert _calls(response) == [c for c in calls if c[0] == "show_notice"]
    response = await _respond(text, tools=("get_weather", "show_notice"))
    if calls:
        assert _calls(response) == calls
    else:
        assert response.text.startswith("Which place would you like the weather for?")


async def test_with_only_client_tools_offered_places_are_not_looked_up() -> None:
    response = await _respond("Weather in Oslo?", tools=("show_notice",))
    assert _calls(response) == []
    assert response.text == "This is the offline demo model. You asked: Weather in Oslo?"


async def test_with_the_weather_tool_and_no_place_it_asks_which_place() -> None:
    response = await _respond("how is it outside?", tools=("get_weather", "show_notice"))
    assert response.text == "Which place would you like the weather for? Name a city, for example Seattle or Paris."
    assert response.finish_reason == "stop" and _calls(response) == []


def _call(call_id: str, name: str, arguments: dict):
    import json

    from agent_framework import Content

    return Content.from_function_call(call_id=call_id, name=name, arguments=json.dumps(arguments))


def _result(call_id: str, result, exception: str | None = None):
    from agent_framework import Content

    return Content.from_function_result(call_id=call_id, result=result, exception=exception)


async def test_once_the_results_are_back_it_answers_from_them() -> None:
    import json

    from agent_framework import Message

    oslo = {"location": "Oslo", "conditions": "windy", "temperature_c": 5, "wind_kph": 12}
    calls = Message(
        role="assistant",
        contents=[
            _call("a", "get_weather", {"location": "Oslo"}),
            _call("b", "get_weather", {"location": "Atlantis"}),
            _call("c", "show_notice", {"text": "Coat"}),
            _call("d", "get_weather", {}),
            _call("e", "show_notice", {}),
        ],
    )
    results = Message(
        role="tool",
        contents=[
            _result("a", json.dumps(oslo)),
            _result("b", "Error: Function failed. Exception: No place named 'Atlantis' was found.", "boom"),
            _result("c", {"shown": True}),
            _result("d", "Error: Function failed.", "boom"),
            _result("e", None, "the user dismissed it"),
            _result("z", "Error: Function failed. Exception: timed out", "boom"),  # a call this turn did not make
        ],
    )
    response = await _respond("Weather in Oslo and Atlantis", calls, results, tools=("get_weather", "show_notice"))
    assert _calls(response) == [], "the turn has its results: no new calls"
    assert response.text == (
        "Here is the current weather. Oslo: windy, 5 °C, wind 12 km/h. (Offline sample data, not a forecast.) "
        "I could not get the weather for Atlantis (No place named 'Atlantis' was found.); that place; "
        "one place (timed out). "
        'Your app\'s show_notice tool answered: {"shown": true} '
        "Your app's show_notice tool answered: the user dismissed it"
    )


async def test_a_client_tool_s_answer_alone_and_a_turn_with_nothing_to_say() -> None:
    from agent_framework import Message

    calls = Message(role="assistant", contents=[_call("c", "show_notice", {"text": "Coat"})])
    response = await _respond(
        "show_notice", calls, Message(role="tool", contents=[_result("c", "shown")]), tools=("show_notice",)
    )
    assert response.text == "Your app's show_notice tool answered: shown"
    # A result that is neither a report, a failure nor a client tool's answer.
    weather = Message(role="assistant", contents=[_call("w", "get_weather", {"location": "Oslo"})])
    odd = Message(role="tool", contents=[_result("w", "sunny")])
    response = await _respond("Weather in Oslo", weather, odd, tools=("get_weather", "show_notice"))
    assert response.text == "Done."


async def test_only_the_current_turn_s_results_count() -> None:
    """A follow-up question is a new turn: the last question's results do not answer it."""
    import json

    from agent_framework import Message

    oslo = {"location": "Oslo", "conditions": "windy", "temperature_c": 5, "wind_kph": 12}
    history = [
        "Weather in Oslo?",
        Message(role="assistant", contents=[_call("a", "get_weather", {"location": "Oslo"})]),
        Message(role="tool", contents=[_result("a", json.dumps(oslo))]),
        Message(role="assistant", contents=["Oslo: windy."]),
    ]
    response = await _respond(*history, "And in Lima?", tools=("get_weather",))
    assert _calls(response) == [("get_weather", {"location": "Lima"})]


async def test_without_tools_it_answers_everything_the_user_asked() -> None:
    """The workflow's writer sees the user's question and then a "continue" turn: it answers both."""
    from agent_framework import Message

    response = await _respond("Research Oslo", Message(role="assistant", contents=[""]), "continue")
    assert response.text == "This is the offline demo model. You asked: Research Oslo continue"
    response = await _respond(Message(role="system", contents=["Be brief."]))
    assert response.text == "This is the offline demo model. You asked: (nothing)"
    assert response.usage_details["input_token_count"] == 2, "every message's words are the prompt"


@pytest.mark.parametrize(
    ("limit", "text", "finish_reason"),
    [
        (3, "This is the", "length"),
        (1, "This", "length"),
        (9, "This is the offline demo model. You asked: one", "length"),
        (10, "This is the offline demo model. You asked: one word", "stop"),
        (11, "This is the offline demo model. You asked: one word", "stop"),
        (None, "This is the offline demo model. You asked: one word", "stop"),
    ],
)
async def test_it_honours_the_output_token_limit(limit: int | None, text: str, finish_reason: str) -> None:
    """README: MAX_OUTPUT_TOKENS -- "the offline model honours it too": a word is a token, and an
    answer cut there ends with ``length``, as a real model's does."""
    response = await _respond("one word", **({} if limit is None else {"max_tokens": limit}))
    assert (response.text, response.finish_reason) == (text, finish_reason)
    assert response.usage_details["output_token_count"] == len(text.split())


async def test_the_limit_reaches_it_from_max_output_tokens(monkeypatch: pytest.MonkeyPatch) -> None:
    from settings import model_settings
    from streaming.events import Done, TextDelta
    from streaming.request import RunRequest
    from streaming.runners import run_agent

    monkeypatch.setenv("MAX_OUTPUT_TOKENS", "4")
    events = [
        e async for e in run_agent(RunRequest("Weather in Oslo?"), OfflineChatClient(delay=0), model_settings({}))
    ]
    answer = "".join(e.text for e in events if isinstance(e, TextDelta))
    assert answer == "Here is the current" and events[-1].finish_reason == "length"
    assert isinstance(events[-1], Done)


async def test_it_streams_word_by_word_at_its_pace(monkeypatch: pytest.MonkeyPatch) -> None:
    """README: "it streams its answer word by word (OFFLINE_MODEL_DELAY_MS apart)"; a tool call
    takes one pause. The pauses are recorded, not timed."""
    import asyncio

    from agent_framework import Message

    from llm import create_chat_client
    from settings import model_settings

    pauses: list[float] = []
    real_sleep = asyncio.sleep

    async def recording_sleep(delay: float, *args) -> None:
        pauses.append(delay)
        await real_sleep(0)

    client = create_chat_client(model_settings({"MODEL_PROVIDER": "offline", "OFFLINE_MODEL_DELAY_MS": "250"}))
    monkeypatch.setattr("llm.offline.asyncio.sleep", recording_sleep)
    updates = [u async for u in client.get_response([Message(role="user", contents=["two  words"])], stream=True)]
    texts = [u.text for u in updates if u.text]
    assert texts == ["This", " is", " the", " offline", " demo", " model.", " You", " asked:", " two", "  words"]
    assert pauses == [0.25] * len(texts)
    pauses.clear()
    response = await client.get_response(
        [Message(role="user", contents=["Weather in Oslo"])], options={"tools": _declared("get_weather")}
    )
    assert _calls(response) == [("get_weather", {"location": "Oslo"})] and pauses == [0.25]
    assert OfflineChatClient(delay=-1).delay == 0, "a negative pace is no pace"


async def test_any_named_client_tool_is_called_not_only_the_first_offered() -> None:
    response = await _respond("open_map please", tools=("get_weather", "show_notice", "open_map"))
    assert _calls(response) == [("open_map", {})]


async def test_the_arguments_however_far_after_the_name_are_not_read_as_places() -> None:
    response = await _respond('show_notice     {"text": "Go to Oslo"}', tools=("get_weather", "show_notice"))
    assert _calls(response) == [("show_notice", {"text": "Go to Oslo"})]


async def test_an_empty_answer_a_nameless_call_and_a_failure_without_a_reason() -> None:
    from agent_framework import Message

    calls = Message(
        role="assistant",
        contents=[
            _call("n", "show_notice", {}),
            _call("w", "get_weather", {"location": "Oslo"}),
            _call("x", "", {}),
        ],
    )
    results = Message(role="tool", contents=[_result("n", ""), _result("w", None, "boom"), _result("x", "hidden")])
    response = await _respond("Oslo", calls, results, tools=("get_weather", "show_notice"))
    assert response.text == (
        "Here is the current weather.  (Offline sample data, not a forecast.) "
        "I could not get the weather for Oslo. Your app's show_notice tool answered:"
    )


async def test_each_response_has_its_own_id_and_speaks_as_the_assistant() -> None:
    first, second = await _respond("one"), await _respond("Weather in Oslo", tools=("get_weather",))
    assert first.response_id.startswith("offline-") and second.response_id.startswith("offline-")
    assert first.response_id != second.response_id
    assert [m.role for m in first.messages + second.messages] == ["assistant", "assistant"]
    from agent_framework import Message

    stream = OfflineChatClient(delay=0).get_response([Message(role="user", contents=["hi"])], stream=True)
    updates = [u async for u in stream]
    assert any(c.type == "usage" for c in updates[-1].contents)
    assert len({u.response_id for u in updates}) == 1 and updates[0].response_id.startswith("offline-"), (
        "every update of a response, its usage too, carries the response's id"
    )


def test_the_poem_for_three_places_and_for_one_without_wind() -> None:
    assert OfflineChatClient._write(
        "a poem", _tool_turn({"location": "Lima"}, {"location": "Cairo"}, {"location": "Oslo"})
    ) == (
        "In Lima it is quiet, ? degrees in the air;\n"
        "in Cairo, Oslo the sky has its own affair;\n"
        "the wind keeps time at its own pace,\n"
        "and the day goes on with care."
    )
    assert OfflineChatClient._write("a poem", _tool_turn({"location": "Lima", "temperature_c": 20})).split("\n")[1] == (
        "the wind goes by at ? km/h, light as a prayer;"
    )


def test_a_place_starting_or_ending_with_x_keeps_its_letters() -> None:
    assert find_places("Weather in Xiamen and Halifax or XX") == ["Xiamen", "Halifax", "XX"]


async def test_with_no_user_message_it_asks_rather_than_reading_other_turns() -> None:
    from agent_framework import Message

    system = Message(role="system", contents=["You report the weather in Oslo."])
    response = await _respond(system, tools=("get_weather",))
    assert _calls(response) == []
    assert response.text.startswith("Which place would you like the weather for?")


async def test_with_no_user_message_the_whole_conversation_is_the_turn() -> None:
    from agent_framework import Message

    calls = Message(role="assistant", contents=[_call("w", "get_weather", {"location": "Oslo"})])
    failed = Message(role="tool", contents=[_result("w", "Error: Function failed.", "boom")])
    response = await _respond(calls, failed, tools=("get_weather",))
    assert response.text == "Here is the current weather.  (Offline sample data, not a forecast.) " + (
        "I could not get the weather for Oslo."
    )


async def test_tools_other_than_functions_and_the_weather_tool_s_own_name_are_not_client_tools() -> None:
    """A provider's tool spec (a mapping, no name) is offered too; and naming ``get_weather``
    in the message is not a second, argument-less call."""
    from agent_framework import Message

    hosted = {"type": "web_search"}
    response = await OfflineChatClient(delay=0).get_response(
        [Message(role="user", contents=["please use get_weather for Oslo"])],
        options={"tools": [*_declared("get_weather", "show_notice"), hosted]},
    )
    assert _calls(response) == [("get_weather", {"location": "Oslo"})]


async def test_an_assistant_remark_in_the_turn_is_not_an_answer() -> None:
    from agent_framework import Message

    remark = Message(role="assistant", contents=["Let me look that up."])
    response = await _respond("Weather in Oslo?", remark, tools=("get_weather",))
    assert _calls(response) == [("get_weather", {"location": "Oslo"})]


async def test_call_ids_stay_distinct_with_several_client_tools_and_each_call_counts_eight_tokens() -> None:
    from agent_framework import Message

    tools = _declared("get_weather", "show_notice", "open_map")
    stream = OfflineChatClient(delay=0).get_response(
        [Message(role="user", contents=["Oslo: show_notice and open_map"])], stream=True, options={"tools": tools}
    )
    # The framework's function layer repeats the calls it hands back in an update of its own, with no id.
    updates = [u async for u in stream if u.finish_reason or any(c.type == "usage" for c in u.contents)]
    calls = {c.call_id: c.name for u in updates for c in u.contents if c.type == "function_call"}
    assert sorted(calls.values()) == ["get_weather", "open_map", "show_notice"], "three calls, three ids"
    assert len({u.response_id for u in updates}) == 1 and updates[0].response_id.startswith("offline-")
    usage = next(c.usage_details for u in updates for c in u.contents if c.type == "usage")
    assert usage["output_token_count"] == 3 * 8, "a call counts as eight tokens of output"


async def test_the_answer_from_several_reports_names_each() -> None:
    import json

    from agent_framework import Message

    oslo = {"location": "Oslo", "conditions": "windy", "temperature_c": 5, "wind_kph": 12}
    lima = {"location": "Lima", "conditions": "sunny", "temperature_c": 20, "wind_kph": 3}
    calls = Message(role="assistant", contents=[_call("a", "get_weather", {}), _call("b", "get_weather", {})])
    results = Message(role="tool", contents=[_result("a", json.dumps(oslo)), _result("b", json.dumps(lima))])
    response = await _respond("Oslo and Lima", calls, results, tools=("get_weather",))
    assert response.text == (
        "Here is the current weather. Oslo: windy, 5 °C, wind 12 km/h. Lima: sunny, 20 °C, wind 3 km/h. "
        "(Offline sample data, not a forecast.)"
    )
