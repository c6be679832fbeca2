"""A fake OpenAI-compatible Chat Completions server for end-to-end tests.

``FakeOpenAI`` runs a real HTTP server (uvicorn serving a small Starlette app) on ``127.0.0.1`` on a
free port, in a background thread with its own event loop. Real clients -- ``openai.AsyncOpenAI``,
``openai.AsyncAzureOpenAI``, the Agent Framework's ``OpenAIChatCompletionClient`` or plain httpx --
talk to it over a socket exactly as they would talk to the real service, so the whole stack (HTTP,
SSE framing, chunk parsing, tool-call assembly, retries, timeouts, cancellation) is exercised. It
works the same from sync and async tests because it never touches the test's event loop.

Routes (everything else gets an OpenAI-style 404)::

    POST /v1/chat/completions                                  OpenAI and OpenAI-compatible servers
    POST /openai/deployments/{deployment}/chat/completions     Azure OpenAI (needs ?api-version=...)
    POST /openai/v1/chat/completions                           Azure OpenAI "v1" surface

Streaming requests (``"stream": true``) are answered with ``text/event-stream`` bodies made of
``data: {chat.completion.chunk JSON}\\n\\n`` events and a final ``data: [DONE]\\n\\n``, shaped like
the real service's chunks (see ``openai/types/chat/chat_completion_chunk.py``): a first delta carrying
``role: "assistant"``, word-sized content deltas or tool calls split into fragments, a chunk with
``finish_reason`` and, when ``stream_options.include_usage`` is true, a usage chunk with empty
``choices``. On Azure routes the stream also starts with the ``prompt_filter_results`` chunk (empty
``choices``, empty ``id``/``model``/``object``) that Azure really sends, unless
``FakeOpenAI(azure_content_filter=False)``. Non-streaming requests get a ``chat.completion`` JSON.

Scripting. Each chat request is answered by, in order of precedence:

1. the next response queued with ``fake.enqueue(...)`` (one per request);
2. the custom responder set with ``fake.set_responder(fn)`` -- ``fn(request)`` gets the parsed
   :class:`RecordedRequest` and returns a :class:`ScriptedResponse`, or ``None`` to fall through;
3. :func:`default_response`, which behaves like a small model that uses tools: if the request offers
   tools and no tool result has come back since the last user message, it calls ``get_weather`` (or
   the first tool) with ``{"location": <capitalized word after " in " in the user text, else
   "Seattle">}``; otherwise it answers ``"Based on the data: <tool results>."`` or
   ``"You said: <last user text>"``.

Mind the openai SDK's retries (2 by default, on connection errors, timeouts, 408/409/429/5xx): each
retry is a new request and consumes the next queued response, so pass ``max_retries=0`` when
scripting faults.

Responses are built with small helpers::

    text_response(["Hel", "lo"], delay=0.05, usage={"prompt_tokens": 3, "completion_tokens": 2})
    tool_call_response([("get_weather", {"location": "Paris"}), ("get_time", {})], fragments=3)
    error_response(429, headers={"Retry-After": "1"})     # {"error": {"message", "type", "param", "code"}}
    drop_after(3)            # 3 chunks, then the connection is cut without [DONE]
    hang(headers=False)      # never answers; hang(headers=True) sends headers, then nothing
    malformed()              # a chunk that is not valid JSON
    content_filter_error()   # Azure's 400 for a prompt its content filter refused

Other servers' streams: ``quirks=Quirks(...)`` on ``text_response``/``tool_call_response`` plays
what Ollama, llama.cpp, vLLM, LM Studio or Azure do differently from OpenAI (ids reused across
responses, empty or missing; tool-call deltas without ``index``; ``content: null`` beside tool
calls; arguments as an object; reasoning deltas; Azure's filter annotations). A cut answer is a
``finish_reason``: ``text_response(..., finish_reason="length")``, or ``"content_filter"`` (on Azure
routes in Azure's own chunk: no ``delta``, empty ``id``/``model``, the filter's verdicts).

Example::

    with FakeOpenAI(api_key="sk-test", chunk_delay=0.01) as fake:
        fake.enqueue(text_response(["Hi", " there"]), error_response(500))
        client = openai.OpenAI(base_url=fake.openai_base_url, api_key="sk-test")
        ...
        assert fake.requests[0].json["messages"][-1]["content"] == "hello"
        assert fake.wait_for_no_open_streams(2.0)

Auth: with ``FakeOpenAI(api_key=...)`` the OpenAI route wants ``Authorization: Bearer <api_key>``
(401 in the OpenAI error shape otherwise); Azure routes want an ``api-key`` header or a bearer token,
checked against ``api_key`` / ``bearer_token`` when those are set (401 otherwise, and 404 "Resource
not found" without ``api-version``, as Azure does). Rejected requests do not consume the queue.

Observing: every request is recorded in ``fake.requests`` (path, query, case-insensitive headers,
parsed JSON). ``fake.open_streams`` counts responses being sent right now and
``fake.cancelled_streams`` counts responses that ended because the client went away first; client
disconnects are noticed within milliseconds, even in the middle of a delay, because each response
listens for ``http.disconnect`` next to the code that writes the body. Wait for conditions with
``fake.wait_for_no_open_streams(timeout)`` / ``fake.wait_until(predicate, timeout)`` from sync code,
and with their ``*_async`` twins from a coroutine (a blocking wait would stall the very event loop
that has to close the client's socket). Exceptions raised by responders or custom responses land in
``fake.errors``.

``fake.stop()`` aborts whatever is still being sent (started bodies are cut; requests that had no
answer yet get a 500) and returns in well under 2 s, leaving no thread behind. ``fake.reset()``
clears the queue, the responder, the records and the counters.

Nothing here ever connects anywhere: the server only listens on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import logging
import re
import secrets
import socket
import string
import threading
import time
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Literal, NoReturn, TypeAlias

import uvicorn
from starlette.applications import Starlette
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Message, Receive, Scope, Send

__all__ = [
    "ClientDisconnected",
    "Completion",
    "DropAfter",
    "ErrorResponse",
    "FakeOpenAI",
    "Hang",
    "Malformed",
    "Quirks",
    "RecordedRequest",
    "Responder",
    "ResponseWriter",
    "ScriptedResponse",
    "ToolCall",
    "content_filter_error",
    "default_response",
    "drop_after",
    "error_body",
    "error_response",
    "hang",
    "malformed",
    "text_response",
    "tool_call_response",
]

HOST = "127.0.0.1"
SSE_CONTENT_TYPE = "text/event-stream; charset=utf-8"
JSON_CONTENT_TYPE = "application/json"
DEFAULT_MODEL = "gpt-4o-mini"
DEFAULT_LOCATION = "Seattle"

RouteKind: TypeAlias = Literal["openai", "azure", "azure_v1", "unknown"]
ToolCallSpec: TypeAlias = "ToolCall | tuple[str, Mapping[str, Any] | str] | tuple[str, Mapping[str, Any] | str, str]"

_ALNUM = string.ascii_letters + string.digits


def _random_id(prefix: str, length: int) -> str:
    return prefix + "".join(secrets.choice(_ALNUM) for _ in range(length))


def _dumps(value: Any) -> str:
    """Compact JSON, like the real service writes it."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


