"""Model selection and limits from the environment."""

from __future__ import annotations

import argparse
import inspect
import re

import pytest

import llm
import settings as settings_module
from llm.offline import OfflineChatClient
from settings import (
    NUMBERS,
    Number,
    SettingsError,
    _number,
    model_settings,
    stream_settings,
)
from tests.support import SettingRow, readme_settings


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


# ------------------------------------------------------------------------------ the README's table, row by row

ROWS = {row.name: row for row in readme_settings()}
# What makes a numeric setting take effect: the model's timeouts and retries
# only apply to a real model, the offline pace only to the offline one.
BASES = ({}, {"OPENAI_API_KEY": "k", "OPENAI_MODEL": "m"})


def _float(text: str) -> float:
    return float(text.replace(",", ""))


def _stated_number(row: SettingRow) -> tuple[float, float, float] | None:
    """``default (minimum–maximum)`` from the row, or None for a non-numeric setting."""
    match = re.fullmatch(r"([\d.,]+)\s*\(([\d.,]+)\s*[–-]\s*([\d.,]+)\)", row.default)
    if match:
        return _float(match[1]), _float(match[2]), _float(match[3])
    assert not re.fullmatch(r"[\d.,]+", row.default), f"{row.name}: state its range, e.g. `10 (1–60)`"
    return None


def _readers() -> list:
    """The public functions that read settings from an ``env`` mapping."""
    return [
        fn
        for name, fn in vars(settings_module).items()
        if callable(fn)
        and not name.startswith(("_", "x_", "xǁ"))  # nor the copies `make mutate` writes
        and "__mutmut_" not in name
        and getattr(fn, "__module__", None) == "settings"
        and next(iter(inspect.signature(fn).parameters), None) == "env"
    ]


def _effective(env: dict[str, str]) -> dict[str, object]:
    """Everything the settings functions make of ``env``."""
    values: dict[str, object] = {}
    for read in _readers():
        try:
            result = read(env)
        except (SettingsError, TypeError) as exc:
            values[read.__name__] = repr(exc)
            continue
        fields = getattr(result, "__dataclass_fields__", None)
        values |= {f"{read.__name__}.{f}": getattr(result, f) for f in fields} if fields else {read.__name__: result}
    return values


def declared_numbers() -> dict[str, Number]:
    """``settings.NUMBERS``, and every number a settings function reads with
    a default and range of its own (``_number(env, name, 5, minimum=...)``)."""
    found = dict(NUMBERS)
    real = settings_module._number

    def recording(env, name, default=None, *, minimum=None, maximum=None):
        if default is not None:
            found.setdefault(name, Number(default, minimum, maximum))
        return real(env, name, default, minimum=minimum, maximum=maximum)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(settings_module, "_number", recording)
        for base in BASES:
            _effective(base)
    return found


DECLARED = declared_numbers()


@pytest.mark.parametrize("name", sorted(set(ROWS) | set(DECLARED)))
def test_readme_settings_row_matches_the_code(name: str) -> None:
    assert name in ROWS, f"{name} is read by settings.py: add its row to README.md's configuration table"
    stated = _stated_number(ROWS[name])
    if name not in DECLARED:
        assert stated is None, f"{name} is a number: read it with settings._number"
        return
    default, minimum, maximum = stated or pytest.fail(f"{name}: the README gives no default and range")
    assert DECLARED[name] == Number(default, minimum, maximum)
    # Behaviour, not just the declaration: the default applies when unset, both
    # ends of the range are accepted, and a step beyond either is refused.
    spec = {} if name in NUMBERS else {"default": default, "minimum": minimum, "maximum": maximum}
    assert _number({}, name, **spec) == default
    assert _number({name: str(minimum)}, name, **spec) == minimum
    assert _number({name: f" {maximum} "}, name, **spec) == maximum
    step = min(0.01, minimum / 2) if minimum else 0.01
    for bad in (minimum - step, maximum + step):
        with pytest.raises(SettingsError) as err:
            _number({name: repr(bad)}, name, **spec)
        assert str(err.value) == f"Setting {name} must be between {minimum:g} and {maximum:g}."
    # And the setting reaches what the app uses.
    assert any(_effective({**base, name: str(maximum)}) != _effective(base) for base in BASES), f"{name} is ignored"


