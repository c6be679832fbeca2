"""Settings read from the environment (Azure app settings, or
``local.settings.json`` ``Values`` when run locally).

Read at request time, never at import: a missing or bad setting must not
stop the Functions host from indexing the app. Bad values raise
:class:`SettingsError`, which the app turns into a clear 503.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass

DEFAULT_AZURE_API_VERSION = "2024-10-21"


class SettingsError(Exception):
    """A setting is missing or malformed. The message names the setting
    and never includes its value."""

    def __init__(self, message: str, *, missing: tuple[str, ...] = (), code: str = "invalid_setting") -> None:
        super().__init__(message)
        self.missing = missing
        self.code = "model_not_configured" if missing else code


def _get(env: Mapping[str, str], *names: str) -> str | None:
    for name in names:
        value = env.get(name, "").strip()
        if value:
            return value
    return None


@dataclass(frozen=True, slots=True)
class Number:
    """A numeric setting's default and the range a value must fall in."""

    default: float
    minimum: float
    maximum: float


#: Every numeric setting, in one place: the README's configuration table
#: states the same defaults and ranges, and a test holds the two together.
NUMBERS: dict[str, Number] = {
    "MODEL_TIMEOUT_SECONDS": Number(60, minimum=1, maximum=600),
    "MODEL_MAX_RETRIES": Number(2, minimum=0, maximum=10),
    "OFFLINE_MODEL_DELAY_MS": Number(20, minimum=0, maximum=5000),
    "RUN_DEADLINE_SECONDS": Number(210, minimum=0.1, maximum=3600),
    "HEARTBEAT_SECONDS": Number(15, minimum=0.05, maximum=300),
    "SEND_TIMEOUT_SECONDS": Number(30, minimum=0.1, maximum=600),
    "MAX_MESSAGE_CHARS": Number(8000, minimum=1, maximum=1_000_000),
    "MAX_BODY_BYTES": Number(256 * 1024, minimum=1024, maximum=10 * 1024 * 1024),
    "MAX_HISTORY_MESSAGES": Number(40, minimum=0, maximum=1000),
    "MAX_OUTPUT_TOKENS": Number(4096, minimum=1, maximum=1_000_000),
    "MAX_RUN_OUTPUT_CHARS": Number(100_000, minimum=1, maximum=100_000_000),
    "MAX_CONCURRENT_RUNS": Number(64, minimum=1, maximum=100_000),
    "BODY_READ_TIMEOUT_SECONDS": Number(10, minimum=0.1, maximum=600),
    "COALESCE_MS": Number(0, minimum=0, maximum=2),
    "RESUME_WINDOW_SECONDS": Number(30, minimum=0, maximum=3600),
    "RESUME_RETENTION_SECONDS": Number(300, minimum=0, maximum=86400),
    "RESUME_MAX_RUNS": Number(1000, minimum=1, maximum=1_000_000),
    "RESUME_MAX_RUN_BYTES": Number(4 << 20, minimum=64 * 1024, maximum=1 << 30),
    "STREAM_LEASE_SECONDS": Number(10, minimum=1, maximum=300),
}


def _number(
    env: Mapping[str, str],
    name: str,
    default: float | None = None,
    *,
    minimum: float | None = None,
    maximum: float | None = None,
) -> float:
    """The setting ``name`` as a number within its range, from :data:`NUMBERS`
    (or from ``default``, ``minimum`` and ``maximum`` when given)."""
    spec = NUMBERS[name] if default is None else Number(default, minimum, maximum)  # type: ignore[arg-type]
    raw = _get(env, name)
    if raw is None:
        return spec.default
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"Setting {name} must be a number.") from None
    if not spec.minimum <= value <= spec.maximum:
        raise SettingsError(f"Setting {name} must be between {spec.minimum:g} and {spec.maximum:g}.")
    return value


@dataclass(frozen=True, slots=True)
class ModelSettings:
    """Which model to call and how. ``provider`` is ``azure_openai``,
    ``openai`` (OpenAI or any OpenAI-compatible server) or ``offline``."""

    provider: str
    model: str
    endpoint: str | None = None
    api_key: str | None = None
    api_version: str | None = None
    offline_delay_s: float = 0.02
    timeout_s: float = 60.0
    max_retries: int = 2

    def __repr__(self) -> str:  # never print the key
        return f"ModelSettings(provider={self.provider!r}, model={self.model!r}, endpoint={self.endpoint!r})"


PROVIDERS = ("azure_openai", "openai", "offline")


