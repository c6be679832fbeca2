"""Runners: run the weather agent or the workflow for one request and
yield stream events. The two triggers differ only in which runner they use.

Agents are built once per chat client and weather provider and shared
(see :func:`_agents`); the provider is chosen per request from the settings
(``WEATHER_PROVIDER``), so a settings change needs no restart. A workflow
is built per request, since one workflow instance cannot run
twice at once. Each runner always closes the framework stream it opened:
leaving the loop early does not close the model's HTTP call by itself.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

from settings import ModelSettings, run_limits
from streaming.events import AgentCompleted, AgentStarted, StreamEvent
from streaming.mapping import UpdateMapper
from streaming.request import RunRequest
from streaming.shield import finish

if TYPE_CHECKING:
    from agent_framework import Agent

    from tools import WeatherProvider

# The agents, the workflow and the tool import the Agent Framework (and
# llm's OpenAI client the SDK: together about a second). They load with the
# first run, inside the runners, so that indexing the app, /api/health and
# every 4xx answer never pay for them.

logger = logging.getLogger(__name__)

Runner = Callable[[RunRequest, Any, ModelSettings], AsyncIterator[StreamEvent]]

CLOSE_TIMEOUT_S = 2.0


@functools.lru_cache(maxsize=8)
def _agents(client: Any, provider: WeatherProvider, max_output_tokens: int) -> tuple[Agent, Agent, Agent]:
    """The weather agent, the researcher and the writer for ``client``,
    ``provider`` and ``max_output_tokens``, built once: a new agent or tool
    per request would register new OpenTelemetry instruments each time,
    which the default (proxy) meter provider keeps forever, a leak of about
    3 KB per request. Providers are kept per settings
    (``tools.weather_provider``), so this key is stable.

    ``max_output_tokens`` (``MAX_OUTPUT_TOKENS``) goes to the model as its
    output-token limit on every call; the workflow has no per-run chat
    options, so the agents carry it (a changed setting builds new ones)."""
    from agents import build_weather_agent
    from workflows import build_research_agents

    options = _options(max_output_tokens)
    return (
        build_weather_agent(client, provider, options=options),
        *build_research_agents(client, provider, options=options),
    )


def _shared_agents(client: Any, settings: ModelSettings, max_output_tokens: int) -> tuple[Agent, Agent, Agent]:
    """The shared agents for this request's weather provider, chosen from the settings now."""
    from tools import weather_provider

    return _agents(client, weather_provider(settings.provider), max_output_tokens)


def _options(max_output_tokens: int) -> dict[str, Any]:
    # The chat-completions client sends this as ``max_completion_tokens``.
    return {"max_tokens": max_output_tokens}


async def close_stream(stream: Any) -> None:
    """Close a framework stream, even while being cancelled, in bounded time."""
    try:
        await finish(stream.close(), CLOSE_TIMEOUT_S)
    except Exception:  # closing is best effort; the run's own error wins
        logger.debug("closing the stream failed", exc_info=True)


async def run_agent(
    request: RunRequest, client: Any, settings: ModelSettings, *, provider: WeatherProvider | None = None
) -> AsyncIterator[StreamEvent]:
    """The weather agent: its text, tool calls and results, then ``done``."""
    from agents import WEATHER_AGENT_NAME, build_weather_agent

    caps = run_limits()
    if provider:
        agent = build_weather_agent(client, provider, options=_options(caps.max_output_tokens))
    else:
        agent = _shared_agents(client, settings, caps.max_output_tokens)[0]
    mapper = UpdateMapper(max_output_chars=caps.max_run_output_chars)
    yield AgentStarted(WEATHER_AGENT_NAME)
    # An AG-UI request may offer the client's own (declaration-only) tools.
    client_tools = getattr(request, "client_tools", ())
    if client_tools:
        stream = agent.run(request.to_messages(), stream=True, tools=list(client_tools))
    else:
        stream = agent.run(request.to_messages(), stream=True)
    try:
        async for update in stream:
            for event in mapper.feed(update, WEATHER_AGENT_NAME):
                yield event
    finally:
        await close_stream(stream)
    for event in mapper.flush():
        yield event
    yield AgentCompleted(WEATHER_AGENT_NAME)
    yield mapper.done(settings.provider, settings.model)


async def run_workflow(
    request: RunRequest, client: Any, settings: ModelSettings, *, provider: WeatherProvider | None = None
) -> AsyncIterator[StreamEvent]:
    """Researcher then writer: each agent's start, text, tools and end."""
    from agent_framework import AgentResponseUpdate

    from workflows import RESEARCHER_NAME, WRITER_NAME, build_research_agents, build_research_workflow

    caps = run_limits()
    if provider:
        researcher, writer = build_research_agents(client, provider, options=_options(caps.max_output_tokens))
    else:
        researcher, writer = _shared_agents(client, settings, caps.max_output_tokens)[1:]
    workflow = build_research_workflow(researcher, writer)
    agents = {RESEARCHER_NAME, WRITER_NAME}
    mapper = UpdateMapper(max_output_chars=caps.max_run_output_chars)
    stream = workflow.run(request.to_messages(), stream=True)
    try:
        async for event in stream:
            agent = event.executor_id
            if agent not in agents:
                continue
            if event.type == "executor_invoked":
                yield AgentStarted(agent)
            elif event.type in ("intermediate", "output") and isinstance(event.data, AgentResponseUpdate):
                for mapped in mapper.feed(event.data, agent):
                    yield mapped
            elif event.type == "executor_completed":
                for mapped in mapper.flush():
                    yield mapped
                yield AgentCompleted(agent)
            # executor_failed is followed by the exception itself, raised by the stream.
    finally:
        await close_stream(stream)
    yield mapper.done(settings.provider, settings.model)