# --------------------------------------------------------------------------------------------------
# Recorded requests
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RecordedRequest:
    """One HTTP request as the fake received it.

    Attributes:
        method: HTTP method.
        path: URL path, e.g. ``/v1/chat/completions``.
        query: Query parameters (last value wins for repeated keys).
        headers: Case-insensitive, read-only mapping of the request headers.
        body: Raw request body.
        json: Parsed JSON body, or ``None`` when the body is empty or not JSON.
        route: Which route matched: ``"openai"``, ``"azure"``, ``"azure_v1"`` or ``"unknown"``.
        deployment: The Azure deployment from the URL path, for the ``"azure"`` route.
    """

    method: str
    path: str
    query: dict[str, str]
    headers: Headers
    body: bytes
    json: Any
    route: RouteKind
    deployment: str | None = None

    @property
    def messages(self) -> list[dict[str, Any]]:
        """The ``messages`` array of a chat request (empty when missing)."""
        messages = self.json.get("messages") if isinstance(self.json, dict) else None
        return [m for m in messages if isinstance(m, dict)] if isinstance(messages, list) else []

    @property
    def tools(self) -> list[dict[str, Any]]:
        """The ``tools`` array of a chat request (empty when missing)."""
        tools = self.json.get("tools") if isinstance(self.json, dict) else None
        return [t for t in tools if isinstance(t, dict)] if isinstance(tools, list) else []

    @property
    def stream(self) -> bool:
        """Whether the client asked for a streamed (SSE) answer."""
        return isinstance(self.json, dict) and self.json.get("stream") is True

    @property
    def include_usage(self) -> bool:
        """Whether ``stream_options.include_usage`` is true."""
        options = self.json.get("stream_options") if isinstance(self.json, dict) else None
        return isinstance(options, dict) and options.get("include_usage") is True

    @property
    def model(self) -> str:
        """The model to echo in answers: the body's ``model``, else the Azure deployment."""
        model = self.json.get("model") if isinstance(self.json, dict) else None
        return model if isinstance(model, str) and model else self.deployment or DEFAULT_MODEL

    @property
    def is_azure(self) -> bool:
        """Whether the request came in on one of the Azure routes."""
        return self.route in ("azure", "azure_v1")


def _content_text(content: Any) -> str:
    """Text of a message ``content``, which is a string or a list of content parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            str(part.get("text", "")) for part in content if isinstance(part, dict) and part.get("type") == "text"
        )
    return ""


# --------------------------------------------------------------------------------------------------
# The low-level writer scripted responses use
# --------------------------------------------------------------------------------------------------


class ClientDisconnected(Exception):
    """Raised inside a scripted response when the client has gone away."""


class _ServerStopping(Exception):
    """Raised inside a scripted response when the fake is being stopped."""


class _AbortConnection(Exception):
    """Raised out of the ASGI app so uvicorn closes the socket mid-response (no clean end of body)."""


class _QuietAbortFilter(logging.Filter):
    """Keep uvicorn from logging our deliberate connection aborts as application errors."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not isinstance(exc, _AbortConnection)


def _install_log_filter() -> None:
    logger = logging.getLogger("uvicorn.error")
    if not any(isinstance(f, _QuietAbortFilter) for f in logger.filters):
        logger.addFilter(_QuietAbortFilter())


