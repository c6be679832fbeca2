"""AG-UI: one more wire format of the same run, a parser and an encoder.

AG-UI (https://docs.ag-ui.com) is the protocol agent front ends speak
(CopilotKit, ``@ag-ui/client``'s ``HttpAgent``, Agent Framework's
``AGUIChatClient``). A request is a ``RunAgentInput``: the whole
conversation, the client's own tools and some context. The answer is a
stream of AG-UI events in SSE.

* :func:`parse_run_input` validates the body with the protocol package's
  own model (``ag_ui.core.RunAgentInput``), applies our limits and turns it
  into an :class:`AGUIRunRequest`: Agent Framework messages (function calls
  and results included) and declaration-only tools for the client's tools.
* :class:`AGUIEncoder` turns our :class:`StreamEvent`\\ s into AG-UI events,
  as ``ag_ui.encoder.EventEncoder`` writes them (``data: {...}``, camelCase,
  no nulls), without building a pydantic model per event, and with the
  same JSON as our other encoders: U+2028, U+2029 and U+0085 escaped (line
  readers such as httpx's split on them) and a lone surrogate replaced.

Between the two, the run is the same code as for SSE, NDJSON and text
(``streaming/http.py``): caps, deadline, heartbeat, disconnects. Heavy
imports (``ag_ui``, ``agent_framework``) happen inside the functions that
need them, never when ``function_app`` is imported.
"""

from __future__ import annotations

import functools
import json
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from settings import StreamSettings
from streaming.encoders import Encoder, _json, _utf8
from streaming.events import (
    AgentCompleted,
    AgentStarted,
    Done,
    Error,
    StreamEvent,
    TextDelta,
    ToolCall,
    ToolResult,
)
from streaming.request import RequestError, json_body

#: The AG-UI version this module speaks, sent on ``RUN_STARTED`` (the spec
#: requires it; the package does not add it). A test holds it equal to
#: ``ag_ui.core.PROTOCOL_VERSION`` of the pinned package.
PROTOCOL_VERSION = "1.0"
#: Most client tools one request may offer the model.
MAX_CLIENT_TOOLS = 64
#: Tool names the model services accept (OpenAI's rule).
_TOOL_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
#: The server's own tools: a client tool may not take their names.
SERVER_TOOLS = frozenset({"get_weather"})
_EMPTY_SCHEMA = '{"type":"object","properties":{}}'


# ---------------------------------------------------------------- the request


@dataclass(frozen=True, slots=True)
class AGUIRunRequest:
    """A validated ``RunAgentInput``: what the runners need, nothing more."""

    thread_id: str
    run_id: str
    messages: tuple[Any, ...]  # agent_framework.Message, oldest first
    client_tools: tuple[Any, ...] = ()  # declaration-only agent_framework.FunctionTool

    @property
    def history(self) -> tuple[Any, ...]:
        """Every message but the last (for the run's log line)."""
        return self.messages[:-1]

    def to_messages(self) -> list[Any]:
        return list(self.messages)


_PROBLEMS = {
    "missing": "is missing",
    "string_type": "must be a string",
    "list_type": "must be a list",
    "dict_type": "must be an object",
    "model_type": "must be an object",
    "model_attributes_type": "must be an object",
    "union_tag_invalid": "has an unknown role or type",
    "union_tag_not_found": "needs a 'role' or 'type'",
    "literal_error": "has an unsupported value",
    "int_type": "must be an integer",
    "bool_type": "must be a boolean",
}


@functools.cache
def _known_names() -> frozenset[str]:
    """Every field name, alias and tag of the protocol's models: the only
    words of an error location we repeat (pydantic also puts type names and
    union descriptions there)."""
    import ag_ui.core
    from pydantic import BaseModel

    names = {"user", "assistant", "system", "developer", "tool", "activity", "reasoning"}
    for model in vars(ag_ui.core).values():
        if isinstance(model, type) and issubclass(model, BaseModel):
            for name, info in model.model_fields.items():
                names.update(n for n in (name, info.alias) if n)
    return frozenset(names)


def _where(loc: tuple[Any, ...]) -> str:
    known = _known_names()
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif part in known:
            path += f".{part}" if path else str(part)
    return path or "the body"


def _validation_message(exc: Any) -> str:
    """Pydantic's messages may quote the input: name where and what only."""
    problems = []
    for error in exc.errors(include_url=False, include_input=False)[:3]:
        problems.append(f"'{_where(tuple(error.get('loc', ())))}' {_PROBLEMS.get(error.get('type'), 'is invalid')}")
    return "The request body is not an AG-UI RunAgentInput: " + "; ".join(problems) + "."


