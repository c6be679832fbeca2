"""Tests proving that ``tests/fake_openai.py`` speaks the real Chat Completions wire format.

Real clients only: raw httpx for the bytes, ``openai.AsyncOpenAI`` / ``openai.AsyncAzureOpenAI`` /
``openai.OpenAI`` for SDK parsing, and the Agent Framework's ``OpenAIChatCompletionClient`` with an
``Agent`` for the full tool-calling loop. Everything talks to 127.0.0.1 only.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import openai
import pytest
from agent_framework import Agent, tool
from agent_framework.openai import OpenAIChatCompletionClient
from openai.types.chat import ChatCompletionChunk

from tests.fake_openai import (
    AZURE_FILTER_MESSAGE,
    FakeOpenAI,
    Quirks,
    RecordedRequest,
    ScriptedResponse,
    content_filter_error,
    drop_after,
    error_response,
    hang,
    malformed,
    text_response,
    tool_call_response,
)

WEATHER_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the weather for a location.",
        "parameters": {"type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]},
    },
}
AZURE_API_VERSION = "2024-10-21"


# ------------------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def shared_fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as fake:
        yield fake


@pytest.fixture
def fake(shared_fake: FakeOpenAI) -> Iterator[FakeOpenAI]:
    """The module's fake, reset before each test (no auth, no delay)."""
    with shared_fake.fresh():
        yield shared_fake


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep OPENAI_* / AZURE_OPENAI_* settings of the developer's shell out of the clients."""
    for name in list(os.environ):
        if name.startswith(("OPENAI_", "AZURE_OPENAI_")):
            monkeypatch.delenv(name)


def async_openai(fake: FakeOpenAI, **kwargs: Any) -> openai.AsyncOpenAI:
    kwargs.setdefault("api_key", "sk-test")
    kwargs.setdefault("max_retries", 0)
    return openai.AsyncOpenAI(base_url=fake.openai_base_url, **kwargs)


def async_azure(fake: FakeOpenAI, **kwargs: Any) -> openai.AsyncAzureOpenAI:
    kwargs.setdefault("max_retries", 0)
    if "azure_ad_token" not in kwargs:
        kwargs.setdefault("api_key", "azure-key")
    return openai.AsyncAzureOpenAI(azure_endpoint=fake.url, api_version=AZURE_API_VERSION, **kwargs)


