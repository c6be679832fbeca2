"""Tools the agents can call, and the providers behind them."""

from tools.weather import OfflineWeatherProvider, WeatherProvider, WeatherReport, make_weather_tool

__all__ = ["OfflineWeatherProvider", "WeatherProvider", "WeatherReport", "make_weather_tool"]
