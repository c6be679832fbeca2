"""Wire formats: Server-Sent Events (default), NDJSON, plain text.

The encoder is chosen from the request's ``Accept`` header. Each turns one
:class:`StreamEvent` (with its sequence id) into bytes; nothing else in the
app knows what the wire looks like.
"""

from __future__ import annotations

import json
import re
from typing import Any, ClassVar

from streaming.events import Done, Error, StreamEvent, TextDelta

# Characters JSON allows raw in a string but line-based readers split on:
# Python's str.splitlines() and httpx's iter_lines() end a line at U+2028,
# U+2029 and U+0085, so a client would read half an event (and could be fed
# a forged one). json.dumps already escapes every C0 control.
_LINE_BREAKS = {0x2028: "\\u2028", 0x2029: "\\u2029", 0x85: "\\u0085"}
_SURROGATE = re.compile("[\ud800-\udfff]")
# What a terminal would act on in plain text: escape sequences (CSI, OSC
# and the other two-byte ones) and every C0/C1 control except \n and \t.
_TERMINAL_CONTROL = re.compile(
    "\x1b\\[[0-?]*[ -/]*[@-~]"  # CSI: colours, cursor moves, clearing
    "|\x1b\\][^\x07\x1b]*(?:\x07|\x1b\\\\)?"  # OSC: titles, hyperlinks, clipboard
    "|\x1b[@-Z\\\\-_]?"  # other escapes, or a lone ESC
    "|[\x00-\x08\x0b-\x1f\x7f-\x9f]"
)


# Built once: json.dumps with options builds a new encoder on every call.
_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
_string = json.encoder.encode_basestring  # a JSON string as ``_dumps`` writes one (ensure_ascii=False)


def _json(data: Any) -> str:
    return _safe_lines(_dumps(data))


def _event_json(event: StreamEvent) -> str:
    """``event.payload()`` as JSON. Text, the common case, is written
    directly (what ``_dumps`` writes for its two keys, for a tenth of the
    cost: the JSON encoder builds a new C encoder on every call)."""
    if type(event) is TextDelta:
        return _safe_lines('{"text":' + _string(event.text) + ',"agent":' + _string(event.agent) + "}")
    return _json(event.payload())


def _safe_lines(text: str) -> str:
    # Three substring scans cost less than one regex search, and the
    # translate runs only when one of them is there.
    if "\u2028" in text or "\u2029" in text or "\x85" in text:
        text = text.translate(_LINE_BREAKS)
    return text


def _utf8(text: str) -> bytes:
    """UTF-8 bytes of ``text``; a lone surrogate (a model can send one as
    ``\\ud800`` in its JSON) becomes U+FFFD instead of failing the stream."""
    try:
        return text.encode()
    except UnicodeEncodeError:
        return _SURROGATE.sub("\ufffd", text).encode()


def plain_text(text: str) -> str:
    """``text`` without what a terminal would act on: escape sequences and
    control characters other than newline and tab."""
    return text if text.isprintable() else _TERMINAL_CONTROL.sub("", text)


class Encoder:
    media_type: ClassVar[str]
    #: Sent while nothing else is, to keep proxies from closing the
    #: connection. ``None``: the format has no harmless filler.
    heartbeat: ClassVar[bytes | None] = None

    def encode(self, event_id: int | str, event: StreamEvent) -> bytes:
        """``event_id`` is opaque (``"<run token>:<seq>"`` in the app)."""
        raise NotImplementedError


class SSEEncoder(Encoder):
    """``id:``, optional ``event:`` and one ``data:`` line of JSON.

    Text is an unnamed event so ``EventSource.onmessage`` sees it; the rest
    are named, so clients that only know text skip them.
    """

    media_type = "text/event-stream"
    heartbeat = b": ping\n\n"

    def encode(self, event_id: int, event: StreamEvent) -> bytes:
        name = f"event: {event.name}\n" if event.name else ""
        return _utf8(f"id: {event_id}\n{name}data: {_event_json(event)}\n\n")


class NDJSONEncoder(Encoder):
    """One JSON object per line: ``{"id", "event", ...payload}``; text events
    have ``"event": "text"``."""

    media_type = "application/x-ndjson"

    def encode(self, event_id: int, event: StreamEvent) -> bytes:
        return _utf8(_json({"id": event_id, "event": event.name or "text", **event.payload()}) + "\n")


class TextEncoder(Encoder):
    """The answer's text alone, for ``curl -N``. A blank line separates two
    agents' text; an error ends the text with a line ``[error] ...``, an
    answer cut at the length limit with a line saying so. Terminal control
    sequences in the model's text are dropped: a model must not be able to
    recolour, retitle or clear the reader's terminal."""

    media_type = "text/plain; charset=utf-8"

    def __init__(self) -> None:
        self._agent: str | None = None

    def encode(self, event_id: int, event: StreamEvent) -> bytes:
        if isinstance(event, TextDelta):
            prefix = "\n\n" if self._agent not in (None, event.agent) else ""
            self._agent = event.agent
            return _utf8(prefix + plain_text(event.text))
        if isinstance(event, Error):
            return _utf8(f"\n[error] {event.code}: {plain_text(event.message)}\n")
        if isinstance(event, Done) and event.finish_reason == "length":
            return b"\n[cut short: the model reached its length limit]\n"
        if event.terminal:
            return b"\n"
        return b""


ENCODERS: dict[str, type[Encoder]] = {
    "text/event-stream": SSEEncoder,
    "application/x-ndjson": NDJSONEncoder,
    "text/plain": TextEncoder,
}


def choose_encoder(accept: str | None) -> Encoder:
    """The client's most preferred format we speak; SSE when it has none
    (no header, ``*/*``, or only formats we do not speak)."""
    best: tuple[float, int, type[Encoder]] | None = None
    for position, part in enumerate((accept or "").split(",")):
        media_type, _, params = part.strip().partition(";")
        encoder = ENCODERS.get(media_type.strip().lower())
        if encoder is None:
            continue
        quality = 1.0
        for param in params.split(";"):
            key, _, value = param.strip().partition("=")
            if key.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        if quality > 0 and (best is None or quality > best[0]):
            best = (quality, position, encoder)
    return (best[2] if best else SSEEncoder)()