class ResponseWriter:
    """Puts one response on the wire; handed to :meth:`ScriptedResponse.play`.

    Every method raises :class:`ClientDisconnected` once the client has gone away (a scripted
    response may let it propagate: it is counted in ``fake.cancelled_streams``), and aborts the
    connection when the fake is stopping.
    """

    def __init__(self, fake: FakeOpenAI, request: RecordedRequest, send: Send) -> None:
        self.request = request
        self.chunk_delay = fake.chunk_delay
        self.azure_content_filter = fake.azure_content_filter
        self.started = False
        self.finished = False
        self.disconnected = False
        self.events_sent = 0
        self._fake = fake
        self._send = send
        self._wake = asyncio.Event()

    def _check(self) -> None:
        if self.disconnected:
            raise ClientDisconnected
        if self._fake._stopping:
            raise _ServerStopping

    def _on_disconnect(self) -> None:
        if not self.finished:
            self.disconnected = True
            self._wake.set()

    def _on_stop(self) -> None:
        self._wake.set()

    def response_headers(self, headers: Mapping[str, str] | None = None) -> dict[str, str]:
        """The headers the real service sends with every answer, plus ``headers``."""
        result = {"x-request-id": _random_id("req_", 24)}
        if self.request.is_azure:
            result["apim-request-id"] = _random_id("", 32)
        else:
            result["openai-processing-ms"] = "42"
        result.update(headers or {})
        return result

    async def start(
        self, status: int = 200, headers: Mapping[str, str] | None = None, *, content_type: str = SSE_CONTENT_TYPE
    ) -> None:
        """Send the status line and headers (``x-request-id`` etc. are added)."""
        self._check()
        all_headers = {"content-type": content_type}
        all_headers.update((name.lower(), value) for name, value in self.response_headers(headers).items())
        raw = [(name.encode("latin-1"), value.encode("latin-1")) for name, value in all_headers.items()]
        self.started = True
        await self._send({"type": "http.response.start", "status": status, "headers": raw})

    async def write(self, data: bytes) -> None:
        """Send part of the body."""
        self._check()
        await self._send({"type": "http.response.body", "body": data, "more_body": True})
        await asyncio.sleep(0)  # let the disconnect watcher run even when there are no delays

    async def send_event(self, data: Mapping[str, Any] | str) -> None:
        """Send one SSE event: ``data: <json or text>\\n\\n``."""
        payload = data if isinstance(data, str) else _dumps(data)
        await self.write(f"data: {payload}\n\n".encode())
        self.events_sent += 1

    async def end(self, data: bytes = b"") -> None:
        """Send the last part of the body and complete the response cleanly."""
        self._check()
        self.finished = True
        await self._send({"type": "http.response.body", "body": data, "more_body": False})

    async def send_json(self, status: int, body: Any, headers: Mapping[str, str] | None = None) -> None:
        """Send a complete JSON response."""
        data = body if isinstance(body, bytes) else (body if isinstance(body, str) else _dumps(body)).encode()
        extra = {name.lower(): value for name, value in (headers or {}).items()}
        content_type = extra.pop("content-type", JSON_CONTENT_TYPE)
        await self.start(status, {**extra, "content-length": str(len(data))}, content_type=content_type)
        await self.end(data)

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds``, returning early (by raising) if the client leaves or the fake stops."""
        self._check()
        if seconds > 0:
            with contextlib.suppress(asyncio.TimeoutError):  # not the builtin TimeoutError on Python 3.10
                await asyncio.wait_for(self._wake.wait(), seconds)
        else:
            await asyncio.sleep(0)
        self._check()

    async def hang(self) -> NoReturn:
        """Wait until the client leaves or the fake stops."""
        self._check()
        await self._wake.wait()
        self._check()
        raise AssertionError("woken without a reason")  # pragma: no cover

    def abort(self) -> NoReturn:
        """Cut the connection now, without completing the body (the client sees a broken stream)."""
        raise _AbortConnection


# --------------------------------------------------------------------------------------------------
# Scripted responses
# --------------------------------------------------------------------------------------------------


class ScriptedResponse(ABC):
    """Something the fake can answer a chat request with. Subclass it for full control over the wire."""

    @abstractmethod
    async def play(self, writer: ResponseWriter) -> None:
        """Write the response for ``writer.request`` with ``writer``."""


Responder: TypeAlias = Callable[[RecordedRequest], "ScriptedResponse | Awaitable[ScriptedResponse | None] | None"]


@dataclass(frozen=True)
class ToolCall:
    """A tool call the fake model makes. ``arguments`` is a JSON object or an already-encoded string
    (a cut one plays arguments cut mid-JSON); ``id``, when set (``""`` included), is sent as given."""

    name: str
    arguments: Mapping[str, Any] | str = field(default_factory=dict)
    id: str | None = None

    @property
    def arguments_json(self) -> str:
        return self.arguments if isinstance(self.arguments, str) else _dumps(dict(self.arguments))


def _split(text: str, parts: int) -> list[str]:
    """Split ``text`` into ``parts`` non-empty, roughly equal pieces (fewer if it is too short)."""
    parts = max(1, min(parts, len(text)))
    if not text:
        return []
    size, extra = divmod(len(text), parts)
    pieces, start = [], 0
    for i in range(parts):
        end = start + size + (1 if i < extra else 0)
        pieces.append(text[start:end])
        start = end
    return pieces


_SAFE_FILTER = {name: {"filtered": False, "severity": "safe"} for name in ("hate", "self_harm", "sexual", "violence")}

CallIds: TypeAlias = Literal["unique", "numbered", "empty", "missing"]


@dataclass(frozen=True)
class Quirks:
    """How a server other than OpenAI's writes the same stream (each field names who does it).

    Attributes:
        call_ids: Tool-call ids for calls without an explicit id. ``"unique"`` (OpenAI, Ollama,
            llama.cpp, vLLM's default parsers): a fresh random id. ``"numbered"``: ``call_0``,
            ``call_1`` ... counted per response, so every response reuses them (servers that number
            calls per response; vLLM's Kimi-K2 parser writes ``functions.<name>:<n>``).
            ``"empty"``: ``"id": ""``. ``"missing"``: no ``id`` key at all.
        tool_call_index: ``False`` leaves ``index`` out of tool-call deltas (older Ollama and LM
            Studio builds, some proxies).
        arguments_as_object: Send ``function.arguments`` as a JSON object instead of a string,
            whole in the header chunk (servers that pass their parser's dict through).
        content_null: Put ``"content": null`` in every tool-call delta (vLLM, llama.cpp).
        reasoning: Reasoning deltas streamed before the answer, under ``reasoning_field``
            (``"reasoning_content"``: llama.cpp, older vLLM, LM Studio for DeepSeek-R1;
            ``"reasoning"``: Ollama, newer vLLM, LM Studio for gpt-oss).
        filter_annotations: On Azure routes, Azure's asynchronous-filter annotation chunks
            (empty ``id``/``model``/``object``, a choice with ``content_filter_results`` and
            ``content_filter_offsets`` and no ``delta``) after the content and after the finish chunk.
    """

    call_ids: CallIds = "unique"
    tool_call_index: bool = True
    arguments_as_object: bool = False
    content_null: bool = False
    reasoning: tuple[str, ...] = ()
    reasoning_field: str = "reasoning_content"
    filter_annotations: bool = False


AZURE_FILTER_MESSAGE = (
    "The response was filtered due to the prompt triggering Azure OpenAI's content management policy. "
    "Please modify your prompt and retry. To learn more about our content filtering policies please read "
    "our documentation: https://go.microsoft.com/fwlink/?linkid=2198766"
)


def _filter_results(category: str, severity: str = "medium") -> dict[str, Any]:
    """Azure's per-category verdicts with ``category`` filtered at ``severity``."""
    results: dict[str, Any] = {name: dict(verdict) for name, verdict in _SAFE_FILTER.items()}
    if category in results:
        results[category] = {"filtered": True, "severity": severity}
    else:  # the binary classifiers: jailbreak, protected_material_text, ...
        results[category] = {"filtered": True, "detected": True}
    return results


def _azure_annotation(choice: dict[str, Any]) -> dict[str, Any]:
    """A chunk the Azure content filter adds to a stream: no id, model or object of its own."""
    return {"id": "", "object": "", "created": 0, "model": "", "choices": [choice], "usage": None}


@dataclass(frozen=True)
class Completion(ScriptedResponse):
    """A successful answer: text deltas and/or tool calls.

    Streamed as the real service does: a first chunk with ``role: "assistant"`` (and ``content: ""``
    for text, or the first tool call), one chunk per text delta, per tool call a header chunk (index,
    id, type, name, empty arguments) followed by ``fragments`` argument chunks, a chunk with
    ``finish_reason``, a usage chunk with empty ``choices`` when the client asked for
    ``stream_options.include_usage``, and ``[DONE]``. ``delay`` (default: ``fake.chunk_delay``) is
    slept before every chunk. Non-streaming requests get the equivalent ``chat.completion`` object.
    ``quirks`` plays what another server does differently (see :class:`Quirks`).
    """

    content: tuple[str, ...] = ()
    tool_calls: tuple[ToolCall, ...] = ()
    fragments: int = 3
    finish_reason: str | None = None
    delay: float | None = None
    usage: Mapping[str, int] | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    quirks: Quirks = field(default_factory=Quirks)

    @property
    def effective_finish_reason(self) -> str:
        return self.finish_reason or ("tool_calls" if self.tool_calls else "stop")

    def _usage(self, request: RecordedRequest) -> dict[str, Any]:
        prompt = sum(len(_content_text(m.get("content")).split()) + 4 for m in request.messages) or 1
        completion = len(self.content) + sum(len(_split(c.arguments_json, self.fragments)) + 2 for c in self.tool_calls)
        usage: dict[str, Any] = {"prompt_tokens": prompt, "completion_tokens": completion}
        usage.update(self.usage or {})
        usage.setdefault("total_tokens", usage["prompt_tokens"] + usage["completion_tokens"])
        usage.setdefault("prompt_tokens_details", {"cached_tokens": 0, "audio_tokens": 0})
        usage.setdefault(
            "completion_tokens_details",
            {
                "reasoning_tokens": 0,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
        )
        return usage

    def _call_ids(self) -> list[str | None]:
        """Each call's id as sent (``None``: no ``id`` key), per ``quirks.call_ids`` unless set."""
        style = self.quirks.call_ids
        ids: list[str | None] = []
        for number, call in enumerate(self.tool_calls):
            if call.id is not None:
                ids.append(call.id)
            elif style == "numbered":
                ids.append(f"call_{number}")
            elif style == "empty":
                ids.append("")
            elif style == "missing":
                ids.append(None)
            else:
                ids.append(_random_id("call_", 24))
        return ids

    def _wire_arguments(self, call: ToolCall) -> Any:
        """The ``arguments`` value of a whole call: a JSON string, or the object itself."""
        if self.quirks.arguments_as_object and not isinstance(call.arguments, str):
            return dict(call.arguments)
        return call.arguments_json

    def _tool_call_delta(self, index: int, call_id: str | None, function: dict[str, Any]) -> dict[str, Any]:
        delta: dict[str, Any] = {"index": index} if self.quirks.tool_call_index else {}
        if call_id is not None:
            delta.update(id=call_id, type="function")
        delta["function"] = function
        return delta

    def chunks(self, writer: ResponseWriter) -> list[dict[str, Any]]:
        """The ``chat.completion.chunk`` objects of the stream (without ``[DONE]``)."""
        request = writer.request
        azure = request.is_azure
        completion_id, created, model = _random_id("chatcmpl-", 29), int(time.time()), request.model

        def chunk(delta: dict[str, Any], finish_reason: str | None = None, *, content: bool = False) -> dict[str, Any]:
            choice: dict[str, Any] = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
            if azure:
                choice["content_filter_results"] = _SAFE_FILTER if content else {}
            body: dict[str, Any] = {
                "id": completion_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "system_fingerprint": "fp_fake0001",
                "choices": [choice],
            }
            if not azure:
                body["service_tier"] = "default"
            if request.include_usage:
                body["usage"] = None
            return body

        quirks = self.quirks
        annotate = azure and quirks.filter_annotations
        checked = 0  # how much text the annotations have covered, as Azure counts it

        def annotation() -> dict[str, Any]:
            offsets = {"check_offset": checked, "start_offset": 0, "end_offset": checked}
            return _azure_annotation(
                {
                    "index": 0,
                    "finish_reason": None,
                    "content_filter_results": _SAFE_FILTER,
                    "content_filter_offsets": offsets,
                }
            )

        chunks: list[dict[str, Any]] = []
        if azure and writer.azure_content_filter:
            chunks.append(
                {
                    "choices": [],
                    "created": 0,
                    "id": "",
                    "model": "",
                    "object": "",
                    "prompt_filter_results": [{"prompt_index": 0, "content_filter_results": _SAFE_FILTER}],
                }
            )
        role: dict[str, Any] = {"role": "assistant", "content": "" if self.content else None, "refusal": None}
        if self.content or quirks.reasoning or not self.tool_calls:
            chunks.append(chunk(role))
            role = {}
        chunks.extend(chunk({quirks.reasoning_field: piece}) for piece in quirks.reasoning)
        for piece in self.content:
            chunks.append(chunk({"content": piece}, content=True))
            checked += len(piece)
        if annotate and self.content:
            chunks.append(annotation())
        null_content = {"content": None} if quirks.content_null else {}
        for index, (call, call_id) in enumerate(zip(self.tool_calls, self._call_ids(), strict=True)):
            wire = self._wire_arguments(call)
            whole = not isinstance(wire, str)
            header = self._tool_call_delta(index, call_id, {"name": call.name, "arguments": wire if whole else ""})
            chunks.append(chunk({**role, **null_content, "tool_calls": [header]}))
            role = {}
            if whole:
                continue
            chunks.extend(
                chunk({**null_content, "tool_calls": [self._tool_call_delta(index, None, {"arguments": fragment})]})
                for fragment in _split(wire, self.fragments)
            )
        finish_reason = self.effective_finish_reason
        if azure and finish_reason == "content_filter":
            # Azure's filter ends the answer in a chunk of its own: no delta, the verdicts instead.
            offsets = {"check_offset": checked, "start_offset": 0, "end_offset": checked + 1}
            chunks.append(
                _azure_annotation(
                    {
                        "index": 0,
                        "finish_reason": "content_filter",
                        "content_filter_results": _filter_results("violence"),
                        "content_filter_offsets": offsets,
                    }
                )
            )
        else:
            chunks.append(chunk({}, finish_reason))
            if annotate:
                chunks.append(annotation())
        if request.include_usage:
            usage_chunk = chunk({})
            usage_chunk["choices"] = []
            usage_chunk["usage"] = self._usage(request)
            chunks.append(usage_chunk)
        return chunks

    def completion(self, writer: ResponseWriter) -> dict[str, Any]:
        """The non-streaming ``chat.completion`` object."""
        request = writer.request
        message: dict[str, Any] = {
            "role": "assistant",
            "content": "".join(self.content) if self.content or not self.tool_calls else None,
            "refusal": None,
            "annotations": [],
        }
        if self.tool_calls:
            message["tool_calls"] = [
                {
                    **({} if call_id is None else {"id": call_id}),
                    "type": "function",
                    "function": {"name": call.name, "arguments": self._wire_arguments(call)},
                }
                for call, call_id in zip(self.tool_calls, self._call_ids(), strict=True)
            ]
        if self.quirks.reasoning:
            message[self.quirks.reasoning_field] = "".join(self.quirks.reasoning)
        choice: dict[str, Any] = {
            "index": 0,
            "message": message,
            "logprobs": None,
            "finish_reason": self.effective_finish_reason,
        }
        body: dict[str, Any] = {
            "id": _random_id("chatcmpl-", 29),
            "object": "chat.completion",
            "created": int(time.time()),
            "model": request.model,
            "choices": [choice],
            "usage": self._usage(request),
            "system_fingerprint": "fp_fake0001",
        }
        if request.is_azure:
            filtered = self.effective_finish_reason == "content_filter"
            choice["content_filter_results"] = _filter_results("violence") if filtered else _SAFE_FILTER
            body["prompt_filter_results"] = [{"prompt_index": 0, "content_filter_results": _SAFE_FILTER}]
        else:
            body["service_tier"] = "default"
        return body

    async def play(self, writer: ResponseWriter) -> None:
        delay = writer.chunk_delay if self.delay is None else self.delay
        if not writer.request.stream:
            chunks = 1 + len(self.content) + len(self.tool_calls) * (self.fragments + 1)
            await writer.sleep(delay * chunks)
            await writer.send_json(200, self.completion(writer), self.headers)
            return
        await writer.start(200, self.headers)
        for chunk in self.chunks(writer):
            await writer.sleep(delay)
            await writer.send_event(chunk)
        await writer.send_event("[DONE]")
        await writer.end()


@dataclass(frozen=True)
class ErrorResponse(ScriptedResponse):
    """An HTTP error with a JSON body (``body`` may also be raw text/bytes)."""

    status: int = 500
    body: Mapping[str, Any] | str | bytes = field(default_factory=dict)
    headers: Mapping[str, str] = field(default_factory=dict)

    async def play(self, writer: ResponseWriter) -> None:
        body = self.body if isinstance(self.body, str | bytes) else dict(self.body)
        await writer.send_json(self.status, body, self.headers)


@dataclass(frozen=True)
class DropAfter(ScriptedResponse):
    """Send ``n_chunks`` chunks of ``base`` (default: the default answer), then cut the connection.

    The body's chunked encoding is never terminated and no ``[DONE]`` is sent, so the client sees an
    incomplete stream (httpx: ``RemoteProtocolError``; openai: ``APIConnectionError``). For a
    non-streaming request, half of the JSON body is sent before the cut.
    """

    n_chunks: int
    base: Completion | None = None
    delay: float | None = None

    async def play(self, writer: ResponseWriter) -> None:
        base = self.base or default_response(writer.request)
        delay = writer.chunk_delay if self.delay is None else self.delay
        if not writer.request.stream:
            data = _dumps(base.completion(writer)).encode()
            await writer.start(200, {"content-length": str(len(data))}, content_type=JSON_CONTENT_TYPE)
            await writer.write(data[: len(data) // 2])
            writer.abort()
        await writer.start(200)
        for chunk in base.chunks(writer)[: self.n_chunks]:
            await writer.sleep(delay)
            await writer.send_event(chunk)
        writer.abort()


@dataclass(frozen=True)
class Hang(ScriptedResponse):
    """Accept the request and never answer: no headers at all, or headers and then no body byte."""

    headers: bool = False

    async def play(self, writer: ResponseWriter) -> None:
        if self.headers:
            content_type = SSE_CONTENT_TYPE if writer.request.stream else JSON_CONTENT_TYPE
            await writer.start(200, content_type=content_type)
        await writer.hang()


@dataclass(frozen=True)
class Malformed(ScriptedResponse):
    """Send ``after`` valid chunks, then an event whose data is not valid JSON, then ``[DONE]``."""

    after: int = 1
    payload: str = '{"id":"chatcmpl-broken","object":"chat.completion.chunk","choices":[{"index":0,"delta":'

    async def play(self, writer: ResponseWriter) -> None:
        if not writer.request.stream:
            await writer.send_json(200, self.payload)
            return
        await writer.start(200)
        for chunk in default_response(writer.request).chunks(writer)[: self.after]:
            await writer.sleep(writer.chunk_delay)
            await writer.send_event(chunk)
        await writer.send_event(self.payload)
        await writer.send_event("[DONE]")
        await writer.end()


# --------------------------------------------------------------------------------------------------
# Helpers to build responses
# --------------------------------------------------------------------------------------------------


def text_response(
    pieces: Sequence[str] | str,
    *,
    delay: float | None = None,
    usage: Mapping[str, int] | None = None,
    finish_reason: str = "stop",
    headers: Mapping[str, str] | None = None,
    quirks: Quirks | None = None,
) -> Completion:
    """A text answer streamed as the given deltas (a plain string is split into word-sized deltas).

    ``usage`` overrides the computed token counts (``prompt_tokens``, ``completion_tokens``, ...);
    the usage chunk is only sent when the client asked for it, as with the real service.
    ``finish_reason`` may be what a cut answer ends with: ``"length"`` (the token limit, any
    server) or ``"content_filter"`` (on Azure routes in Azure's own chunk shape).
    """
    deltas = _word_deltas(pieces) if isinstance(pieces, str) else tuple(pieces)
    return Completion(
        content=deltas,
        finish_reason=finish_reason,
        delay=delay,
        usage=usage,
        headers=headers or {},
        quirks=quirks or Quirks(),
    )


def tool_call_response(
    calls: Iterable[ToolCallSpec],
    *,
    fragments: int = 3,
    delay: float | None = None,
    usage: Mapping[str, int] | None = None,
    headers: Mapping[str, str] | None = None,
    finish_reason: str | None = None,
    quirks: Quirks | None = None,
) -> Completion:
    """An answer made of (parallel) tool calls, each ``(name, arguments)`` or ``(name, arguments, id)``.

    The arguments JSON of each call is streamed in ``fragments`` pieces. ``finish_reason``
    defaults to ``"tool_calls"`` (older servers say ``"function_call"``).
    """
    tool_calls = tuple(call if isinstance(call, ToolCall) else ToolCall(*call) for call in calls)
    return Completion(
        tool_calls=tool_calls,
        fragments=fragments,
        delay=delay,
        usage=usage,
        headers=headers or {},
        finish_reason=finish_reason,
        quirks=quirks or Quirks(),
    )


def content_filter_error(category: str = "violence", severity: str = "medium") -> ErrorResponse:
    """Azure OpenAI refusing a prompt its content filter blocked: HTTP 400, code ``content_filter``,
    the verdicts under ``innererror.content_filter_result`` (the shape the service really sends)."""
    body = {
        "error": {
            "message": AZURE_FILTER_MESSAGE,
            "type": None,
            "param": "prompt",
            "code": "content_filter",
            "status": 400,
            "innererror": {
                "code": "ResponsibleAIPolicyViolation",
                "content_filter_result": _filter_results(category, severity),
            },
        }
    }
    return ErrorResponse(status=400, body=body)


_ERROR_DEFAULTS: dict[int, tuple[str, str, str | None]] = {
    400: ("Invalid request.", "invalid_request_error", None),
    401: ("Incorrect API key provided.", "invalid_request_error", "invalid_api_key"),
    403: ("You are not allowed to access this resource.", "invalid_request_error", None),
    404: ("The model does not exist or you do not have access to it.", "invalid_request_error", "model_not_found"),
    429: ("Rate limit reached for requests. Please try again later.", "requests", "rate_limit_exceeded"),
    500: ("The server had an error while processing your request. Sorry about that!", "server_error", None),
    502: ("Bad gateway.", "server_error", None),
    503: ("The server is overloaded or not ready yet.", "server_error", None),
}


def error_body(
    status: int, message: str | None = None, type: str | None = None, code: str | None = None
) -> dict[str, Any]:
    """The OpenAI error JSON: ``{"error": {"message", "type", "param", "code"}}``."""
    default_message, default_type, default_code = _ERROR_DEFAULTS.get(
        status, (f"HTTP {status}", "server_error" if status >= 500 else "invalid_request_error", None)
    )
    return {
        "error": {
            "message": message or default_message,
            "type": type or default_type,
            "param": None,
            "code": code or default_code,
        }
    }


def error_response(
    status: int = 500,
    *,
    message: str | None = None,
    type: str | None = None,
    code: str | None = None,
    body: Mapping[str, Any] | str | bytes | None = None,
    headers: Mapping[str, str] | None = None,
) -> ErrorResponse:
    """An HTTP error in the OpenAI error shape (or with a custom ``body``), e.g. a 429 with ``Retry-After``."""
    return ErrorResponse(
        status=status, body=error_body(status, message, type, code) if body is None else body, headers=headers or {}
    )


def drop_after(n_chunks: int, base: Completion | None = None, *, delay: float | None = None) -> DropAfter:
    """Send ``n_chunks`` chunks, then abort the connection without ``[DONE]``."""
    return DropAfter(n_chunks=n_chunks, base=base, delay=delay)


def hang(*, headers: bool = False) -> Hang:
    """Never answer (``headers=False``), or send the headers and then no body (``headers=True``)."""
    return Hang(headers=headers)


def malformed(after: int = 1, payload: str | None = None) -> Malformed:
    """Send ``after`` good chunks, then a chunk that is not valid JSON."""
    return Malformed(after=after) if payload is None else Malformed(after=after, payload=payload)


# --------------------------------------------------------------------------------------------------
# The default responder
# --------------------------------------------------------------------------------------------------

_IN_WORD = re.compile(r"\bin\s+(\w[\w'-]*)")


def _word_deltas(sentence: str) -> tuple[str, ...]:
    """``"You said: hi"`` -> ``("You", " said:", " hi")``: each word with its leading whitespace."""
    return tuple(re.findall(r"\s*\S+", sentence))


def _location(text: str) -> str:
    for match in _IN_WORD.finditer(text):
        if match.group(1)[0].isupper():
            return match.group(1)
    return DEFAULT_LOCATION


def _tool_name(tool: Mapping[str, Any]) -> str | None:
    function = tool.get("function")
    name = function.get("name") if isinstance(function, dict) else tool.get("name")
    return name if isinstance(name, str) else None


def default_response(request: RecordedRequest) -> Completion:
    """What the fake answers when nothing is queued: a small, deterministic, tool-using "model".

    * Tools offered (and ``tool_choice`` is not ``"none"``) and no ``tool`` message after the last
      ``user`` message: call ``get_weather`` (else the first tool) with
      ``{"location": <capitalized word after " in " in the last user message, else "Seattle">}``.
    * Otherwise: ``"Based on the data: <tool results joined with '; '>."`` when tool results follow
      the last user message, else ``"You said: <last user text>"``, in word-sized deltas.
    """
    messages = request.messages
    last_user = max((i for i, m in enumerate(messages) if m.get("role") == "user"), default=-1)
    user_text = _content_text(messages[last_user].get("content")) if last_user >= 0 else ""
    tool_results = [_content_text(m.get("content")) for m in messages[last_user + 1 :] if m.get("role") == "tool"]
    tool_names = [name for name in map(_tool_name, request.tools) if name]
    tool_choice = request.json.get("tool_choice") if isinstance(request.json, dict) else None
    if tool_names and not tool_results and tool_choice != "none":
        name = "get_weather" if "get_weather" in tool_names else tool_names[0]
        return tool_call_response([(name, {"location": _location(user_text)})])
    if tool_results:
        sentence = "Based on the data: " + "; ".join(result.strip().rstrip(".") for result in tool_results) + "."
    else:
        sentence = f"You said: {user_text}"
    return text_response(sentence)


# --------------------------------------------------------------------------------------------------
# The server
# --------------------------------------------------------------------------------------------------


class _Play(Response):
    """A Starlette response that hands the raw ASGI channel to the fake."""

    def __init__(self, fake: FakeOpenAI, request: RecordedRequest, scripted: ScriptedResponse) -> None:
        super().__init__()
        self._fake = fake
        self._request = request
        self._scripted = scripted

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._fake._play(self._request, self._scripted, receive, send)


class _Server(uvicorn.Server):
    """A uvicorn server that tells another thread when it is listening."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.ready = threading.Event()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        self.ready.set()


_ALL_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]


class FakeOpenAI:
    """A scripted OpenAI / Azure OpenAI Chat Completions server on 127.0.0.1 (see the module docstring).

    Args:
        api_key: When set, OpenAI routes require ``Authorization: Bearer <api_key>`` and Azure routes
            accept it in the ``api-key`` header. When ``None``, any (or no) key is accepted.
        bearer_token: When set, Azure routes accept ``Authorization: Bearer <bearer_token>`` (Entra ID)
            only with this token. When ``None``, any bearer token is accepted on Azure routes.
        chunk_delay: Seconds slept before each streamed chunk (changeable later via ``fake.chunk_delay``).
        azure_content_filter: Send Azure's ``prompt_filter_results`` chunk first and
            ``content_filter_results`` in choices on Azure routes, like the real service.
    """

    def __init__(
        self,
        *,
        api_key: str | None = None,
        bearer_token: str | None = None,
        chunk_delay: float = 0.0,
        azure_content_filter: bool = True,
    ) -> None:
        self.api_key = api_key
        self.bearer_token = bearer_token
        self.chunk_delay = self._initial_chunk_delay = chunk_delay
        self.azure_content_filter = azure_content_filter

        self._cond = threading.Condition(threading.RLock())
        self._queue: deque[ScriptedResponse] = deque()
        self._responder: Responder | None = None
        self._requests: list[RecordedRequest] = []
        self._errors: list[BaseException] = []
        self._open_streams = 0
        self._cancelled_streams = 0

        self._port: int | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: _Server | None = None
        self._stopping = False
        self._writers: set[ResponseWriter] = set()
        self._startup_error: BaseException | None = None

        self._app = Starlette(
            routes=[
                Route("/v1/chat/completions", self._openai_chat, methods=["POST"]),
                Route("/openai/deployments/{deployment}/chat/completions", self._azure_chat, methods=["POST"]),
                Route("/openai/v1/chat/completions", self._azure_v1_chat, methods=["POST"]),
                Route("/{path:path}", self._not_found, methods=_ALL_METHODS),
            ]
        )

    # ---------------------------------------------------------------- lifecycle

    def start(self, timeout: float = 10.0) -> FakeOpenAI:
        """Start serving on a free port of 127.0.0.1; returns ``self``."""
        if self.running:
            return self
        _install_log_filter()
        # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on accepted sockets whose protocol says TCP.
        # Without it every response (headers, then each chunk: small writes) waits on Nagle against the
        # client's delayed ACK, about 40 ms per request. Set on the listener as well, which Linux copies
        # to every accepted socket.
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind((HOST, 0))
        self._port = sock.getsockname()[1]
        config = uvicorn.Config(
            self._app,
            log_config=None,
            access_log=False,
            lifespan="off",
            http="h11",
            ws="none",
            proxy_headers=False,
            server_header=False,
            timeout_graceful_shutdown=1,
        )
        self._server = _Server(config)
        self._stopping = False
        self._startup_error = None
        self._thread = threading.Thread(
            target=self._run, args=(self._server, sock), name=f"FakeOpenAI:{self._port}", daemon=True
        )
        self._thread.start()
        if not self._server.ready.wait(timeout) or self._startup_error is not None or not self._server.started:
            self.stop()
            raise RuntimeError("FakeOpenAI failed to start") from self._startup_error
        return self

    def _run(self, server: _Server, sock: socket.socket) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        self._loop = loop
        try:
            loop.run_until_complete(server.serve(sockets=[sock]))
        except BaseException as exc:
            self._startup_error = exc
        finally:
            with contextlib.suppress(Exception):
                pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
                for task in pending:
                    task.cancel()
                loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
                loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()
            sock.close()
            server.ready.set()

    def stop(self, timeout: float = 5.0) -> None:
        """Abort every response still being sent, stop the server and join its thread."""
        thread, server, loop = self._thread, self._server, self._loop
        if thread is None or server is None:
            return
        if loop is not None:
            with contextlib.suppress(RuntimeError):  # loop already closed
                loop.call_soon_threadsafe(self._begin_stop)
        server.should_exit = True
        thread.join(timeout)
        if thread.is_alive():
            server.force_exit = True
            thread.join(timeout)
        self._thread = self._server = self._loop = None

    def _begin_stop(self) -> None:
        self._stopping = True
        for writer in list(self._writers):
            writer._on_stop()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def __enter__(self) -> FakeOpenAI:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # ---------------------------------------------------------------- addresses

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("FakeOpenAI is not started")
        return self._port

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT`` -- use as ``azure_endpoint``."""
        return f"http://{HOST}:{self.port}"

    @property
    def openai_base_url(self) -> str:
        """``http://127.0.0.1:PORT/v1`` -- use as the OpenAI client's ``base_url``."""
        return f"{self.url}/v1"

    @property
    def azure_endpoint(self) -> str:
        """Same as :attr:`url`."""
        return self.url

    # ---------------------------------------------------------------- scripting

    def enqueue(self, *responses: ScriptedResponse) -> None:
        """Queue responses; each chat request consumes one before the responder/default is consulted."""
        with self._cond:
            self._queue.extend(responses)

    def set_responder(self, responder: Responder | None) -> None:
        """Answer un-queued requests with ``responder(request)`` (``None`` result: use the default)."""
        with self._cond:
            self._responder = responder

    @property
    def pending(self) -> int:
        """How many queued responses have not been used yet."""
        with self._cond:
            return len(self._queue)

    def reset(self) -> None:
        """Clear the queue, the responder, recorded requests, errors and
        counters, and restore the constructor's ``chunk_delay``."""
        self.chunk_delay = self._initial_chunk_delay
        with self._cond:
            self._queue.clear()
            self._responder = None
            self._requests.clear()
            self._errors.clear()
            self._cancelled_streams = 0
            self._cond.notify_all()

    @contextlib.contextmanager
    def fresh(self) -> Iterator[FakeOpenAI]:
        """For one test: reset first, and fail if the test leaves a model
        call open (the app must close what it opens)."""
        self.reset()
        yield self
        assert self.wait_for_no_open_streams(2.0), "a model call was left open"

    # ---------------------------------------------------------------- observations

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request received (a snapshot copy), oldest first."""
        with self._cond:
            return list(self._requests)

    @property
    def last_request(self) -> RecordedRequest:
        with self._cond:
            if not self._requests:
                raise LookupError("no request received yet")
            return self._requests[-1]

    @property
    def open_streams(self) -> int:
        """How many responses are being sent right now."""
        with self._cond:
            return self._open_streams

    @property
    def cancelled_streams(self) -> int:
        """How many responses ended because the client went away before they were complete."""
        with self._cond:
            return self._cancelled_streams

    @property
    def errors(self) -> list[BaseException]:
        """Exceptions raised by scripted responses or responders (they also produce a 500 / cut)."""
        with self._cond:
            return list(self._errors)

    def wait_until(self, predicate: Callable[[FakeOpenAI], bool], timeout: float) -> bool:
        """Block until ``predicate(fake)`` is true; ``False`` on timeout.

        Do not call this from a coroutine whose event loop must run for the condition to become true
        (e.g. waiting for a stream the same loop just closed): use :meth:`wait_until_async` there.
        """
        with self._cond:
            return self._cond.wait_for(lambda: predicate(self), timeout)

    async def wait_until_async(self, predicate: Callable[[FakeOpenAI], bool], timeout: float) -> bool:
        """Like :meth:`wait_until` but without blocking the caller's event loop."""
        deadline = time.monotonic() + timeout
        while not predicate(self):
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.01)
        return True

    def wait_for_no_open_streams(self, timeout: float = 2.0) -> bool:
        """Block until no response is being sent; ``False`` on timeout."""
        return self.wait_until(lambda fake: fake.open_streams == 0, timeout)

    async def wait_for_no_open_streams_async(self, timeout: float = 2.0) -> bool:
        """Await until no response is being sent; ``False`` on timeout."""
        return await self.wait_until_async(lambda fake: fake.open_streams == 0, timeout)

    # ---------------------------------------------------------------- request handling (server thread)

    async def _record(self, request: Request, route: RouteKind, deployment: str | None = None) -> RecordedRequest:
        body = await request.body()
        try:
            parsed: Any = json.loads(body) if body else None
        except ValueError:
            parsed = None
        recorded = RecordedRequest(
            method=request.method,
            path=request.url.path,
            query=dict(request.query_params),
            headers=Headers(raw=list(request.headers.raw)),
            body=body,
            json=parsed,
            route=route,
            deployment=deployment,
        )
        with self._cond:
            self._requests.append(recorded)
            self._cond.notify_all()
        return recorded

    async def _openai_chat(self, request: Request) -> Response:
        recorded = await self._record(request, "openai")
        return _Play(self, recorded, self._check_openai_auth(recorded) or await self._choose(recorded))

    async def _azure_chat(self, request: Request) -> Response:
        recorded = await self._record(request, "azure", request.path_params["deployment"])
        if not recorded.query.get("api-version"):
            # What Azure OpenAI answers when api-version is missing.
            return _Play(
                self, recorded, ErrorResponse(404, {"error": {"code": "404", "message": "Resource not found"}})
            )
        return _Play(self, recorded, self._check_azure_auth(recorded) or await self._choose(recorded))

    async def _azure_v1_chat(self, request: Request) -> Response:
        recorded = await self._record(request, "azure_v1")
        return _Play(self, recorded, self._check_azure_auth(recorded) or await self._choose(recorded))

    async def _not_found(self, request: Request) -> Response:
        recorded = await self._record(request, "unknown")
        message = f"Invalid URL ({recorded.method} {recorded.path})"
        return _Play(self, recorded, error_response(404, message=message, code="unknown_url"))

    @staticmethod
    def _bearer(recorded: RecordedRequest) -> str | None:
        scheme, _, token = recorded.headers.get("authorization", "").partition(" ")
        return token.strip() if scheme.lower() == "bearer" and token.strip() else None

    def _check_openai_auth(self, recorded: RecordedRequest) -> ScriptedResponse | None:
        if self.api_key is None:
            return None
        token = self._bearer(recorded)
        if token is None:
            message = "You didn't provide an API key. You need to provide your API key in an Authorization header."
            return error_response(401, message=message, code="missing_api_key")
        if token != self.api_key:
            return error_response(401, message=f"Incorrect API key provided: {token[:3]}***{token[-4:]}.")
        return None

    def _check_azure_auth(self, recorded: RecordedRequest) -> ScriptedResponse | None:
        key = recorded.headers.get("api-key")
        token = self._bearer(recorded)
        key_ok = key is not None and (self.api_key is None or key == self.api_key)
        # The v1 surface also takes the resource key as a bearer token (that is how the plain OpenAI SDK sends it).
        accepted_tokens = {self.bearer_token} | ({self.api_key} if recorded.route == "azure_v1" else set())
        token_ok = token is not None and (self.bearer_token is None or token in accepted_tokens)
        if key_ok or token_ok:
            return None
        message = (
            "Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide a valid key "
            "for an active subscription and use a correct regional API endpoint for your resource."
        )
        return error_response(401, message=message, code="401")

    async def _choose(self, recorded: RecordedRequest) -> ScriptedResponse:
        if not isinstance(recorded.json, dict):
            return error_response(400, message="We could not parse the JSON body of your request.")
        with self._cond:
            queued = self._queue.popleft() if self._queue else None
            responder = self._responder
        if queued is not None:
            return queued
        if responder is not None:
            try:
                result = responder(recorded)
                if inspect.isawaitable(result):
                    result = await result
            except Exception as exc:
                with self._cond:
                    self._errors.append(exc)
                raise
            if result is not None:
                return result
        return default_response(recorded)

    async def _play(self, request: RecordedRequest, scripted: ScriptedResponse, receive: Receive, send: Send) -> None:
        writer = ResponseWriter(self, request, send)
        watcher = asyncio.create_task(self._watch_disconnect(receive, writer))
        self._writers.add(writer)
        if self._stopping:
            writer._on_stop()
        cancelled = False
        with self._cond:
            self._open_streams += 1
            self._cond.notify_all()
        try:
            await scripted.play(writer)
            if not writer.started:
                raise RuntimeError(f"{scripted!r} returned without sending a response")
            if not writer.finished:
                await writer.end()
        except ClientDisconnected:
            cancelled = True
        except _ServerStopping:
            raise _AbortConnection from None
        except _AbortConnection:
            raise
        except Exception as exc:
            with self._cond:
                self._errors.append(exc)
            raise
        finally:
            watcher.cancel()
            self._writers.discard(writer)
            with self._cond:
                self._open_streams -= 1
                self._cancelled_streams += int(cancelled)
                self._cond.notify_all()

    @staticmethod
    async def _watch_disconnect(receive: Receive, writer: ResponseWriter) -> None:
        """Wait for ``http.disconnect`` beside the body writer (the request body was already read)."""
        while True:
            message: Message = await receive()
            if message["type"] == "http.disconnect":
                writer._on_disconnect()
                return