def model_settings(env: Mapping[str, str] | None = None) -> ModelSettings:
    """Pick the model from the environment.

    ``MODEL_PROVIDER`` forces a choice. Unset: ``AZURE_OPENAI_ENDPOINT``
    means Azure OpenAI; else ``OPENAI_API_KEY`` or ``OPENAI_BASE_URL`` means
    OpenAI or an OpenAI-compatible server; else the offline model, except
    when running in Azure (``WEBSITE_INSTANCE_ID`` set), where serving demo
    answers by accident would be worse than a clear error.
    """
    env = os.environ if env is None else env
    timeout = _number(env, "MODEL_TIMEOUT_SECONDS")
    retries = int(_number(env, "MODEL_MAX_RETRIES"))
    forced = (_get(env, "MODEL_PROVIDER") or "").lower().replace("-", "_")
    if forced and forced not in PROVIDERS:
        raise SettingsError(f"Setting MODEL_PROVIDER must be one of: {', '.join(PROVIDERS)}.")
    provider = forced or (
        "azure_openai"
        if _get(env, "AZURE_OPENAI_ENDPOINT")
        else "openai"
        if _get(env, "OPENAI_API_KEY", "OPENAI_BASE_URL")
        else "offline"
    )

    if provider == "azure_openai":
        endpoint = _get(env, "AZURE_OPENAI_ENDPOINT")
        deployment = _get(
            env, "AZURE_OPENAI_CHAT_DEPLOYMENT_NAME", "AZURE_OPENAI_CHAT_COMPLETION_MODEL", "AZURE_OPENAI_MODEL"
        )
        missing = tuple(
            name
            for name, value in (("AZURE_OPENAI_ENDPOINT", endpoint), ("AZURE_OPENAI_CHAT_DEPLOYMENT_NAME", deployment))
            if not value
        )
        if missing:
            raise SettingsError(f"Azure OpenAI is not configured: set {' and '.join(missing)}.", missing=missing)
        return ModelSettings(
            provider=provider,
            model=deployment or "",
            endpoint=endpoint,
            api_key=_get(env, "AZURE_OPENAI_API_KEY"),
            api_version=_get(env, "AZURE_OPENAI_API_VERSION") or DEFAULT_AZURE_API_VERSION,
            timeout_s=timeout,
            max_retries=retries,
        )

    if provider == "openai":
        model = _get(env, "OPENAI_MODEL", "OPENAI_CHAT_COMPLETION_MODEL")
        if not model:
            raise SettingsError(
                "OpenAI is not configured: set OPENAI_MODEL (the model name the server serves).",
                missing=("OPENAI_MODEL",),
            )
        return ModelSettings(
            provider=provider,
            model=model,
            endpoint=_get(env, "OPENAI_BASE_URL"),
            api_key=_get(env, "OPENAI_API_KEY"),
            timeout_s=timeout,
            max_retries=retries,
        )

    if not forced and _get(env, "WEBSITE_INSTANCE_ID"):
        raise SettingsError(
            "No model is configured for this function app: set AZURE_OPENAI_ENDPOINT and "
            "AZURE_OPENAI_CHAT_DEPLOYMENT_NAME (or OPENAI_API_KEY / OPENAI_BASE_URL and OPENAI_MODEL). "
            "Set MODEL_PROVIDER=offline to serve the offline demo model on purpose.",
            missing=("AZURE_OPENAI_ENDPOINT", "AZURE_OPENAI_CHAT_DEPLOYMENT_NAME"),
        )
    delay_ms = _number(env, "OFFLINE_MODEL_DELAY_MS")
    return ModelSettings(provider="offline", model="offline-demo", offline_delay_s=delay_ms / 1000)


@dataclass(frozen=True, slots=True)
class StreamSettings:
    """Limits and timings of one streamed run."""

    max_message_chars: int = 8000
    max_body_bytes: int = 256 * 1024
    max_history_messages: int = 40
    heartbeat_s: float = 15.0
    deadline_s: float = 210.0
    send_timeout_s: float = 30.0


def stream_settings(env: Mapping[str, str] | None = None) -> StreamSettings:
    env = os.environ if env is None else env
    return StreamSettings(
        max_message_chars=int(_number(env, "MAX_MESSAGE_CHARS")),
        max_body_bytes=int(_number(env, "MAX_BODY_BYTES")),
        max_history_messages=int(_number(env, "MAX_HISTORY_MESSAGES")),
        heartbeat_s=_number(env, "HEARTBEAT_SECONDS"),
        deadline_s=_number(env, "RUN_DEADLINE_SECONDS"),
        send_timeout_s=_number(env, "SEND_TIMEOUT_SECONDS"),
    )


# --- Hardening: output caps, concurrency, body deadline, local host names ---


