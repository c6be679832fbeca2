"""Which weather provider serves a request, chosen from the settings at
request time. One provider per distinct settings, kept for the process, so
its cache outlives requests and the agents built over it can be shared."""

from __future__ import annotations

import dataclasses

from settings import WeatherSettings, weather_settings
from tools.weather import OfflineWeatherProvider, WeatherProvider

_OFFLINE = OfflineWeatherProvider()
_open_meteo: dict[WeatherSettings, WeatherProvider] = {}


def weather_provider(model_provider: str, settings: WeatherSettings | None = None) -> WeatherProvider:
    """The provider for a run on a model from ``model_provider``
    (``WEATHER_PROVIDER=auto``: offline data with the offline model,
    Open-Meteo with any real one). Raises ``SettingsError`` for bad settings."""
    settings = settings or weather_settings()
    if settings.resolve(model_provider) == "offline":
        return _OFFLINE
    key = dataclasses.replace(settings, provider="open-meteo")
    provider = _open_meteo.get(key)
    if provider is None:
        from tools.open_meteo import OpenMeteoProvider

        provider = OpenMeteoProvider(
            geocoding_url=settings.geocoding_url,
            weather_url=settings.weather_url,
            cache_s=settings.cache_s,
            timeout_s=settings.timeout_s,
        )
        _open_meteo[key] = provider
    return provider
