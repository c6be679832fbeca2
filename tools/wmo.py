"""WMO weather interpretation codes (WMO 4677, as Open-Meteo uses them) in words.

Open-Meteo reports ``weather_code`` as one of these numbers; the model and
the user want words. The table follows Open-Meteo's documentation of the
``weather_code`` variable.
"""

from __future__ import annotations

WMO_CODES: dict[int, str] = {
    0: "clear sky",
    1: "mainly clear",
    2: "partly cloudy",
    3: "overcast",
    45: "fog",
    48: "depositing rime fog",
    51: "light drizzle",
    53: "moderate drizzle",
    55: "dense drizzle",
    56: "light freezing drizzle",
    57: "dense freezing drizzle",
    61: "slight rain",
    63: "moderate rain",
    65: "heavy rain",
    66: "light freezing rain",
    67: "heavy freezing rain",
    71: "slight snowfall",
    73: "moderate snowfall",
    75: "heavy snowfall",
    77: "snow grains",
    80: "slight rain showers",
    81: "moderate rain showers",
    82: "violent rain showers",
    85: "slight snow showers",
    86: "heavy snow showers",
    95: "thunderstorm",
    96: "thunderstorm with slight hail",
    99: "thunderstorm with heavy hail",
}

_COMPASS = ("N", "NE", "E", "SE", "S", "SW", "W", "NW")


def describe(code: int) -> str:
    """``code`` in words; a code outside the table is named, not guessed."""
    return WMO_CODES.get(code, f"unknown (WMO code {code})")


def compass(degrees: float) -> str:
    """A wind direction in degrees (where the wind comes from) as one of eight compass points."""
    return _COMPASS[round((degrees % 360) / 45) % 8]
