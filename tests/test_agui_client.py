"""The real TypeScript AG-UI client, ``@ag-ui/client``'s ``HttpAgent``
under Node (``tests/agui_client.mjs``), against the app over loopback:
what a CopilotKit front end does. Node and the npm package come from
``make test`` (``make node-deps``); without them this fails, it never skips."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from ag_ui_validate.pytest_plugin import assert_valid_agui

from tests.fake_openai import FakeOpenAI, error_response, text_response
from tests.support import ROOT, AppServer

SCRIPT = ROOT / "tests" / "agui_client.mjs"


def http_agent(scenario: str, base_url: str, tmp_path: Path) -> list[dict[str, Any]]:
    node = shutil.which("node")
    assert node, "Node.js is needed for the AG-UI client tests (make test installs the npm clients)"
    assert (ROOT / "node_modules" / "@ag-ui" / "client").is_dir(), "run `make node-deps` first"
    output = tmp_path / f"{scenario}.json"
    done = subprocess.run(
        [node, str(SCRIPT), scenario, base_url, str(output)], cwd=ROOT, capture_output=True, text=True, timeout=90
    )
    assert done.returncode == 0, done.stderr[-4000:]
    runs = json.loads(output.read_text())["runs"]
    for run in runs:  # every whole stream the client saw passes the conformance validator
        if scenario != "abort":
            assert_valid_agui(run["events"], max_warnings=0)
    return runs


def text_of(run: dict[str, Any]) -> str:
    return "".join(e["delta"] for e in run["events"] if e["type"] == "TEXT_MESSAGE_CONTENT")


def test_http_agent_asks_about_the_weather_then_follows_up(offline_app: AppServer, tmp_path: Path) -> None:
    first, second = http_agent("weather", offline_app.url, tmp_path)
    for run in (first, second):
        assert "rejected" not in run, run.get("rejected")
        assert run["events"][0]["type"] == "RUN_STARTED" and run["events"][-1]["type"] == "RUN_FINISHED"
        assert run["request"]["threadId"] == run["events"][0]["threadId"]
    assert "Oslo:" in text_of(first)

    # The client kept the run as messages: the call, its result, the answer.
    roles = [(m["role"], bool(m.get("toolCalls"))) for m in first["messages"]]
    assert roles == [("user", False), ("assistant", True), ("tool", False), ("assistant", False)]
    assert first["messages"][-1]["content"] == text_of(first)

    # The second turn is the client's own messages plus the new question.
    assert second["request"]["messages"] == [
        *first["messages"],
        {"id": "u2", "role": "user", "content": "And in Paris?"},
    ]
    assert "Paris:" in text_of(second) and "Oslo" not in text_of(second)


def test_http_agent_runs_a_client_tool_and_the_model_goes_on(offline_app: AppServer, tmp_path: Path) -> None:
    first, second = http_agent("client-tool", offline_app.url, tmp_path)
    assert "rejected" not in first and "rejected" not in second
    calls = [e for e in first["events"] if e["type"] == "TOOL_CALL_START"]
    assert [c["toolCallName"] for c in calls] == ["get_weather", "show_notice"]
    finished = first["events"][-1]
    assert finished["type"] == "RUN_FINISHED"
    assert finished["outcome"]["pendingToolCallIds"] == [calls[1]["toolCallId"]]
    assert second["request"]["tools"][0]["name"] == "show_notice"
    assert second["request"]["messages"][-1]["content"] == "shown: Pack a coat"
    assert "Oslo:" in text_of(second) and "show_notice tool answered: shown: Pack a coat" in text_of(second)
    assert second["events"][-1]["type"] == "RUN_FINISHED" and "outcome" not in second["events"][-1]


def test_http_agent_follows_the_workflow_step_by_step(offline_app: AppServer, tmp_path: Path) -> None:
    (run,) = http_agent("workflow", offline_app.url, tmp_path)
    assert "rejected" not in run
    steps = [(e["type"], e["stepName"]) for e in run["events"] if e["type"].startswith("STEP_")]
    assert steps == [
        ("STEP_STARTED", "researcher"),
        ("STEP_FINISHED", "researcher"),
        ("STEP_STARTED", "writer"),
        ("STEP_FINISHED", "writer"),
    ]
    answers = [m for m in run["messages"] if m["role"] == "assistant" and m.get("content")]
    assert [m["name"] for m in answers] == ["researcher", "writer"]
    assert "Oslo" in answers[1]["content"]


@pytest.fixture
def fake_app() -> Iterator[tuple[AppServer, FakeOpenAI]]:
    with FakeOpenAI(api_key="k") as fake:
        values = {"OPENAI_BASE_URL": fake.openai_base_url, "OPENAI_API_KEY": "k", "OPENAI_MODEL": "m"}
        with AppServer({**values, "MODEL_MAX_RETRIES": "0"}) as app:
            yield app, fake


def test_http_agent_sees_a_model_failure_as_run_error(fake_app, tmp_path: Path) -> None:
    app, fake = fake_app
    fake.enqueue(error_response(503))
    (run,) = http_agent("failure", app.url, tmp_path)
    # HttpAgent does not reject on RUN_ERROR: the event itself is the signal.
    types = [e["type"] for e in run["events"]]
    assert types[0] == "RUN_STARTED" and types[-1] == "RUN_ERROR" and "RUN_FINISHED" not in types
    assert run["events"][-1] == {
        "type": "RUN_ERROR",
        "message": "The model service failed to answer.",
        "code": "upstream_error",
    }
    assert fake.requests[0].json["model"] == "m"


def test_http_agent_stopping_a_run_stops_the_model(fake_app, tmp_path: Path) -> None:
    app, fake = fake_app
    fake.enqueue(text_response(" ".join(f"word{i}" for i in range(100)), delay=0.05))
    (run,) = http_agent("abort", app.url, tmp_path)
    assert "abortedAt" in run, "no text arrived before the end"
    assert [e["type"] for e in run["events"]].count("TEXT_MESSAGE_CONTENT") < 100
    assert fake.wait_until(lambda f: f.cancelled_streams >= 1, 2.0), "the model call was not cancelled"
    assert fake.wait_for_no_open_streams(2.0)
