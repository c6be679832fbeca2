"""Parse and validate a run request: POST JSON or GET ``?message=``.

Everything here answers bad input with :class:`RequestError` (a 4xx with
a code and a message naming the problem), never with anything else: a
property-based test holds it to that.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from starlette.requests import ClientDisconnect

from settings import StreamSettings

if TYPE_CHECKING:  # the framework loads with the first run, not with the app
    from agent_framework import Message

ROLES = ("user", "assistant")
JSON_TYPES = ("application/json",)


class RequestError(Exception):
    """Bad input: ``status`` is 4xx, ``code`` is stable for clients to
    branch on, ``message`` says what to fix."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message

    def body(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message}}


class ClientGone(Exception):
    """The client closed its connection before its request body arrived:
    there is nobody left to answer, and nothing wrong with the app."""


@dataclass(frozen=True, slots=True)
class Turn:
    role: str
    content: str


@dataclass(frozen=True, slots=True)
class RunRequest:
    """A validated request: the new message and earlier turns, oldest first."""

    message: str
    history: tuple[Turn, ...] = ()

    def to_messages(self) -> list[Message]:
        from agent_framework import Message

        return [Message(role=t.role, contents=[t.content]) for t in (*self.history, Turn("user", self.message))]


def _message(value: Any, limits: StreamSettings, field: str) -> str:
    if not isinstance(value, str):
        raise RequestError(400, "invalid_message", f"'{field}' must be a string.")
    if not value.strip():
        raise RequestError(400, "empty_message", f"'{field}' must not be empty.")
    if len(value) > limits.max_message_chars:
        raise RequestError(413, "message_too_long", f"'{field}' is longer than {limits.max_message_chars} characters.")
    if "\x00" in value:
        raise RequestError(400, "invalid_message", f"'{field}' must not contain NUL characters.")
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate ("\\ud800" in JSON): no model, log or encoder can take it
            raise RequestError(
                400, "invalid_message", f"'{field}' must be valid Unicode text (it has a lone surrogate)."
            ) from None
    return value


def _history(value: Any, limits: StreamSettings) -> tuple[Turn, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise RequestError(400, "invalid_messages", '\'messages\' must be a list of {"role", "content"} objects.')
    if len(value) > limits.max_history_messages:
        raise RequestError(
            413, "too_many_messages", f"'messages' has more than {limits.max_history_messages} earlier turns."
        )
    turns = []
    for i, item in enumerate(value):
        if not isinstance(item, dict):
            raise RequestError(400, "invalid_messages", f"'messages[{i}]' must be an object with 'role' and 'content'.")
        role = item.get("role")
        if role not in ROLES:
            raise RequestError(400, "invalid_role", f"'messages[{i}].role' must be 'user' or 'assistant'.")
        turns.append(Turn(role, _message(item.get("content"), limits, f"messages[{i}].content")))
    return tuple(turns)


def json_body(body: bytes, content_type: str | None, limits: StreamSettings) -> Any:
    """The JSON a POST body holds, every protocol's first step: the media
    type, the size, UTF-8, then JSON, each refused with its own 4xx."""
    media_type = (content_type or "").split(";", 1)[0].strip().lower()
    if media_type not in JSON_TYPES:
        raise RequestError(
            415,
            "unsupported_media_type",
            "Send the request as JSON with 'Content-Type: application/json'.",
        )
    if len(body) > limits.max_body_bytes:
        raise RequestError(413, "body_too_large", f"The request body is larger than {limits.max_body_bytes} bytes.")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise RequestError(400, "invalid_encoding", "The request body must be UTF-8.") from None
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        raise RequestError(400, "invalid_json", "The request body is not valid JSON.") from None


def parse_body(body: bytes, content_type: str | None, limits: StreamSettings) -> RunRequest:
    """Validate a POST body. Pure: no I/O, so it can be fuzzed."""
    data = json_body(body, content_type, limits)
    if not isinstance(data, dict):
        raise RequestError(400, "invalid_body", 'The request body must be a JSON object like {"message": "..."}.')
    if "message" not in data:
        raise RequestError(400, "missing_message", "The request body needs a 'message' string.")
    return RunRequest(_message(data["message"], limits, "message"), _history(data.get("messages"), limits))


def parse_query(params: Mapping[str, str], limits: StreamSettings) -> RunRequest:
    """Validate a GET (``EventSource``) request: ``?message=...``."""
    if "message" not in params:
        raise RequestError(400, "missing_message", "Add the message as a query parameter: ?message=...")
    return RunRequest(_message(params["message"], limits, "message"))


async def read_body(
    chunks: Any, declared_length: str | None, limits: StreamSettings, *, timeout_s: float | None = None
) -> bytes:
    """Read at most ``max_body_bytes`` from an ASGI body stream, refusing
    early on a declared or actual overflow instead of buffering it all.

    The whole body must arrive within ``timeout_s`` (408 otherwise): a
    client trickling its body must not hold a connection for as long as it
    likes. A client that leaves mid-body raises :class:`ClientGone`."""
    if declared_length is not None:
        try:
            declared = int(declared_length)
        except ValueError:
            raise RequestError(400, "invalid_content_length", "The Content-Length header is not a number.") from None
        if declared > limits.max_body_bytes:
            raise RequestError(413, "body_too_large", f"The request body is larger than {limits.max_body_bytes} bytes.")
    body = bytearray()
    try:
        async with asyncio.timeout(timeout_s):
            async for chunk in chunks:
                body += chunk
                if len(body) > limits.max_body_bytes:
                    raise RequestError(
                        413, "body_too_large", f"The request body is larger than {limits.max_body_bytes} bytes."
                    )
    except TimeoutError:
        raise RequestError(
            408, "body_timeout", f"The request body did not arrive within {timeout_s:g} seconds."
        ) from None
    except ClientDisconnect:
        raise ClientGone from None
    return bytes(body)
