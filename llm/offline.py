"""The built-in offline model: a real chat client that needs no account.

It is not a language model. It is a small, deterministic stand-in that
behaves like one at the protocol level, so the whole app (streaming, tool
calls, the two-agent workflow) runs with no network:

* it streams its answer word by word, ``delay`` seconds apart;
* when tools are offered and the current turn has no tool results yet, it
  calls ``get_weather`` once per place the user names;
* when the app offers other tools (an AG-UI front end's client tools) and
  the message names one, it calls it once, with the JSON object written
  right after the name as its arguments (``{}`` if there is none);
* once the results are back, it answers from them;
* without tools but with earlier findings in the conversation (the writer
  in the workflow), it writes a short piece from those findings;
* it honours the output-token limit (``max_tokens``) like a real model:
  one word is one token, and an answer cut there ends with ``length``.

Everything it does with the user's text is linear in its length: no
message can hold the event loop.

It plugs in under the Agent Framework's own function-invocation layer, so
tools run exactly as they do with a hosted model.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Mapping, Sequence
from itertools import count
from typing import Any

from agent_framework import (
    BaseChatClient,
    ChatResponse,
    ChatResponseUpdate,
    Content,
    FunctionInvocationLayer,
    Message,
)
from agent_framework.observability import ChatTelemetryLayer

MODEL_ID = "offline-demo"
MAX_PLACES = 5
WEATHER_TOOL = "get_weather"

# Capitalised words that start requests rather than name places.
_NOT_PLACES = frozenset(
    """
    a about also an and any are can compare could describe do does tell give hello hi how i i'd i'm is it let
    me my now please research report show summarise summarize the then this today tomorrow what what's whats
    when where which will would write weather yes no ok okay thanks thank you should check find get in for at
    """.split()  # noqa: SIM905
)
# Linear by construction: every repetition starts with whitespace that the
# next element cannot begin with, so the engine never has two ways to split
# a run of spaces (the old ``\s+(?:de|...)?\s*`` had n of them, at each of
# n start positions: 0.8 s for "A" and 7,999 spaces).
_CAPITALISED = re.compile(r"\b[A-Z][\w'’.-]*(?:\s+(?:(?:de|del|da|do|la|le|am|on|upon)\s+)?[A-Z][\w'’.-]*)*")
# A lookahead, so that "for tomorrow in paris" still finds the "in" the first match reads past.
_AFTER_PREPOSITION = re.compile(r"\b(?:in|for|at)\s+(?=([a-z][\w'’-]+(?:\s+[a-z][\w'’-]+)?))", re.IGNORECASE)
_WORDS = re.compile(r"\S+")
_ids = count(1)


def find_places(text: str) -> list[str]:
    """Places named in ``text``, in order, without duplicates.

    Capitalised names first ("Seattle", "New York", "Rio de Janeiro"); if
    there are none, the word after "in", "for" or "at" ("weather in paris").
    """
    found: list[str] = []
    for match in _CAPITALISED.finditer(text):
        name = match.group(0).strip(" .'’")
        words = name.split()
        first = next((i for i, word in enumerate(words) if word.casefold() not in _NOT_PLACES), len(words))
        if first < len(words):
            found.append(" ".join(words[first:]))
    if not found:
        for match in _AFTER_PREPOSITION.finditer(text):
            words = [w for w in match.group(1).split() if w.casefold() not in _NOT_PLACES]
            if words:
                found.append(" ".join(w.capitalize() for w in words[:1]))
    unique: dict[str, str] = {}
    for place in found:
        unique.setdefault(place.casefold(), place)
    return list(unique.values())[:MAX_PLACES]


def _asked_tools(text: str, names: Sequence[str]) -> tuple[list[tuple[str, dict[str, Any]]], str]:
    """Tools named in ``text`` (whole word), each with the JSON object that
    follows its name, and ``text`` without those mentions (so a tool's name
    or arguments are not taken for places)."""
    asked: list[tuple[str, dict[str, Any]]] = []
    for name in names:
        match = re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])", text)
        if not match:
            continue
        arguments: dict[str, Any] = {}
        end = match.end()
        rest = text[end:]
        start = len(rest) - len(rest.lstrip())
        if rest[start:].startswith("{"):
            try:
                value, length = json.JSONDecoder().raw_decode(rest[start:])
            except (ValueError, RecursionError):
                value, length = None, 0
            if isinstance(value, dict):
                arguments, end = value, end + start + length
        asked.append((name, arguments))
        text = f"{text[: match.start()]} {text[end:]}"
    return asked, text


def _tool_answers(messages: Sequence[Message], skip: str) -> list[tuple[str, str]]:
    """``(tool name, result text)`` for every tool result but ``skip``'s."""
    names: dict[str, str] = {}
    answers: list[tuple[str, str]] = []
    for message in messages:
        for content in message.contents:
            if content.type == "function_call" and content.call_id:
                names[content.call_id] = content.name or ""
            elif content.type == "function_result":
                name = names.get(content.call_id)  # only calls with an id are recorded
                if name and name != skip:
                    result = content.result if isinstance(content.result, str) else json.dumps(content.result)
                    answers.append((name, content.exception or result or ""))
    return answers


