"""The Open-Meteo provider against tests/fake_open_meteo.py over real loopback HTTP: the report it
builds, place hints, the cache, and every failure as the message the model gets."""

from __future__ import annotations

import asyncio
import dataclasses
import socket
from collections.abc import Iterator

import pytest

from settings import SettingsError, WeatherSettings, weather_settings
from tests.fake_open_meteo import FakeOpenMeteo
from tools import OfflineWeatherProvider, WeatherError, weather_provider
from tools.cache import TTLCache
from tools.open_meteo import SOURCE, OpenMeteoProvider, parse_conditions, split_hint
from tools.weather import lookup
from tools.wmo import compass, describe


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeOpenMeteo]:
    with FakeOpenMeteo(hang_s=5) as server:
        yield server


@pytest.fixture(autouse=True)
def _fresh(fake: FakeOpenMeteo) -> None:
    fake.reset()


def provider_for(fake: FakeOpenMeteo, **options: float) -> OpenMeteoProvider:
    return OpenMeteoProvider(geocoding_url=fake.geocoding_url, weather_url=fake.weather_url, **options)


async def test_report_names_the_place_and_states_the_weather_with_its_units(fake: FakeOpenMeteo) -> None:
    report = (await provider_for(fake).current("Paris")).as_dict()
    assert report == {
        "location": "Paris, Île-de-France, France",
        "region": "Île-de-France",
        "country": "France",
        "country_code": "FR",
        "latitude": 48.85341,
        "longitude": 2.3488,
        "observed_at": "2026-11-29T19:45",
        "timezone": "Europe/Paris",
        "conditions": "overcast",
        "temperature_c": 7.3,
        "feels_like_c": 4.1,
        "humidity_pct": 81,
        "wind_kph": 14.2,
        "wind_direction": "SW",
        "units": {"temperature_c": "°C", "feels_like_c": "°C", "humidity_pct": "%", "wind_kph": "km/h"},
        # The most relevant Paris won; the others are named so the model can say which one it used.
        "other_matches": ["Paris, Texas, United States", "Paris, Tennessee, United States"],
        "source": SOURCE,
    }
    search, forecast = fake.requests
    assert search.endpoint == "search"
    assert search.params == {"name": "Paris", "count": "10", "language": "en", "format": "json"}
    assert forecast.endpoint == "forecast"
    assert (float(forecast.params["latitude"]), float(forecast.params["longitude"])) == (48.85341, 2.3488)
    assert forecast.params["timezone"] == "auto", "the observation time is local to the place"
    assert set(forecast.params["current"].split(",")) >= {
        "temperature_2m",
        "apparent_temperature",
        "relative_humidity_2m",
        "weather_code",
        "wind_speed_10m",
    }


@pytest.mark.parametrize(
    ("asked", "location", "temperature"),
    [
        ("Portland", "Portland, Oregon, United States", 9.8),
        ("Portland, Maine", "Portland, Maine, United States", -2.6),
        ("Portland, ME", "Portland, Maine, United States", -2.6),
        ("Portland, Cumberland", "Portland, Maine, United States", -2.6),  # the county
        ("portland,  maine , usa", "Portland, Maine, United States", -2.6),
        ("Paris, FR", "Paris, Île-de-France, France", 7.3),
        ("Paris, France", "Paris, Île-de-France, France", 7.3),
        ("Paris, Texas", "Paris, Texas, United States", 18.4),
        ("Paris, US", "Paris, Texas, United States", 18.4),
        ("Paris, TN", "Paris, Tennessee, United States", 15.0),
    ],
)
async def test_hints_pick_among_places_with_the_same_name(
    fake: FakeOpenMeteo, asked: str, location: str, temperature: float
) -> None:
    report = await provider_for(fake).current(asked)
    assert (report.location, report.temperature_c) == (location, temperature)
    if "," in asked:
        assert report.other_matches == (), "a hinted place is not ambiguous"
    assert fake.requests[0].params["name"] == split_hint(asked)[0], "only the name is searched for"


async def test_a_hint_no_place_matches_names_the_places_that_exist(fake: FakeOpenMeteo) -> None:
    with pytest.raises(WeatherError) as caught:
        await provider_for(fake).current("Portland, Narnia")
    assert str(caught.value) == (
        "No place named 'Portland' was found in 'Narnia'. "
        "Places with that name: Portland, Oregon, United States; Portland, Maine, United States."
    )
    assert fake.calls("forecast") == 0