@dataclass(frozen=True, slots=True)
class RunLimits:
    """What one run, and one worker process, may take.

    ``max_output_tokens`` goes to the model as its output-token limit on
    every call; ``max_run_output_chars`` caps the text a run streams (the
    framework keeps every update of a run in memory until it ends);
    ``max_concurrent_runs`` caps the runs one worker process holds at once;
    ``body_read_timeout_s`` bounds reading a request body.
    """

    max_output_tokens: int = 4096
    max_run_output_chars: int = 100_000
    max_concurrent_runs: int = 64
    body_read_timeout_s: float = 10.0


def run_limits(env: Mapping[str, str] | None = None) -> RunLimits:
    env = os.environ if env is None else env
    return RunLimits(
        max_output_tokens=int(_number(env, "MAX_OUTPUT_TOKENS")),
        max_run_output_chars=int(_number(env, "MAX_RUN_OUTPUT_CHARS")),
        max_concurrent_runs=int(_number(env, "MAX_CONCURRENT_RUNS")),
        body_read_timeout_s=_number(env, "BODY_READ_TIMEOUT_SECONDS"),
    )


LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1")


def allowed_hosts(env: Mapping[str, str] | None = None, *, bound: str | None = None) -> frozenset[str]:
    """Host names the local host answers to: loopback names, the address
    it is bound to, and ``ALLOWED_HOSTS`` (comma-separated; ``*`` allows
    any). Compared without the port and case-insensitively."""
    env = os.environ if env is None else env
    names = {*LOCAL_HOSTS}
    if bound and bound not in ("0.0.0.0", "::"):
        names.add(bound)
    for raw in (_get(env, "ALLOWED_HOSTS") or "").split(","):
        name = raw.strip().lower()
        if not name:
            continue
        if name != "*" and not _HOST_NAME.fullmatch(name):
            raise SettingsError("Setting ALLOWED_HOSTS must be a comma-separated list of host names (or *).")
        names.add(name.strip("[]"))
    return frozenset(n.lower() for n in names)


_HOST_NAME = re.compile(r"\[?[0-9a-z.:-]{1,253}\]?")


# ---------------------------------------------------------------------------- the run log and resuming


@dataclass(frozen=True, slots=True)
class ResumeSettings:
    """How events reach readers and how long runs can be resumed.

    ``store_url`` empty: runs live in this process's memory; ``redis://``
    or ``rediss://``: in Redis, shared by every instance."""

    coalesce_s: float = 0.0
    window_s: float = 30.0
    retention_s: float = 300.0
    max_runs: int = 1000
    max_run_bytes: int = 4 << 20
    store_url: str = ""
    lease_s: float = 10.0

    def __repr__(self) -> str:  # the URL may hold a password
        return f"ResumeSettings(window_s={self.window_s}, retention_s={self.retention_s}, store={self.store_kind})"

    @property
    def store_kind(self) -> str:
        return self.store_url.split("://", 1)[0] if self.store_url else "memory"


def resume_settings(env: Mapping[str, str] | None = None) -> ResumeSettings:
    env = os.environ if env is None else env
    url = _get(env, "STREAM_STORE_URL") or ""
    if url.lower() == "memory":
        url = ""
    scheme, separator, _ = url.partition("://")
    if url and (not separator or scheme.lower() not in ("redis", "rediss")):
        raise SettingsError("Setting STREAM_STORE_URL must be empty, 'memory', or a redis:// or rediss:// URL.")
    return ResumeSettings(
        coalesce_s=_number(env, "COALESCE_MS") / 1000,
        window_s=_number(env, "RESUME_WINDOW_SECONDS"),
        retention_s=_number(env, "RESUME_RETENTION_SECONDS"),
        max_runs=int(_number(env, "RESUME_MAX_RUNS")),
        max_run_bytes=int(_number(env, "RESUME_MAX_RUN_BYTES")),
        store_url=url,
        lease_s=_number(env, "STREAM_LEASE_SECONDS"),
    )


# --- Telemetry (telemetry.py) ---

_TRUE = ("true", "1", "yes", "on")
_FALSE = ("false", "0", "no", "off")
# Standard OpenTelemetry variables that ask for an exporter.
OTEL_EXPORTER_VARIABLES = (
    "OTEL_TRACES_EXPORTER",
    "OTEL_METRICS_EXPORTER",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
)