def pieces(text: str) -> list[str]:
    """``text`` cut into streamable pieces, each word with the whitespace
    before it. (A findall of ``\\s*\\S+`` is quadratic on a long run of
    trailing spaces: it rescans the run from every position.)"""
    found: list[str] = []
    start = 0
    for match in _WORDS.finditer(text):
        found.append(text[start : match.end()])
        start = match.end()
    return found


def _text_of(message: Message) -> str:
    return " ".join(c.text for c in message.contents if c.type == "text" and c.text)


def _reports(messages: Sequence[Message]) -> list[dict[str, Any]]:
    """Weather reports found in tool results, oldest first."""
    reports: list[dict[str, Any]] = []
    for message in messages:
        for content in message.contents:
            if content.type != "function_result" or content.exception is not None:
                continue
            try:
                data = json.loads(content.result) if isinstance(content.result, str) else content.result
            except ValueError:
                continue
            if isinstance(data, dict) and "location" in data:
                reports.append(data)
    return reports


_GENERIC_FAILURE = re.compile(r"^Error: Function failed\.(?: Exception: )?")


def _failed_places(messages: Sequence[Message]) -> list[str]:
    """Places whose ``get_weather`` call failed, from the calls' arguments, each with the
    reason the tool gave (when the client passes it on). Another tool's failure is not a place's."""
    asked: dict[str, str] = {}
    others: set[str] = set()
    failed: list[str] = []
    for message in messages:
        for content in message.contents:
            if content.type == "function_call" and content.call_id:
                if content.name != WEATHER_TOOL:
                    others.add(content.call_id)
                    continue
                asked[content.call_id] = str((content.parse_arguments() or {}).get("location", "that place"))
            elif content.type == "function_result" and content.exception is not None:
                if content.call_id in others:
                    continue
                place = asked.get(content.call_id, "one place")
                reason = _GENERIC_FAILURE.sub("", str(content.result or "")).strip()
                failed.append(f"{place} ({reason})" if reason else place)
    return failed


def _describe(report: Mapping[str, Any]) -> str:
    return (
        f"{report['location']}: {report.get('conditions', 'unknown')}, {report.get('temperature_c', '?')} °C, "
        f"wind {report.get('wind_kph', '?')} km/h"
    )


