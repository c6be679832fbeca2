"""``python -m bench.server --port-file FILE [--settings FILE] [--http auto|h11|httptools]``:
the app exactly as ``python -m devhost`` builds it, plus the seeds' naive
handlers on the same server, the same model client and the same agents.

The seeds (``/work/shared/seeds``) stream with one ``json.dumps`` and one
write per chunk and nothing else: no event model, no ids, no tool events,
no heartbeat, deadline or disconnect handling. Written here against the
current Agent Framework API, they are the baseline the app's streaming
layer must not be slower than (``http_vs_seed``):

* ``POST /seed/agent/stream``: the weather agent's text chunks;
* ``POST /seed/workflow/stream``: both workflow agents' text chunks.

Listens on 127.0.0.1 only. Bench-only: nothing in the app imports this.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import uvicorn
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from devhost.__main__ import bind
from devhost.app import ROOT, create_app

SEED_AGENT_PATH = "/seed/agent/stream"
SEED_WORKFLOW_PATH = "/seed/workflow/stream"


async def _message(request: Request) -> str:
    return str((await request.json())["message"])


async def seed_agent(request: Request) -> Response:
    import llm
    from settings import run_limits
    from streaming.runners import _shared_agents  # the app's own agents for this client: same model, same tool

    message = await _message(request)
    client, model = llm.chat_client()
    agent = _shared_agents(client, model, run_limits().max_output_tokens)[0]

    async def generate() -> AsyncIterator[str]:
        async for chunk in agent.run(message, stream=True):
            if chunk.text:
                yield f"data: {json.dumps({'text': chunk.text})}\n\n"

    return StreamingResponse(generate(), media_type="text/event-stream")


async def seed_workflow(request: Request) -> Response:
    from agent_framework import AgentResponseUpdate

    import llm
    from settings import run_limits
    from streaming.runners import _shared_agents
    from workflows import build_research_workflow

    message = await _message(request)
    client, model = llm.chat_client()
    workflow = build_research_workflow(*_shared_agents(client, model, run_limits().max_output_tokens)[1:])

    async def generate() -> AsyncIterator[str]:
        async for event in workflow.run(message, stream=True):
            update = event.data if event.type in ("intermediate", "output") else None
            if isinstance(update, AgentResponseUpdate) and update.text:
                yield f"data: {json.dumps({'text': update.text})}\n\n"

    return StreamingResponse(generate(), media_type="text/event-stream")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.server", description=__doc__.split("\n\n")[0])
    parser.add_argument("--port-file", type=Path, required=True, help="where to write the free port it serves on")
    parser.add_argument("--settings", type=Path, default=None)
    parser.add_argument("--http", default="auto", choices=("auto", "h11", "httptools"))
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app, _ = create_app(settings_file=args.settings, bound="127.0.0.1")
    app.router.routes += [
        Route(SEED_AGENT_PATH, seed_agent, methods=["POST"]),
        Route(SEED_WORKFLOW_PATH, seed_workflow, methods=["POST"]),
    ]
    # As devhost runs it (its socket, uvicorn's defaults), with the HTTP implementation chosen.
    sock = bind("127.0.0.1", 0)
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, host="127.0.0.1", port=port, http=args.http, log_level=args.log_level.lower())
    partial = args.port_file.with_suffix(".partial")
    partial.write_text(str(port))
    partial.replace(args.port_file)
    uvicorn.Server(config).run(sockets=[sock])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
