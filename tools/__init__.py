"""Tools the agents can call, and the providers behind them.

``make_weather_tool`` is loaded on first use (it needs the Agent
Framework), so importing ``tools`` stays light."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tools.providers import weather_provider
from tools.weather import OfflineWeatherProvider, WeatherError, WeatherProvider, WeatherReport

if TYPE_CHECKING:
    from tools.tool import make_weather_tool

__all__ = [
    "OfflineWeatherProvider",
    "WeatherError",
    "WeatherProvider",
    "WeatherReport",
    "make_weather_tool",
    "weather_provider",
]


def __getattr__(name: str) -> Any:
    if name == "make_weather_tool":
        from tools.tool import make_weather_tool

        return make_weather_tool
    raise AttributeError(f"module 'tools' has no attribute {name!r}")