@pytest.mark.parametrize("asked", ["Atlantis", "Xy", ", FR"])
async def test_unknown_place(fake: FakeOpenMeteo, asked: str) -> None:
    with pytest.raises(WeatherError) as caught:
        await provider_for(fake).current(asked)
    message = str(caught.value)
    assert "No place named" in message or "does not name a place" in message
    assert fake.calls("forecast") == 0


async def test_asking_twice_costs_one_call_of_each(fake: FakeOpenMeteo) -> None:
    provider = provider_for(fake)
    first = await provider.current("Paris")
    again = await provider.current("paris")
    hinted = await provider.current("Paris, FR")  # same search, same place
    assert first == again and hinted.temperature_c == first.temperature_c
    assert (fake.calls("search"), fake.calls("forecast")) == (1, 1)
    await provider.current("Paris, Texas")  # another place: its own conditions
    assert (fake.calls("search"), fake.calls("forecast")) == (1, 2)


async def test_cache_expires_and_can_be_turned_off(fake: FakeOpenMeteo) -> None:
    now = [1000.0]
    provider = provider_for(fake, cache_s=600, clock=lambda: now[0])
    await provider.current("Oslo")
    now[0] += 599
    await provider.current("Oslo")
    assert (fake.calls("search"), fake.calls("forecast")) == (1, 1)
    now[0] += 2
    await provider.current("Oslo")
    assert (fake.calls("search"), fake.calls("forecast")) == (2, 2)

    fake.reset()
    uncached = provider_for(fake, cache_s=0)
    await uncached.current("Oslo")
    await uncached.current("Oslo")
    assert (fake.calls("search"), fake.calls("forecast")) == (2, 2)


# Which failure gives which message (the README's table says the same).
SERVICE = "The weather service (Open-Meteo)"
INCOMPLETE = f"{SERVICE} sent incomplete or unreadable current conditions for Oslo, Norway"
FAILURES = [
    # endpoint, fault, times, message the model gets (start), requests made to that endpoint
    ("search", "server_error", 2, f"{SERVICE} is unavailable right now (HTTP 500)", 2),
    ("forecast", "unavailable", 2, f"{SERVICE} is unavailable right now (HTTP 503)", 2),
    ("search", "drop", 2, f"{SERVICE} cannot be reached right now", 2),
    ("forecast", "drop", 2, f"{SERVICE} cannot be reached right now", 2),
    ("search", "rate_limited", 1, f"{SERVICE} is rate limiting requests", 1),
    ("forecast", "rate_limited", 1, f"{SERVICE} is rate limiting requests", 1),
    ("forecast", "hang", 1, f"{SERVICE} did not answer within 0.5 seconds", 1),
    ("forecast", "bad_request", 1, f"{SERVICE} rejected the request for 'Oslo, Norway' (HTTP 400)", 1),
    ("search", "not_json", 1, f"{SERVICE} sent an answer that could not be read for 'Oslo'", 1),
    ("search", "partial", 1, f"{SERVICE} sent an answer that could not be read for 'Oslo'", 1),
    ("forecast", "not_json", 1, f"{SERVICE} sent an answer that could not be read", 1),
    ("forecast", "partial", 1, INCOMPLETE, 1),
    ("forecast", "no_current", 1, INCOMPLETE, 1),
]  # fmt: skip


@pytest.mark.parametrize(("endpoint", "fault", "times", "message", "calls"), FAILURES)
async def test_each_failure_is_a_message_for_the_model(
    fake: FakeOpenMeteo, endpoint: str, fault: str, times: int, message: str, calls: int
) -> None:
    provider = provider_for(fake, timeout_s=0.5)
    fake.fail(endpoint, fault, times=times)
    with pytest.raises(WeatherError) as caught:
        await provider.current("Oslo")
    assert str(caught.value).startswith(message), str(caught.value)
    assert "Traceback" not in str(caught.value) and "127.0.0.1" not in str(caught.value)
    assert fake.calls(endpoint) == calls
    # A failure is not cached: the next question is asked again, and answered.
    report = await provider.current("Oslo")
    assert report.temperature_c == -3.2


