"""A fake Open-Meteo (geocoding and forecast APIs) for tests, over real HTTP on 127.0.0.1.

``FakeOpenMeteo`` serves, on a free loopback port, the two endpoints the app calls, shaped like the
real service's answers (https://open-meteo.com/en/docs and /en/docs/geocoding-api):

* ``GET {geocoding_url}/search?name=...&count=...&language=en&format=json`` ->
  ``{"results": [{"id", "name", "latitude", "longitude", "elevation", "feature_code", "country_code",
  "admin1_id", "timezone", "population", "country_id", "country", "admin1", ...}], "generationtime_ms"}``,
  most populous first; **no** ``results`` key when nothing matches.
* ``GET {weather_url}/forecast?latitude=...&longitude=...&current=a,b,c&timezone=auto`` ->
  ``{"latitude", "longitude", "generationtime_ms", "utc_offset_seconds", "timezone",
  "timezone_abbreviation", "elevation", "current_units": {"time": "iso8601", "interval": "seconds",
  <variable>: <unit>}, "current": {"time": "2026-11-29T19:45", "interval": 900, <variable>: <value>}}``.
* Bad parameters get the real error shape: ``400 {"error": true, "reason": "..."}``.

The two APIs live under different prefixes of the one server (``/geocoding-api/v1`` and ``/api/v1``),
so a client that mixes up its base URLs fails.

Failures, scripted per endpoint (``"search"`` or ``"forecast"``) and consumed one per request::

    fake.fail("forecast", "unavailable")          # 503 once
    fake.fail("search", "rate_limited", times=2)  # 429 twice

``server_error`` (500), ``unavailable`` (503 HTML page), ``rate_limited`` (429 with the real reason),
``bad_request`` (400), ``hang`` (no answer for ``hang_s`` seconds), ``drop`` (the connection is closed
with no answer), ``not_json`` (200 with an HTML body), ``partial`` (200 JSON missing the values the
client needs), ``no_current`` (200 JSON without the ``current`` block), ``redirect`` (302 back to the
same address, which a client that follows it gets answered on the second try).

``fake.requests`` records every request (endpoint, query parameters and headers), so tests can count calls.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import socket
import threading
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

HOST = "127.0.0.1"
FAULTS = (
    "server_error",
    "unavailable",
    "rate_limited",
    "bad_request",
    "hang",
    "drop",
    "not_json",
    "partial",
    "no_current",
    "redirect",
)
UNITS = {
    "temperature_2m": "°C",
    "apparent_temperature": "°C",
    "relative_humidity_2m": "%",
    "weather_code": "wmo code",
    "wind_speed_10m": "km/h",
    "wind_direction_10m": "°",
    "is_day": "",
    "precipitation": "mm",
    "cloud_cover": "%",
    "surface_pressure": "hPa",
}


@dataclass
class FakePlace:
    """A gazetteer entry and its current weather."""

    id: int
    name: str
    latitude: float
    longitude: float
    country_code: str
    country: str
    admin1: str
    timezone: str
    tz_abbreviation: str
    utc_offset_s: int
    population: int
    elevation: float
    weather: dict[str, float] = field(default_factory=dict)
    admin2: str | None = None

    def result(self) -> dict[str, Any]:
        """As the geocoding API lists it."""
        item: dict[str, Any] = {
            "id": self.id,
            "name": self.name,
            "latitude": self.latitude,
            "longitude": self.longitude,
            "elevation": self.elevation,
            "feature_code": "PPLC" if self.population > 1_000_000 else "PPLA2",
            "country_code": self.country_code,
            "admin1_id": self.id + 1,
            "timezone": self.timezone,
            "population": self.population,
            "country_id": self.id + 2,
            "country": self.country,
            "admin1": self.admin1,
        }
        if self.admin2:
            item["admin2_id"] = self.id + 3
            item["admin2"] = self.admin2
        return item


# id, name, latitude, longitude, country code, country, admin1, admin2, timezone, abbreviation, UTC offset,
# population, elevation, then the weather: temperature, feels like, humidity, WMO code, wind, wind direction.
_GAZETTEER = [
    (2988507, "Paris", 48.85341, 2.3488, "FR", "France", "Île-de-France", None, "Europe/Paris", "CET", 3600,
     2138551, 42.0, (7.3, 4.1, 81, 3, 14.2, 225)),
    (4717560, "Paris", 33.66094, -95.55551, "US", "United States", "Texas", "Lamar", "America/Chicago", "CST",
     -21600, 24782, 183.0, (18.4, 18.0, 55, 1, 9.7, 160)),
    (4647963, "Paris", 36.302, -88.32671, "US", "United States", "Tennessee", "Henry", "America/Chicago", "CST",
     -21600, 10156, 160.0, (15.0, 14.2, 60, 2, 6.1, 200)),
    (5746545, "Portland", 45.52345, -122.67621, "US", "United States", "Oregon", "Multnomah", "America/Los_Angeles",
     "PST", -28800, 652503, 15.0, (9.8, 7.9, 88, 61, 11.5, 190)),
    (4975802, "Portland", 43.66147, -70.25533, "US", "United States", "Maine", "Cumberland", "America/New_York",
     "EST", -18000, 66881, 9.0, (-2.6, -7.4, 64, 71, 22.3, 315)),
    (3143244, "Oslo", 59.91273, 10.74609, "NO", "Norway", "Oslo", None, "Europe/Oslo", "CET", 3600, 580000, 26.0,
     (-3.2, -8.0, 73, 73, 18.0, 20)),
    (5809844, "Seattle", 47.60621, -122.33207, "US", "United States", "Washington", "King", "America/Los_Angeles",
     "PST", -28800, 737015, 56.0, (11.2, 10.1, 90, 63, 16.9, 180)),
    (1850147, "Tokyo", 35.6895, 139.69171, "JP", "Japan", "Tokyo", None, "Asia/Tokyo", "JST", 32400, 9733276, 44.0,
     (12.9, 11.5, 45, 0, 8.3, 340)),
]  # fmt: skip


def default_places() -> list[FakePlace]:
    """A small gazetteer with the ambiguous names tests need (two Portlands, three Parises)."""
    places = []
    for (id_, name, lat, lon, code, country, admin1, admin2, tz, abbr, offset, population, elevation,
         weather) in _GAZETTEER:  # fmt: skip
        temp, feels, humidity, wmo, wind, direction = weather
        places.append(
            FakePlace(
                id=id_,
                name=name,
                latitude=lat,
                longitude=lon,
                country_code=code,
                country=country,
                admin1=admin1,
                admin2=admin2,
                timezone=tz,
                tz_abbreviation=abbr,
                utc_offset_s=offset,
                population=population,
                elevation=elevation,
                weather={
                    "temperature_2m": temp,
                    "apparent_temperature": feels,
                    "relative_humidity_2m": humidity,
                    "weather_code": wmo,
                    "wind_speed_10m": wind,
                    "wind_direction_10m": direction,
                    "is_day": 0,
                    "precipitation": 0.0,
                    "cloud_cover": 75,
                    "surface_pressure": 1012.3,
                },
            )
        )
    return places


class _Abort(Exception):
    """Raised out of the ASGI app mid-answer: uvicorn closes the connection."""


class _Dropped(Response):
    """Headers and the start of a body, then the connection closes (a server or proxy that died)."""

    def __init__(self) -> None:
        super().__init__()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"500")]})
        await send({"type": "http.response.body", "body": b'{"results": [', "more_body": True})
        raise _Abort


class _QuietAbort(logging.Filter):
    """Keep uvicorn from logging the deliberate drops as application errors."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], _Abort))