def _text(value: Any, where: str, limits: StreamSettings) -> str:
    """Text content: a string or a list of text parts (other parts refused)."""
    if isinstance(value, list):
        parts = []
        for i, part in enumerate(value):
            if getattr(part, "type", None) != "text":
                raise RequestError(
                    400, "unsupported_content", f"'{where}[{i}]': only text content is supported, not {part.type}."
                )
            parts.append(part.text)
        value = "".join(parts)
    if len(value) > limits.max_message_chars:
        raise RequestError(413, "message_too_long", f"'{where}' is longer than {limits.max_message_chars} characters.")
    if "\x00" in value:
        raise RequestError(400, "invalid_message", f"'{where}' must not contain NUL characters.")
    return value


@functools.lru_cache(maxsize=256)
def declaration_tool(name: str, description: str, schema_json: str) -> Any:
    """A declaration-only tool (no function on the server) for a client tool.

    Cached by name, description and schema: each ``FunctionTool`` registers
    its own telemetry instruments, so building one per request would bring
    back the per-request cost (and leak) the runners avoid for agents."""
    from agent_framework import FunctionTool

    return FunctionTool(name=name, description=description, func=None, input_model=json.loads(schema_json))


def _client_tools(tools: list[Any], limits: StreamSettings) -> tuple[Any, ...]:
    if len(tools) > MAX_CLIENT_TOOLS:
        raise RequestError(413, "too_many_tools", f"'tools' has more than {MAX_CLIENT_TOOLS} tools.")
    seen: set[str] = set()
    built = []
    for i, tool in enumerate(tools):
        if not _TOOL_NAME.fullmatch(tool.name):
            raise RequestError(400, "invalid_tool", f"'tools[{i}].name' must be 1 to 64 letters, digits, '_' or '-'.")
        if tool.name in SERVER_TOOLS or tool.name in seen:
            raise RequestError(
                400, "invalid_tool", f"'tools[{i}].name' is already taken by the server's or an earlier tool."
            )
        seen.add(tool.name)
        if tool.parameters is not None and not isinstance(tool.parameters, dict):
            raise RequestError(400, "invalid_tool", f"'tools[{i}].parameters' must be a JSON schema object.")
        description = _text(tool.description, f"tools[{i}].description", limits)
        schema = json.dumps(tool.parameters, sort_keys=True) if tool.parameters else _EMPTY_SCHEMA
        built.append(declaration_tool(tool.name, description, schema))
    return tuple(built)


def _context_message(context: list[Any], limits: StreamSettings) -> Any | None:
    """``context`` entries reach the model as one system message."""
    from agent_framework import Message

    if not context:
        return None
    if len(context) > limits.max_history_messages:
        raise RequestError(413, "too_many_messages", f"'context' has more than {limits.max_history_messages} entries.")
    lines = []
    for i, entry in enumerate(context):
        description = _text(entry.description, f"context[{i}].description", limits)
        lines.append(f"- {description}: {_text(entry.value, f'context[{i}].value', limits)}")
    return Message(role="system", contents=["Context from the application:\n" + "\n".join(lines)])


#: What the model is told about a call the conversation went past unanswered.
UNANSWERED = "The tool call was not answered: the conversation went on without its result."


def _conversation(messages: list[Any], limits: StreamSettings) -> list[Any]:
    """AG-UI messages -> Agent Framework messages, in a shape the model
    services accept: each call's result right after the message that made
    it. A call the conversation went past unanswered (the user typed on, a
    stream was cut) gets a failed result saying so; a result that answers
    no open call is dropped. Agent Framework's own AG-UI server does the
    same, so a front end's thread never becomes unusable."""
    from agent_framework import Content, Message

    if len(messages) > limits.max_history_messages + 1:
        raise RequestError(
            413, "too_many_messages", f"'messages' has more than {limits.max_history_messages} earlier messages."
        )
    converted: list[Any] = []
    open_calls: dict[str, None] = {}  # calls of the latest assistant message still without a result

    def close_open_calls() -> None:
        for call_id in open_calls:
            result = Content.from_function_result(call_id, result=UNANSWERED, exception=UNANSWERED)
            converted.append(Message(role="tool", contents=[result]))
        open_calls.clear()

    has_user = False
    for i, message in enumerate(messages):
        role = message.role
        where = f"messages[{i}]"
        if role == "tool":
            result = _text(message.content, f"{where}.content", limits)
            error = _text(message.error, f"{where}.error", limits) if message.error else None
            if message.tool_call_id in open_calls:
                del open_calls[message.tool_call_id]
                content = Content.from_function_result(message.tool_call_id, result=result, exception=error)
                converted.append(Message(role="tool", contents=[content]))
            continue
        if role not in ("user", "system", "developer", "assistant"):
            continue  # activity and reasoning messages are the UI's own: not sent to the model
        close_open_calls()
        if role == "user":
            text = _text(message.content, f"{where}.content", limits)
            has_user = has_user or bool(text.strip())
            converted.append(Message(role="user", contents=[text]))
        elif role in ("system", "developer"):
            converted.append(Message(role="system", contents=[_text(message.content, f"{where}.content", limits)]))
        else:
            contents: list[Any] = []
            if message.content:
                contents.append(_text(message.content, f"{where}.content", limits))
            for j, call in enumerate(message.tool_calls or ()):
                arguments = _text(call.function.arguments, f"{where}.toolCalls[{j}].function.arguments", limits)
                contents.append(Content.from_function_call(call.id, call.function.name, arguments=arguments))
                open_calls[call.id] = None
            if contents:
                converted.append(Message(role="assistant", contents=contents))
    close_open_calls()
    if not has_user:
        raise RequestError(400, "missing_message", "'messages' needs a user message.")
    return converted


