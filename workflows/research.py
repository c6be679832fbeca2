"""Builds the sequential researcher -> writer workflow.

A workflow instance runs one request at a time, so the runner builds one
per request (cheap: a small graph). The two agents inside it are built
once per chat client and shared: agents hold no conversation of their own
(each workflow run keeps its own), and building them per request would
register new telemetry instruments every time.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from agent_framework import Agent, Workflow
from agent_framework.orchestrations import SequentialBuilder

from tools import OfflineWeatherProvider, WeatherProvider, make_weather_tool

RESEARCHER_NAME = "researcher"
WRITER_NAME = "writer"

RESEARCHER_INSTRUCTIONS = """\
You are a weather researcher. Call the get_weather tool for every place in the user's request, one call per place.
Then report the facts you found in a few short bullet points: conditions, temperature in °C, wind. No prose."""

WRITER_INSTRUCTIONS = """\
You are a writer. Using only the researcher's findings above, write what the user asked for
(a short report, article or poem). Keep it under 120 words. Do not invent weather data."""


def build_research_agents(
    client: Any, provider: WeatherProvider | None = None, *, options: Mapping[str, Any] | None = None
) -> tuple[Agent, Agent]:
    """The researcher (with ``get_weather``) and the writer, over ``client``;
    ``options`` are chat options sent on every model call."""
    researcher = Agent(
        client=client,
        name=RESEARCHER_NAME,
        description="Looks up the current weather for the places in the request.",
        instructions=RESEARCHER_INSTRUCTIONS,
        tools=[make_weather_tool(provider or OfflineWeatherProvider())],
        default_options=dict(options or {}),
    )
    writer = Agent(
        client=client,
        name=WRITER_NAME,
        description="Writes the piece the user asked for from the research.",
        instructions=WRITER_INSTRUCTIONS,
        default_options=dict(options or {}),
    )
    return researcher, writer


def build_research_workflow(researcher: Agent, writer: Agent) -> Workflow:
    """Researcher then writer, both streaming.

    ``intermediate_output_from="all_other"`` surfaces the researcher's
    updates as ``intermediate`` events and the writer's as ``output``, so
    both agents stream token by token. The writer sees the whole
    conversation: the user's request and the researcher's findings.
    ``ensure_trailing_user_turn`` keeps chat-completions servers that return
    nothing for a prompt ending on an assistant turn working.
    """
    return SequentialBuilder(
        participants=[researcher, writer],
        intermediate_output_from="all_other",
        ensure_trailing_user_turn=True,
    ).build()