@pytest.mark.parametrize(("endpoint", "fault"), [("search", "server_error"), ("forecast", "drop")])
async def test_one_retry_hides_a_single_hiccup(fake: FakeOpenMeteo, endpoint: str, fault: str) -> None:
    fake.fail(endpoint, fault, times=1)
    report = await provider_for(fake).current("Tokyo")
    assert (report.conditions, report.temperature_c) == ("clear sky", 12.9)
    assert fake.calls(endpoint) == 2


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def test_a_service_that_is_down(fake: FakeOpenMeteo) -> None:
    closed = f"http://127.0.0.1:{closed_port()}/v1"
    provider = OpenMeteoProvider(geocoding_url=closed, weather_url=fake.weather_url)
    with pytest.raises(WeatherError, match=r"^The weather service \(Open-Meteo\) cannot be reached right now"):
        await provider.current("Oslo")


async def test_concurrent_lookups_share_the_client_and_stay_apart(fake: FakeOpenMeteo) -> None:
    provider = provider_for(fake)
    reports = await asyncio.gather(*(provider.current(city) for city in ("Oslo", "Tokyo", "Seattle", "Paris, TX")))
    assert [r.country_code for r in reports] == ["NO", "JP", "US", "US"]
    assert [r.temperature_c for r in reports] == [-3.2, 12.9, 11.2, 18.4]


# ------------------------------------------------------------------------------------------ parsing


def test_units_other_than_the_fields_promise_are_refused() -> None:
    body = {
        "current_units": {"time": "iso8601", "temperature_2m": "°F", "weather_code": "wmo code"},
        "current": {"time": "2026-11-29T19:45", "temperature_2m": 45.1, "weather_code": 3},
    }
    with pytest.raises(ValueError, match="°F"):
        parse_conditions(body)
    body["current_units"]["temperature_2m"] = "°C"
    assert parse_conditions(body).values["temperature_c"] == 45.1


def test_null_values_are_left_out_not_invented() -> None:
    body = {
        "timezone": "GMT",
        "current_units": {"temperature_2m": "°C", "relative_humidity_2m": "%"},
        "current": {
            "time": "2026-11-29T18:45",
            "temperature_2m": 1.5,
            "weather_code": 45,
            "relative_humidity_2m": None,
        },
    }
    conditions = parse_conditions(body)
    assert conditions.values["humidity_pct"] is None and "humidity_pct" not in conditions.units
    assert describe(conditions.weather_code) == "fog"


def test_wmo_codes_and_compass() -> None:
    assert [describe(c) for c in (0, 61, 75, 95, 99)] == [
        "clear sky",
        "slight rain",
        "heavy snowfall",
        "thunderstorm",
        "thunderstorm with heavy hail",
    ]
    assert describe(42) == "unknown (WMO code 42)"
    assert [compass(d) for d in (0, 44, 46, 180, 337.4, 337.6, 360)] == ["N", "NE", "NE", "S", "NW", "N", "N"]
    assert compass(382.6) == compass(22.6) == "NE" and compass(-22.6) == compass(337.4) == "NW", "directions wrap"


def test_ttl_cache_is_bounded_and_expires() -> None:
    now = [0.0]
    cache: TTLCache[int] = TTLCache(10, max_entries=2, clock=lambda: now[0])
    cache.put("a", 1)
    cache.put("b", 2)
    cache.put("c", 3)
    assert (cache.get("a"), cache.get("b"), cache.get("c"), len(cache)) == (None, 2, 3, 2)
    now[0] = 10
    assert cache.get("b") is None
    off: TTLCache[int] = TTLCache(0)
    off.put("a", 1)
    assert len(off) == 0, "ttl 0 keeps nothing, not even to expire it later"
    assert off.get("a") is None
    brief: TTLCache[int] = TTLCache(0.5, clock=lambda: now[0])
    brief.put("a", 1)
    assert brief.get("a") == 1


def test_putting_a_key_again_makes_it_the_newest() -> None:
    cache: TTLCache[int] = TTLCache(10, max_entries=2)
    cache.put("a", 1)
    cache.put("b", 2)
    cache.put("a", 3)
    cache.put("c", 4)  # one too many: the oldest, now "b", goes
    assert (cache.get("a"), cache.get("b"), cache.get("c")) == (3, None, 4)


# ------------------------------------------------------------------------------------------ the tool's wrapper


class Exploding:
    name = "exploding"

    async def current(self, location: str) -> object:
        raise RuntimeError("db-7 password=hunter2")


class Slow:
    name = "slow"

    async def current(self, location: str) -> object:
        await asyncio.sleep(30)
        raise AssertionError("not reached")