@pytest.mark.parametrize(
    ("name", "effective"),
    [
        ("AZURE_OPENAI_API_VERSION", lambda env: model_settings(env).api_version),
        ("STREAM_AUTH_LEVEL", lambda env: _auth_level(env)),
        ("HOST", lambda env: _devhost_arguments(env).host),
        ("PORT", lambda env: str(_devhost_arguments(env).port)),
        ("LOG_LEVEL", lambda env: _devhost_arguments(env).log_level),
    ],
)
def test_readme_defaults_of_text_settings(name: str, effective, monkeypatch: pytest.MonkeyPatch) -> None:
    azure = {"AZURE_OPENAI_ENDPOINT": "https://r.openai.azure.com", "AZURE_OPENAI_CHAT_DEPLOYMENT_NAME": "d"}
    default = ROWS[name].default
    assert default.startswith("`") and default.endswith("`"), f"{name}: write its default as `text`"
    assert effective(azure) == default.strip("`")
    assert effective({**azure, name: "4"}) != default.strip("`"), f"{name} is ignored"


def test_framework_log_level_is_a_level_name_in_any_case_warning_by_default() -> None:
    from settings import framework_log_level

    assert ROWS["FRAMEWORK_LOG_LEVEL"].default == "`WARNING`"
    assert framework_log_level({}) == "WARNING"
    assert framework_log_level({"FRAMEWORK_LOG_LEVEL": " info "}) == "INFO"
    with pytest.raises(SettingsError) as err:
        framework_log_level({"FRAMEWORK_LOG_LEVEL": "loud"})
    assert str(err.value) == "Setting FRAMEWORK_LOG_LEVEL must be one of: DEBUG, INFO, WARNING, ERROR, CRITICAL."


def _auth_level(env: dict[str, str]) -> str:
    import function_app

    with pytest.MonkeyPatch.context() as mp:
        for key, value in env.items():
            mp.setenv(key, value)
        if "STREAM_AUTH_LEVEL" in env:
            mp.setenv("STREAM_AUTH_LEVEL", "anonymous")
        return function_app._stream_auth_level().name.lower()


def _devhost_arguments(env: dict[str, str]):
    import devhost.__main__ as devhost_main

    captured = {}
    with pytest.MonkeyPatch.context() as mp:
        for key, value in env.items():
            mp.setenv(key, value)
        mp.setattr(devhost_main, "create_app", lambda **_: (_ for _ in ()).throw(SystemExit(0)))
        mp.setattr(
            devhost_main.argparse.ArgumentParser,
            "parse_args",
            lambda self, argv=None: captured.setdefault("args", argparse.ArgumentParser.parse_known_args(self, [])[0]),
        )
        with pytest.raises(SystemExit):
            devhost_main.main([])
    return captured["args"]


# ------------------------------------------------------------------------------ messages and names, exactly


def test_a_setting_not_declared_yet_can_give_its_own_default_and_range() -> None:
    assert _number({}, "NEW_LIMIT", 5, minimum=1, maximum=9) == 5
    assert _number({"NEW_LIMIT": "9"}, "NEW_LIMIT", 5, minimum=1, maximum=9) == 9
    with pytest.raises(SettingsError, match=r"^Setting NEW_LIMIT must be between 1 and 9\.$"):
        _number({"NEW_LIMIT": "10"}, "NEW_LIMIT", 5, minimum=1, maximum=9)
    with pytest.raises(KeyError):
        _number({}, "NEW_LIMIT")  # neither declared nor given