def user(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


def sse_events(raw: str) -> list[str]:
    """Split a raw SSE body into the ``data:`` payloads, checking the framing on the way."""
    assert raw.endswith("\n\n")
    events = raw[:-2].split("\n\n")
    assert all(event.startswith("data: ") and "\n" not in event for event in events), events
    return [event[len("data: ") :] for event in events]


async def collect_tool_calls(stream: AsyncIterator[ChatCompletionChunk]) -> tuple[dict[int, dict[str, Any]], list]:
    """Assemble streamed tool calls by index, the way SDK users do."""
    calls: dict[int, dict[str, Any]] = {}
    finish_reasons = []
    async for chunk in stream:
        for choice in chunk.choices:
            if choice.finish_reason:
                finish_reasons.append(choice.finish_reason)
            for delta in choice.delta.tool_calls or []:
                call = calls.setdefault(delta.index, {"id": None, "name": "", "arguments": "", "fragments": 0})
                if delta.id:
                    call["id"] = delta.id
                if delta.function and delta.function.name:
                    call["name"] += delta.function.name
                if delta.function and delta.function.arguments:
                    call["arguments"] += delta.function.arguments
                    call["fragments"] += 1
    return calls, finish_reasons


# ------------------------------------------------------------------------------------------ raw wire format


def test_raw_stream_is_real_sse_with_valid_chunks(fake: FakeOpenAI) -> None:
    body = {
        "model": "gpt-4o-mini",
        "stream": True,
        "stream_options": {"include_usage": True},
        "messages": user("hello there friend"),
    }
    response = httpx.post(f"{fake.openai_base_url}/chat/completions", json=body, headers={"X-Trace": "abc"})

    assert response.status_code == 200
    assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
    assert response.headers["x-request-id"]
    events = sse_events(response.text)
    assert events[-1] == "[DONE]"
    chunks = [json.loads(event) for event in events[:-1]]
    for chunk in chunks:
        parsed = ChatCompletionChunk.model_validate(chunk)  # strict validation, unlike the SDK's construct()
        assert parsed.model_extra == {} and parsed.object == "chat.completion.chunk"
        assert (chunk["id"], chunk["created"], chunk["model"]) == (chunks[0]["id"], chunks[0]["created"], "gpt-4o-mini")

    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    deltas = [c["choices"][0]["delta"].get("content") for c in chunks[1:-2]]
    assert deltas == ["You", " said:", " hello", " there", " friend"]
    assert chunks[-2]["choices"][0] == {"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["total_tokens"] > 0
    assert all(c["usage"] is None for c in chunks[:-1])

    recorded = fake.last_request
    assert (recorded.method, recorded.path, recorded.route) == ("POST", "/v1/chat/completions", "openai")
    assert recorded.headers["x-trace"] == recorded.headers["X-TRACE"] == "abc"
    assert recorded.json == body and recorded.stream and recorded.include_usage


def test_no_usage_chunk_unless_requested(fake: FakeOpenAI) -> None:
    body = {"model": "m", "stream": True, "messages": user("hi")}
    events = sse_events(httpx.post(f"{fake.openai_base_url}/chat/completions", json=body).text)
    chunks = [json.loads(event) for event in events[:-1]]
    assert all(chunk["choices"] and "usage" not in chunk for chunk in chunks)


def raw_chunks(fake: FakeOpenAI, azure: bool = False) -> list[dict[str, Any]]:
    """The chunks of one streamed answer, as JSON, from the OpenAI or the Azure route."""
    body = {"model": "m", "stream": True, "stream_options": {"include_usage": True}, "messages": user("hi")}
    if azure:
        url, params = f"{fake.url}/openai/deployments/d/chat/completions", {"api-version": AZURE_API_VERSION}
    else:
        url, params = f"{fake.openai_base_url}/chat/completions", {}
    response = httpx.post(url, json=body, params=params, headers={"api-key": "k"})
    assert response.status_code == 200, response.text
    events = sse_events(response.text)
    assert events[-1] == "[DONE]"
    return [json.loads(event) for event in events[:-1]]


def tool_deltas(chunks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [tc for c in chunks for choice in c["choices"] for tc in choice.get("delta", {}).get("tool_calls", [])]


@pytest.mark.parametrize(
    ("call_ids", "expected"), [("numbered", ["call_0", "call_1"]), ("empty", ["", ""]), ("missing", [None, None])]
)
def test_quirk_call_ids(fake: FakeOpenAI, call_ids: str, expected: list) -> None:
    calls = [("get_weather", {"location": "A"}), ("get_weather", {"location": "B"})]
    for _ in range(2):  # numbered ids repeat in every response
        fake.enqueue(tool_call_response(calls, quirks=Quirks(call_ids=call_ids)))  # type: ignore[arg-type]
        headers = [tc for tc in tool_deltas(raw_chunks(fake)) if "name" in tc["function"]]
        assert [tc.get("id", None) for tc in headers] == expected
        assert all(("id" in tc) == (call_ids != "missing") for tc in headers)


def test_quirk_tool_calls_without_index_with_null_content(fake: FakeOpenAI) -> None:
    fake.enqueue(
        tool_call_response(
            [("get_weather", {"location": "A"})], quirks=Quirks(tool_call_index=False, content_null=True)
        )
    )
    chunks = raw_chunks(fake)
    deltas = tool_deltas(chunks)
    assert len(deltas) == 4 and all("index" not in tc for tc in deltas)
    assert all(
        c["choices"][0]["delta"]["content"] is None
        for c in chunks
        if c["choices"] and "tool_calls" in c["choices"][0]["delta"]
    )
    assert json.loads("".join(tc["function"]["arguments"] for tc in deltas)) == {"location": "A"}


def test_quirk_arguments_as_object_in_one_chunk(fake: FakeOpenAI) -> None:
    fake.enqueue(tool_call_response([("get_weather", {"location": "A"})], quirks=Quirks(arguments_as_object=True)))
    (delta,) = tool_deltas(raw_chunks(fake))
    assert delta["function"] == {"name": "get_weather", "arguments": {"location": "A"}}


@pytest.mark.parametrize("field", ["reasoning_content", "reasoning"])
def test_quirk_reasoning_deltas_come_before_the_answer(fake: FakeOpenAI, field: str) -> None:
    fake.enqueue(text_response(["Hi"], quirks=Quirks(reasoning=("Think", "ing"), reasoning_field=field)))
    deltas = [c["choices"][0]["delta"] for c in raw_chunks(fake) if c["choices"]]
    assert [d.get(field) for d in deltas[1:3]] == ["Think", "ing"] and deltas[3]["content"] == "Hi"


def test_quirk_azure_filter_annotations_and_the_cut_answer(fake: FakeOpenAI) -> None:
    fake.enqueue(text_response(["a", "b"], quirks=Quirks(filter_annotations=True)))
    chunks = raw_chunks(fake, azure=True)
    assert chunks[0]["prompt_filter_results"] and chunks[0]["choices"] == []
    annotations = [c for c in chunks if c["id"] == "" and c["choices"]]
    assert len(annotations) == 2  # after the content, after the finish chunk
    for annotation in annotations:
        (choice,) = annotation["choices"]
        assert "delta" not in choice and choice["finish_reason"] is None
        assert set(choice) == {"index", "finish_reason", "content_filter_results", "content_filter_offsets"}

    fake.enqueue(text_response(["a", "b"], finish_reason="content_filter"))
    chunks = raw_chunks(fake, azure=True)
    (cut,) = [c for c in chunks if c["choices"] and c["choices"][0]["finish_reason"]]
    assert (cut["id"], cut["model"], cut["object"]) == ("", "", "")
    assert "delta" not in cut["choices"][0] and cut["choices"][0]["finish_reason"] == "content_filter"
    assert cut["choices"][0]["content_filter_results"]["violence"] == {"filtered": True, "severity": "medium"}

    fake.enqueue(text_response(["a"], finish_reason="content_filter"))  # elsewhere: an ordinary finish chunk
    assert raw_chunks(fake)[-2]["choices"][0]["finish_reason"] == "content_filter"


async def test_quirk_azure_prompt_filter_error_reaches_the_sdk(fake: FakeOpenAI) -> None:
    fake.enqueue(content_filter_error("hate", "high"))
    async with async_azure(fake) as client:
        with pytest.raises(openai.BadRequestError) as caught:
            await client.chat.completions.create(model="d", messages=user("hi"), stream=True)
    error = caught.value
    assert error.status_code == 400 and error.code == "content_filter" and error.param == "prompt"
    assert error.message.endswith(AZURE_FILTER_MESSAGE) or AZURE_FILTER_MESSAGE in error.message
    verdicts = error.body["innererror"]["content_filter_result"]
    assert verdicts["hate"] == {"filtered": True, "severity": "high"}
    assert verdicts["violence"] == {"filtered": False, "severity": "safe"}


def test_unknown_route_is_openai_404(fake: FakeOpenAI) -> None:
    response = httpx.get(f"{fake.url}/v1/nope?x=1")
    assert response.status_code == 404
    assert response.json()["error"]["message"] == "Invalid URL (GET /v1/nope)"
    assert fake.last_request.route == "unknown" and fake.last_request.query == {"x": "1"}


# ------------------------------------------------------------------------------------------ openai SDK


@pytest.mark.asyncio
async def test_async_openai_text_stream(fake: FakeOpenAI) -> None:
    fake.enqueue(text_response(["Hel", "lo", "!"], usage={"prompt_tokens": 7, "completion_tokens": 3}))
    async with async_openai(fake) as client:
        stream = await client.chat.completions.create(
            model="gpt-4o-mini", messages=user("hi"), stream=True, stream_options={"include_usage": True}
        )
        chunks = [chunk async for chunk in stream]

    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Hello!"
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert (chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens, chunks[-1].usage.total_tokens) == (
        7,
        3,
        10,
    )
    assert fake.last_request.headers["authorization"] == "Bearer sk-test"
    assert fake.pending == 0


@pytest.mark.asyncio
async def test_default_responder_calls_get_weather_in_fragments(fake: FakeOpenAI) -> None:
    other_tool = {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object"}}}
    async with async_openai(fake) as client:
        stream = await client.chat.completions.create(
            model="m", messages=user("What's the weather in Paris?"), tools=[other_tool, WEATHER_TOOL], stream=True
        )
        calls, finish_reasons = await collect_tool_calls(stream)

        assert finish_reasons == ["tool_calls"]
        assert list(calls) == [0]
        assert calls[0]["name"] == "get_weather" and calls[0]["id"].startswith("call_")
        assert json.loads(calls[0]["arguments"]) == {"location": "Paris"}
        assert calls[0]["fragments"] >= 2

        # No capitalized word after " in ": Seattle. Only one tool offered: that one is called.
        stream = await client.chat.completions.create(
            model="m", messages=user("how is the weather in general"), tools=[other_tool], stream=True
        )
        calls, _ = await collect_tool_calls(stream)
        assert calls[0]["name"] == "get_time" and json.loads(calls[0]["arguments"]) == {"location": "Seattle"}

        # A tool result after the last user message: the fake answers with text based on it.
        messages = [
            *user("What's the weather in Paris?"),
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": "Sunny, 21 C"},
        ]
        stream = await client.chat.completions.create(model="m", messages=messages, tools=[WEATHER_TOOL], stream=True)
        deltas = [c.choices[0].delta.content async for c in stream if c.choices and c.choices[0].delta.content]
        assert deltas == ["Based", " on", " the", " data:", " Sunny,", " 21", " C."]


@pytest.mark.asyncio
async def test_parallel_tool_calls(fake: FakeOpenAI) -> None:
    fake.enqueue(
        tool_call_response(
            [("get_weather", {"location": "Paris"}), ("get_weather", {"location": "Oslo"}, "call_fixed")], fragments=4
        )
    )
    async with async_openai(fake) as client:
        stream = await client.chat.completions.create(model="m", messages=user("two"), stream=True)
        calls, finish_reasons = await collect_tool_calls(stream)

    assert finish_reasons == ["tool_calls"]
    assert [json.loads(calls[i]["arguments"]) for i in (0, 1)] == [{"location": "Paris"}, {"location": "Oslo"}]
    assert calls[1]["id"] == "call_fixed" and calls[0]["fragments"] == calls[1]["fragments"] == 4


@pytest.mark.asyncio
async def test_non_streaming_completion(fake: FakeOpenAI) -> None:
    async with async_openai(fake) as client:
        completion = await client.chat.completions.create(model="m", messages=user("ping"))
        assert completion.object == "chat.completion"
        assert completion.choices[0].message.content == "You said: ping"
        assert completion.choices[0].finish_reason == "stop" and completion.usage is not None

        completion = await client.chat.completions.create(
            model="m",
            messages=user("weather in Rome"),
            tools=[WEATHER_TOOL],  # type: ignore[list-item]
        )
        call = completion.choices[0].message.tool_calls[0]  # type: ignore[index]
        assert completion.choices[0].finish_reason == "tool_calls"
        assert call.function.name == "get_weather" and json.loads(call.function.arguments) == {"location": "Rome"}


@pytest.mark.asyncio
async def test_async_azure_openai_stream(fake: FakeOpenAI) -> None:
    async with async_azure(fake) as client:
        stream = await client.chat.completions.create(
            model="my-deployment", messages=user("hi azure"), stream=True, stream_options={"include_usage": True}
        )
        chunks = [chunk async for chunk in stream]

    assert chunks[0].choices == [] and chunks[0].model_extra["prompt_filter_results"]  # Azure's first chunk
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "You said: hi azure"
    assert chunks[-1].usage is not None

    recorded = fake.last_request
    assert recorded.path == "/openai/deployments/my-deployment/chat/completions"
    assert (recorded.route, recorded.deployment) == ("azure", "my-deployment")
    assert recorded.query["api-version"] == AZURE_API_VERSION
    assert recorded.headers["api-key"] == "azure-key"


@pytest.mark.asyncio
async def test_azure_v1_surface() -> None:
    with FakeOpenAI(api_key="azure-key", bearer_token="entra-token") as fake:
        async with openai.AsyncOpenAI(base_url=f"{fake.url}/openai/v1", api_key="azure-key", max_retries=0) as client:
            stream = await client.chat.completions.create(model="dep", messages=user("v1"), stream=True)
            chunks = [chunk async for chunk in stream]
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "You said: v1"
        assert (fake.last_request.route, fake.last_request.path) == ("azure_v1", "/openai/v1/chat/completions")


@pytest.mark.asyncio
async def test_azure_auth_and_api_version() -> None:
    with FakeOpenAI(api_key="azure-key", bearer_token="entra-token") as fake:
        async with async_azure(fake, api_key="wrong") as client:
            with pytest.raises(openai.AuthenticationError) as excinfo:
                await client.chat.completions.create(model="d", messages=user("x"), stream=True)
            assert excinfo.value.status_code == 401 and excinfo.value.code == "401"

        async with async_azure(fake, azure_ad_token="entra-token") as client:
            completion = await client.chat.completions.create(model="d", messages=user("token"))
            assert completion.choices[0].message.content == "You said: token"
            assert fake.last_request.headers["authorization"] == "Bearer entra-token"
            assert "api-key" not in fake.last_request.headers

        async with async_azure(fake, azure_ad_token="other-token") as client:
            with pytest.raises(openai.AuthenticationError):
                await client.chat.completions.create(model="d", messages=user("x"))

        async with httpx.AsyncClient() as http:
            url = f"{fake.url}/openai/deployments/d/chat/completions"
            response = await http.post(url, json={"messages": []}, headers={"api-key": "azure-key"})
        assert response.status_code == 404  # no api-version: Azure answers "Resource not found"


@pytest.mark.asyncio
async def test_openai_auth_rejection() -> None:
    with FakeOpenAI(api_key="sk-right") as fake:
        fake.enqueue(text_response(["queued"]))
        async with async_openai(fake, api_key="sk-wrong") as client:
            with pytest.raises(openai.AuthenticationError) as excinfo:
                await client.chat.completions.create(model="m", messages=user("x"), stream=True)
        assert excinfo.value.status_code == 401
        assert excinfo.value.code == "invalid_api_key"
        assert set(excinfo.value.body) == {"message", "type", "param", "code"}  # type: ignore[arg-type]
        assert fake.pending == 1  # a rejected request does not consume the queue

        async with httpx.AsyncClient() as http:
            response = await http.post(f"{fake.openai_base_url}/chat/completions", json={"messages": []})
        assert response.status_code == 401 and response.json()["error"]["type"] == "invalid_request_error"

        async with async_openai(fake, api_key="sk-right") as client:
            completion = await client.chat.completions.create(model="m", messages=user("x"))
        assert completion.choices[0].message.content == "queued"
        assert len(fake.requests) == 3


# ------------------------------------------------------------------------------------------ faults


@pytest.mark.asyncio
async def test_500_raises_internal_server_error(fake: FakeOpenAI) -> None:
    fake.enqueue(error_response(500))
    async with async_openai(fake) as client:
        with pytest.raises(openai.InternalServerError) as excinfo:
            await client.chat.completions.create(model="m", messages=user("x"), stream=True)
    assert excinfo.value.status_code == 500
    assert excinfo.value.body["type"] == "server_error"  # type: ignore[index]
    assert len(fake.requests) == 1


@pytest.mark.asyncio
async def test_429_carries_retry_after_and_the_sdk_honours_it(fake: FakeOpenAI) -> None:
    fake.enqueue(error_response(429, headers={"Retry-After": "1"}))
    async with async_openai(fake) as client:
        with pytest.raises(openai.RateLimitError) as excinfo:
            await client.chat.completions.create(model="m", messages=user("x"), stream=True)
    assert excinfo.value.response.headers["retry-after"] == "1"
    assert excinfo.value.code == "rate_limit_exceeded"

    fake.enqueue(error_response(429, headers={"Retry-After": "0.2"}))
    async with async_openai(fake, max_retries=1) as client:
        started = time.monotonic()
        completion = await client.chat.completions.create(model="m", messages=user("again"))
    assert time.monotonic() - started >= 0.2
    assert completion.choices[0].message.content == "You said: again"
    assert len(fake.requests) == 3


@pytest.mark.asyncio
async def test_drop_after_breaks_the_stream(fake: FakeOpenAI) -> None:
    fake.enqueue(drop_after(3, text_response("one two three four five six")))
    received: list[str] = []
    async with async_openai(fake) as client:
        stream = await client.chat.completions.create(model="m", messages=user("x"), stream=True)
        with pytest.raises(openai.APIConnectionError):
            async for chunk in stream:
                received.append(chunk.choices[0].delta.content or "")
    assert received == ["", "one", " two"]
    assert await fake.wait_for_no_open_streams_async(2.0)
    assert fake.cancelled_streams == 0  # the server cut it, the client did not leave


@pytest.mark.asyncio
@pytest.mark.parametrize("headers", [False, True])
async def test_hang_makes_the_client_time_out(fake: FakeOpenAI, headers: bool) -> None:
    fake.enqueue(hang(headers=headers))
    async with async_openai(fake, timeout=0.3) as client:
        with pytest.raises(openai.APITimeoutError):
            stream = await client.chat.completions.create(model="m", messages=user("x"), stream=True)
            assert headers, "headers=False must time out before create() returns"
            async for _ in stream:
                pass
    assert await fake.wait_for_no_open_streams_async(2.0)
    assert fake.cancelled_streams == 1


@pytest.mark.asyncio
async def test_malformed_chunk_makes_the_client_raise(fake: FakeOpenAI) -> None:
    fake.enqueue(malformed(after=2))
    received = []
    async with async_openai(fake) as client:
        stream = await client.chat.completions.create(model="m", messages=user("x"), stream=True)
        with pytest.raises(json.JSONDecodeError):
            async for chunk in stream:
                received.append(chunk)
    assert len(received) == 2


# ------------------------------------------------------------------------------------------ cancellation


@pytest.mark.asyncio
async def test_client_closing_early_is_seen_during_a_delay(fake: FakeOpenAI) -> None:
    fake.chunk_delay = 1.0  # the server sits in a long delay when the client leaves
    fake.enqueue(text_response(["a", "b", "c"], delay=0.0))
    fake.enqueue(text_response(["slow", " stream"]))
    async with async_openai(fake) as client:
        stream = await client.chat.completions.create(model="m", messages=user("x"), stream=True)
        assert [c.choices[0].delta.content async for c in stream][1:-1] == ["a", "b", "c"]  # per-response delay

        fake.chunk_delay = 0.6
        stream = await client.chat.completions.create(model="m", messages=user("x"), stream=True)
        first = await stream.__anext__()
        assert first.choices[0].delta.role == "assistant"
        assert fake.open_streams == 1
        closed_at = time.monotonic()
        await stream.close()
        assert await fake.wait_for_no_open_streams_async(2.0)
        assert time.monotonic() - closed_at < 0.3  # well inside the 0.6 s delay before the next chunk
    assert fake.cancelled_streams == 1


def test_sync_client_closing_early(fake: FakeOpenAI) -> None:
    fake.chunk_delay = 0.5
    with openai.OpenAI(base_url=fake.openai_base_url, api_key="sk", max_retries=0) as client:
        stream = client.chat.completions.create(model="m", messages=user("a b c d"), stream=True)
        next(iter(stream))
        stream.close()
    assert fake.wait_for_no_open_streams(2.0)
    assert fake.cancelled_streams == 1


def test_accepted_connections_have_tcp_nodelay(fake: FakeOpenAI) -> None:
    """Without TCP_NODELAY a response's small writes (headers, then each chunk) wait on Nagle against the
    client's delayed ACK: about 40 ms per request on a reused connection, in every end-to-end test."""
    with httpx.Client(base_url=fake.openai_base_url) as client:
        for _ in range(2):  # the second request rides the kept-alive connection
            assert client.post("/chat/completions", json={"model": "m", "messages": user("hi")}).status_code == 200

        async def accepted_options() -> list[int]:
            assert fake._server is not None
            return [
                conn.transport.get_extra_info("socket").getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
                for conn in fake._server.server_state.connections
            ]

        assert fake._loop is not None
        options = asyncio.run_coroutine_threadsafe(accepted_options(), fake._loop).result(5)
    assert options and all(options), options


# ------------------------------------------------------------------------------------------ scripting & lifecycle


@pytest.mark.asyncio
async def test_custom_responder_queue_precedence_and_reset(fake: FakeOpenAI) -> None:
    seen: list[RecordedRequest] = []

    def responder(request: RecordedRequest) -> ScriptedResponse | None:
        seen.append(request)
        text = request.messages[-1]["content"]
        return text_response(text.upper()) if text.startswith("shout") else None

    fake.set_responder(lambda request: 1 / 0)  # type: ignore[arg-type, return-value]
    async with async_openai(fake) as client:
        with pytest.raises(openai.InternalServerError):
            await client.chat.completions.create(model="m", messages=user("boom"))
    assert [type(e) for e in fake.errors] == [ZeroDivisionError]

    fake.set_responder(responder)
    fake.enqueue(text_response(["from queue"]))
    async with async_openai(fake) as client:

        async def ask(text: str) -> str:
            completion = await client.chat.completions.create(model="m", messages=user(text))
            return completion.choices[0].message.content or ""

        assert await ask("shout one") == "from queue"
        assert await ask("shout two") == "SHOUT TWO"
        assert await ask("whisper") == "You said: whisper"  # responder returned None: default

        fake.chunk_delay = 0.5
        fake.reset()
        assert fake.requests == [] and fake.pending == 0 and fake.chunk_delay == 0.0
        assert await ask("shout three") == "You said: shout three"  # responder cleared
    assert len(seen) == 2


def test_start_stop_with_open_streams_is_quick_and_leaves_no_thread() -> None:
    fake = FakeOpenAI(chunk_delay=5.0)
    fake.start()
    port = fake.port
    fake.enqueue(hang(headers=True), hang(headers=False))
    outcomes: list[object] = []

    def client(_index: int) -> None:
        try:
            outcomes.append(httpx.post(f"{fake.openai_base_url}/chat/completions", json={"stream": True}).status_code)
        except httpx.RemoteProtocolError as exc:
            outcomes.append(type(exc))

    clients = [threading.Thread(target=client, args=(n,)) for n in range(3)]  # hang, hang, slow default stream
    for thread in clients:
        thread.start()
    assert fake.wait_until(lambda f: f.open_streams == 3, 2.0)

    started = time.monotonic()
    fake.stop()
    assert time.monotonic() - started < 2.0
    assert not fake.running
    assert not [t for t in threading.enumerate() if t.name == f"FakeOpenAI:{port}"]
    for thread in clients:
        thread.join(2.0)
        assert not thread.is_alive()
    # Started responses are cut mid-body; the one that had not started yet gets a 500.
    assert sorted(map(str, outcomes)) == sorted(map(str, [500, httpx.RemoteProtocolError, httpx.RemoteProtocolError]))
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
        pass
    fake.stop()  # idempotent


# ------------------------------------------------------------------------------------------ Agent Framework


@tool
def get_weather(location: str) -> str:
    """Get the weather for a location."""
    get_weather_calls.append({"location": location})
    return f"Sunny and 21 C in {location}"


get_weather_calls: list[dict[str, Any]] = []


async def run_weather_agent(client: OpenAIChatCompletionClient) -> str:
    get_weather_calls.clear()
    agent = Agent(client=client, name="weather", instructions="You tell the weather.", tools=[get_weather])
    texts: list[str] = []
    try:
        async with agent, agent.run("What's the weather in Paris?", stream=True) as stream:
            async for update in stream:
                texts.append(update.text)
    finally:
        # `async with agent` does not close the chat client's AsyncOpenAI (the chat client is no async
        # context manager), which would leak a keep-alive socket (ResourceWarning).
        await client.client.close()
    return "".join(texts)


def assert_weather_conversation(fake: FakeOpenAI, text: str) -> None:
    assert get_weather_calls == [{"location": "Paris"}]
    assert text == "Based on the data: Sunny and 21 C in Paris."
    first, second = fake.requests
    assert first.stream and first.include_usage
    assert [t["function"]["name"] for t in first.tools] == ["get_weather"]
    assistant, tool_message = second.messages[-2:]
    call = assistant["tool_calls"][0]
    assert call["function"]["name"] == "get_weather" and json.loads(call["function"]["arguments"]) == {
        "location": "Paris"
    }
    assert tool_message["role"] == "tool" and tool_message["tool_call_id"] == call["id"]
    assert "Sunny and 21 C in Paris" in json.dumps(tool_message["content"])


@pytest.mark.asyncio
@pytest.mark.usefixtures("clean_env")
async def test_agent_framework_openai_tool_loop(fake: FakeOpenAI) -> None:
    client = OpenAIChatCompletionClient(model="gpt-4o-mini", api_key="sk-agent", base_url=fake.openai_base_url)
    text = await run_weather_agent(client)

    assert_weather_conversation(fake, text)
    assert all(r.path == "/v1/chat/completions" for r in fake.requests)
    assert fake.requests[0].headers["authorization"] == "Bearer sk-agent"


@pytest.mark.asyncio
@pytest.mark.usefixtures("clean_env")
async def test_agent_framework_azure_tool_loop(fake: FakeOpenAI) -> None:
    client = OpenAIChatCompletionClient(
        model="weather-deployment", azure_endpoint=fake.url, api_key="azure-key", api_version=AZURE_API_VERSION
    )
    text = await run_weather_agent(client)

    assert_weather_conversation(fake, text)
    for request in fake.requests:
        assert request.path == "/openai/deployments/weather-deployment/chat/completions"
        assert request.query["api-version"] == AZURE_API_VERSION
        assert request.headers["api-key"] == "azure-key"
        assert "authorization" not in request.headers
