"""Picks the chat client from settings: Azure OpenAI, OpenAI or any
OpenAI-compatible server, or the built-in offline model.

One client per process (per event loop, per settings), reused by every
request: it holds the HTTP connection pool and, for keyless Azure OpenAI,
the credential and its token cache.
"""

from __future__ import annotations

import asyncio
from typing import Any

from settings import ModelSettings, SettingsError, model_settings

__all__ = ["ModelSettings", "chat_client", "create_chat_client", "model_settings"]

AZURE_TOKEN_SCOPE = "https://cognitiveservices.azure.com/.default"
# Ollama, llama.cpp and vLLM accept any key, but the OpenAI SDK insists on one.
KEYLESS_PLACEHOLDER = "not-needed"

_clients: dict[tuple[ModelSettings, int], Any] = {}


def create_chat_client(settings: ModelSettings) -> Any:
    """Build a new chat client for ``settings`` (no caching)."""
    return _tell_tool_errors(_create_chat_client(settings))


def _tell_tool_errors(client: Any) -> Any:
    """Let the model see why a tool failed ("No place named 'Atlantis' was
    found") instead of the framework's bare "Function failed.", so it can
    tell the user. Safe because the app's tools raise only messages written
    for the model (``tools.weather.WeatherError``; anything else becomes a
    generic one)."""
    client.function_invocation_configuration["include_detailed_errors"] = True
    return client


def _create_chat_client(settings: ModelSettings) -> Any:
    if settings.provider == "offline":
        from llm.offline import OfflineChatClient

        return OfflineChatClient(delay=settings.offline_delay_s)

    from agent_framework.openai import OpenAIChatCompletionClient

    if settings.provider == "azure_openai":
        if settings.api_key:
            auth: dict[str, Any] = {"api_key": settings.api_key}
        else:
            # Keyless: managed identity in Azure, `az login` (and others) locally.
            from azure.identity.aio import DefaultAzureCredential

            auth = {"credential": DefaultAzureCredential()}
        client = OpenAIChatCompletionClient(
            model=settings.model,
            azure_endpoint=settings.endpoint,
            api_version=settings.api_version,
            **auth,
        )
    else:
        client = OpenAIChatCompletionClient(
            model=settings.model,
            api_key=settings.api_key or KEYLESS_PLACEHOLDER,
            base_url=settings.endpoint,
        )
    # Streams can be long, but a silent upstream must not hold a request:
    # the read timeout bounds the gap between two chunks.
    client.client = client.client.with_options(timeout=settings.timeout_s, max_retries=settings.max_retries)
    return client


def chat_client(settings: ModelSettings | None = None) -> tuple[Any, ModelSettings]:
    """The shared client for the current settings, created on first use.

    Raises :class:`settings.SettingsError` when no model is configured.
    """
    settings = settings or model_settings()
    try:
        loop_id = id(asyncio.get_running_loop())
    except RuntimeError:
        loop_id = 0
    key = (settings, loop_id)
    client = _clients.get(key)
    if client is None:
        try:
            client = create_chat_client(settings)
        except Exception as exc:  # e.g. the SDK refusing an endpoint: a settings problem, not a crash
            raise SettingsError(
                f"Could not create the {settings.provider} client from the app's settings "
                f"({type(exc).__name__}); check the endpoint and model settings."
            ) from exc
        _clients[key] = client
    return client, settings
