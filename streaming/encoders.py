"""Wire formats: Server-Sent Events (default), NDJSON, plain text.

The encoder is chosen from the request's ``Accept`` header. Each turns one
:class:`StreamEvent` (with its sequence id) into bytes; nothing else in the
app knows what the wire looks like.
"""

from __future__ import annotations

import json
from typing import Any, ClassVar

from streaming.events import Error, StreamEvent, TextDelta


def _json(data: Any) -> str:
    return json.dumps(data, ensure_ascii=False, separators=(",", ":"))


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
        return f"id: {event_id}\n{name}data: {_json(event.payload())}\n\n".encode()


class NDJSONEncoder(Encoder):
    """One JSON object per line: ``{"id", "event", ...payload}``; text events
    have ``"event": "text"``."""

    media_type = "application/x-ndjson"

    def encode(self, event_id: int, event: StreamEvent) -> bytes:
        return (_json({"id": event_id, "event": event.name or "text", **event.payload()}) + "\n").encode()


class TextEncoder(Encoder):
    """The answer's text alone, for ``curl -N``. A blank line separates two
    agents' text; an error ends the text with a line ``[error] ...``."""

    media_type = "text/plain; charset=utf-8"

    def __init__(self) -> None:
        self._agent: str | None = None

    def encode(self, event_id: int, event: StreamEvent) -> bytes:
        if isinstance(event, TextDelta):
            prefix = "\n\n" if self._agent not in (None, event.agent) else ""
            self._agent = event.agent
            return (prefix + event.text).encode()
        if isinstance(event, Error):
            return f"\n[error] {event.code}: {event.message}\n".encode()
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