def parse_run_input(
    body: bytes, content_type: str | None, limits: StreamSettings, *, client_tools: bool = True
) -> AGUIRunRequest:
    """Validate a ``RunAgentInput`` body. Pure: no I/O, so it can be fuzzed.
    ``client_tools=False`` (the workflow) ignores the client's tools."""
    from ag_ui.core import RunAgentInput
    from pydantic import ValidationError

    data = json_body(body, content_type, limits)
    if not isinstance(data, dict):
        raise RequestError(400, "invalid_body", "The request body must be a JSON object: an AG-UI RunAgentInput.")
    try:
        run_input = RunAgentInput.model_validate(data)
    except ValidationError as exc:
        raise RequestError(400, "invalid_run_input", _validation_message(exc)) from None
    except RecursionError:
        raise RequestError(400, "invalid_run_input", "The request body is nested too deeply.") from None
    messages = _conversation(run_input.messages, limits)
    context = _context_message(run_input.context or [], limits)
    tools = _client_tools(run_input.tools or [], limits) if client_tools else ()
    return AGUIRunRequest(
        thread_id=run_input.thread_id,
        run_id=run_input.run_id,
        messages=tuple([context, *messages] if context else messages),
        client_tools=tools,
    )


# ---------------------------------------------------------------- the encoder


def _content(result: Any) -> str:
    """``TOOL_CALL_RESULT.content`` as a string (what validators and most
    clients expect), JSON for structured results."""
    return result if isinstance(result, str) else _json(result)


