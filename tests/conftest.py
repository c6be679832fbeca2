"""Every test starts from a known environment, whatever the shell has.

The app's settings (the README's configuration table) and the platform's
variables are removed from this process's environment before any test runs
and again after each test, so an in-process test sees only what it sets
(``monkeypatch.setenv``); servers under test get the same clean environment
(``tests.support.hermetic_environ``).

A skip is a decision made on the command line (``-m "not browser"``), never
a side effect of a missing tool: a test that skips itself fails, unless its
reason is one the README's testing section lists.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.support import README, AppServer, app_variables, is_app_variable, mutmut_stats

OFFLINE_VALUES = {"MODEL_PROVIDER": "offline", "OFFLINE_MODEL_DELAY_MS": "2"}


def _clear_app_variables() -> None:
    names = app_variables()
    for name in [n for n in os.environ if is_app_variable(n, names)]:
        del os.environ[name]


_clear_app_variables()


@pytest.fixture(autouse=True)
def hermetic(request: pytest.FixtureRequest) -> Iterator[None]:
    """Nothing a test leaves in the environment reaches the next one."""
    yield
    _clear_app_variables()
    if mutmut_stats():  # credit the servers this test used with it (see tests/support.py)
        for value in request.node.funcargs.values():
            if isinstance(value, AppServer):
                value.users.add(request.node.nodeid)


def allowed_skips() -> list[str]:
    """Skip reasons the README's testing section lists (in backticks, under "Skips")."""
    text = README.read_text(encoding="utf-8")
    section = text.split("\n### Testing\n", 1)[-1].split("\n## ", 1)[0]
    skips = section.split("Skips", 1)[-1] if "Skips" in section else ""
    return re.findall(r"^\s*- `([^`]+)`", skips, flags=re.MULTILINE)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> pytest.TestReport:
    report = yield
    if report.skipped and not hasattr(report, "wasxfail"):
        longrepr = report.longrepr
        reason = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
        if not any(allowed in reason for allowed in allowed_skips()):
            report.outcome = "failed"
            report.longrepr = (
                f"{item.nodeid} skipped itself ({reason}). A skip must be chosen on the command line "
                "(-m 'not browser'), or its reason listed under 'Skips' in README.md's testing section."
            )
    return report


@pytest.fixture(scope="session")
def offline_app() -> Iterator[AppServer]:
    """The app on the local host with the offline model (fast pace)."""
    with AppServer(OFFLINE_VALUES, host={"CORS": "http://allowed.example"}) as server:
        yield server


@pytest.fixture
def offline_client(offline_app: AppServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=offline_app.url, timeout=30) as client:
        yield client


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    """The order's seed again at the end, beside the failures it may explain."""
    seed = getattr(config.option, "randomly_seed", None)
    if isinstance(seed, int) and getattr(config.option, "randomly_reorganize", True):
        terminalreporter.write_line(f"random order: replay it with --randomly-seed={seed}")
