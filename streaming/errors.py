"""Turns exceptions into safe, stable error codes for clients.

Clients get a code to branch on and a message a person can act on, never a
stack trace, an upstream body or a secret. The full exception goes to the
log, with the run id.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from types import ModuleType

from settings import SettingsError
from streaming.mapping import OutputTooLong


@dataclass(frozen=True, slots=True)
class ErrorInfo:
    status: int
    code: str
    message: str


# The model service's content filter (Azure OpenAI's, or any server that
# answers with its codes). Not a fault of the app or the service: the client
# gets a code of its own and a message saying that rewording may help.
CONTENT_FILTERED_PROMPT = ErrorInfo(
    400,
    "content_filtered",
    "The model service's content filter blocked this request. Rewording the message may help.",
)
CONTENT_FILTERED_ANSWER = ErrorInfo(
    502,
    "content_filtered",
    "The model service's content filter blocked the rest of the answer. Rewording the message may help.",
)


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """The exception and its causes: the framework wraps SDK errors."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _is_credential_error(exc: BaseException) -> bool:
    core = _loaded("azure.core.exceptions")
    if core is not None and isinstance(exc, core.ClientAuthenticationError):
        return True
    return type(exc).__name__ == "CredentialUnavailableError"


def _loaded(name: str) -> ModuleType | None:
    """``name`` if something already imported it, else ``None``. The SDK and
    the framework load with the first model run, not with the app (importing
    them costs a second); an exception of theirs cannot exist before they do,
    so classifying never has to import them."""
    return sys.modules.get(name)


def _is_unreadable_model_response(exc: BaseException) -> bool:
    """A model stream chunk that is not JSON: the OpenAI SDK raises
    ``json.JSONDecodeError``, which the framework wraps in its
    ``ChatClientException`` (so a JSON error of our own stays internal)."""
    exceptions = _loaded("agent_framework.exceptions")
    if exceptions is None:
        return False
    chain = list(_chain(exc))
    return any(isinstance(err, exceptions.ChatClientException) for err in chain) and any(
        isinstance(err, json.JSONDecodeError) for err in chain
    )


def classify(exc: BaseException) -> ErrorInfo:
    """Map an exception raised during a run to what the client sees."""
    for err in _chain(exc):
        if isinstance(err, OutputTooLong):
            return ErrorInfo(
                502, "output_too_long", f"The answer passed this app's limit of {err.limit} characters for one run."
            )
        if isinstance(err, SettingsError):
            return ErrorInfo(503, err.code, str(err))
        if _is_credential_error(err):
            return ErrorInfo(
                503,
                "credential_unavailable",
                "Could not get a token for Azure OpenAI: no managed identity or developer sign-in "
                "(az login) is available to DefaultAzureCredential, or it lacks access to the resource. "
                "Set AZURE_OPENAI_API_KEY or grant the identity the 'Cognitive Services OpenAI User' role.",
            )
        info = _sdk_error(err)
        if info is not None:
            return info
    if _is_unreadable_model_response(exc):
        return ErrorInfo(502, "upstream_error", "The model service sent a response this app could not read.")
    return ErrorInfo(500, "internal_error", "The run failed unexpectedly.")


def _sdk_error(err: BaseException) -> ErrorInfo | None:
    """What an OpenAI SDK error means for the client, or ``None``."""
    openai = _loaded("openai")
    if openai is None:
        return None
    if isinstance(err, openai.RateLimitError):
        return ErrorInfo(429, "rate_limited", "The model service is rate limiting requests. Try again shortly.")
    if isinstance(err, openai.AuthenticationError | openai.PermissionDeniedError):
        return ErrorInfo(502, "upstream_auth", "The model service rejected this app's credentials.")
    if isinstance(err, openai.NotFoundError):
        return ErrorInfo(
            502, "upstream_not_found", "The model service does not know the configured model or deployment."
        )
    if isinstance(err, openai.BadRequestError):
        if err.code == "content_filter":  # the framework's content-filter exception wraps this one
            return CONTENT_FILTERED_PROMPT
        return ErrorInfo(502, "upstream_rejected", "The model service rejected the request.")
    if isinstance(err, openai.APITimeoutError):
        return ErrorInfo(504, "upstream_timeout", "The model service did not answer in time.")
    if isinstance(err, openai.APIConnectionError):
        return ErrorInfo(
            502, "upstream_unavailable", "Could not reach the model service, or it dropped the connection."
        )
    if isinstance(err, openai.APIStatusError):
        return ErrorInfo(502, "upstream_error", "The model service failed to answer.")
    if isinstance(err, openai.APIError):
        return ErrorInfo(502, "upstream_error", "The model service sent a response this app could not read.")
    return None