async def test_lookup_turns_anything_unexpected_into_a_safe_message() -> None:
    with pytest.raises(WeatherError) as caught:
        await lookup(Exploding(), "Oslo")
    assert str(caught.value) == "The weather lookup failed unexpectedly. Try again later."
    with pytest.raises(WeatherError) as caught:
        await lookup(Slow(), "Oslo", timeout_s=0.1)
    assert str(caught.value) == (
        "The weather lookup for 'Oslo' took longer than 0.1 seconds and was abandoned. "
        "The weather service may be slow; try again later."
    )
    assert (await lookup(OfflineWeatherProvider(), "Oslo"))["source"] == "offline sample data"


# ------------------------------------------------------------------------------------------ settings


def test_weather_settings_and_the_auto_choice() -> None:
    assert weather_settings({}) == WeatherSettings()
    assert WeatherSettings().resolve("offline") == "offline"
    assert WeatherSettings().resolve("azure_openai") == "open-meteo"
    assert WeatherSettings(provider="offline").resolve("openai") == "offline"
    assert WeatherSettings(provider="open-meteo").resolve("offline") == "open-meteo"
    env = {
        "WEATHER_PROVIDER": "Open_Meteo",
        "GEOCODING_API_BASE_URL": "http://mirror.internal/geo/v1/",
        "WEATHER_API_BASE_URL": "https://mirror.internal/wx/v1",
        "WEATHER_CACHE_SECONDS": "0",
        "WEATHER_TIMEOUT_SECONDS": "2.5",
    }
    assert weather_settings(env) == WeatherSettings(
        "open-meteo", "http://mirror.internal/geo/v1", "https://mirror.internal/wx/v1", 0, 2.5
    )


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("WEATHER_PROVIDER", "accuweather"),
        ("GEOCODING_API_BASE_URL", "geocoding-api.open-meteo.com/v1"),
        ("WEATHER_API_BASE_URL", "https://api.open-meteo.com/v1?apikey=secret"),
        ("WEATHER_CACHE_SECONDS", "-1"),
        ("WEATHER_CACHE_SECONDS", "ten"),
        ("WEATHER_TIMEOUT_SECONDS", "45"),
    ],
)
def test_bad_weather_settings_name_the_setting_not_the_value(name: str, value: str) -> None:
    with pytest.raises(SettingsError) as caught:
        weather_settings({name: value})
    assert name in str(caught.value) and value not in str(caught.value)


def test_one_provider_per_settings_whatever_chose_it() -> None:
    auto, forced = WeatherSettings(), WeatherSettings(provider="open-meteo")
    first = weather_provider("openai", auto)
    assert isinstance(first, OpenMeteoProvider)
    assert weather_provider("azure_openai", forced) is first, "same settings: same provider and cache"
    assert weather_provider("offline", auto) is weather_provider("openai", WeatherSettings(provider="offline"))
    assert weather_provider("openai", WeatherSettings(cache_s=5)) is not first


# ------------------------------------------------------------------------------------------ per request, shared agents


async def test_provider_is_chosen_per_request_and_agents_are_built_once_per_choice(
    fake: FakeOpenMeteo, monkeypatch: pytest.MonkeyPatch
) -> None:
    from llm.offline import OfflineChatClient
    from settings import model_settings
    from streaming.events import Done, ToolResult
    from streaming.request import RunRequest
    from streaming.runners import _agents, run_agent

    monkeypatch.setenv("GEOCODING_API_BASE_URL", fake.geocoding_url)
    monkeypatch.setenv("WEATHER_API_BASE_URL", fake.weather_url)
    monkeypatch.setenv("WEATHER_PROVIDER", "open-meteo")
    client, model = OfflineChatClient(delay=0), model_settings({"MODEL_PROVIDER": "offline"})

    async def source_of_one_run() -> str:
        events = [e async for e in run_agent(RunRequest("Weather in Tokyo?"), client, model)]
        assert isinstance(events[-1], Done)
        (result,) = [e for e in events if isinstance(e, ToolResult)]
        return result.result["source"]

    _agents.cache_clear()
    assert [await source_of_one_run() for _ in range(3)] == [SOURCE] * 3
    assert (_agents.cache_info().misses, _agents.cache_info().currsize) == (1, 1)
    monkeypatch.setenv("WEATHER_PROVIDER", "offline")  # no restart needed
    assert await source_of_one_run() == "offline sample data"
    assert await source_of_one_run() == "offline sample data"
    assert (_agents.cache_info().misses, _agents.cache_info().currsize) == (2, 2)


# ------------------------------------------------------------------------------------------ hints, labels, answers


