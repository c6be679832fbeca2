"""Model selection and limits from the environment."""

from __future__ import annotations

import pytest

import llm
from llm.offline import OfflineChatClient
from settings import SettingsError, model_settings, stream_settings


def test_nothing_configured_means_offline() -> None:
    settings = model_settings({"OFFLINE_MODEL_DELAY_MS": "5"})
    assert (settings.provider, settings.model, settings.offline_delay_s) == ("offline", "offline-demo", 0.005)


def test_azure_endpoint_selects_azure_and_accepts_the_framework_names() -> None:
    env = {"AZURE_OPENAI_ENDPOINT": "https://r.openai.azure.com", "AZURE_OPENAI_CHAT_COMPLETION_MODEL": "gpt"}
    settings = model_settings(env)
    assert (settings.provider, settings.model, settings.api_key) == ("azure_openai", "gpt", None)
    assert settings.api_version == "2024-10-21"
    env["AZURE_OPENAI_CHAT_DEPLOYMENT_NAME"] = "chat"
    env["OPENAI_API_KEY"] = "sk-other"  # the framework's trap: Azure must still win
    assert model_settings(env).model == "chat" and model_settings(env).provider == "azure_openai"


def test_openai_compatible_server() -> None:
    settings = model_settings({"OPENAI_BASE_URL": "http://127.0.0.1:11434/v1", "OPENAI_MODEL": "llama3.2"})
    assert (settings.provider, settings.endpoint, settings.api_key) == ("openai", "http://127.0.0.1:11434/v1", None)


def test_missing_settings_are_named_not_valued() -> None:
    with pytest.raises(SettingsError) as err:
        model_settings({"AZURE_OPENAI_ENDPOINT": "https://r.openai.azure.com", "AZURE_OPENAI_API_KEY": "k3y"})
    assert err.value.missing == ("AZURE_OPENAI_CHAT_DEPLOYMENT_NAME",)
    assert err.value.code == "model_not_configured"
    with pytest.raises(SettingsError, match="OPENAI_MODEL"):
        model_settings({"OPENAI_API_KEY": "sk"})
    with pytest.raises(SettingsError, match="MODEL_PROVIDER"):
        model_settings({"MODEL_PROVIDER": "llamas"})


def test_in_azure_without_a_model_is_an_error_unless_offline_is_chosen() -> None:
    with pytest.raises(SettingsError) as err:
        model_settings({"WEBSITE_INSTANCE_ID": "abc"})
    assert "AZURE_OPENAI_ENDPOINT" in err.value.missing
    assert model_settings({"WEBSITE_INSTANCE_ID": "abc", "MODEL_PROVIDER": "offline"}).provider == "offline"


def test_the_key_never_shows_in_repr() -> None:
    settings = model_settings({"OPENAI_API_KEY": "sk-secret", "OPENAI_MODEL": "m"})
    assert "sk-secret" not in repr(settings)


def test_stream_limits_and_bad_numbers() -> None:
    limits = stream_settings({"HEARTBEAT_SECONDS": "2.5", "MAX_MESSAGE_CHARS": "100"})
    assert (limits.heartbeat_s, limits.max_message_chars, limits.deadline_s) == (2.5, 100, 210)
    with pytest.raises(SettingsError, match="RUN_DEADLINE_SECONDS"):
        stream_settings({"RUN_DEADLINE_SECONDS": "soon"})
    with pytest.raises(SettingsError, match="between"):
        stream_settings({"HEARTBEAT_SECONDS": "0"})


def test_clients_are_built_once_and_shared() -> None:
    settings = model_settings({})
    first, _ = llm.chat_client(settings)
    second, _ = llm.chat_client(settings)
    assert first is second and isinstance(first, OfflineChatClient)


def test_azure_client_with_key_and_keyless(monkeypatch) -> None:
    from agent_framework.openai import OpenAIChatCompletionClient

    keyed = llm.create_chat_client(
        model_settings(
            {
                "AZURE_OPENAI_ENDPOINT": "https://r.openai.azure.com",
                "AZURE_OPENAI_API_KEY": "k",
                "AZURE_OPENAI_CHAT_DEPLOYMENT_NAME": "chat",
                "MODEL_TIMEOUT_SECONDS": "7",
            }
        )
    )
    assert isinstance(keyed, OpenAIChatCompletionClient) and keyed.model == "chat"
    assert keyed.client.timeout == 7 and keyed.client.max_retries == 2
    keyless = llm.create_chat_client(
        model_settings(
            {"AZURE_OPENAI_ENDPOINT": "https://r.openai.azure.com", "AZURE_OPENAI_CHAT_DEPLOYMENT_NAME": "c"}
        )
    )
    assert keyless.client._azure_ad_token_provider is not None


def test_a_client_the_sdk_refuses_to_build_is_a_settings_error(monkeypatch) -> None:
    def refuse(settings):
        raise ValueError("bad endpoint https://secret.example/?key=abc")

    monkeypatch.setattr(llm, "create_chat_client", refuse)
    settings = model_settings({"OPENAI_API_KEY": "k", "OPENAI_MODEL": "m", "OPENAI_BASE_URL": "nonsense"})
    with pytest.raises(SettingsError) as err:
        llm.chat_client(settings)
    assert err.value.code == "invalid_setting" and "ValueError" in str(err.value)
    assert "secret" not in str(err.value)