def test_the_first_set_name_wins_and_blank_counts_as_unset() -> None:
    azure = {"AZURE_OPENAI_ENDPOINT": " https://r.openai.azure.com ", "AZURE_OPENAI_CHAT_DEPLOYMENT_NAME": "  "}
    azure |= {"AZURE_OPENAI_CHAT_COMPLETION_MODEL": "second", "AZURE_OPENAI_MODEL": "third"}
    settings = model_settings(azure)
    assert (settings.endpoint, settings.model) == ("https://r.openai.azure.com", "second")
    assert model_settings({**azure, "AZURE_OPENAI_CHAT_COMPLETION_MODEL": ""}).model == "third"
    assert model_settings({"OPENAI_BASE_URL": "http://h/v1", "OPENAI_CHAT_COMPLETION_MODEL": "alias"}).model == "alias"


def test_the_provider_is_chosen_case_and_dash_blind() -> None:
    env = {"AZURE_OPENAI_ENDPOINT": "https://r.openai.azure.com", "AZURE_OPENAI_CHAT_DEPLOYMENT_NAME": "d"}
    assert model_settings({**env, "MODEL_PROVIDER": "Azure-OpenAI"}).provider == "azure_openai"
    assert model_settings({**env, "MODEL_PROVIDER": "OFFLINE"}).provider == "offline"
    assert model_settings({"OPENAI_API_KEY": "k", "OPENAI_MODEL": "m"}).provider == "openai"


def test_model_settings_carry_timeout_and_retries_to_real_models() -> None:
    limits = {"MODEL_TIMEOUT_SECONDS": "7", "MODEL_MAX_RETRIES": "4"}
    azure = {"AZURE_OPENAI_ENDPOINT": "https://r.openai.azure.com", "AZURE_OPENAI_CHAT_DEPLOYMENT_NAME": "d"}
    for env in (azure, {"OPENAI_API_KEY": "k", "OPENAI_MODEL": "m"}):
        settings = model_settings({**env, **limits})
        assert (settings.timeout_s, settings.max_retries) == (7.0, 4) and isinstance(settings.max_retries, int)
    keyed = model_settings({**azure, "AZURE_OPENAI_API_KEY": "k3y", "AZURE_OPENAI_API_VERSION": "2025-01-01"})
    assert (keyed.api_key, keyed.api_version) == ("k3y", "2025-01-01")


def test_settings_messages_name_what_to_set() -> None:
    with pytest.raises(SettingsError) as err:
        model_settings({"MODEL_PROVIDER": "azure_openai"})
    assert (
        str(err.value)
        == "Azure OpenAI is not configured: set AZURE_OPENAI_ENDPOINT and AZURE_OPENAI_CHAT_DEPLOYMENT_NAME."
    )
    assert err.value.missing == ("AZURE_OPENAI_ENDPOINT", "AZURE_OPENAI_CHAT_DEPLOYMENT_NAME")
    with pytest.raises(SettingsError) as err:
        model_settings({"OPENAI_BASE_URL": "http://h/v1"})
    assert str(err.value) == "OpenAI is not configured: set OPENAI_MODEL (the model name the server serves)."
    assert (err.value.missing, err.value.code) == (("OPENAI_MODEL",), "model_not_configured")
    with pytest.raises(SettingsError) as err:
        model_settings({"MODEL_PROVIDER": "llamas"})
    assert str(err.value) == "Setting MODEL_PROVIDER must be one of: azure_openai, openai, offline."
    assert (err.value.missing, err.value.code) == ((), "invalid_setting")
    with pytest.raises(SettingsError) as err:
        model_settings({"WEBSITE_INSTANCE_ID": "abc"})
    assert str(err.value) == (
        "No model is configured for this function app: set AZURE_OPENAI_ENDPOINT and "
        "AZURE_OPENAI_CHAT_DEPLOYMENT_NAME (or OPENAI_API_KEY / OPENAI_BASE_URL and OPENAI_MODEL). "
        "Set MODEL_PROVIDER=offline to serve the offline demo model on purpose."
    )
    assert err.value.missing == ("AZURE_OPENAI_ENDPOINT", "AZURE_OPENAI_CHAT_DEPLOYMENT_NAME")
    assert SettingsError("x", code="custom").code == "custom"


