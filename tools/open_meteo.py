"""Current weather from Open-Meteo (https://open-meteo.com): free, no key.

Two calls per new place, each cached for ``cache_s`` seconds:

1. geocoding: ``{geocoding_url}/search?name=...&count=10&language=en&format=json``
   answers ``{"results": [{"name", "latitude", "longitude", "country",
   "country_code", "admin1", ...}, ...]}``, most relevant first, with no
   ``results`` key at all when nothing matches;
2. forecast: ``{weather_url}/forecast?latitude=...&longitude=...&current=...&timezone=auto``
   answers a ``current`` block (local ``time``, the variables asked for) and
   ``current_units`` (the unit of each).

"Portland, Maine" or "Paris, FR": the text after a comma narrows the
search to places whose region, country or country code (or US state
abbreviation) matches. Without a hint the most relevant place wins and the
report names it, with other places of the same name, so the model can say
which one it means.

Every failure is a :class:`WeatherError` with a message for the model (see
the README's table); the HTTP details go to the log. One retry on
connection errors and 5xx answers; none on timeouts (the tool's own time
limit would pass) or 429.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import anyio

from tools.cache import TTLCache
from tools.weather import WeatherError, WeatherReport
from tools.wmo import compass, describe

if TYPE_CHECKING:
    import httpx2

logger = logging.getLogger(__name__)

SOURCE = "Open-Meteo (open-meteo.com)"
SERVICE = "The weather service (Open-Meteo)"
GEOCODING_COUNT = 10
MAX_OTHER_MATCHES = 3
RETRY_DELAY_S = 0.2
CURRENT_VARIABLES = (
    "temperature_2m",
    "apparent_temperature",
    "relative_humidity_2m",
    "weather_code",
    "wind_speed_10m",
    "wind_direction_10m",
)
# The report's field -> Open-Meteo's variable, and the unit the field's name promises.
_UNIT_FIELDS = {
    "temperature_c": ("temperature_2m", "°C"),
    "feels_like_c": ("apparent_temperature", "°C"),
    "humidity_pct": ("relative_humidity_2m", "%"),
    "wind_kph": ("wind_speed_10m", "km/h"),
}

# Keys as ``Place.matches`` compares them: case-folded, without the final dot ("U.S." -> "u.s").
_COUNTRY_ALIASES = {
    "usa": "US",
    "u.s": "US",
    "u.s.a": "US",
    "united states of america": "US",
    "america": "US",
    "uk": "GB",
    "u.k": "GB",
    "britain": "GB",
    "great britain": "GB",
}
# "Portland, ME": US state abbreviations, matched against the result's admin1.
_US_STATE_NAMES = (
    "AL:Alabama,AK:Alaska,AZ:Arizona,AR:Arkansas,CA:California,CO:Colorado,CT:Connecticut,"
    "DE:Delaware,FL:Florida,GA:Georgia,HI:Hawaii,ID:Idaho,IL:Illinois,IN:Indiana,IA:Iowa,KS:Kansas,"
    "KY:Kentucky,LA:Louisiana,ME:Maine,MD:Maryland,MA:Massachusetts,MI:Michigan,MN:Minnesota,"
    "MS:Mississippi,MO:Missouri,MT:Montana,NE:Nebraska,NV:Nevada,NH:New Hampshire,NJ:New Jersey,"
    "NM:New Mexico,NY:New York,NC:North Carolina,ND:North Dakota,OH:Ohio,OK:Oklahoma,OR:Oregon,"
    "PA:Pennsylvania,RI:Rhode Island,SC:South Carolina,SD:South Dakota,TN:Tennessee,TX:Texas,"
    "UT:Utah,VT:Vermont,VA:Virginia,WA:Washington,WV:West Virginia,WI:Wisconsin,WY:Wyoming,"
    "DC:District of Columbia"
)
_US_STATES = dict(item.split(":") for item in _US_STATE_NAMES.split(","))


@dataclass(frozen=True, slots=True)
class Place:
    """One geocoding result."""

    name: str
    latitude: float
    longitude: float
    admin1: str | None = None
    admin2: str | None = None
    country: str | None = None
    country_code: str | None = None

    @property
    def label(self) -> str:
        """ "Portland, Oregon, United States"."""
        parts = [self.name]
        for part in (self.admin1, self.country):
            if part and part not in parts:
                parts.append(part)
        return ", ".join(parts)

    def matches(self, hint: str) -> bool:
        """Whether ``hint`` ("Maine", "ME", "FR", "France", "USA") names this place's region or country."""
        wanted = hint.casefold().strip(" .")
        code = (self.country_code or "").upper()
        if _COUNTRY_ALIASES.get(wanted) == code or (len(wanted) == 2 and wanted.upper() == code):
            return True
        state = _US_STATES.get(wanted.upper()) if len(wanted) == 2 else None
        if state and code == "US" and (self.admin1 or "").casefold() == state.casefold():
            return True
        return any(wanted == (part or "").casefold() for part in (self.admin1, self.admin2, self.country))


