"""How many runs one worker process holds at once.

Every run takes a :class:`RunSlot` before it starts and gives it back when
it ends, however it ends (done, error, deadline, disconnect, or dropped
before its first event). The slot belongs to the run, not to the HTTP
response carrying it, so a run that outlives its connection keeps it.
"""

from __future__ import annotations


class RunSlot:
    """One run's place. :meth:`release` is idempotent; an ``async with``
    block or the release callback gives it back exactly once."""

    __slots__ = ("_pool", "_released")

    def __init__(self, pool: RunSlots) -> None:
        self._pool = pool
        self._released = False

    def release(self) -> None:
        if not self._released:
            self._released = True
            self._pool._active -= 1

    async def __aenter__(self) -> RunSlot:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.release()

    def __del__(self) -> None:
        # A run dropped before its first step (its generator never started,
        # so no finally ran) must not keep its slot forever.
        self.release()


class RunSlots:
    """A counter, not a queue: past the limit a request is refused at once
    (429) rather than left waiting while its client's timeout runs. One
    event loop per worker process, so no lock is needed."""

    def __init__(self) -> None:
        self._active = 0

    @property
    def active(self) -> int:
        return self._active

    def try_acquire(self, limit: int) -> RunSlot | None:
        if self._active >= limit:
            return None
        self._active += 1
        return RunSlot(self)
