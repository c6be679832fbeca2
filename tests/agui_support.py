"""AG-UI test helpers: build a ``RunAgentInput``, stream it over real
loopback HTTP and hold every stream to the conformance validator
(``ag-ui-validate``: its transport layer over the live body, and its pytest
plugin over the events), 0 errors and 0 warnings."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
from ag_ui_validate.pytest_plugin import assert_valid_agui
from ag_ui_validate.report.pretty import format_diagnostic_line
from ag_ui_validate.transport import TransportOptions, validate_body


def user(text: str) -> dict[str, Any]:
    return {"id": f"u-{uuid.uuid4().hex[:8]}", "role": "user", "content": text}


def run_input(messages: Sequence[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    """A complete ``RunAgentInput`` as front ends send it."""
    return {
        "threadId": f"thread-{uuid.uuid4().hex[:8]}",
        "runId": f"run-{uuid.uuid4().hex[:8]}",
        "state": {},
        "messages": list(messages),
        "tools": [],
        "context": [],
        "forwardedProps": {},
        **extra,
    }


@dataclass
class AGUIResult:
    status: int
    headers: httpx.Headers
    body: bytes = b""
    events: list[dict[str, Any]] = field(default_factory=list)

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["type"] == kind]

    @property
    def types(self) -> list[str]:
        return [e["type"] for e in self.events]

    def text(self, message_id: str | None = None) -> str:
        return "".join(
            e["delta"] for e in self.of("TEXT_MESSAGE_CONTENT") if message_id is None or e["messageId"] == message_id
        )

    def error(self) -> dict[str, Any]:
        return json.loads(self.body)["error"]


def data_frames(body: bytes) -> list[str]:
    """The ``data:`` payloads of an SSE body, in order (comments skipped)."""
    return [line[6:] for line in body.decode().split("\n") if line.startswith("data: ")]


async def _stream(url: str, body: Any, headers: dict[str, str] | None) -> AGUIResult:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    sent = {"Content-Type": "application/json", "Accept": "text/event-stream", **(headers or {})}
    async with (
        httpx.AsyncClient(timeout=30) as client,
        client.stream("POST", url, content=content, headers=sent) as response,
    ):
        if response.status_code != 200:
            return AGUIResult(response.status_code, response.headers, await response.aread())
        chunks: list[bytes] = []

        async def tee():
            async for chunk in response.aiter_bytes():
                chunks.append(chunk)
                yield chunk

        checked = await validate_body(tee(), response.headers.get("content-type"), TransportOptions())
    report = checked.report
    problems = [format_diagnostic_line(d, color=False) for d in report.diagnostics if d.severity != "info"]
    assert report.summary.errors == 0 and report.summary.warnings == 0, "\n".join(problems)
    raw = b"".join(chunks)
    frames = data_frames(raw)
    assert_valid_agui(frames, max_warnings=0)
    return AGUIResult(response.status_code, response.headers, raw, [json.loads(f) for f in frames])


def post_agui(url: str, body: Any, headers: dict[str, str] | None = None) -> AGUIResult:
    """POST ``body`` to an AG-UI endpoint; a 200 stream is validated."""
    return asyncio.run(_stream(url, body, headers))


def assert_well_formed(result: AGUIResult, body: dict[str, Any]) -> None:
    """What every AG-UI stream of ours promises beyond the validator."""
    first, last = result.events[0], result.events[-1]
    assert first == {
        "type": "RUN_STARTED",
        "threadId": body["threadId"],
        "runId": body["runId"],
        "protocolVersion": "1.0",
    }
    assert last["type"] in ("RUN_FINISHED", "RUN_ERROR")
    assert [e["type"] for e in result.events].count(last["type"]) == 1
    assert all(e["delta"] for e in result.of("TEXT_MESSAGE_CONTENT")), "an empty text delta"
    starts = [e["messageId"] for e in result.of("TEXT_MESSAGE_START")]
    results = [e["messageId"] for e in result.of("TOOL_CALL_RESULT")]
    assert len(set(starts + results)) == len(starts + results), "message ids repeat"
    for event in result.of("TOOL_CALL_RESULT"):
        assert isinstance(event["content"], str)
    for event in result.events:
        assert None not in event.values()
    assert result.headers["cache-control"] == "no-cache"
    assert result.headers["x-accel-buffering"] == "no"
    assert result.headers["content-type"].startswith("text/event-stream")


def assistant_turn(result: AGUIResult) -> list[dict[str, Any]]:
    """The messages a front end keeps from a run (as ``HttpAgent`` builds
    them): assistant messages with their text and tool calls, then each
    tool result right after the message that made the call."""
    messages: dict[str, dict[str, Any]] = {}
    order: list[dict[str, Any]] = []
    calls: dict[str, dict[str, Any]] = {}
    for event in result.events:
        kind = event["type"]
        if kind == "TEXT_MESSAGE_START":
            messages[event["messageId"]] = {"id": event["messageId"], "role": "assistant", "content": ""}
            order.append(messages[event["messageId"]])
        elif kind == "TEXT_MESSAGE_CONTENT":
            messages[event["messageId"]]["content"] += event["delta"]
        elif kind == "TOOL_CALL_START":
            parent = event["parentMessageId"]
            if parent not in messages:
                messages[parent] = {"id": parent, "role": "assistant"}
                order.append(messages[parent])
            call = {"id": event["toolCallId"], "type": "function", "function": {"name": event["toolCallName"]}}
            call["function"]["arguments"] = ""
            messages[parent].setdefault("toolCalls", []).append(call)
            calls[event["toolCallId"]] = call
        elif kind == "TOOL_CALL_ARGS":
            calls[event["toolCallId"]]["function"]["arguments"] += event["delta"]
        elif kind == "TOOL_CALL_RESULT":
            tool = {"id": event["messageId"], "role": "tool", "toolCallId": event["toolCallId"]}
            tool["content"] = event["content"]
            owner = next(m for m in order if any(c["id"] == event["toolCallId"] for c in m.get("toolCalls", ())))
            at = order.index(owner) + 1
            while at < len(order) and order[at]["role"] == "tool":
                at += 1
            order.insert(at, tool)
    return order
