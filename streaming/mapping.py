"""Maps Agent Framework updates to stream events, in one place.

Both runners (agent and workflow) feed :class:`UpdateMapper` the
``AgentResponseUpdate`` objects the framework streams, so every wire format
(SSE, NDJSON, text, AG-UI) gets the same events. The mapper:

* turns text into :class:`TextDelta`;
* assembles tool calls that arrive in fragments (name first, then pieces of
  the JSON arguments) and emits each once, whole, as soon as it is complete:
  when the model's turn finishes, text follows, or its result arrives;
* gives every call an id that is non-empty and unique in the run, and its
  result the same id (see "Tool-call ids" below);
* says why an answer stopped early: the content filter ends the run with an
  ``error``; an answer the length limit cut is remembered for ``done``;
* sums token usage across the model calls of a run and remembers the model
  name the service reported;
* counts the text a run streams (answers and tool-call arguments) and
  raises :class:`OutputTooLong` past ``max_output_chars`` (the framework
  keeps every update of a run in memory, so a model that never stops would
  grow the process without end).

Tool-call ids. Servers do not all keep OpenAI's promise of a fresh id per
call: some number calls per response (``call_0`` at every step), some send
an empty id or none. The framework still runs every call, and it tags each
call occurrence and its result with its own ``Content.id`` (``af-call-…``,
fresh per call and step); with no model id it also uses that as the
``call_id``. So calls and results are paired here by that occurrence id,
then by ``call_id``, then by order (the oldest call still waiting), and the
client sees the model's id when it is non-empty and not yet used in the
run, else one the app makes (``call-app-1``, ``call-app-2``, ...). A call
seen again while it still waits for its result (the framework repeats a call
it hands back to the caller) is the same call, not a new one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from streaming.events import Done, Error, StreamEvent, TextDelta, ToolCall, ToolResult

USAGE_KEYS = {
    "input_token_count": "input_tokens",
    "output_token_count": "output_tokens",
    "total_token_count": "total_tokens",
}

# A call's identity in the mapper: ("occurrence", framework id) when the
# framework tagged it, ("call", model id) when only the model named it, or
# ("anonymous", n) for a call that came with neither.
_Key = tuple[str, Any]
APP_ID_PREFIX = "call-app-"


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
class _Call:
    agent: str
    name: str
    model_id: str = ""  # the model's own id for the call, when it sent one
    arguments: list[str] = field(default_factory=list)
    parsed: Any = None
    call_id: str = ""  # the id the client sees, set when the call is emitted


@dataclass
class UpdateMapper:
    """Stateful mapper for one run (one request)."""

    usage: dict[str, int] = field(default_factory=dict)
    model: str | None = None
    max_output_chars: int | None = None
    output_chars: int = 0
    finish_reason: str = "stop"
    _pending: dict[_Key, _Call] = field(default_factory=dict)  # being assembled, not emitted yet
    _waiting: dict[_Key, _Call] = field(default_factory=dict)  # emitted, waiting for their result
    _settled: set[_Key] = field(default_factory=set)  # occurrences whose result was emitted
    _used_ids: set[str] = field(default_factory=set)
    _app_ids: int = 0
    _anonymous: int = 0
    _last_key: _Key | None = None
    _calls_in_turn: bool = False  # the current model call made tool calls

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
                    if self._pending:
                        events += self.flush()
                    events.append(TextDelta(content.text, agent))
            elif kind == "function_call":
                self._calls_in_turn = True
                self._add_call_fragment(content, agent)
            elif kind == "function_result":
                self._calls_in_turn = False  # the model call that made it is over
                events += self.flush()
                result = self._result(content, agent)
                if result is not None:
                    events.append(result)
            elif kind == "usage":
                for source, target in USAGE_KEYS.items():
                    value = (content.usage_details or {}).get(source)
                    if isinstance(value, int):
                        self.usage[target] = self.usage.get(target, 0) + value
        finish_reason = getattr(update, "finish_reason", None)
        if finish_reason:
            events += self.flush()
            if finish_reason == "length" and not self._calls_in_turn:
                # The answer's text is cut. (A tool call cut there fails like any
                # malformed call, and the model goes on to answer.)
                self.finish_reason = "length"
            elif finish_reason == "content_filter":
                # Imported here, not at the top: errors.py classifies exceptions this
                # module raises, and only a filtered answer needs the table.
                from streaming.errors import CONTENT_FILTERED_ANSWER

                events.append(Error(CONTENT_FILTERED_ANSWER.code, CONTENT_FILTERED_ANSWER.message))
            self._calls_in_turn = False
        return events

    def _spend(self, chars: int) -> None:
        """Count streamed text (answers and tool-call arguments alike)."""
        self.output_chars += chars
        if self.max_output_chars is not None and self.output_chars > self.max_output_chars:
            raise OutputTooLong(self.max_output_chars)

    def flush(self) -> list[StreamEvent]:
        """Emit every tool call assembled so far."""
        events: list[StreamEvent] = []
        for key, call in self._pending.items():
            if call.parsed is not None:
                arguments = call.parsed
            else:
                raw = "".join(call.arguments)
                arguments = _maybe_json(raw) if raw.strip() else {}
            call.call_id = self._client_id(call.model_id)
            self._waiting[key] = call
            events.append(ToolCall(agent=call.agent, call_id=call.call_id, tool=call.name, arguments=arguments))
        self._pending.clear()
        self._last_key = None
        return events

    def done(self, provider: str, model: str) -> Done:
        """``done`` for the run; ``finish_reason`` is ``"length"`` when the
        length limit cut an answer's text somewhere in the run, else ``"stop"``."""
        if "input_tokens" in self.usage or "output_tokens" in self.usage:
            # Some services leave the total out of some chunks: derive it.
            self.usage["total_tokens"] = self.usage.get("input_tokens", 0) + self.usage.get("output_tokens", 0)
        return Done(
            provider=provider,
            model=self.model or model,
            usage=dict(self.usage) or None,
            finish_reason=self.finish_reason,
        )

    @staticmethod
    def _identity(content: Any) -> tuple[_Key | None, str]:
        """The key a call or result is known by, and the model's id for it
        (empty when the model sent none and the framework filled one in)."""
        occurrence = getattr(content, "id", None)
        call_id = content.call_id or ""
        model_id = call_id if call_id != occurrence else ""
        if isinstance(occurrence, str) and occurrence:
            return ("occurrence", occurrence), model_id
        return (("call", call_id) if call_id else None), model_id

    def _client_id(self, model_id: str) -> str:
        """The model's id when it is usable (non-empty, not yet used in the
        run), else the next id the app makes."""
        call_id = model_id
        while not call_id or call_id in self._used_ids:
            self._app_ids += 1
            call_id = f"{APP_ID_PREFIX}{self._app_ids}"
        self._used_ids.add(call_id)
        return call_id

    def _add_call_fragment(self, content: Any, agent: str) -> None:
        key, model_id = self._identity(content)
        if key is None:  # no id at all: a fragment continues the last call, unless it names a new one
            last = self._pending.get(self._last_key) if self._last_key else None
            if last is not None and not (content.name and last.name):
                key = self._last_key
            else:
                self._anonymous += 1
                key = ("anonymous", self._anonymous)
        call = self._pending.get(key)
        if call is None:
            if key in self._waiting or key in self._settled:
                return  # the same call again (repeated for the caller, or late): not a new call
            call = self._pending[key] = _Call(agent=agent, name=content.name or "")
        elif content.name and not call.name:
            call.name = content.name
        if model_id and not call.model_id:
            call.model_id = model_id
        self._last_key = key
        arguments = content.arguments
        if isinstance(arguments, dict):
            call.parsed = arguments
        elif isinstance(arguments, str):
            self._spend(len(arguments))
            call.arguments.append(arguments)

    def _match(self, content: Any, agent: str) -> tuple[_Key | None, _Call | None]:
        """The waiting call a result answers: by occurrence, by the call's id
        (the model's or the one shown), then the oldest call of the agent."""
        key, _ = self._identity(content)
        if key in self._waiting:
            return key, self._waiting[key]
        call_id = content.call_id or ""
        if call_id:
            for waiting_key, call in self._waiting.items():
                if call_id in (call.model_id, call.call_id):
                    return waiting_key, call
        for waiting_key, call in self._waiting.items():
            if call.agent == agent:
                return waiting_key, call
        return key, None

    def _result(self, content: Any, agent: str) -> ToolResult | None:
        """The result event, or ``None`` for a result already emitted."""
        if self._identity(content)[0] in self._settled:
            return None
        key, call = self._match(content, agent)
        if call is not None and key is not None:
            del self._waiting[key]
            if key[0] == "occurrence":
                self._settled.add(key)
            call_id, tool = call.call_id, call.name
        else:  # a result for a call never seen: still a usable id, unique in the run
            call_id, tool = self._client_id(content.call_id or ""), ""
        return ToolResult(
            agent=agent,
            call_id=call_id,
            tool=tool,
            result=_maybe_json(content.result),
            is_error=content.exception is not None,
        )