@dataclass
class AGUIEncoder(Encoder):
    """Our events as AG-UI events, for one stream (it keeps state).

    * ``RUN_STARTED`` (with ``protocolVersion``) comes first, before the first
      event of the run;
    * text is ``TEXT_MESSAGE_START``/``CONTENT``/``END``, one ``messageId``
      per message, unique in the run; an open message is closed before a
      tool call, a step change and the end;
    * a tool call is ``TOOL_CALL_START``/``ARGS``/``END`` (its
      ``parentMessageId`` the assistant message it belongs to), its result
      ``TOOL_CALL_RESULT``; a call with no result by the end is a client
      tool's, named in ``RUN_FINISHED``'s outcome as pending;
    * each agent's turn is a step (``STEP_STARTED``/``STEP_FINISHED``);
    * ``done`` is ``RUN_FINISHED`` (with token usage when known), ``error``
      is ``RUN_ERROR`` with our code and safe message.

    ``event_id`` is ignored: AG-UI events carry no SSE ids.
    """

    media_type = "text/event-stream"
    heartbeat = b": ping\n\n"

    thread_id: str
    run_id: str
    _prefix: str = field(default_factory=lambda: uuid.uuid4().hex[:16])
    _count: int = 0
    _started: bool = False
    _open: str | None = None  # the text message being streamed
    _open_agent: str | None = None
    _parent: str | None = None  # the assistant message tool calls belong to
    _pending: dict[str, None] = field(default_factory=dict)  # calls with no result yet

    def __post_init__(self) -> None:
        self._handlers: dict[type, Callable[[Any, list[dict[str, Any]]], None]] = {
            TextDelta: self._text,
            ToolCall: self._tool_call,
            ToolResult: self._tool_result,
            AgentStarted: self._step_started,
            AgentCompleted: self._step_finished,
            Done: self._done,
            Error: self._error,
        }

    def encode(self, event_id: Any, event: StreamEvent) -> bytes:
        if type(event) is TextDelta and event.text and self._open is not None and event.agent == self._open_agent:
            # The hot path: more text for the open message (our own id needs no escaping).
            return _utf8(
                f'data: {{"type":"TEXT_MESSAGE_CONTENT","messageId":"{self._open}","delta":{_json(event.text)}}}\n\n'
            )
        out: list[dict[str, Any]] = []
        if not self._started:
            self._started = True
            out.append(
                {
                    "type": "RUN_STARTED",
                    "threadId": self.thread_id,
                    "runId": self.run_id,
                    "protocolVersion": PROTOCOL_VERSION,
                }
            )
        handler = self._handlers.get(type(event))
        if handler is not None:
            handler(event, out)
        return _utf8("".join(f"data: {_json(e)}\n\n" for e in out))

    def _new_id(self) -> str:
        self._count += 1
        return f"{self._prefix}-{self._count}"

    def _close(self, out: list[dict[str, Any]]) -> None:
        if self._open is not None:
            out.append({"type": "TEXT_MESSAGE_END", "messageId": self._open})
            self._open = self._open_agent = None

    def _text(self, event: TextDelta, out: list[dict[str, Any]]) -> None:
        if not event.text:
            return
        if self._open is None or self._open_agent != event.agent:
            self._close(out)
            self._open = self._parent = self._new_id()
            self._open_agent = event.agent
            start = {"type": "TEXT_MESSAGE_START", "messageId": self._open, "role": "assistant", "name": event.agent}
            out.append(start)
        out.append({"type": "TEXT_MESSAGE_CONTENT", "messageId": self._open, "delta": event.text})

    def _tool_call(self, event: ToolCall, out: list[dict[str, Any]]) -> None:
        self._close(out)
        if self._parent is None:
            self._parent = self._new_id()
        arguments = event.arguments if isinstance(event.arguments, str) else _json(event.arguments)
        out.append(
            {
                "type": "TOOL_CALL_START",
                "toolCallId": event.call_id,
                "toolCallName": event.tool,
                "parentMessageId": self._parent,
            }
        )
        if arguments:
            out.append({"type": "TOOL_CALL_ARGS", "toolCallId": event.call_id, "delta": arguments})
        out.append({"type": "TOOL_CALL_END", "toolCallId": event.call_id})
        self._pending[event.call_id] = None

    def _tool_result(self, event: ToolResult, out: list[dict[str, Any]]) -> None:
        self._close(out)
        self._pending.pop(event.call_id, None)
        self._parent = None  # what the model says next is a new message
        out.append(
            {
                "type": "TOOL_CALL_RESULT",
                "messageId": self._new_id(),
                "toolCallId": event.call_id,
                "content": _content(event.result),
                "role": "tool",
            }
        )

    def _step_started(self, event: AgentStarted, out: list[dict[str, Any]]) -> None:
        self._close(out)
        self._parent = None
        out.append({"type": "STEP_STARTED", "stepName": event.agent})

    def _step_finished(self, event: AgentCompleted, out: list[dict[str, Any]]) -> None:
        self._close(out)
        self._parent = None
        out.append({"type": "STEP_FINISHED", "stepName": event.agent})

    def _done(self, event: Done, out: list[dict[str, Any]]) -> None:
        self._close(out)
        finished: dict[str, Any] = {"type": "RUN_FINISHED", "threadId": self.thread_id, "runId": self.run_id}
        if self._pending:
            finished["outcome"] = {"type": "success", "pendingToolCallIds": list(self._pending)}
        if event.usage:
            usage = {"provider": event.provider, "model": event.model}
            for ours, theirs in (
                ("input_tokens", "inputTokens"),
                ("output_tokens", "outputTokens"),
                ("total_tokens", "totalTokens"),
            ):
                if ours in event.usage:
                    usage[theirs] = event.usage[ours]
            finished["usage"] = [usage]
        out.append(finished)

    def _error(self, event: Error, out: list[dict[str, Any]]) -> None:
        self._close(out)
        out.append({"type": "RUN_ERROR", "message": event.message, "code": event.code})


# ---------------------------------------------------------------- the protocol


@dataclass(frozen=True, slots=True)
class AGUIProtocol:
    """What ``stream_run`` needs from a protocol: parse the body it read,
    and an encoder for the stream. ``client_tools=False`` for the workflow.
    Not ``resumable``: AG-UI events carry no ids a client could resume
    from, so a run whose client leaves is cancelled at once (its model call
    closed) instead of waiting out ``RESUME_WINDOW_SECONDS``."""

    client_tools: bool = True
    resumable: bool = False

    def parse(self, body: bytes, content_type: str | None, limits: StreamSettings) -> AGUIRunRequest:
        return parse_run_input(body, content_type, limits, client_tools=self.client_tools)

    def encoder(self, run_request: AGUIRunRequest) -> AGUIEncoder:
        return AGUIEncoder(thread_id=run_request.thread_id, run_id=run_request.run_id)


AGENT_PROTOCOL = AGUIProtocol(client_tools=True)
WORKFLOW_PROTOCOL = AGUIProtocol(client_tools=False)
