"""Real weather end to end, over real loopback HTTP: the app on the local host, the model a fake
OpenAI server (tests/fake_openai.py), the weather a fake Open-Meteo (tests/fake_open_meteo.py).
Nothing leaves 127.0.0.1."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest

from tests.fake_open_meteo import FakeOpenMeteo
from tests.fake_openai import FakeOpenAI, text_response, tool_call_response
from tests.support import AppServer, stream_events
from tests.test_e2e_offline import assert_contract

KEY = "test-key-weather"


@pytest.fixture(scope="module")
def model() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(api_key=KEY) as server:
        yield server


@pytest.fixture(scope="module")
def weather() -> Iterator[FakeOpenMeteo]:
    with FakeOpenMeteo() as server:
        yield server


@pytest.fixture(autouse=True)
def _fresh(model: FakeOpenAI, weather: FakeOpenMeteo) -> Iterator[None]:
    weather.reset()
    with model.fresh():
        yield


def weather_values(weather: FakeOpenMeteo, **extra: str) -> dict[str, str]:
    """Open-Meteo at the fake; ``WEATHER_PROVIDER`` unset (``auto``), as a deployment has it."""
    return {
        "WEATHER_PROVIDER": "",
        "GEOCODING_API_BASE_URL": weather.geocoding_url,
        "WEATHER_API_BASE_URL": weather.weather_url,
        **extra,
    }


@pytest.fixture(scope="module")
def app(model: FakeOpenAI, weather: FakeOpenMeteo) -> Iterator[AppServer]:
    values = {"OPENAI_BASE_URL": model.openai_base_url, "OPENAI_API_KEY": KEY, "OPENAI_MODEL": "fake-model"}
    with AppServer({**values, **weather_values(weather, WEATHER_CACHE_SECONDS="0")}) as server:
        yield server


def ask(app: AppServer, message: str, path: str = "/api/agent/stream") -> list:
    with httpx.Client(base_url=app.url, timeout=30) as client:
        response, events = stream_events(client, path, json_body={"message": message})
    assert response.status_code == 200
    assert_contract(events)
    assert events[-1].event == "done", events[-1]
    return events


def tool_results(events: list) -> list[dict]:
    return [e.data for e in events if e.event == "tool_result"]


def tool_message_sent_back(model: FakeOpenAI) -> str:
    """What the model was told the tool returned (the second model call's tool message)."""
    (message,) = [m for m in model.requests[1].messages if m.get("role") == "tool"]
    return message["content"] if isinstance(message["content"], str) else json.dumps(message["content"])


def test_a_real_model_gets_open_meteo_weather(app: AppServer, model: FakeOpenAI, weather: FakeOpenMeteo) -> None:
    model.enqueue(
        tool_call_response([("get_weather", {"location": "Paris, FR"}, "call_paris")]),
        text_response("Paris: overcast, 7.3 °C."),
    )
    events = ask(app, "Weather in Paris?")
    (result,) = tool_results(events)
    assert result["is_error"] is False
    report = result["result"]
    assert (report["temperature_c"], report["country"]) == (7.3, "France")
    assert report["location"] == "Paris, Île-de-France, France" and report["source"].startswith("Open-Meteo")
    assert report["units"]["temperature_c"] == "°C" and report["conditions"] == "overcast"
    # The model got the same report to answer from.
    told = json.loads(tool_message_sent_back(model))
    assert (told["temperature_c"], told["country"]) == (7.3, "France")
    assert (weather.calls("search"), weather.calls("forecast")) == (1, 1)


def test_the_workflow_researcher_uses_it_too(app: AppServer, model: FakeOpenAI, weather: FakeOpenMeteo) -> None:
    model.enqueue(
        tool_call_response([("get_weather", {"location": "Portland, Maine"}, "call_pdx")]),
        text_response("- Portland, Maine: snow, -2.6 °C."),
        text_response("A cold poem."),
    )
    events = ask(app, "Research the weather in Portland, Maine and write a poem", "/api/workflow/stream")
    (result,) = tool_results(events)
    assert result["agent"] == "researcher"
    assert (result["result"]["temperature_c"], result["result"]["region"]) == (-2.6, "Maine")


@pytest.mark.parametrize(
    ("place", "fault", "reason"),
    [
        ("Atlantis", None, "No place named 'Atlantis' was found."),
        ("Oslo", ("forecast", "unavailable", 2), "The weather service (Open-Meteo) is unavailable right now"),
        ("Oslo", ("search", "rate_limited", 1), "The weather service (Open-Meteo) is rate limiting requests"),
        ("Oslo", ("forecast", "partial", 1), "sent incomplete or unreadable current conditions for Oslo, Norway"),
    ],
)
def test_a_failure_reaches_the_model_with_its_reason_and_the_run_still_ends_with_done(
    app: AppServer, model: FakeOpenAI, weather: FakeOpenMeteo, place: str, fault: tuple | None, reason: str
) -> None:
    if fault:
        endpoint, kind, times = fault
        weather.fail(endpoint, kind, times=times)
    model.enqueue(
        tool_call_response([("get_weather", {"location": place}, "call_1")]),
        text_response("Sorry, I could not get the weather."),
    )
    events = ask(app, f"Weather in {place}?")
    (result,) = tool_results(events)
    assert result["is_error"] is True
    assert reason in result["result"]
    # Not the framework's bare "Function failed.": the model is told why, so it can tell the user.
    assert reason in tool_message_sent_back(model)
    assert "127.0.0.1" not in json.dumps([e.data for e in events])


def test_the_offline_model_keeps_the_offline_weather(model: FakeOpenAI, weather: FakeOpenMeteo) -> None:
    """``auto`` with the offline model: sample data, and not one request to the weather service."""
    values = {"MODEL_PROVIDER": "offline", "OFFLINE_MODEL_DELAY_MS": "0", **weather_values(weather)}
    with AppServer(values) as offline:
        events = ask(offline, "Weather in Oslo?")
        (result,) = tool_results(events)
        assert result["result"]["source"] == "offline sample data"
        assert weather.requests == []

    # WEATHER_PROVIDER=open-meteo makes even the offline model use the real data.
    with AppServer({**values, "WEATHER_PROVIDER": "open-meteo"}) as forced:
        events = ask(forced, "Weather in Oslo?")
        (result,) = tool_results(events)
        assert (result["result"]["temperature_c"], result["result"]["country_code"]) == (-3.2, "NO")
        assert weather.calls("forecast") == 1
        # And it relays a failure's reason, as a real model would.
        events = ask(forced, "Weather in Atlantis?")
        (result,) = tool_results(events)
        text = "".join(e.data["text"] for e in events if e.event == "message")
        assert result["is_error"] and "No place named 'Atlantis' was found" in text


def test_a_bad_weather_setting_is_a_503_before_streaming(weather: FakeOpenMeteo) -> None:
    values = {"MODEL_PROVIDER": "offline", **weather_values(weather, WEATHER_PROVIDER="accuweather")}
    with AppServer(values) as bad, httpx.Client(base_url=bad.url, timeout=10) as client:
        response = client.post("/api/agent/stream", json={"message": "Weather in Oslo?"})
    assert response.status_code == 503
    error = response.json()["error"]
    assert error["code"] == "invalid_setting" and "WEATHER_PROVIDER" in error["message"]
    assert "accuweather" not in error["message"]
