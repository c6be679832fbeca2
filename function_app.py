"""The Azure Functions app: its HTTP routes, and nothing but wiring.

Every HTTP function uses the FastAPI types of
``azurefunctions-extensions-http-fastapi`` (required for HTTP streaming;
mixing in ``func.HttpRequest`` functions is not supported). On Python 3.12
and earlier the app setting ``PYTHON_ENABLE_INIT_INDEXING=1`` is required.
"""

from __future__ import annotations

import logging
import os

import azure.functions as func
from azurefunctions.extensions.http.fastapi import HTMLResponse, JSONResponse, Request, StreamingResponse

# The app's own modules are imported by the handlers, on first use: the host
# imports this module at every cold start, and indexing needs only the
# routes (the Functions library and the FastAPI extension are most of that).


def _stream_auth_level() -> func.AuthLevel:
    """``STREAM_AUTH_LEVEL`` (function, anonymous or admin), read when the
    host indexes the app. A bad value keeps the safe default and is logged,
    never an indexing failure."""
    raw = os.environ.get("STREAM_AUTH_LEVEL", "function").strip().upper() or "FUNCTION"
    try:
        return func.AuthLevel[raw]
    except KeyError:
        logging.getLogger(__name__).error("STREAM_AUTH_LEVEL=%r is not function, anonymous or admin", raw)
        return func.AuthLevel.FUNCTION


app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)
STREAM_AUTH_LEVEL = _stream_auth_level()


@app.route(route="agent/stream", methods=["GET", "POST"], auth_level=STREAM_AUTH_LEVEL)
async def stream_agent(req: Request) -> StreamingResponse:
    """The weather agent, streamed (SSE by default; see the README)."""
    from streaming.http import stream_run
    from streaming.runners import run_agent

    return await stream_run(req, run_agent)


@app.route(route="workflow/stream", methods=["GET", "POST"], auth_level=STREAM_AUTH_LEVEL)
async def stream_workflow(req: Request) -> StreamingResponse:
    """The researcher -> writer workflow, streamed."""
    from streaming.http import stream_run
    from streaming.runners import run_workflow

    return await stream_run(req, run_workflow)


@app.route(route="agent/ag-ui", methods=["POST"], auth_level=STREAM_AUTH_LEVEL)
async def agui_agent(req: Request) -> StreamingResponse:
    """The weather agent for AG-UI front ends (``RunAgentInput`` in, AG-UI
    events out), client tools included."""
    from streaming.agui import AGENT_PROTOCOL
    from streaming.http import stream_run
    from streaming.runners import run_agent

    return await stream_run(req, run_agent, AGENT_PROTOCOL)


@app.route(route="workflow/ag-ui", methods=["POST"], auth_level=STREAM_AUTH_LEVEL)
async def agui_workflow(req: Request) -> StreamingResponse:
    """The workflow for AG-UI front ends; each agent a step. Client tools
    are ignored (the workflow's agents have their own)."""
    from streaming.agui import WORKFLOW_PROTOCOL
    from streaming.http import stream_run
    from streaming.runners import run_workflow

    return await stream_run(req, run_workflow, WORKFLOW_PROTOCOL)


@app.route(route="health", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
async def health(req: Request) -> JSONResponse:
    """Liveness, and which model the app would use (never its key)."""
    import llm
    from settings import SettingsError

    try:
        settings = llm.model_settings()
        model = {"configured": True, "provider": settings.provider, "model": settings.model}
    except SettingsError as exc:
        model = {"configured": False, "error": str(exc)}
    return JSONResponse({"status": "ok", "model": model})


@app.route(route="chat", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
async def chat_page(req: Request) -> HTMLResponse:
    """The browser chat page (self-contained: no CDN, no build step), with
    its security headers (see ``web/__init__.py``)."""
    from web import chat_page as page

    html, headers = page()
    return HTMLResponse(html, headers=headers)


@app.route(route="runs/{token}/stream", methods=["GET"], auth_level=STREAM_AUTH_LEVEL)
async def resume_stream(req: Request) -> StreamingResponse:
    """A run again, from after the event id in ``Last-Event-ID`` or ``?after=``
    (see the README's event contract)."""
    from streaming.http import resume_run

    return await resume_run(req, req.path_params.get("token") or req.url.path.rstrip("/").split("/")[-2])
