"""The weather agent."""

from agents.weather import WEATHER_AGENT_NAME, build_weather_agent

__all__ = ["WEATHER_AGENT_NAME", "build_weather_agent"]
