"""``get_weather``: the tool the weather agent and the researcher call.

The tool is a thin, typed wrapper over a :class:`WeatherProvider`, so the
data source (offline sample data, Open-Meteo) can change without touching
the agents or the tool's schema the model sees.

The tool never raises anything but :class:`WeatherError`, whose message is
written for the model ("No place named 'Atlantis' was found..."): the chat
clients let the model see that message (``include_detailed_errors``, see
``llm``), so it can tell the user why, while anything unexpected becomes a
generic message and internal details stay in the log.

This module stays light (no Agent Framework, no HTTP client): the tool
itself is built in ``tools/tool.py``.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from dataclasses import dataclass, field
from typing import Protocol

logger = logging.getLogger(__name__)

MAX_LOCATION_CHARS = 100
#: A provider slower than this fails the call; the model sees a tool error and
#: can still answer (for example, say the weather is unavailable).
TOOL_TIMEOUT_S = 10.0


class WeatherError(Exception):
    """A weather lookup failed for a reason the model can relay. The message
    is safe to show (no upstream body, no internal detail)."""


@dataclass(frozen=True, slots=True)
class WeatherReport:
    """Current weather at one place, in metric units.

    The first six fields are what every provider knows; the rest are filled
    by providers that know them (Open-Meteo) and left out of :meth:`as_dict`
    when empty, so the model gets a compact object."""

    location: str
    conditions: str
    temperature_c: float
    wind_kph: float | None
    humidity_pct: float | None
    source: str
    feels_like_c: float | None = None
    wind_direction: str | None = None
    region: str | None = None
    country: str | None = None
    country_code: str | None = None
    latitude: float | None = None
    longitude: float | None = None
    observed_at: str | None = None
    timezone: str | None = None
    units: dict[str, str] = field(default_factory=dict)
    other_matches: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, object]:
        """The report as the model sees it: the place first, then the weather, then the source."""
        ordered = {
            "location": self.location,
            "region": self.region,
            "country": self.country,
            "country_code": self.country_code,
            "latitude": self.latitude,
            "longitude": self.longitude,
            "observed_at": self.observed_at,
            "timezone": self.timezone,
            "conditions": self.conditions,
            "temperature_c": self.temperature_c,
            "feels_like_c": self.feels_like_c,
            "humidity_pct": self.humidity_pct,
            "wind_kph": self.wind_kph,
            "wind_direction": self.wind_direction,
            "units": dict(self.units),
            "other_matches": list(self.other_matches),
            "source": self.source,
        }
        return {key: value for key, value in ordered.items() if value not in (None, [], {})}


class WeatherProvider(Protocol):
    """Where weather comes from. Implementations must be safe to share
    between concurrent requests, and raise :class:`WeatherError` for
    failures the model should hear about."""

    name: str

    async def current(self, location: str) -> WeatherReport: ...


_CONDITIONS = ("sunny", "partly cloudy", "cloudy", "light rain", "rain", "fog", "windy", "snow showers")


class OfflineWeatherProvider:
    """Deterministic sample data: the same city always gets the same,
    plausible weather. No network, no account. Not a forecast: its
    ``source`` says ``"offline sample data"`` so nobody mistakes it for one.
    """

    name = "offline"

    async def current(self, location: str) -> WeatherReport:
        place = " ".join(location.split()).strip()
        digest = hashlib.sha256(place.casefold().encode("utf-8")).digest()
        conditions = _CONDITIONS[digest[0] % len(_CONDITIONS)]
        low, high = (-8, 4) if conditions == "snow showers" else (4, 31)
        temperature = low + digest[1] % (high - low + 1)
        wind = 3 + digest[2] % (45 if conditions == "windy" else 25)
        humidity = 35 + digest[3] % 60
        return WeatherReport(
            location=place,
            conditions=conditions,
            temperature_c=temperature,
            wind_kph=wind,
            humidity_pct=humidity,
            source="offline sample data",
        )


async def lookup(provider: WeatherProvider, location: str, *, timeout_s: float = TOOL_TIMEOUT_S) -> dict[str, object]:
    """``provider``'s report for ``location`` as the tool returns it.

    Raises only :class:`WeatherError`: a timeout or an unexpected exception
    becomes one with a message fit for the model (the detail goes to the log)."""
    try:
        async with asyncio.timeout(timeout_s):
            report = await provider.current(location)
    except WeatherError:
        raise
    except TimeoutError:
        raise WeatherError(
            f"The weather lookup for '{location}' took longer than {timeout_s:g} seconds and was abandoned. "
            "The weather service may be slow; try again later."
        ) from None
    except Exception:
        logger.exception("weather provider %s failed unexpectedly", provider.name)
        raise WeatherError("The weather lookup failed unexpectedly. Try again later.") from None
    return report.as_dict()
