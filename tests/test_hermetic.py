"""The tests' clean environment: the list of settings comes from the README's
configuration table, every setting the code reads is in it, and neither an
in-process test nor a server under test sees the developer's shell."""

from __future__ import annotations

import ast
import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support import (
    PLATFORM_VARIABLES,
    ROOT,
    AppServer,
    app_variables,
    documented_prefixes,
    hermetic_environ,
    is_app_variable,
    readme_settings,
)

# Not product code: the tests, benchmarks, and what tools install.
NOT_PRODUCT = {"tests", "bench", "node_modules", "mutants", "infra", "web"}
ENV_NAMES = {"env", "environ", "environment"}

# A shell set up as the README tells users to, and then some: the suite must pass in it.
ODD_SHELL = {
    "OPENAI_API_KEY": "sk-from-the-shell",
    "OPENAI_BASE_URL": "http://127.0.0.1:9/v1",
    "OPENAI_MODEL": "shell-model",
    "MODEL_PROVIDER": "openai",
    "OFFLINE_MODEL_DELAY_MS": "300",
    "MAX_MESSAGE_CHARS": "5",
    "HEARTBEAT_SECONDS": "1",
    "RUN_DEADLINE_SECONDS": "2",
    "STREAM_AUTH_LEVEL": "anonymous",
    "LOG_LEVEL": "critical",
    "WEBSITE_INSTANCE_ID": "shell-instance",
    "CONTAINER_NAME": "shell-container",
    "OTEL_SDK_DISABLED": "false",
    "APPLICATIONINSIGHTS_CONNECTION_STRING": "InstrumentationKey=00000000-0000-0000-0000-000000000000",
}


def product_files() -> Iterator[Path]:
    for path in sorted(ROOT.rglob("*.py")):
        parts = path.relative_to(ROOT).parts
        if not any(part.startswith(".") or part in NOT_PRODUCT for part in parts):
            yield path


def _is_environment(node: ast.AST) -> bool:
    """``os.environ``, ``environ`` or a mapping named ``env``."""
    if isinstance(node, ast.Attribute):
        return node.attr == "environ"
    return isinstance(node, ast.Name) and node.id in ENV_NAMES


def _names(nodes: list[ast.expr]) -> set[str]:
    return {n.value for n in nodes if isinstance(n, ast.Constant) and isinstance(n.value, str) and n.value.isupper()}


def _walk(tree: ast.AST) -> Iterator[ast.AST]:
    """``ast.walk``, leaving out the mutants ``make mutate`` writes beside each function."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and "__mutmut_" in node.name:
            continue
        yield node
        yield from _walk(node)


def environment_reads(source: str) -> set[str]:
    """Names a module reads from the environment: ``os.environ.get("X")``,
    ``os.getenv("X")``, ``os.environ["X"]``, ``"X" in env``, and any call
    handed the environment and a name (``_get(env, "X")``, ``_number(env, "X")``)."""
    found: set[str] = set()
    for node in _walk(ast.parse(source)):
        if isinstance(node, ast.Call):
            func = node.func
            if isinstance(func, ast.Attribute) and (
                _is_environment(func.value) or (func.attr == "getenv" and isinstance(func.value, ast.Name))
            ):
                found |= _names(node.args[:1])
            elif any(_is_environment(arg) for arg in node.args):
                found |= _names(node.args)
        elif isinstance(node, ast.Subscript) and _is_environment(node.value):
            found |= _names([node.slice])
        elif isinstance(node, ast.Compare) and any(_is_environment(c) for c in node.comparators):
            found |= _names([node.left])
    return found


def test_the_scan_finds_every_kind_of_read() -> None:
    source = """
import os
a = os.environ.get("A_ONE", "x"); b = os.getenv("B_TWO"); c = os.environ["C_THREE"]
d = _get(env, "D_FOUR", "D_ALIAS"); e = _number(env, "E_FIVE"); f = "F_SIX" in os.environ
g = env.get("G_SEVEN"); h = unrelated("NOT_A_READ")
"""
    assert environment_reads(source) == {
        "A_ONE",
        "B_TWO",
        "C_THREE",
        "D_FOUR",
        "D_ALIAS",
        "E_FIVE",
        "F_SIX",
        "G_SEVEN",
    }


def test_every_setting_the_code_reads_has_a_row_in_the_readme() -> None:
    documented = app_variables()
    read = {name: path for path in product_files() for name in environment_reads(path.read_text(encoding="utf-8"))}
    assert {"MODEL_PROVIDER", "MAX_BODY_BYTES", "STREAM_AUTH_LEVEL", "PORT"} <= set(read), "the scan found nothing"
    families = documented_prefixes()
    missing = {
        name: str(path.relative_to(ROOT))
        for name, path in read.items()
        if name not in documented and not name.startswith(families)
    }
    assert missing == {}, "add a row (name | default | meaning) to README.md's configuration table"


def test_platform_variables_are_not_settings() -> None:
    """A user's setting belongs in the README's table; the platform list is
    only for what Azure, the host or OpenTelemetry set."""
    documented = set().union(*(row.mentioned for row in readme_settings()))
    assert not documented & PLATFORM_VARIABLES


def test_the_clean_environment_keeps_nothing_of_the_app() -> None:
    shell = {**ODD_SHELL, **{row.name: "odd" for row in readme_settings()}, "PATH": "/usr/bin", "HOME": "/tmp"}
    shell |= {"AZURE_OPENAI_AD_TOKEN": "t", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9"}
    assert hermetic_environ(shell) == {"PATH": "/usr/bin", "HOME": "/tmp"}
    assert not any(is_app_variable(name) for name in os.environ), "conftest.py clears the app's settings"


@pytest.fixture
def odd_shell(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    for name, value in ODD_SHELL.items():
        monkeypatch.setenv(name, value)
    return ODD_SHELL


def test_a_server_under_test_does_not_see_the_shell(odd_shell: dict[str, str]) -> None:
    with AppServer({"MODEL_PROVIDER": "offline", "OFFLINE_MODEL_DELAY_MS": "0"}) as app:
        with httpx.Client(base_url=app.url, timeout=30) as client:
            assert client.get("/api/health").json()["model"]["provider"] == "offline"
            response = client.post("/api/agent/stream", json={"message": "Weather in Oslo?"})
        assert response.status_code == 200, response.text  # MAX_MESSAGE_CHARS=5 stayed in the shell
        assert response.text.rstrip().endswith("}") and "event: done" in response.text
        assert "Application startup complete" in app.logs(), "LOG_LEVEL=critical stayed in the shell"
