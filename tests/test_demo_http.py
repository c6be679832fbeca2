"""``demo.http`` sent, unchanged, by a real ``.http`` client (httpyac, pinned in package.json and
installed by ``make node-deps``) to the app, and each answer checked against what its title promises.

The file addresses ``http://localhost:7071`` as a user's ``make run`` serves it; the tests may not use
that port, so httpyac goes through tests/forward_proxy.py (its ``request_proxy`` variable), which
delivers each request to the app on its free port. Nothing in the file is rewritten.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.forward_proxy import ForwardProxy
from tests.support import ROOT, AppServer, parse_sse
from tests.test_e2e_offline import assert_contract

DEMO = ROOT / "demo.http"
HTTPYAC = ROOT / "node_modules" / ".bin" / "httpyac"
TITLE = re.compile(r"^###[ \t]*(.*?)[ \t]*$", re.MULTILINE)


def titles() -> list[str]:
    return [title for title in TITLE.findall(DEMO.read_text(encoding="utf-8")) if title]


@pytest.fixture(scope="module")
def sent(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Every request of demo.http as httpyac sent it and what came back, by title."""
    if not HTTPYAC.exists():
        pytest.fail(f"{HTTPYAC} is missing: `make node-deps` installs the pinned httpyac")
    output = tmp_path_factory.mktemp("httpyac") / "result.json"
    with (
        AppServer({"MODEL_PROVIDER": "offline", "OFFLINE_MODEL_DELAY_MS": "1"}) as app,
        ForwardProxy(app.port) as proxy,
    ):
        with output.open("wb") as out:  # a file, not a pipe: node exits before a pipe drains
            done = subprocess.run(
                [str(HTTPYAC), "send", DEMO.name, "--all", "--json", "--var", f"request_proxy={proxy.url}"],
                cwd=ROOT,
                stdout=out,
                stderr=subprocess.PIPE,
                timeout=180,
                check=False,
            )
        requested = list(proxy.requested)
    assert output.stat().st_size, f"httpyac wrote nothing (exit {done.returncode}): {done.stderr.decode()[-2000:]}"
    result = json.loads(output.read_text(encoding="utf-8"))
    return {"result": result, "requested": requested, "returncode": done.returncode, "stderr": done.stderr}


def test_every_request_is_sent_to_the_host_the_file_names(sent: dict[str, Any]) -> None:
    result = sent["result"]
    assert [r["title"] for r in result["requests"]] == titles(), "a request was skipped or read wrongly"
    errored = [(r["title"], r.get("testResults")) for r in result["requests"] if not r.get("response")]
    assert errored == [], errored
    assert result["summary"]["erroredRequests"] == 0 and sent["returncode"] == 0, sent["stderr"][-2000:]
    # The file's own host and key: proof that it runs as a user's `make run` sees it.
    assert len(sent["requested"]) == len(titles())
    assert all(url.startswith("http://localhost:7071/api/") for url in sent["requested"]), sent["requested"]


# ------------------------------------------------------------------------------------------ titles -> checks


def _header(response: dict[str, Any], name: str) -> str:
    return str(response["headers"].get(name, ""))


def _sse(response: dict[str, Any]) -> list:
    assert _header(response, "content-type").startswith("text/event-stream"), response["headers"]
    events = parse_sse(re.split(r"\r\n|\r|\n", response["body"]))
    assert events and events[-1].event == "done", [e.event for e in events][-3:]
    assert_contract(events)  # ids, one terminal event, last
    return events


def _ndjson(response: dict[str, Any]) -> list[dict[str, Any]]:
    assert _header(response, "content-type").startswith("application/x-ndjson")
    lines = [json.loads(line) for line in response["body"].split("\n") if line]
    assert lines[-1]["event"] == "done" and any(line["event"] == "text" for line in lines)
    return lines


def _text(response: dict[str, Any]) -> str:
    assert _header(response, "content-type").startswith("text/plain")
    assert response["body"].strip() and "[error]" not in response["body"]
    return response["body"]


def check_health(response: dict[str, Any]) -> None:
    body = json.loads(response["body"])
    assert body["status"] == "ok" and body["model"]["configured"] is True


def check_tool_calls(response: dict[str, Any]) -> None:
    kinds = [e.event for e in _sse(response)]
    assert "tool_call" in kinds and "tool_result" in kinds and "message" in kinds


def check_multi_turn(response: dict[str, Any]) -> None:
    calls = [e.data["arguments"] for e in _sse(response) if e.event == "tool_call"]
    assert calls == [{"location": "Paris"}], "the follow-up is about the new place only"


def check_sse(response: dict[str, Any]) -> None:
    _sse(response)


def check_transitions(response: dict[str, Any]) -> None:
    started = [e.data["agent"] for e in _sse(response) if e.event == "agent_started"]
    assert started == ["researcher", "writer"]


def check_no_content(response: dict[str, Any]) -> None:
    assert not response.get("body")


def check_error_json(response: dict[str, Any]) -> None:
    error = json.loads(response["body"])["error"]
    assert error["code"] and error["message"]


def check_html(response: dict[str, Any]) -> None:
    assert _header(response, "content-type").startswith("text/html") and "<html" in response["body"].lower()


# What a title promises, from its words. Every title must match at least one rule: a new request
# in demo.http needs a title these rules understand (or a new rule).
RULES: list[tuple[str, Callable[[dict[str, Any]], Any]]] = [
    (r"^Health", check_health),
    (r"tool calls", check_tool_calls),
    (r"multi-turn", check_multi_turn),
    (r"EventSource calls it|GET for EventSource", check_sse),
    (r"plain text", _text),
    (r"NDJSON", _ndjson),
    (r"agent transitions", check_transitions),
    (r"\b204\b", check_no_content),
    (r"\b4\d\d\b", check_error_json),
    (r"chat page", check_html),
]


def promised_status(title: str) -> int:
    found = re.search(r"\b([1-5]\d\d)\b", title)
    return int(found.group(1)) if found else 200


@pytest.mark.parametrize("title", titles())
def test_each_answer_is_what_its_title_promises(sent: dict[str, Any], title: str) -> None:
    (request,) = [r for r in sent["result"]["requests"] if r["title"] == title]
    response = request["response"]
    assert response["statusCode"] == promised_status(title), (title, response.get("body", "")[:300])
    checks = [check for pattern, check in RULES if re.search(pattern, title)]
    assert checks, f"no check knows what {title!r} promises: add a rule"
    for check in checks:
        check(response)


def test_the_file_keeps_to_the_syntax_all_three_clients_share() -> None:
    text = DEMO.read_text(encoding="utf-8")
    variables = dict(re.findall(r"^@(\w+)[ \t]*=[ \t]*(.*?)[ \t]*$", text, re.MULTILINE))
    assert all(variables.values()), f"a variable without a value is read as a request by httpyac: {variables}"
    used = set(re.findall(r"\{\{(\w+)\}\}", text))
    assert used <= set(variables), f"undefined variables: {used - set(variables)}"
    # No client-specific features: scripts, environment files, dynamic variables, request names.
    assert not re.search(r"^(?:<|>) |\{\{\$|^# @(?!name)|^// @", text, re.MULTILINE)
    assert Path(ROOT / "package.json").read_text().count('"httpyac": "6.16.7"') == 1