def _place(**fields: object):
    from tools.open_meteo import Place

    base: dict[str, object] = {"name": "Portland", "latitude": 43.66, "longitude": -70.26}
    return Place(**{**base, **fields})  # type: ignore[arg-type]


MAINE = {"admin1": "Maine", "admin2": "Cumberland", "country": "United States", "country_code": "US"}


@pytest.mark.parametrize(
    ("hint", "fields", "matches"),
    [
        ("Maine", MAINE, True),
        ("  maine. ", MAINE, True),
        ("ME", MAINE, True),
        ("me", MAINE, True),
        ("Cumberland", MAINE, True),  # the county (admin2)
        ("United States", MAINE, True),
        ("US", MAINE, True),
        ("USA", MAINE, True),
        ("U.S.", MAINE, True),
        ("u.s.a", MAINE, True),
        ("America", MAINE, True),
        ("OR", MAINE, False),  # another state
        ("Oregon", MAINE, False),
        ("GB", MAINE, False),
        ("UK", MAINE, False),
        ("", MAINE, False),
        ("M", MAINE, False),
        ("UK", {"admin1": "England", "country": "United Kingdom", "country_code": "GB"}, True),
        ("U.K.", {"admin1": "England", "country": "United Kingdom", "country_code": "GB"}, True),
        ("Britain", {"admin1": "England", "country": "United Kingdom", "country_code": "GB"}, True),
        ("gb", {"admin1": "England", "country": "United Kingdom", "country_code": "GB"}, True),
        ("England", {"admin1": "England", "country": "United Kingdom", "country_code": "GB"}, True),
        # A state's code only means the state in the United States: ME is also Montenegro's code.
        ("ME", {"admin1": "Maine", "country": "Elsewhere", "country_code": "XX"}, False),
        ("ME", {"admin1": "Podgorica", "country": "Montenegro", "country_code": "ME"}, True),
        ("DC", {"admin1": "District of Columbia", "country_code": "US"}, True),
        ("WA", {"admin1": "Washington", "country_code": "US"}, True),
        ("NY", {"admin1": None, "country_code": "US"}, False),
        ("US", {}, False),  # nothing known about the place: nothing matches
        ("Maine", {}, False),
        ("xxxx", {}, False),  # a field the place lacks matches no hint, whatever it is spelled
    ],
)
def test_a_hint_names_a_region_country_code_or_us_state(hint: str, fields: dict, matches: bool) -> None:
    assert _place(**fields).matches(hint) is matches


def test_a_place_s_label_names_it_its_region_and_country_once_each() -> None:
    assert _place(**MAINE).label == "Portland, Maine, United States"
    assert _place(name="Oslo", admin1="Oslo", country="Norway").label == "Oslo, Norway"
    assert _place(name="Monaco", admin1=None, country="Monaco").label == "Monaco"
    assert _place(name="Nowhere").label == "Nowhere"


def test_split_hint_tidies_the_name_and_drops_empty_hints() -> None:
    assert split_hint("  Portland ,\tMaine,, USA ,") == ("Portland", ["Maine", "USA"])
    assert split_hint("New   York") == ("New York", [])
    assert split_hint(", FR") == ("", ["FR"])


def test_geocoding_answers_that_are_not_the_documented_shape() -> None:
    from tools.open_meteo import parse_places

    assert parse_places({}) == [] and parse_places({"generationtime_ms": 0.5, "results": None}) == []
    for body in (None, [], "results", {"results": {}}, {"results": "Paris"}, {"results": [None, 1]}):
        with pytest.raises(ValueError):
            parse_places(body)
    usable = {"name": " Oslo ", "latitude": 59.9, "longitude": 10.7, "country_code": "no", "admin1": "  "}
    unusable = [
        {"name": "No latitude", "longitude": 1.0},
        {"name": "Text", "latitude": "59.9", "longitude": 10.7},
        {"name": "Boolean", "latitude": True, "longitude": 10.7},
        {"name": "Not finite", "latitude": float("nan"), "longitude": 10.7},
        {"name": "Off the map", "latitude": 90.5, "longitude": 0},
        {"name": "Off the map", "latitude": -90.5, "longitude": 0},
        {"name": "Off the map", "latitude": 0, "longitude": 180.5},
        {"name": "Off the map", "latitude": 0, "longitude": -180.5},
        {"name": "   ", "latitude": 1.0, "longitude": 1.0},
        {"name": 7, "latitude": 1.0, "longitude": 1.0},
        "Oslo",
    ]
    edges = [{"name": "South", "latitude": -90, "longitude": 180}, {"name": "North", "latitude": 90, "longitude": -180}]
    places = parse_places({"results": [*unusable, usable, *edges]})
    assert [(p.name, p.latitude, p.longitude, p.admin1, p.country, p.country_code) for p in places] == [
        ("Oslo", 59.9, 10.7, None, None, "NO"),
        ("South", -90, 180, None, None, None),
        ("North", 90, -180, None, None, None),
    ]


