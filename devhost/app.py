"""Builds a Starlette app from the Functions app's own registered functions.

The routes come from each function's ``function.json`` bindings, the same
ones the Functions worker indexes (route, methods, auth level), so what
runs locally cannot drift from what Azure serves. ``host.json`` gives the
route prefix; ``local.settings.json`` gives ``Values`` (real environment
variables win) and ``Host.CORS``. Like ``func start``, it does not demand
function keys.

It answers only requests addressed to it: the ``Host`` header must name
localhost, a loopback address, the address it is bound to or one listed in
``ALLOWED_HOSTS``. Otherwise any web page could drive a developer's local
app through DNS rebinding (a name of the attacker's that resolves to
127.0.0.1), and a redirect could send the browser to whatever host it was
told.
"""

from __future__ import annotations

import json
import logging
import os
import re
import uuid
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from settings import allowed_hosts

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True, slots=True)
class HttpFunction:
    """One HTTP-triggered function as the worker indexes it."""

    name: str
    route: str
    methods: tuple[str, ...]
    auth_level: str
    binding: str
    handler: Any


def load_local_settings(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    return json.loads(path.read_text(encoding="utf-8"))


def apply_values(values: Mapping[str, Any], environ: dict[str, str] | None = None) -> None:
    """Put ``local.settings.json`` ``Values`` into the environment; real
    environment variables win, as under Core Tools."""
    environ = os.environ if environ is None else environ
    for key, value in values.items():
        environ.setdefault(key, "" if value is None else str(value))


def route_prefix(host_json: Path) -> str:
    if not host_json.is_file():
        return "api"
    host = json.loads(host_json.read_text(encoding="utf-8"))
    prefix = host.get("extensions", {}).get("http", {}).get("routePrefix", "api")
    return str(prefix).strip("/")


def http_functions(function_app: Any) -> list[HttpFunction]:
    """The app's HTTP functions, read from their ``function.json``."""
    found = []
    for fn in function_app.get_functions():
        bindings = json.loads(fn.get_function_json())["bindings"]
        trigger = next((b for b in bindings if b.get("type") == "httpTrigger"), None)
        if trigger is None:
            continue
        found.append(
            HttpFunction(
                name=fn.get_function_name(),
                route=trigger.get("route") or fn.get_function_name(),
                methods=tuple(m.upper() for m in trigger.get("methods") or ("GET", "POST")),
                auth_level=str(trigger.get("authLevel", "FUNCTION")).upper(),
                binding=trigger["name"],
                handler=fn.get_user_function(),
            )
        )
    return found


def _starlette_path(prefix: str, route: str) -> str:
    # Functions route templates: {name}, {name:int}, {name?}, {*rest}.
    path = re.sub(r"\{\*?(\w+)(?::[^}?]*)?\??\}", r"{\1}", route.strip("/"))
    return "/" + "/".join(p for p in (prefix, path) if p)


def _endpoint(fn: HttpFunction) -> Any:
    async def endpoint(request: Request) -> Response:
        return await fn.handler(**{fn.binding: request})

    endpoint.__name__ = fn.name
    return endpoint


class InvocationId:
    """Gives each HTTP request an ``x-ms-invocation-id`` header, as the
    Functions host does (replacing any the client sent)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            headers = [(k, v) for k, v in scope["headers"] if k != b"x-ms-invocation-id"]
            headers.append((b"x-ms-invocation-id", str(uuid.uuid4()).encode()))
            scope = {**scope, "headers": headers}
        await self.app(scope, receive, send)


class HostAllowList:
    """Refuses (400 JSON ``invalid_host``) any HTTP request whose ``Host``
    header is not one of ``hosts`` (compared without the port); ``*`` in
    ``hosts`` allows any."""

    def __init__(self, app: ASGIApp, hosts: Collection[str]) -> None:
        self.app = app
        self.hosts = frozenset(h.lower() for h in hosts)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and "*" not in self.hosts:
            host = dict(scope["headers"]).get(b"host", b"").decode("latin-1")
            if host_name(host) not in self.hosts:
                response = JSONResponse(
                    {
                        "error": {
                            "code": "invalid_host",
                            "message": "This local host answers only to localhost, its own address "
                            "and the names in ALLOWED_HOSTS.",
                        }
                    },
                    status_code=400,
                )
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def host_name(host: str) -> str:
    """``host`` from a Host header without its port: ``[::1]:7071`` -> ``::1``."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


class RedactQuery(logging.Filter):
    """Drops every query value from uvicorn's access log lines: a query can
    carry a function key (``?code=``) and the user's message."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) >= 3 and isinstance(args[2], str) and "?" in args[2]:
            path, _, query = args[2].partition("?")
            names = [part.partition("=")[0] for part in query.split("&") if part]
            redacted = "&".join(f"{name}=[redacted]" for name in names)
            record.args = (*args[:2], f"{path}?{redacted}", *args[3:])
        return True


def cors_middleware(host: Mapping[str, Any]) -> list[Middleware]:
    origins = [o.strip() for o in str(host.get("CORS", "")).split(",") if o.strip()]
    if not origins:
        return []
    return [
        Middleware(
            CORSMiddleware,
            allow_origins=origins,
            allow_methods=["GET", "POST", "OPTIONS"],
            allow_headers=["*"],
            allow_credentials=bool(host.get("CORSCredentials", False)) and "*" not in origins,
            expose_headers=["X-Run-Id"],
        )
    ]


def build_app(
    function_app: Any,
    *,
    prefix: str = "api",
    host_settings: Mapping[str, Any] | None = None,
    hosts: Collection[str] | None = None,
) -> tuple[Starlette, list[tuple[HttpFunction, str]]]:
    """A Starlette app serving ``function_app``'s HTTP functions, and the
    (function, path) pairs it serves; only to requests for ``hosts``
    (default: localhost and the loopback addresses, plus ``ALLOWED_HOSTS``)."""
    served = [(fn, _starlette_path(prefix, fn.route)) for fn in http_functions(function_app)]
    routes = [Route(path, _endpoint(fn), methods=list(fn.methods), name=fn.name) for fn, path in served]

    async def not_found(request: Request, exc: Exception) -> Response:
        return JSONResponse({"error": {"code": "not_found", "message": "No function serves this path."}}, 404)

    async def not_allowed(request: Request, exc: Exception) -> Response:
        return JSONResponse(
            {"error": {"code": "method_not_allowed", "message": "This function does not accept that method."}}, 405
        )

    app = Starlette(
        routes=routes,
        middleware=[
            Middleware(HostAllowList, hosts=allowed_hosts() if hosts is None else hosts),
            *cors_middleware(host_settings or {}),
            Middleware(InvocationId),
        ],
        exception_handlers={404: not_found, 405: not_allowed},
    )
    return app, served


def create_app(
    root: Path = ROOT, settings_file: Path | None = None, *, bound: str | None = None
) -> tuple[Starlette, list[tuple[HttpFunction, str]]]:
    """Load settings the way Core Tools does, then import and serve the app
    (bound to the address ``bound``)."""
    local = load_local_settings(settings_file or root / "local.settings.json")
    apply_values(local.get("Values", {}))
    import function_app  # imported after the settings are in place, as the worker does

    return build_app(
        function_app.app,
        prefix=route_prefix(root / "host.json"),
        host_settings=local.get("Host", {}),
        hosts=allowed_hosts(bound=bound),
    )