class _Server(uvicorn.Server):
    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.ready = threading.Event()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        self.ready.set()


@dataclass(frozen=True)
class RecordedRequest:
    endpoint: str  # "search" or "forecast"
    params: Mapping[str, str]
    headers: Mapping[str, str] = field(default_factory=dict)


class FakeOpenMeteo:
    """The fake service (see the module docstring). Use as a context manager or ``start()``/``stop()``."""

    def __init__(self, places: list[FakePlace] | None = None, *, hang_s: float = 30.0) -> None:
        self.places = default_places() if places is None else places
        self.hang_s = hang_s
        self._lock = threading.Lock()
        self._faults: dict[str, deque[str]] = {"search": deque(), "forecast": deque()}
        self._requests: list[RecordedRequest] = []
        self._port: int | None = None
        self._thread: threading.Thread | None = None
        self._server: _Server | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping = asyncio.Event()
        app = Starlette(
            routes=[
                Route("/geocoding-api/v1/search", self._search),
                Route("/api/v1/forecast", self._forecast),
            ]
        )

        self._app = app

    # ------------------------------------------------------------------ lifecycle

    def start(self, timeout: float = 10.0) -> FakeOpenMeteo:
        error_log = logging.getLogger("uvicorn.error")
        if not any(isinstance(f, _QuietAbort) for f in error_log.filters):
            error_log.addFilter(_QuietAbort())
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((HOST, 0))
        self._port = sock.getsockname()[1]
        config = uvicorn.Config(
            self._app,
            log_config=None,
            access_log=False,
            lifespan="off",
            http="h11",
            ws="none",
            server_header=False,
            timeout_graceful_shutdown=1,
        )
        self._server = _Server(config)
        self._stopping = asyncio.Event()
        self._thread = threading.Thread(target=self._run, args=(self._server, sock), daemon=True)
        self._thread.start()
        if not self._server.ready.wait(timeout) or not self._server.started:
            self.stop()
            raise RuntimeError("FakeOpenMeteo failed to start")
        return self

    def _run(self, server: _Server, sock: socket.socket) -> None:
        loop = self._loop = asyncio.new_event_loop()
        try:
            loop.run_until_complete(server.serve(sockets=[sock]))
        finally:
            with contextlib.suppress(Exception):
                loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()
            sock.close()
            server.ready.set()

    def stop(self) -> None:
        if self._thread is None or self._server is None:
            return
        if self._loop is not None:
            with contextlib.suppress(RuntimeError):  # loop already closed
                self._loop.call_soon_threadsafe(self._stopping.set)
        self._server.should_exit = True
        self._thread.join(10)
        if self._thread.is_alive():
            self._server.force_exit = True
            self._thread.join(10)
        self._thread = self._server = None

    def __enter__(self) -> FakeOpenMeteo:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # ------------------------------------------------------------------ addresses, scripting, records

    @property
    def url(self) -> str:
        if self._port is None:
            raise RuntimeError("FakeOpenMeteo is not started")
        return f"http://{HOST}:{self._port}"

    @property
    def geocoding_url(self) -> str:
        """The value for GEOCODING_API_BASE_URL."""
        return f"{self.url}/geocoding-api/v1"

    @property
    def weather_url(self) -> str:
        """The value for WEATHER_API_BASE_URL."""
        return f"{self.url}/api/v1"

    def fail(self, endpoint: str, fault: str, *, times: int = 1) -> None:
        """Answer the next ``times`` requests to ``endpoint`` (``search`` or ``forecast``) with ``fault``."""
        if endpoint not in self._faults or fault not in FAULTS:
            raise ValueError(f"unknown endpoint {endpoint!r} or fault {fault!r}")
        with self._lock:
            self._faults[endpoint].extend([fault] * times)

    def reset(self) -> None:
        with self._lock:
            for queue in self._faults.values():
                queue.clear()
            self._requests.clear()

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    def calls(self, endpoint: str) -> int:
        return sum(r.endpoint == endpoint for r in self.requests)

    def place(self, name: str, admin1: str | None = None) -> FakePlace:
        return next(p for p in self.places if p.name == name and (admin1 is None or p.admin1 == admin1))

    # ------------------------------------------------------------------ the two endpoints

    def _begin(self, endpoint: str, request: Request) -> str | None:
        with self._lock:
            self._requests.append(RecordedRequest(endpoint, dict(request.query_params), dict(request.headers)))
            queue = self._faults[endpoint]
            return queue.popleft() if queue else None

    async def _fault(self, fault: str | None, request: Request) -> Response | None:
        if fault is None or fault in ("partial", "no_current"):
            return None
        if fault == "server_error":
            return JSONResponse({"error": True, "reason": "Internal server error"}, status_code=500)
        if fault == "unavailable":
            return Response("<html><body>503 Service Temporarily Unavailable</body></html>", 503,
                            media_type="text/html")  # fmt: skip
        if fault == "rate_limited":
            reason = "Minutely API request limit exceeded. Please try again in one minute."
            return JSONResponse({"error": True, "reason": reason}, status_code=429)
        if fault == "bad_request":
            return JSONResponse({"error": True, "reason": "Parameter 'latitude' is out of range"}, status_code=400)
        if fault == "hang":
            with contextlib.suppress(TimeoutError, asyncio.TimeoutError):  # the fake stopping ends the wait
                await asyncio.wait_for(self._stopping.wait(), self.hang_s)
            return PlainTextResponse("too late", status_code=504)
        if fault == "drop":
            return _Dropped()
        if fault == "redirect":
            return Response(status_code=302, headers={"Location": str(request.url)})
        if fault == "not_json":
            return Response("<html><body>Welcome to nginx!</body></html>", 200, media_type="text/html")
        raise AssertionError(fault)

    async def _search(self, request: Request) -> Response:
        fault = self._begin("search", request)
        if (answer := await self._fault(fault, request)) is not None:
            return answer
        params = request.query_params
        name = params.get("name")
        if name is None:
            return JSONResponse({"error": True, "reason": "Parameter 'name' is required"}, status_code=400)
        if params.get("format", "json") != "json" or params.get("language", "en") != "en":
            return JSONResponse({"error": True, "reason": "Only format=json and language=en are faked"}, 400)
        try:
            count = int(params.get("count", "10"))
        except ValueError:
            return JSONResponse({"error": True, "reason": "Parameter 'count' must be an integer"}, status_code=400)
        wanted = name.strip().casefold()
        found = sorted(
            (p for p in self.places if len(wanted) >= 2 and p.name.casefold() == wanted),
            key=lambda p: -p.population,
        )[: max(1, min(count, 100))]
        body: dict[str, Any] = {"generationtime_ms": 0.61}
        if found:
            results = [p.result() for p in found]
            if fault == "partial":
                for item in results:
                    del item["latitude"]
            body["results"] = results
        return JSONResponse(body)

    async def _forecast(self, request: Request) -> Response:
        fault = self._begin("forecast", request)
        if (answer := await self._fault(fault, request)) is not None:
            return answer
        params = request.query_params
        try:
            lat, lon = float(params["latitude"]), float(params["longitude"])
        except (KeyError, ValueError):
            return JSONResponse({"error": True, "reason": "Parameter 'latitude' and 'longitude' required"}, 400)
        if not (-90 <= lat <= 90 and -180 <= lon <= 180):
            return JSONResponse({"error": True, "reason": "Latitude must be in range of -90 to 90°."}, 400)
        variables = [v for v in params.get("current", "").split(",") if v]
        for variable in variables:
            if variable not in UNITS:
                reason = f"Cannot initialize WeatherVariable from invalid String value {variable} for key current"
                return JSONResponse({"error": True, "reason": reason}, status_code=400)
        place = min(self.places, key=lambda p: math.dist((p.latitude, p.longitude), (lat, lon)))
        local = params.get("timezone") == "auto"
        body: dict[str, Any] = {
            "latitude": round(lat, 4),
            "longitude": round(lon, 4),
            "generationtime_ms": 0.08,
            "utc_offset_seconds": place.utc_offset_s if local else 0,
            "timezone": place.timezone if local else "GMT",
            "timezone_abbreviation": place.tz_abbreviation if local else "GMT",
            "elevation": place.elevation,
        }
        if variables and fault != "no_current":
            body["current_units"] = {"time": "iso8601", "interval": "seconds", **{v: UNITS[v] for v in variables}}
            current: dict[str, Any] = {"time": "2026-11-29T19:45" if local else "2026-11-29T18:45", "interval": 900}
            current.update({v: place.weather[v] for v in variables})
            if fault == "partial":
                current.pop("temperature_2m", None)
            body["current"] = current
        return JSONResponse(body)