@pytest.mark.parametrize(
    "change",
    [
        lambda body: body.pop("current"),
        lambda body: body.pop("current_units"),
        lambda body: body.update(current=[]),
        lambda body: body["current"].pop("time"),
        lambda body: body["current"].update(time="  "),
        lambda body: body["current"].pop("weather_code"),
        lambda body: body["current"].update(weather_code="3"),
        lambda body: body["current"].update(temperature_2m=None),
        lambda body: body["current"].update(temperature_2m=float("inf")),
        lambda body: body["current_units"].pop("wind_speed_10m"),
        lambda body: body["current_units"].update(wind_speed_10m="mp/h"),
        lambda body: body["current_units"].update(relative_humidity_2m=" "),
    ],
)
def test_a_forecast_missing_what_the_report_needs_is_refused(change) -> None:
    body = {
        "timezone": "Europe/Oslo",
        "current_units": {
            "temperature_2m": "°C",
            "apparent_temperature": "°C",
            "relative_humidity_2m": "%",
            "wind_speed_10m": "km/h",
        },
        "current": {
            "time": "2026-11-29T19:45",
            "temperature_2m": -3.2,
            "apparent_temperature": -8.0,
            "relative_humidity_2m": 73,
            "weather_code": 73.0,
            "wind_speed_10m": 18.0,
            "wind_direction_10m": 20,
        },
    }
    conditions = parse_conditions(body)
    assert (conditions.weather_code, conditions.timezone, conditions.wind_direction) == (73, "Europe/Oslo", "N")
    assert conditions.values == {"temperature_c": -3.2, "feels_like_c": -8.0, "humidity_pct": 73, "wind_kph": 18.0}
    change(body)
    with pytest.raises(ValueError):
        parse_conditions(body)
    with pytest.raises(ValueError):
        parse_conditions([body])


def test_a_forecast_without_wind_direction_or_timezone_leaves_them_out() -> None:
    body = {
        "current_units": {"temperature_2m": "°C"},
        "current": {"time": "2026-11-29T18:45", "temperature_2m": 1.5, "weather_code": 0, "wind_direction_10m": "N"},
    }
    conditions = parse_conditions(body)
    assert (conditions.timezone, conditions.wind_direction, conditions.units) == (None, None, {"temperature_c": "°C"})


def _springfields() -> list:
    from tests.fake_open_meteo import default_places

    template = default_places()[-1]  # Tokyo's weather, anywhere
    states = ["Illinois", "Missouri", "Massachusetts", "Oregon", "Ohio"]
    return [
        dataclasses.replace(
            template,
            id=i,
            name="Springfield",
            country_code="US",
            country="United States",
            admin1=state,
            latitude=30.0 + i,
            longitude=-90.0 - i,
            population=100_000 - i,
        )
        for i, state in enumerate(states)
    ]


async def test_the_other_places_of_that_name_are_capped_at_three() -> None:
    with FakeOpenMeteo(_springfields()) as fake:
        report = await provider_for(fake).current("Springfield")
        assert report.location == "Springfield, Illinois, United States"
        assert report.other_matches == (
            "Springfield, Missouri, United States",
            "Springfield, Massachusetts, United States",
            "Springfield, Oregon, United States",
        )
        with pytest.raises(WeatherError) as caught:
            await provider_for(fake).current("Springfield, Texas")
        assert str(caught.value) == (
            "No place named 'Springfield' was found in 'Texas'. Places with that name: "
            "Springfield, Illinois, United States; Springfield, Missouri, United States; "
            "Springfield, Massachusetts, United States."
        )


# ------------------------------------------------------------------------------------------ the HTTP client


async def test_requests_say_who_asks_and_what_they_accept(fake: FakeOpenMeteo) -> None:
    await provider_for(fake).current("Oslo")
    for request in fake.requests:
        assert request.headers["user-agent"] == "agent-framework-functions-streaming (get_weather)"
        assert request.headers["accept"] == "application/json"


