"""What a client sees for each failure: status, stable code, exact message."""

from __future__ import annotations

import json

import httpx
import openai
import pytest
from agent_framework.exceptions import ChatClientException

from settings import SettingsError
from streaming.errors import ErrorInfo, classify


def _request() -> httpx.Request:
    return httpx.Request("POST", "http://127.0.0.1/v1/chat/completions")


def _status(cls: type[openai.APIStatusError], code: int) -> openai.APIStatusError:
    return cls("upstream said no", response=httpx.Response(code, request=_request()), body=None)


UNAVAILABLE = "Could not reach the model service, or it dropped the connection."
UNREADABLE = "The model service sent a response this app could not read."

CASES = {
    "429": (
        _status(openai.RateLimitError, 429),
        429,
        "rate_limited",
        "The model service is rate limiting requests. Try again shortly.",
    ),
    "401": (
        _status(openai.AuthenticationError, 401),
        502,
        "upstream_auth",
        "The model service rejected this app's credentials.",
    ),
    "403": (
        _status(openai.PermissionDeniedError, 403),
        502,
        "upstream_auth",
        "The model service rejected this app's credentials.",
    ),
    "404": (
        _status(openai.NotFoundError, 404),
        502,
        "upstream_not_found",
        "The model service does not know the configured model or deployment.",
    ),
    "400": (_status(openai.BadRequestError, 400), 502, "upstream_rejected", "The model service rejected the request."),
    "400-content-filter": (  # Azure's filter refusing the prompt; the framework wraps it in its own exception
        openai.BadRequestError(
            "filtered",
            response=httpx.Response(400, request=_request()),
            body={"code": "content_filter", "message": "The response was filtered"},
        ),
        400,
        "content_filtered",
        "The model service's content filter blocked this request. Rewording the message may help.",
    ),
    "500": (_status(openai.InternalServerError, 500), 502, "upstream_error", "The model service failed to answer."),
    "418": (_status(openai.APIStatusError, 418), 502, "upstream_error", "The model service failed to answer."),
    "timeout": (
        openai.APITimeoutError(request=_request()),
        504,
        "upstream_timeout",
        "The model service did not answer in time.",
    ),
    "connection": (openai.APIConnectionError(request=_request()), 502, "upstream_unavailable", UNAVAILABLE),
    "api-error": (openai.APIError("bad chunk", request=_request(), body=None), 502, "upstream_error", UNREADABLE),
    "bug": (RuntimeError("secret-key-123"), 500, "internal_error", "The run failed unexpectedly."),
}


@pytest.mark.parametrize("name", list(CASES))
def test_each_failure_has_its_status_code_and_message(name: str) -> None:
    exc, status, code, message = CASES[name]
    assert classify(exc) == ErrorInfo(status, code, message)


@pytest.mark.parametrize("link", ["__cause__", "__context__"])
def test_the_cause_is_found_through_the_framework_s_wrapping(link: str) -> None:
    outer, middle = RuntimeError("framework"), ValueError("adapter")
    setattr(outer, link, middle)
    setattr(middle, link, CASES["429"][0])
    assert classify(outer).code == "rate_limited"


def test_a_cycle_of_causes_ends() -> None:
    first, second = RuntimeError("a"), RuntimeError("b")
    first.__cause__, second.__cause__ = second, first
    assert classify(first).code == "internal_error"


def test_a_settings_error_keeps_its_code_and_message() -> None:
    wrapped = RuntimeError("while building the client")
    wrapped.__cause__ = SettingsError("Set OPENAI_MODEL.", missing=("OPENAI_MODEL",))
    assert classify(wrapped) == ErrorInfo(503, "model_not_configured", "Set OPENAI_MODEL.")


@pytest.mark.parametrize("kind", ["ClientAuthenticationError", "CredentialUnavailableError"])
def test_no_azure_identity_is_credential_unavailable(kind: str) -> None:
    from azure.core.exceptions import ClientAuthenticationError

    exc = (
        ClientAuthenticationError("no token") if kind == "ClientAuthenticationError" else type(kind, (Exception,), {})()
    )
    assert classify(exc) == ErrorInfo(
        503,
        "credential_unavailable",
        "Could not get a token for Azure OpenAI: no managed identity or developer sign-in "
        "(az login) is available to DefaultAzureCredential, or it lacks access to the resource. "
        "Set AZURE_OPENAI_API_KEY or grant the identity the 'Cognitive Services OpenAI User' role.",
    )


def test_only_the_model_s_unreadable_stream_is_upstream() -> None:
    not_json = json.JSONDecodeError("Expecting value", "{", 1)
    try:
        raise ChatClientException("service failed", inner_exception=not_json) from not_json
    except ChatClientException as wrapped:
        assert classify(wrapped) == ErrorInfo(502, "upstream_error", UNREADABLE)
    assert classify(not_json).code == "internal_error"
    assert classify(ChatClientException("service failed")).code == "internal_error"
