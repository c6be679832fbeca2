"""``get_weather``: the tool the weather agent and the researcher call.

The tool is a thin, typed wrapper over a :class:`WeatherProvider`, so the
data source can change (offline sample data today, a real weather API
later) without touching the agents or the tool's schema the model sees.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from typing import Annotated, Protocol

import anyio
from agent_framework import FunctionTool, tool
from pydantic import Field

MAX_LOCATION_CHARS = 100
#: A provider slower than this fails the call; the model sees a tool error and
#: can still answer (for example, say the weather is unavailable).
TOOL_TIMEOUT_S = 10.0


@dataclass(frozen=True, slots=True)
class WeatherReport:
    """Current weather at one place, in metric units."""

    location: str
    conditions: str
    temperature_c: int
    wind_kph: int
    humidity_pct: int
    source: str

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


class WeatherProvider(Protocol):
    """Where weather comes from. Implementations must be safe to share
    between concurrent requests."""

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


def make_weather_tool(provider: WeatherProvider, *, timeout_s: float = TOOL_TIMEOUT_S) -> FunctionTool:
    """Build the ``get_weather`` tool over ``provider``.

    A provider error or timeout becomes a failed tool result (the framework
    tells the model "Error: Function failed." without the detail, and the
    stream carries a ``tool_result`` with ``is_error``)."""

    @tool(name="get_weather")
    async def get_weather(
        location: Annotated[
            str,
            Field(
                description="City or place name, for example 'Seattle' or 'Paris, France'.",
                min_length=1,
                max_length=MAX_LOCATION_CHARS,
            ),
        ],
    ) -> dict[str, object]:
        """Get the current weather for a location: conditions, temperature in °C, wind in km/h, humidity in %."""
        with anyio.fail_after(timeout_s):
            report = await provider.current(location)
        return report.as_dict()

    return get_weather
