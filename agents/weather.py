"""Builds the weather agent: one chat client, one tool, short answers."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from agent_framework import Agent

from tools import OfflineWeatherProvider, WeatherProvider, make_weather_tool

WEATHER_AGENT_NAME = "weather"

INSTRUCTIONS = """\
You are a concise weather assistant.
Always call the get_weather tool for every place the user asks about, one call per place; never guess the weather.
Answer in two or three short sentences with the conditions, the temperature in °C and the wind.
If the user names no place, ask which place they mean."""


def build_weather_agent(
    client: Any, provider: WeatherProvider | None = None, *, options: Mapping[str, Any] | None = None
) -> Agent:
    """A weather agent over ``client``.

    Build it once per chat client and share it: an agent run without a
    session keeps no state on the agent, and each new agent (and tool)
    registers new telemetry instruments, which the default OpenTelemetry
    provider keeps forever. ``options`` are chat options sent on every
    model call (the output-token limit)."""
    return Agent(
        client=client,
        name=WEATHER_AGENT_NAME,
        description="Answers questions about the current weather.",
        instructions=INSTRUCTIONS,
        tools=[make_weather_tool(provider or OfflineWeatherProvider())],
        default_options=dict(options or {}),
    )
