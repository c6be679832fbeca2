"""``python -m bench.fake_model [--chunk-delay 0.05] [--max-seconds 900]``:
``tests.fake_openai.FakeOpenAI`` in a process of its own.

The load and soak drivers run the model here, not in their own process and
not in the app's: the app's CPU and memory figures then count the app alone,
and the driver's event loop (busy parsing hundreds of streams) cannot slow
the model's pacing down. The fake listens on a free port of 127.0.0.1 only.

Control is over stdin/stdout, one line each way:

* on start it prints ``{"ready": true, "port": N, "base_url": ..., "pid": ...}``;
* ``stats`` answers ``{"open_streams", "cancelled_streams", "requests",
  "errors"}`` (``requests`` counts every chat request since start);
* ``quit``, or stdin closing (the driver died), stops it.

It also stops by itself after ``--max-seconds``, whatever happens.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time

from tests.fake_openai import FakeOpenAI

API_KEY = "sk-bench-local"
MODEL = "gpt-4o-mini"


class _Counter:
    """Counts requests, and keeps the fake's own request log from growing
    for the whole of a long soak (it records every request body)."""

    def __init__(self, fake: FakeOpenAI) -> None:
        self.fake = fake
        self.trimmed = 0

    def total(self) -> int:
        # FakeOpenAI has no public "forget the records but keep the counters";
        # this touches its private list under its own lock.
        with self.fake._cond:
            self.trimmed += len(self.fake._requests)
            self.fake._requests.clear()
            return self.trimmed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.fake_model", description=__doc__.split("\n\n")[0])
    parser.add_argument("--chunk-delay", type=float, default=0.05, help="seconds before each streamed chunk")
    parser.add_argument("--max-seconds", type=float, default=900.0, help="stop by itself after this long")
    args = parser.parse_args(argv)

    fake = FakeOpenAI(api_key=API_KEY, chunk_delay=args.chunk_delay).start()
    counter = _Counter(fake)
    stop = threading.Event()
    out_lock = threading.Lock()

    def emit(obj: dict) -> None:
        with out_lock:
            sys.stdout.write(json.dumps(obj) + "\n")
            sys.stdout.flush()

    def read_commands() -> None:
        for line in sys.stdin:
            command = line.strip()
            if command == "stats":
                emit(
                    {
                        "open_streams": fake.open_streams,
                        "cancelled_streams": fake.cancelled_streams,
                        "requests": counter.total(),
                        "errors": [repr(e) for e in fake.errors[:10]],
                    }
                )
            elif command == "quit":
                break
        stop.set()

    emit({"ready": True, "port": fake.port, "base_url": fake.openai_base_url, "pid": os.getpid()})
    threading.Thread(target=read_commands, daemon=True, name="commands").start()
    deadline = time.monotonic() + args.max_seconds
    try:
        while not stop.wait(1.0):
            counter.total()  # trims the log every second
            if time.monotonic() > deadline:
                print("fake_model: --max-seconds reached, stopping", file=sys.stderr)
                break
    except KeyboardInterrupt:
        pass
    finally:
        fake.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
