"""Start-up stays cheap: importing the app (what the Functions host does at
every cold start) loads neither the Agent Framework nor the OpenAI SDK nor
anything else only a model run needs, and neither do the answers that need
no model (/api/health, a 4xx). Each check runs in a fresh interpreter, so
what other tests imported cannot hide a regression. And the local host's
socket does not hold small writes back."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import textwrap

from devhost.__main__ import bind
from tests.support import ROOT, hermetic_environ

# Loaded by the first model run, never before: together about a second of
# start-up. (The Functions extension itself loads opentelemetry's context
# module, so only the SDK parts are listed for opentelemetry.)
HEAVY = ("openai", "agent_framework", "azure.identity", "aiohttp", "redis", "ag_ui", "opentelemetry.sdk")
# The app's own request code (settings, the streaming layer, the models, the tools, telemetry): read by
# the first request that needs it, so indexing pays only for the Functions library and the FastAPI extension.
OWN = ("settings", "streaming", "llm", "tools", "agents", "workflows", "telemetry", "web")

PROBE = textwrap.dedent(
    """
    import asyncio, json, sys

    def heavy():
        return sorted(m for m in sys.modules if any(m == h or m.startswith(h + ".") for h in HEAVY))

    import function_app
    after_import = heavy()
    own = sorted(m for m in sys.modules if any(m == o or m.startswith(o + ".") for o in OWN))

    from starlette.requests import Request

    def request(method, path, body=b"", query=b""):
        messages = [{"type": "http.request", "body": body, "more_body": False}]

        async def receive():
            return messages.pop(0) if messages else {"type": "http.disconnect"}

        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        scope = {"type": "http", "method": method, "path": path, "query_string": query, "headers": headers}
        return Request(scope, receive)

    async def answers():
        health = await function_app.health(request("GET", "/api/health"))
        bad = await function_app.stream_agent(request("POST", "/api/agent/stream", b'{"message": 3}'))
        return health.status_code, bad.status_code

    statuses = asyncio.run(answers())
    print(json.dumps({"after_import": after_import, "own": own, "statuses": statuses, "after_answers": heavy()}))
    """
)


def run_probe() -> dict:
    env = {**hermetic_environ(), "MODEL_PROVIDER": "offline"}
    script = f"HEAVY = {HEAVY!r}\nOWN = {OWN!r}\n{PROBE}"
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_importing_the_app_and_answering_without_a_model_load_nothing_heavy() -> None:
    found = run_probe()
    assert found["after_import"] == [], "imported at start-up: " + ", ".join(found["after_import"])
    assert found["own"] == [], "the app's request code imported at start-up: " + ", ".join(found["own"])
    assert found["statuses"] == [200, 400]
    assert found["after_answers"] == [], "imported by /api/health or a 4xx: " + ", ".join(found["after_answers"])


def test_local_host_connections_have_tcp_nodelay() -> None:
    """``socket.create_server`` leaves the protocol 0, so asyncio does not set
    TCP_NODELAY on what it accepts: each SSE event (a small write) would wait
    on Nagle against the client's delayed ACK, up to 40 ms."""
    with bind("127.0.0.1", 0) as listener, socket.create_connection(listener.getsockname()):
        accepted, _ = listener.accept()
        with accepted:
            assert accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
