"""A small time-to-live cache for weather lookups.

Asking about the same place twice within ``ttl_s`` costs one upstream call.
Bounded (oldest entries go first), clock injectable for tests, and no
locking: the app runs it on one event loop.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

V = TypeVar("V")

_MISSING = object()


class TTLCache(Generic[V]):
    """Values kept for ``ttl_s`` seconds, at most ``max_entries`` of them.
    ``ttl_s == 0`` keeps nothing."""

    def __init__(self, ttl_s: float, *, max_entries: int = 256, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self._clock = clock
        self._entries: OrderedDict[Hashable, tuple[float, V]] = OrderedDict()

    def get(self, key: Hashable) -> V | None:
        """The value for ``key`` if it is still fresh, else ``None``."""
        entry = self._entries.get(key, _MISSING)
        if entry is _MISSING:
            return None
        expires, value = entry  # type: ignore[misc]
        if self._clock() >= expires:
            del self._entries[key]
            return None
        return value

    def put(self, key: Hashable, value: V) -> None:
        if self.ttl_s <= 0:
            return
        self._entries.pop(key, None)
        self._entries[key] = (self._clock() + self.ttl_s, value)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)