def test_repr_shows_the_choice_not_the_key() -> None:
    settings = model_settings({"OPENAI_API_KEY": "sk-secret", "OPENAI_MODEL": "m", "OPENAI_BASE_URL": "http://h/v1"})
    assert repr(settings) == "ModelSettings(provider='openai', model='m', endpoint='http://h/v1')"


def test_an_openai_compatible_server_needs_no_key() -> None:
    client = llm.create_chat_client(
        model_settings(
            {
                "OPENAI_BASE_URL": "http://127.0.0.1:9/v1",
                "OPENAI_MODEL": "llama3.2",
                "MODEL_TIMEOUT_SECONDS": "9",
                "MODEL_MAX_RETRIES": "0",
            }
        )
    )
    assert client.client.api_key == llm.KEYLESS_PLACEHOLDER == "not-needed"
    assert str(client.client.base_url) == "http://127.0.0.1:9/v1/"
    assert (client.client.timeout, client.client.max_retries, client.model) == (9, 0, "llama3.2")
    keyed = llm.create_chat_client(model_settings({"OPENAI_API_KEY": "sk-k", "OPENAI_MODEL": "m"}))
    assert keyed.client.api_key == "sk-k"


def test_the_offline_client_takes_its_pace_from_the_settings() -> None:
    client = llm.create_chat_client(model_settings({"OFFLINE_MODEL_DELAY_MS": "40"}))
    assert isinstance(client, OfflineChatClient) and client.delay == 0.04


async def test_a_client_per_event_loop_and_settings_from_the_environment(monkeypatch) -> None:
    import asyncio

    monkeypatch.setenv("OFFLINE_MODEL_DELAY_MS", "3")
    here, settings = llm.chat_client()
    assert settings.offline_delay_s == 0.003 and llm.chat_client()[0] is here
    elsewhere = await asyncio.to_thread(lambda: asyncio.run(_client_in_a_new_loop()))
    assert elsewhere is not here, "a client holds connections of its own event loop"


async def _client_in_a_new_loop():
    return llm.chat_client()[0]


def test_the_settings_error_for_a_client_that_cannot_be_built_is_exact(monkeypatch) -> None:
    def refuse(settings):
        raise ValueError("bad endpoint")

    monkeypatch.setattr(llm, "create_chat_client", refuse)
    with pytest.raises(SettingsError) as err:
        llm.chat_client(model_settings({"OPENAI_API_KEY": "k", "OPENAI_MODEL": "other-model"}))
    assert str(err.value) == (
        "Could not create the openai client from the app's settings (ValueError); "
        "check the endpoint and model settings."
    )
    assert isinstance(err.value.__cause__, ValueError)


@pytest.mark.parametrize(
    ("value", "store_url"),
    [
        ("", ""),
        ("memory", ""),
        ("Memory", ""),
        ("redis://cache:6379/0", "redis://cache:6379/0"),
        ("rediss://cache:6380/0", "rediss://cache:6380/0"),
        ("REDISS://cache:6380", "REDISS://cache:6380"),
        ("redis://:pa://ss@cache:6379/0", "redis://:pa://ss@cache:6379/0"),  # "://" in a password
    ],
)
def test_stream_store_url_is_memory_or_a_redis_url(value: str, store_url: str) -> None:
    assert settings_module.resume_settings({"STREAM_STORE_URL": value}).store_url == store_url


@pytest.mark.parametrize("value", ["http://cache:6379", "memcache", "sqlite:///runs.db?x=redis://y", "redis", "rediss"])
def test_any_other_stream_store_url_is_refused_without_echoing_it(value: str) -> None:
    with pytest.raises(settings_module.SettingsError) as raised:
        settings_module.resume_settings({"STREAM_STORE_URL": value})
    assert str(raised.value) == "Setting STREAM_STORE_URL must be empty, 'memory', or a redis:// or rediss:// URL."


def test_coalesce_ms_is_read_in_milliseconds() -> None:
    assert settings_module.resume_settings({"COALESCE_MS": "2"}).coalesce_s == 0.002


