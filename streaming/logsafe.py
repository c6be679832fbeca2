"""Text from outside (an upstream error body, a request path) made safe
for one log line.

A CR or LF in such text would start a forged line in a plain-text log;
other control characters can rewrite a terminal, and a lone surrogate
breaks a UTF-8 log writer. They are escaped
(``\\n``, ``\\x1b``, ``\\u2028``) rather than dropped, so the line still
says what was sent.
"""

from __future__ import annotations

import re

_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(match: re.Match[str]) -> str:
    char = match.group(0)
    return _NAMED.get(char) or (f"\\x{ord(char):02x}" if ord(char) < 0x100 else f"\\u{ord(char):04x}")


def one_line(value: object, limit: int = 300) -> str:
    """``str(value)``, cut to ``limit`` characters, with every control or
    line-breaking character escaped."""
    text = str(value)
    if len(text) > limit:
        text = text[:limit] + "..."
    return _UNSAFE.sub(_escape, text)