async def test_a_redirect_is_not_followed(fake: FakeOpenMeteo) -> None:
    """The configured base URLs are the only places asked: a redirect is an answer the app refuses."""
    fake.fail("search", "redirect")
    with pytest.raises(WeatherError) as caught:
        await provider_for(fake).current("Oslo")
    assert str(caught.value) == f"{SERVICE} rejected the request for 'Oslo' (HTTP 302)."
    assert fake.calls("search") == 1


async def test_one_client_per_event_loop_and_a_closed_one_is_replaced() -> None:
    from tools.open_meteo import http_client

    client = http_client()
    assert http_client() is client
    await client.aclose()
    fresh = http_client()
    assert fresh is not client and not fresh.is_closed and http_client() is fresh


class _Scripted:
    """Stands in for the shared HTTP client: raises or answers from a script, and records each call's timeout."""

    def __init__(self, *script: object) -> None:
        self.script = list(script)
        self.timeouts: list = []

    async def get(self, url: str, *, params: object, timeout: object) -> object:
        import httpx2

        self.timeouts.append(timeout)
        step = self.script.pop(0)
        if isinstance(step, Exception):
            raise step
        return httpx2.Response(step, json={}, request=httpx2.Request("GET", url))


@pytest.mark.parametrize(
    ("script", "message", "calls", "pauses"),
    [
        ("connect_timeout", None, 2, [0.2]),  # a connection that did not open is tried once more
        ("connect_timeout connect_timeout", "did not answer within 2.5 seconds", 2, [0.2]),
        ("read_timeout", "did not answer within 2.5 seconds", 1, []),  # the time is spent: no retry
        ("connect_error", None, 2, [0.2]),
        ("connect_error connect_error", "cannot be reached right now", 2, [0.2]),
        ("503", None, 2, [0.2]),
        ("502 503", "is unavailable right now (HTTP 503)", 2, [0.2]),
        ("500 429", "is rate limiting requests", 2, [0.2]),
        ("429", "is rate limiting requests", 1, []),
        ("404", "rejected the request for 'Oslo' (HTTP 404)", 1, []),
        ("499", "rejected the request for 'Oslo' (HTTP 499)", 1, []),
    ],
)
async def test_what_is_retried_and_what_is_not(
    monkeypatch: pytest.MonkeyPatch, script: str, message: str | None, calls: int, pauses: list
) -> None:
    import httpx2

    import tools.open_meteo as open_meteo

    request = httpx2.Request("GET", "http://127.0.0.1/")
    steps = {
        "connect_timeout": lambda: httpx2.ConnectTimeout("connect", request=request),
        "read_timeout": lambda: httpx2.ReadTimeout("read", request=request),
        "connect_error": lambda: httpx2.ConnectError("refused", request=request),
    }
    client = _Scripted(*(steps[s]() if s in steps else int(s) for s in script.split()), 200)
    slept: list[float] = []

    async def sleep(delay: float) -> None:
        slept.append(delay)

    monkeypatch.setattr(open_meteo, "http_client", lambda: client)
    monkeypatch.setattr(open_meteo.anyio, "sleep", sleep)
    provider = OpenMeteoProvider(
        geocoding_url="http://127.0.0.1:9/geo", weather_url="http://127.0.0.1:9/wx", timeout_s=2.5
    )
    if message is None:
        assert await provider._get_json("http://127.0.0.1:9/geo/search", {}, "Oslo") == {}
    else:
        with pytest.raises(WeatherError) as caught:
            await provider._get_json("http://127.0.0.1:9/geo/search", {}, "Oslo")
        assert str(caught.value).startswith(f"{SERVICE} {message}"), str(caught.value)
    assert (len(client.timeouts), slept) == (calls, pauses)


@pytest.mark.parametrize(("timeout_s", "connect"), [(2.5, 2.5), (3.0, 3.0), (10.0, 3.0)])
async def test_each_call_gets_the_configured_time_and_at_most_3_s_to_connect(
    monkeypatch: pytest.MonkeyPatch, timeout_s: float, connect: float
) -> None:
    import tools.open_meteo as open_meteo

    client = _Scripted(200)
    monkeypatch.setattr(open_meteo, "http_client", lambda: client)
    provider = OpenMeteoProvider(
        geocoding_url="http://127.0.0.1:9/g", weather_url="http://127.0.0.1:9/w", timeout_s=timeout_s
    )
    await provider._get_json("http://127.0.0.1:9/g/search", {}, "Oslo")
    (timeout,) = client.timeouts
    assert (timeout.connect, timeout.read, timeout.write, timeout.pool) == (connect, timeout_s, timeout_s, timeout_s)