@dataclass(frozen=True, slots=True)
class Conditions:
    """The forecast API's ``current`` block, checked and in the report's terms."""

    observed_at: str
    timezone: str | None
    weather_code: int
    values: Mapping[str, float | None]  # report field -> value
    units: Mapping[str, str]  # report field -> unit as the API states it
    wind_direction: str | None


# ------------------------------------------------------------------------------------------ the HTTP client

_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, httpx2.AsyncClient] = weakref.WeakKeyDictionary()


def http_client() -> httpx2.AsyncClient:
    """The process's shared async HTTP client (httpx2, the client the OpenAI
    SDK already brings), one per event loop since a connection pool cannot
    cross loops. Imported here, not at module level, to keep the app's
    import light."""
    import httpx2

    loop = asyncio.get_running_loop()
    client = _clients.get(loop)
    if client is None or client.is_closed:
        client = httpx2.AsyncClient(
            headers={"User-Agent": "agent-framework-functions-streaming (get_weather)", "Accept": "application/json"},
            limits=httpx2.Limits(max_connections=20, max_keepalive_connections=10, keepalive_expiry=30),
            follow_redirects=False,
        )
        _clients[loop] = client
    return client


# ------------------------------------------------------------------------------------------ parsing


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return value


def _text(value: Any) -> str | None:
    return value.strip() or None if isinstance(value, str) else None


def parse_places(body: Any) -> list[Place]:
    """The geocoding answer's places, most relevant first. No ``results``
    key means no match; entries without a name or coordinates are skipped.
    Raises ``ValueError`` when the answer is not the documented shape."""
    if not isinstance(body, dict):
        raise ValueError("geocoding answer is not a JSON object")
    results = body.get("results")
    if results is None:
        return []
    if not isinstance(results, list):
        raise ValueError("geocoding 'results' is not a list")
    places = []
    for item in results:
        if not isinstance(item, dict):
            continue
        name, lat, lon = _text(item.get("name")), _number(item.get("latitude")), _number(item.get("longitude"))
        if name is None or lat is None or lon is None or not (-90 <= lat <= 90 and -180 <= lon <= 180):
            continue
        code = _text(item.get("country_code"))
        places.append(
            Place(
                name=name,
                latitude=lat,
                longitude=lon,
                admin1=_text(item.get("admin1")),
                admin2=_text(item.get("admin2")),
                country=_text(item.get("country")),
                country_code=code.upper() if code else None,
            )
        )
    if results and not places:
        raise ValueError("no usable geocoding result")
    return places


def parse_conditions(body: Any) -> Conditions:
    """The forecast answer's ``current`` block. Raises ``ValueError`` when
    it is missing, or lacks the time, the temperature, the weather code or
    a unit the report's fields promise."""
    if not isinstance(body, dict):
        raise ValueError("forecast answer is not a JSON object")
    current, units = body.get("current"), body.get("current_units")
    if not isinstance(current, dict) or not isinstance(units, dict):
        raise ValueError("forecast answer has no 'current' or 'current_units' block")
    observed_at = _text(current.get("time"))
    code = _number(current.get("weather_code"))
    if observed_at is None or code is None or _number(current.get("temperature_2m")) is None:
        raise ValueError("forecast 'current' lacks time, temperature_2m or weather_code")
    values: dict[str, float | None] = {}
    stated: dict[str, str] = {}
    for field, (variable, promised) in _UNIT_FIELDS.items():
        value = _number(current.get(variable))
        if value is None:
            values[field] = None
            continue
        unit = _text(units.get(variable))
        if unit != promised:
            raise ValueError(f"forecast unit of {variable} is {unit!r}, not {promised!r}")
        values[field], stated[field] = value, unit
    direction = _number(current.get("wind_direction_10m"))
    return Conditions(
        observed_at=observed_at,
        timezone=_text(body.get("timezone")),
        weather_code=int(code),
        values=values,
        units=stated,
        wind_direction=compass(direction) if direction is not None else None,
    )


def split_hint(location: str) -> tuple[str, list[str]]:
    """ "Portland, Maine, USA" -> ("Portland", ["Maine", "USA"])."""
    name, *hints = (part.strip() for part in " ".join(location.split()).split(","))
    return name, [hint for hint in hints if hint]


# ------------------------------------------------------------------------------------------ the provider