def _flag(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = _get(env, name)
    if raw is None:
        return default
    if raw.lower() in _TRUE:
        return True
    if raw.lower() in _FALSE:
        return False
    raise SettingsError(f"Setting {name} must be true or false.")


@dataclass(frozen=True, slots=True)
class TelemetrySettings:
    """Where telemetry goes, if anywhere.

    ``connection_string`` (``APPLICATIONINSIGHTS_CONNECTION_STRING``) sends
    traces and metrics to Application Insights; otherwise ``otel_exporters``
    names the standard ``OTEL_*`` variables that ask for an exporter.
    ``sensitive_data`` (``ENABLE_SENSITIVE_DATA``) lets prompts, completions
    and tool arguments into spans: off unless asked for.
    """

    connection_string: str | None = None
    otel_exporters: tuple[str, ...] = ()
    sensitive_data: bool = False
    disabled: bool = False

    @property
    def wanted(self) -> bool:
        return not self.disabled and bool(self.connection_string or self.otel_exporters)


def telemetry_settings(env: Mapping[str, str] | None = None) -> TelemetrySettings:
    env = os.environ if env is None else env
    exporters = tuple(
        name for name in OTEL_EXPORTER_VARIABLES if (_get(env, name) or "none").lower() not in ("none", "")
    )
    return TelemetrySettings(
        connection_string=_get(env, "APPLICATIONINSIGHTS_CONNECTION_STRING"),
        otel_exporters=exporters,
        sensitive_data=_flag(env, "ENABLE_SENSITIVE_DATA", False),
        disabled=_flag(env, "OTEL_SDK_DISABLED", False),
    )


# --- Weather (the get_weather tool's data source) -----------------------------------------------

WEATHER_PROVIDERS = ("auto", "open-meteo", "offline")
DEFAULT_GEOCODING_API_BASE_URL = "https://geocoding-api.open-meteo.com/v1"
DEFAULT_WEATHER_API_BASE_URL = "https://api.open-meteo.com/v1"
NUMBERS.update(
    {
        "WEATHER_CACHE_SECONDS": Number(600, minimum=0, maximum=86400),
        "WEATHER_TIMEOUT_SECONDS": Number(4, minimum=0.1, maximum=30),
    }
)


@dataclass(frozen=True, slots=True)
class WeatherSettings:
    """Where ``get_weather`` gets its data. ``provider`` is ``auto`` (the
    offline sample data with the offline model, Open-Meteo with any real
    model), ``open-meteo`` or ``offline``. Hashable: the app keeps one
    provider (and its cache) per distinct settings."""

    provider: str = "auto"
    geocoding_url: str = DEFAULT_GEOCODING_API_BASE_URL
    weather_url: str = DEFAULT_WEATHER_API_BASE_URL
    cache_s: float = 600.0
    timeout_s: float = 4.0

    def resolve(self, model_provider: str) -> str:
        """The provider to use with a model from ``model_provider``."""
        if self.provider != "auto":
            return self.provider
        return "offline" if model_provider == "offline" else "open-meteo"


def _base_url(env: Mapping[str, str], name: str, default: str) -> str:
    raw = _get(env, name)
    if raw is None:
        return default
    if not raw.startswith(("http://", "https://")) or any(c.isspace() for c in raw) or "?" in raw or "#" in raw:
        raise SettingsError(f"Setting {name} must be an http:// or https:// base URL without a query.")
    return raw.rstrip("/")


def weather_settings(env: Mapping[str, str] | None = None) -> WeatherSettings:
    env = os.environ if env is None else env
    provider = (_get(env, "WEATHER_PROVIDER") or "auto").lower().replace("_", "-")
    if provider == "openmeteo":
        provider = "open-meteo"
    if provider not in WEATHER_PROVIDERS:
        raise SettingsError(f"Setting WEATHER_PROVIDER must be one of: {', '.join(WEATHER_PROVIDERS)}.")
    return WeatherSettings(
        provider=provider,
        geocoding_url=_base_url(env, "GEOCODING_API_BASE_URL", DEFAULT_GEOCODING_API_BASE_URL),
        weather_url=_base_url(env, "WEATHER_API_BASE_URL", DEFAULT_WEATHER_API_BASE_URL),
        cache_s=_number(env, "WEATHER_CACHE_SECONDS"),
        timeout_s=_number(env, "WEATHER_TIMEOUT_SECONDS"),
    )


# -- The Agent Framework's own logs ----------------------------------------------------------------

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def framework_log_level(env: Mapping[str, str] | None = None) -> str:
    """``FRAMEWORK_LOG_LEVEL``: the level of the Agent Framework's
    ``agent_framework`` logger. WARNING by default: at INFO it writes two
    lines for every tool call (its name, then that it succeeded), which the
    stream's events, the traces and the metrics already carry, and each
    line is paid for per call (in Azure it also crosses to the host)."""
    env = os.environ if env is None else env
    level = (_get(env, "FRAMEWORK_LOG_LEVEL") or "WARNING").upper()
    if level not in LOG_LEVELS:
        raise SettingsError(f"Setting FRAMEWORK_LOG_LEVEL must be one of: {', '.join(LOG_LEVELS)}.")
    return level