def test_the_provider_is_built_from_the_weather_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    import tools.providers

    monkeypatch.setattr(tools.providers, "_open_meteo", {})  # built here, not found from an earlier run
    settings = WeatherSettings("open-meteo", "http://127.0.0.1:9/geo/v1", "http://127.0.0.1:9/wx/v1", 42.0, 2.5)
    provider = weather_provider("offline", settings)
    assert isinstance(provider, OpenMeteoProvider)
    assert (provider.geocoding_url, provider.weather_url, provider.timeout_s) == (
        "http://127.0.0.1:9/geo/v1",
        "http://127.0.0.1:9/wx/v1",
        2.5,
    )
    assert provider._places.ttl_s == provider._conditions.ttl_s == 42.0


@pytest.mark.parametrize(
    ("asked", "message"),
    [
        ("Atlantis, FR", "No place named 'Atlantis' was found. Check the spelling, or name a nearby city."),
        (
            "Portland, Narnia, Middle Earth",
            "No place named 'Portland' was found in 'Narnia, Middle Earth'. "
            "Places with that name: Portland, Oregon, United States; Portland, Maine, United States.",
        ),
    ],
)
async def test_what_the_model_hears_when_no_place_matches(fake: FakeOpenMeteo, asked: str, message: str) -> None:
    with pytest.raises(WeatherError) as caught:
        await provider_for(fake).current(asked)
    assert str(caught.value) == message


def test_make_weather_tool_loads_on_first_use_and_nothing_else_does() -> None:
    import tools
    import tools.tool

    assert tools.make_weather_tool is tools.tool.make_weather_tool
    with pytest.raises(AttributeError, match=r"^module 'tools' has no attribute 'make_rain'$"):
        tools.make_rain  # noqa: B018


async def test_places_at_the_same_spot_share_their_conditions_and_others_do_not() -> None:
    """Conditions are cached per spot (coordinates to four decimals, about 10 m), not per name."""
    from tests.fake_open_meteo import default_places

    tokyo = default_places()[-1]

    def spot(id_: int, name: str, latitude: float, longitude: float, temperature: float):
        weather = {**tokyo.weather, "temperature_2m": temperature}
        return dataclasses.replace(tokyo, id=id_, name=name, latitude=latitude, longitude=longitude, weather=weather)

    spots = [
        spot(1, "North", 40.0, 20.0, 12.9),
        spot(2, "South", -40.0, 20.0, 25.0),
        spot(3, "East", 40.0, 21.0, 5.0),
        spot(4, "Northfield", 40.3, 20.0, 1.0),
        spot(5, "Westfield", 40.0, 20.3, 2.0),
        spot(6, "Northgate", 40.00003, 20.00003, 99.0),  # asked about on its own, it would be 99
    ]
    names = ["North", "South", "East", "Northfield", "Westfield", "Northgate"]
    with FakeOpenMeteo(spots) as fake:
        provider = provider_for(fake)
        reports = [await provider.current(name) for name in names]
        assert [r.temperature_c for r in reports] == [12.9, 25.0, 5.0, 1.0, 2.0, 12.9]
        assert fake.calls("forecast") == 5, "North and Northgate are one spot, asked about once"


def test_the_cache_keeps_256_places_by_default() -> None:
    cache: TTLCache[int] = TTLCache(60)
    for i in range(257):
        cache.put(i, i)
    assert len(cache) == 256 and cache.get(0) is None and cache.get(1) == 1


async def test_base_urls_may_end_with_a_slash(fake: FakeOpenMeteo) -> None:
    provider = OpenMeteoProvider(geocoding_url=fake.geocoding_url + "/", weather_url=fake.weather_url + "//")
    assert (await provider.current("Oslo")).temperature_c == -3.2


async def test_the_shared_client_holds_at_most_20_connections_to_the_service() -> None:
    """However many lookups run at once, the process opens at most 20 sockets to Open-Meteo and keeps
    10 of them alive for 30 s (read from the pool itself: nothing in a lookup's answer shows it)."""
    from tools.open_meteo import http_client

    pool = http_client()._transport._pool
    assert (pool._max_connections, pool._max_keepalive_connections, pool._keepalive_expiry) == (20, 10, 30)