class OpenMeteoProvider:
    """Open-Meteo behind the :class:`tools.weather.WeatherProvider` interface."""

    name = "open-meteo"

    def __init__(
        self,
        *,
        geocoding_url: str,
        weather_url: str,
        cache_s: float = 600.0,
        timeout_s: float = 4.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.geocoding_url = geocoding_url.rstrip("/")
        self.weather_url = weather_url.rstrip("/")
        self.timeout_s = timeout_s
        self._places: TTLCache[list[Place]] = TTLCache(cache_s, clock=clock)
        self._conditions: TTLCache[Conditions] = TTLCache(cache_s, clock=clock)

    async def current(self, location: str) -> WeatherReport:
        name, hints = split_hint(location)
        if not name:
            raise WeatherError(f"'{location}' does not name a place. Ask the user which place they mean.")
        places = await self._search(name, location)
        candidates = [p for p in places if all(p.matches(hint) for hint in hints)]
        if not candidates:
            raise WeatherError(self._not_found(name, hints, places))
        place = candidates[0]
        conditions = await self._current_at(place)
        others = () if hints else tuple(p.label for p in candidates[1:] if p.name.casefold() == place.name.casefold())
        return WeatherReport(
            location=place.label,
            region=place.admin1,
            country=place.country,
            country_code=place.country_code,
            latitude=place.latitude,
            longitude=place.longitude,
            observed_at=conditions.observed_at,
            timezone=conditions.timezone,
            conditions=describe(conditions.weather_code),
            temperature_c=conditions.values["temperature_c"],  # type: ignore[arg-type]  # checked in parsing
            feels_like_c=conditions.values["feels_like_c"],
            humidity_pct=conditions.values["humidity_pct"],
            wind_kph=conditions.values["wind_kph"],
            wind_direction=conditions.wind_direction,
            units=dict(conditions.units),
            other_matches=others[:MAX_OTHER_MATCHES],
            source=SOURCE,
        )

    @staticmethod
    def _not_found(name: str, hints: list[str], places: list[Place]) -> str:
        if hints and places:
            known = "; ".join(p.label for p in places[:MAX_OTHER_MATCHES])
            return f"No place named '{name}' was found in '{', '.join(hints)}'. Places with that name: {known}."
        return f"No place named '{name}' was found. Check the spelling, or name a nearby city."

    async def _search(self, name: str, location: str) -> list[Place]:
        key = name.casefold()
        places = self._places.get(key)
        if places is None:
            params = {"name": name, "count": GEOCODING_COUNT, "language": "en", "format": "json"}
            body = await self._get_json(f"{self.geocoding_url}/search", params, location)
            try:
                places = parse_places(body)
            except ValueError as exc:
                logger.warning("Open-Meteo geocoding answer for %r unusable: %s", name, exc)
                raise WeatherError(f"{SERVICE} sent an answer that could not be read for '{location}'.") from None
            self._places.put(key, places)
        return places

    async def _current_at(self, place: Place) -> Conditions:
        key = (round(place.latitude, 4), round(place.longitude, 4))
        conditions = self._conditions.get(key)
        if conditions is None:
            params = {
                "latitude": place.latitude,
                "longitude": place.longitude,
                "current": ",".join(CURRENT_VARIABLES),
                "timezone": "auto",
            }
            body = await self._get_json(f"{self.weather_url}/forecast", params, place.label)
            try:
                conditions = parse_conditions(body)
            except ValueError as exc:
                logger.warning("Open-Meteo forecast for %s unusable: %s", key, exc)
                raise WeatherError(
                    f"{SERVICE} sent incomplete or unreadable current conditions for {place.label}. Try again later."
                ) from None
            self._conditions.put(key, conditions)
        return conditions

    async def _get_json(self, url: str, params: Mapping[str, Any], subject: str) -> Any:
        """GET ``url`` and decode its JSON, retrying once on a connection
        error or a 5xx answer. Raises :class:`WeatherError`."""
        import httpx2

        client = http_client()
        timeout = httpx2.Timeout(self.timeout_s, connect=min(self.timeout_s, 3.0))
        for attempt in (1, 2):
            retry = attempt == 1
            try:
                response = await client.get(url, params=params, timeout=timeout)
            except httpx2.TimeoutException as exc:
                if retry and isinstance(exc, httpx2.ConnectTimeout):
                    await anyio.sleep(RETRY_DELAY_S)
                    continue
                logger.warning("Open-Meteo timed out (%s) for %s", type(exc).__name__, url)
                raise WeatherError(
                    f"{SERVICE} did not answer within {self.timeout_s:g} seconds. Try again later."
                ) from None
            except httpx2.TransportError as exc:
                if retry:
                    await anyio.sleep(RETRY_DELAY_S)
                    continue
                logger.warning("Open-Meteo unreachable (%s) at %s", type(exc).__name__, url)
                raise WeatherError(f"{SERVICE} cannot be reached right now. Try again later.") from None
            status = response.status_code
            if status >= 500 and retry:
                await anyio.sleep(RETRY_DELAY_S)
                continue
            break
        if status == 429:
            logger.warning("Open-Meteo rate limited the app (429) at %s", url)
            raise WeatherError(f"{SERVICE} is rate limiting requests. Try again in a minute.")
        if status >= 500:
            logger.warning("Open-Meteo answered %d twice at %s", status, url)
            raise WeatherError(f"{SERVICE} is unavailable right now (HTTP {status}). Try again later.")
        if status != 200:
            logger.warning("Open-Meteo answered %d at %s: %.200s", status, url, response.text)
            raise WeatherError(f"{SERVICE} rejected the request for '{subject}' (HTTP {status}).")
        try:
            return response.json()
        except ValueError:
            logger.warning("Open-Meteo sent a body that is not JSON at %s", url)
            raise WeatherError(f"{SERVICE} sent an answer that could not be read for '{subject}'.") from None
