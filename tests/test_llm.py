"""``llm``: the chat client the settings pick, built so the model hears why a tool failed."""

from __future__ import annotations

import pytest

import llm
from settings import model_settings
from tools import WeatherError

AZURE = {
    "AZURE_OPENAI_ENDPOINT": "https://r.openai.azure.com",
    "AZURE_OPENAI_API_KEY": "k",
    "AZURE_OPENAI_CHAT_DEPLOYMENT_NAME": "chat",
}


def test_the_azure_client_uses_the_configured_api_version() -> None:
    client = llm.create_chat_client(model_settings({**AZURE, "AZURE_OPENAI_API_VERSION": "2025-01-01-preview"}))
    assert client.client._custom_query == {"api-version": "2025-01-01-preview"}


@pytest.mark.parametrize(
    "env",
    [AZURE, {"OPENAI_API_KEY": "sk-k", "OPENAI_MODEL": "m"}, {"MODEL_PROVIDER": "offline"}],
    ids=["azure_openai", "openai", "offline"],
)
def test_every_client_lets_the_model_see_why_a_tool_failed(env: dict[str, str]) -> None:
    assert (
        llm.create_chat_client(model_settings(env)).function_invocation_configuration["include_detailed_errors"] is True
    )


class NoSuchPlace:
    name = "nowhere"

    async def current(self, location: str):
        raise WeatherError(f"No place named '{location}' was found.")


async def test_the_model_relays_the_tool_s_reason() -> None:
    """README: the model gets the tool's message ("No place named 'Atlantis' was found"), not a bare failure."""
    from streaming.events import TextDelta
    from streaming.request import RunRequest
    from streaming.runners import run_agent

    settings = model_settings({"MODEL_PROVIDER": "offline", "OFFLINE_MODEL_DELAY_MS": "0"})
    client = llm.create_chat_client(settings)
    events = [e async for e in run_agent(RunRequest("Weather in Atlantis?"), client, settings, provider=NoSuchPlace())]
    text = "".join(e.text for e in events if isinstance(e, TextDelta))
    assert "I could not get the weather for Atlantis (No place named 'Atlantis' was found.)." in text
