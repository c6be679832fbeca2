"""The browser chat page (``chat.html``) and the headers it is served with.

The Content-Security-Policy goes out as a header, not a ``<meta>`` tag: only
a header can carry ``frame-ancestors`` (no other site may frame the page and
trick a user into typing into it). Scripts are allowed by the SHA-256 hash
of the page's own inline script, computed from the file at first use, so
no other inline script (an injected one) can run and the page's script can
change without anyone updating a hash by hand. Styles stay
``'unsafe-inline'``: they cannot run code, and with ``img-src data:`` and
``default-src 'none'`` a style cannot send anything anywhere.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import re
from pathlib import Path

CHAT_PAGE = Path(__file__).parent / "chat.html"
_INLINE_SCRIPT = re.compile(r"<script>(.*?)</script>", re.DOTALL)


def script_hashes(html: str) -> list[str]:
    """CSP source expressions (``'sha256-...'``) for each inline script."""
    return [
        "'sha256-" + base64.b64encode(hashlib.sha256(body.encode()).digest()).decode() + "'"
        for body in _INLINE_SCRIPT.findall(html)
    ]


def content_security_policy(html: str) -> str:
    scripts = " ".join(script_hashes(html)) or "'none'"
    return (
        f"default-src 'none'; script-src {scripts}; style-src 'unsafe-inline'; connect-src 'self'; "
        "img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )


@functools.cache
def chat_page() -> tuple[str, dict[str, str]]:
    """The page and its headers, read and hashed once per process."""
    html = CHAT_PAGE.read_text(encoding="utf-8")
    return html, {
        "Content-Security-Policy": content_security_policy(html),
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "X-Frame-Options": "DENY",  # frame-ancestors for browsers that predate it
        "Cache-Control": "no-cache",
    }
