"""Maps Agent Framework updates to stream events, in one place.

Both runners (agent and workflow) feed :class:`UpdateMapper` the
``AgentResponseUpdate`` objects the framework streams. The mapper:

* turns text into :class:`TextDelta`;
* assembles tool calls that arrive in fragments (name first, then pieces of
  the JSON arguments, all under one ``call_id``) and emits each once, whole,
  as soon as it is complete: when the model's turn finishes, text follows,
  or its result arrives;
* emits tool results, flagging failed ones;
* sums token usage across the model calls of a run and remembers the model
  name the service reported;
* counts the text a run streams (answers and tool-call arguments) and
  raises :class:`OutputTooLong` past ``max_output_chars`` (the framework
  keeps every update of a run in memory, so a model that never stops would
  grow the process without end).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from streaming.events import Done, StreamEvent, TextDelta, ToolCall, ToolResult

USAGE_KEYS = {
    "input_token_count": "input_tokens",
    "output_token_count": "output_tokens",
    "total_token_count": "total_tokens",
}


def _maybe_json(value: Any) -> Any:
    """Parse a JSON object or array held in a string; leave anything else."""
    if isinstance(value, str) and value[:1] in ("{", "["):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


class OutputTooLong(Exception):
    """The run streamed more text than ``MAX_RUN_OUTPUT_CHARS`` allows."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"the run passed {limit} characters of output")
        self.limit = limit


@dataclass
class _PendingCall:
    agent: str
    name: str
    arguments: list[str] = field(default_factory=list)
    parsed: Any = None


@dataclass
class UpdateMapper:
    """Stateful mapper for one run (one request)."""

    pending: dict[str, _PendingCall] = field(default_factory=dict)
    tool_names: dict[str, str] = field(default_factory=dict)
    usage: dict[str, int] = field(default_factory=dict)
    model: str | None = None
    max_output_chars: int | None = None
    output_chars: int = 0
    _last_call_id: str | None = None

    def feed(self, update: Any, agent: str) -> list[StreamEvent]:
        events: list[StreamEvent] = []
        model = getattr(getattr(update, "raw_representation", None), "model", None)
        if isinstance(model, str) and model:
            self.model = model
        for content in update.contents or ():
            kind = content.type
            if kind == "text":
                if content.text:
                    self._spend(len(content.text))
                    events += self.flush()
                    events.append(TextDelta(content.text, agent))
            elif kind == "function_call":
                self._add_call_fragment(content, agent)
            elif kind == "function_result":
                events += self.flush()
                events.append(self._result(content, agent))
            elif kind == "usage":
                for source, target in USAGE_KEYS.items():
                    value = (content.usage_details or {}).get(source)
                    if isinstance(value, int):
                        self.usage[target] = self.usage.get(target, 0) + value
        if getattr(update, "finish_reason", None):
            events += self.flush()
        return events

    def _spend(self, chars: int) -> None:
        """Count streamed text (answers and tool-call arguments alike)."""
        self.output_chars += chars
        if self.max_output_chars is not None and self.output_chars > self.max_output_chars:
            raise OutputTooLong(self.max_output_chars)

    def flush(self) -> list[StreamEvent]:
        """Emit every tool call assembled so far."""
        events: list[StreamEvent] = []
        for call_id, call in self.pending.items():
            if call.parsed is not None:
                arguments = call.parsed
            else:
                raw = "".join(call.arguments)
                arguments = _maybe_json(raw) if raw.strip() else {}
            events.append(ToolCall(agent=call.agent, call_id=call_id, tool=call.name, arguments=arguments))
        self.pending.clear()
        self._last_call_id = None
        return events

    def done(self, provider: str, model: str) -> Done:
        if "input_tokens" in self.usage or "output_tokens" in self.usage:
            # Some services leave the total out of some chunks: derive it.
            self.usage["total_tokens"] = self.usage.get("input_tokens", 0) + self.usage.get("output_tokens", 0)
        return Done(provider=provider, model=self.model or model, usage=dict(self.usage) or None)

    def _add_call_fragment(self, content: Any, agent: str) -> None:
        call_id = content.call_id or self._last_call_id
        if not call_id:
            return
        call = self.pending.get(call_id)
        if call is None:
            if call_id in self.tool_names:  # already emitted: a late duplicate
                return
            call = self.pending[call_id] = _PendingCall(agent=agent, name=content.name or "")
            self.tool_names[call_id] = call.name
        elif content.name and not call.name:
            call.name = self.tool_names[call_id] = content.name
        self._last_call_id = call_id
        arguments = content.arguments
        if isinstance(arguments, dict):
            call.parsed = arguments
        elif isinstance(arguments, str):
            self._spend(len(arguments))
            call.arguments.append(arguments)

    def _result(self, content: Any, agent: str) -> ToolResult:
        call_id = content.call_id or ""
        return ToolResult(
            agent=agent,
            call_id=call_id,
            tool=self.tool_names.get(call_id, ""),
            result=_maybe_json(content.result),
            is_error=content.exception is not None,
        )
