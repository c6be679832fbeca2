"""The ``get_weather`` function tool, as the model sees it.

Imported only when agents are built (it pulls in the Agent Framework), so
``import tools`` stays cheap.
"""

from __future__ import annotations

from typing import Annotated

from agent_framework import FunctionTool, tool
from pydantic import Field

from tools.weather import MAX_LOCATION_CHARS, TOOL_TIMEOUT_S, WeatherProvider, lookup


def make_weather_tool(provider: WeatherProvider, *, timeout_s: float = TOOL_TIMEOUT_S) -> FunctionTool:
    """Build the ``get_weather`` tool over ``provider``.

    A failure becomes a failed tool result: the stream carries a
    ``tool_result`` with ``is_error``, and the model gets the
    :class:`tools.weather.WeatherError` message (``include_detailed_errors``
    on the chat client; see ``llm``)."""

    @tool(name="get_weather")
    async def get_weather(
        location: Annotated[
            str,
            Field(
                description=(
                    "City or place name, optionally with its region or country to pick among places with "
                    "the same name, for example 'Seattle', 'Portland, Maine' or 'Paris, FR'."
                ),
                min_length=1,
                max_length=MAX_LOCATION_CHARS,
            ),
        ],
    ) -> dict[str, object]:
        """Get the current weather for a location: conditions, temperature and feels-like in °C, humidity in %,
        wind in km/h, and the place it resolved to."""
        return await lookup(provider, location, timeout_s=timeout_s)

    return get_weather
