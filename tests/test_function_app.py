"""The app indexes: each function's bindings as the Functions worker reads
them, and the local host serves exactly those."""

from __future__ import annotations

import importlib
import json
import typing

import pytest

import function_app
from devhost.app import _starlette_path, apply_values, build_app, http_functions, route_prefix

EXPECTED = {
    "stream_agent": ("agent/stream", ["GET", "POST"], "FUNCTION"),
    "stream_workflow": ("workflow/stream", ["GET", "POST"], "FUNCTION"),
    "agui_agent": ("agent/ag-ui", ["POST"], "FUNCTION"),
    "agui_workflow": ("workflow/ag-ui", ["POST"], "FUNCTION"),
    "health": ("health", ["GET"], "ANONYMOUS"),
    "chat_page": ("chat", ["GET"], "ANONYMOUS"),
    "resume_stream": ("runs/{token}/stream", ["GET"], "FUNCTION"),
}


def indexed_functions():
    """The app as the worker indexes it. ``get_functions()`` may be called
    once per app (it records names to refuse duplicates), as the worker
    does: each call here gets a freshly imported app."""
    return importlib.reload(function_app).app.get_functions()


def bindings():
    found = {}
    for fn in indexed_functions():
        trigger = json.loads(fn.get_function_json())["bindings"][0]
        found[fn.get_function_name()] = (trigger["route"], trigger["methods"], trigger["authLevel"], trigger["type"])
    return found


def test_every_function_indexes_with_its_route_methods_and_auth_level() -> None:
    found = bindings()
    assert set(found) == set(EXPECTED)
    for name, (route, methods, auth) in EXPECTED.items():
        assert found[name] == (route, methods, auth, "httpTrigger")


def test_every_function_uses_the_fastapi_request_type() -> None:
    from azurefunctions.extensions.http.fastapi import Request

    for fn in indexed_functions():
        # Resolved as the worker resolves them (the module uses postponed annotations).
        hints = typing.get_type_hints(fn.get_user_function())
        assert hints["req"] is Request, fn.get_function_name()


@pytest.mark.parametrize(("value", "expected"), [("anonymous", "ANONYMOUS"), ("ADMIN", "ADMIN"), ("bogus", "FUNCTION")])
def test_stream_auth_level_setting(monkeypatch, value, expected) -> None:
    monkeypatch.setenv("STREAM_AUTH_LEVEL", value)
    try:
        reloaded = importlib.reload(function_app)
        auth = {
            fn.get_function_name(): json.loads(fn.get_function_json())["bindings"][0]["authLevel"]
            for fn in reloaded.app.get_functions()
        }
        assert auth["stream_agent"] == auth["stream_workflow"] == auth["resume_stream"] == expected
        assert auth["agui_agent"] == auth["agui_workflow"] == expected
        assert auth["health"] == "ANONYMOUS"
    finally:
        monkeypatch.delenv("STREAM_AUTH_LEVEL")
        importlib.reload(function_app)


def test_local_host_routes_come_from_the_bindings() -> None:
    _, served = build_app(importlib.reload(function_app).app, prefix="api")
    assert {fn.name: (path, list(fn.methods)) for fn, path in served} == {
        name: (f"/api/{route}", methods) for name, (route, methods, _) in EXPECTED.items()
    }
    assert {fn.name for fn in http_functions(importlib.reload(function_app).app)} == set(EXPECTED)


def test_route_templates_and_prefix(tmp_path) -> None:
    assert _starlette_path("api", "items/{id:int}/{name?}") == "/api/items/{id}/{name}"
    assert _starlette_path("", "health") == "/health"
    assert route_prefix(tmp_path / "missing.json") == "api"
    host = tmp_path / "host.json"
    host.write_text('{"version": "2.0", "extensions": {"http": {"routePrefix": "/v2/"}}}')
    assert route_prefix(host) == "v2"


def test_real_environment_wins_over_local_settings() -> None:
    environ = {"A": "real"}
    apply_values({"A": "file", "B": "file", "C": None}, environ)
    assert environ == {"A": "real", "B": "file", "C": ""}