@pytest.mark.parametrize(("value", "expected"), [("true", True), ("YES", True), ("Off", False), ("FALSE", False)])
def test_telemetry_flags_read_the_usual_words_in_any_case(value: str, expected: bool) -> None:
    read = settings_module.telemetry_settings({"ENABLE_SENSITIVE_DATA": value, "OTEL_SDK_DISABLED": value})
    assert (read.sensitive_data, read.disabled) == (expected, expected)


def test_telemetry_is_off_and_private_by_default_and_none_asks_for_no_exporter() -> None:
    read = settings_module.telemetry_settings({"OTEL_TRACES_EXPORTER": "None", "OTEL_METRICS_EXPORTER": "otlp"})
    assert (read.sensitive_data, read.disabled) == (False, False)
    assert read.otel_exporters == ("OTEL_METRICS_EXPORTER",)
    with pytest.raises(settings_module.SettingsError, match="ENABLE_SENSITIVE_DATA must be true or false"):
        settings_module.telemetry_settings({"ENABLE_SENSITIVE_DATA": "sometimes"})


def test_allowed_hosts_skips_blank_entries_and_never_admits_a_wildcard_bind_address() -> None:
    hosts = settings_module.allowed_hosts({"ALLOWED_HOSTS": "one.example, ,,two.example"}, bound="::")
    assert {"one.example", "two.example"} <= hosts and "::" not in hosts and "" not in hosts
    with pytest.raises(settings_module.SettingsError) as raised:
        settings_module.allowed_hosts({"ALLOWED_HOSTS": "evil.example/path"})
    assert str(raised.value) == "Setting ALLOWED_HOSTS must be a comma-separated list of host names (or *)."


# A setting each reader takes, and a value that changes what it returns.
FROM_THE_ENVIRONMENT = {
    "model_settings": ("OFFLINE_MODEL_DELAY_MS", "7"),
    "stream_settings": ("MAX_MESSAGE_CHARS", "7"),
    "run_limits": ("MAX_OUTPUT_TOKENS", "7"),
    "allowed_hosts": ("ALLOWED_HOSTS", "app.example"),
    "resume_settings": ("RESUME_WINDOW_SECONDS", "7"),
    "telemetry_settings": ("OTEL_SDK_DISABLED", "true"),
    "weather_settings": ("WEATHER_PROVIDER", "open-meteo"),
    "framework_log_level": ("FRAMEWORK_LOG_LEVEL", "DEBUG"),
}


def test_every_reader_is_listed_for_the_environment_test() -> None:
    assert sorted(FROM_THE_ENVIRONMENT) == sorted(fn.__name__ for fn in _readers())


@pytest.mark.parametrize("reader", sorted(FROM_THE_ENVIRONMENT))
def test_with_no_mapping_given_settings_come_from_the_process_environment(
    reader: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """How the app calls them: per request, from the app settings."""
    name, value = FROM_THE_ENVIRONMENT[reader]
    read = getattr(settings_module, reader)
    monkeypatch.setenv(name, value)
    assert read() == read({name: value}) != read({})


def test_weather_provider_takes_openmeteo_as_one_word_and_names_the_choices() -> None:
    assert settings_module.weather_settings({"WEATHER_PROVIDER": "OpenMeteo"}).provider == "open-meteo"
    with pytest.raises(SettingsError) as err:
        settings_module.weather_settings({"WEATHER_PROVIDER": "accuweather"})
    assert str(err.value) == "Setting WEATHER_PROVIDER must be one of: auto, open-meteo, offline."


def test_weather_base_urls_lose_only_trailing_slashes_and_refuse_a_fragment() -> None:
    read = settings_module.weather_settings({"WEATHER_API_BASE_URL": "https://mirror.internal/X/"})
    assert read.weather_url == "https://mirror.internal/X"
    with pytest.raises(SettingsError, match="WEATHER_API_BASE_URL"):
        settings_module.weather_settings({"WEATHER_API_BASE_URL": "https://mirror.internal/v1#part"})
