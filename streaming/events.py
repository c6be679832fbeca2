"""The event model: what a stream carries, independent of its wire format.

Every stream is a sequence of these events and ends with exactly one
terminal event, :class:`Done` or :class:`Error`. Encoders (``encoders.py``)
turn them into SSE, NDJSON or plain text; nothing else knows the wire format.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar


@dataclass(frozen=True, slots=True)
class StreamEvent:
    """Base class. ``name`` is the SSE event name; ``None`` means unnamed."""

    name: ClassVar[str | None] = None
    terminal: ClassVar[bool] = False

    def payload(self) -> dict[str, Any]:
        raise NotImplementedError


@dataclass(frozen=True, slots=True)
class TextDelta(StreamEvent):
    """A piece of an agent's answer, sent as an unnamed SSE event.

    Unnamed so that ``EventSource.onmessage`` and the simplest
    ``data:``-line loop (``data.get("text")``) both see it.
    """

    text: str
    agent: str

    def payload(self) -> dict[str, Any]:
        return {"text": self.text, "agent": self.agent}


@dataclass(frozen=True, slots=True)
class AgentStarted(StreamEvent):
    name: ClassVar[str] = "agent_started"
    agent: str

    def payload(self) -> dict[str, Any]:
        return {"agent": self.agent}


@dataclass(frozen=True, slots=True)
class AgentCompleted(StreamEvent):
    name: ClassVar[str] = "agent_completed"
    agent: str

    def payload(self) -> dict[str, Any]:
        return {"agent": self.agent}


@dataclass(frozen=True, slots=True)
class ToolCall(StreamEvent):
    """A complete tool call: ``arguments`` is the parsed JSON object the
    model sent (or its raw string when it is not valid JSON), never a
    fragment."""

    name: ClassVar[str] = "tool_call"
    agent: str
    call_id: str
    tool: str
    arguments: Any

    def payload(self) -> dict[str, Any]:
        return {"agent": self.agent, "call_id": self.call_id, "name": self.tool, "arguments": self.arguments}


@dataclass(frozen=True, slots=True)
class ToolResult(StreamEvent):
    """What a tool returned to the model. ``is_error`` is true when the tool
    failed; ``result`` then carries the message the model saw."""

    name: ClassVar[str] = "tool_result"
    agent: str
    call_id: str
    tool: str
    result: Any
    is_error: bool = False

    def payload(self) -> dict[str, Any]:
        return {
            "agent": self.agent,
            "call_id": self.call_id,
            "name": self.tool,
            "result": self.result,
            "is_error": self.is_error,
        }


@dataclass(frozen=True, slots=True)
class Done(StreamEvent):
    """Terminal: the run finished. ``usage`` is ``None`` when the model did
    not report it. ``finish_reason`` is ``"length"`` when the model's length
    limit cut the text of an answer in the run (part of it is missing),
    else ``"stop"``."""

    name: ClassVar[str] = "done"
    terminal: ClassVar[bool] = True
    provider: str
    model: str
    usage: dict[str, int] | None = None
    elapsed_ms: int = 0
    finish_reason: str = "stop"

    def payload(self) -> dict[str, Any]:
        return {
            "provider": self.provider,
            "model": self.model,
            "usage": self.usage,
            "elapsed_ms": self.elapsed_ms,
            "finish_reason": self.finish_reason,
        }


@dataclass(frozen=True, slots=True)
class Error(StreamEvent):
    """Terminal: the run failed. ``message`` is safe to show a user: no
    stack trace, no secret, no upstream body."""

    name: ClassVar[str] = "error"
    terminal: ClassVar[bool] = True
    code: str
    message: str

    def payload(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message}}