class OfflineChatClient(FunctionInvocationLayer[Any], ChatTelemetryLayer[Any], BaseChatClient[Any]):
    """Deterministic chat client for offline runs and tests. Its calls are
    traced like a hosted model's (the framework's chat telemetry layer)."""

    OTEL_PROVIDER_NAME = "offline"
    model_id = MODEL_ID

    def __init__(self, *, delay: float = 0.02) -> None:
        super().__init__()
        self.delay = max(0.0, delay)

    def _inner_get_response(
        self,
        *,
        messages: Sequence[Message],
        stream: bool,
        options: Mapping[str, Any],
        **kwargs: Any,
    ) -> Any:
        if stream:
            return self._build_response_stream(self._stream(messages, options))

        async def complete() -> ChatResponse:
            return ChatResponse.from_updates([u async for u in self._stream(messages, options)])

        return complete()

    async def _stream(
        self, messages: Sequence[Message], options: Mapping[str, Any]
    ) -> AsyncIterator[ChatResponseUpdate]:
        response_id = f"offline-{next(_ids)}"
        last_user = max((i for i, m in enumerate(messages) if m.role == "user"), default=-1)
        request = _text_of(messages[last_user]) if last_user >= 0 else ""
        # The writer may see a synthetic "continue" user turn last: it writes
        # for everything the user asked in the conversation.
        asked = " ".join(_text_of(m) for m in messages if m.role == "user")
        turn = messages[last_user + 1 :]
        offered = [getattr(t, "name", None) for t in options.get("tools") or ()]
        offers_weather = WEATHER_TOOL in offered
        client_tools = [n for n in offered if isinstance(n, str) and n and n != WEATHER_TOOL]
        prompt_words = sum(len(_text_of(m).split()) for m in messages)

        answered = any(c.type == "function_result" for m in turn for c in m.contents)
        if (offers_weather or client_tools) and not answered:
            asked_tools, request = _asked_tools(request, client_tools)
            places = find_places(request) if offers_weather else []
            calls = [
                Content.from_function_call(
                    call_id=f"call_{response_id}_{i}",
                    name=WEATHER_TOOL,
                    arguments=json.dumps({"location": place}),
                )
                for i, place in enumerate(places)
            ]
            calls += [
                Content.from_function_call(
                    call_id=f"call_{response_id}_{len(places) + i}", name=name, arguments=json.dumps(arguments)
                )
                for i, (name, arguments) in enumerate(asked_tools)
            ]
            if calls:
                await asyncio.sleep(self.delay)
                yield self._update(response_id, calls, finish_reason="tool_calls")
                yield self._usage(response_id, prompt_words, len(calls) * 8)
                return
            if offers_weather:
                answer = "Which place would you like the weather for? Name a city, for example Seattle or Paris."
            else:
                answer = self._write(asked, messages)
        elif offers_weather or client_tools:
            parts = []
            reports = _reports(turn)
            failed = _failed_places(turn)
            if reports or failed:
                found = " ".join(f"{_describe(r)}." for r in reports)
                parts.append(f"Here is the current weather. {found} (Offline sample data, not a forecast.)")
            if failed:
                parts.append(f"I could not get the weather for {'; '.join(failed)}.")
            answers = _tool_answers(turn, WEATHER_TOOL)
            parts += [f"Your app's {name} tool answered: {result}" for name, result in answers]
            answer = " ".join(parts) or "Done."
        else:
            answer = self._write(asked, messages)

        words = pieces(answer)
        finish_reason = "stop"
        limit = options.get("max_tokens")
        if isinstance(limit, int) and 0 < limit < len(words):
            words, finish_reason = words[:limit], "length"
        for piece in words:
            await asyncio.sleep(self.delay)
            yield self._update(response_id, [Content.from_text(piece)])
        yield self._update(response_id, [], finish_reason=finish_reason)
        yield self._usage(response_id, prompt_words, len(words))

    @staticmethod
    def _write(request: str, messages: Sequence[Message]) -> str:
        """The writer's part: a short piece built from earlier findings."""
        reports = _reports(messages)
        if not reports:
            findings = [_text_of(m) for m in messages if m.role == "assistant" and _text_of(m)]
            if findings:
                return f"In short: {findings[-1]}"
            return f"This is the offline demo model. You asked: {request.strip() or '(nothing)'}"
        if "poem" in request.casefold():
            # Four lines, however many places: the first, then the others together.
            first, others = reports[0], [r["location"] for r in reports[1:]]
            return "\n".join(
                [
                    f"In {first['location']} it is {first.get('conditions', 'quiet')},"
                    f" {first.get('temperature_c', '?')} degrees in the air;",
                    f"in {', '.join(others)} the sky has its own affair;"
                    if others
                    else f"the wind goes by at {first.get('wind_kph', '?')} km/h, light as a prayer;",
                    "the wind keeps time at its own pace,",
                    "and the day goes on with care.",
                ]
            )
        lead = "; ".join(_describe(r) for r in reports)
        return (
            f"Weather brief. {lead}. "
            f"{'Pack a layer' if any(r.get('temperature_c', 20) < 12 for r in reports) else 'Light clothing will do'}"
            " and check again later: conditions change."
        )

    def _update(
        self, response_id: str, contents: list[Content], *, finish_reason: str | None = None
    ) -> ChatResponseUpdate:
        return ChatResponseUpdate(
            role="assistant",
            contents=contents,
            response_id=response_id,
            model=self.model_id,
            finish_reason=finish_reason,
        )

    def _usage(self, response_id: str, prompt: int, completion: int) -> ChatResponseUpdate:
        usage = {
            "input_token_count": prompt,
            "output_token_count": completion,
            "total_token_count": prompt + completion,
        }
        return self._update(response_id, [Content.from_usage(usage)])
