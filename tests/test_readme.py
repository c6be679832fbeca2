"""Every way the README says to use the app, taken from the README's fenced blocks at test time and
run as written, except for host, port and key: curl commands in bash, the Python client in a
subprocess, the ``EventSource`` snippet in a page in Chromium, request bodies against the app.
Commands that cannot run here (``az``, ``azd``, ``func``, ``make``) are held to the code instead:
the functions, routes, settings and make targets they name must exist.
"""

from __future__ import annotations

import functools
import importlib
import json
import os
import re
import shlex
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from tests.fake_openai import FakeOpenAI, text_response, tool_call_response
from tests.support import ROOT, AppServer, parse_sse, stream_events

README = ROOT / "README.md"
LOCAL = "http://localhost:7071"
DEPLOYED = "https://<app>.azurewebsites.net"
FENCE = re.compile(r"^```([\w-]*)[ \t]*\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)
# Settings the platform reads, not the app: documented by Azure Functions.
PLATFORM_SETTINGS = {
    "PYTHON_ENABLE_INIT_INDEXING",
    "FUNCTIONS_WORKER_PROCESS_COUNT",
    "FUNCTIONS_WORKER_RUNTIME",
    "AzureWebJobsStorage",
    "APPLICATIONINSIGHTS_CONNECTION_STRING",
    "AZURE_CLIENT_ID",
    "WEBSITE_INSTANCE_ID",
    "PYTHONUNBUFFERED",
}


def blocks(*languages: str) -> list[str]:
    return [body for lang, body in FENCE.findall(README.read_text(encoding="utf-8")) if lang in languages]


PLACEHOLDER = re.compile(r"<[^<>\n]*>")  # <group>, <the app's storage account>: never quotes


def _words(command: str) -> list[str]:
    return shlex.split(PLACEHOLDER.sub("PLACEHOLDER", command), comments=True)


def _complete(command: str) -> bool:
    try:
        _words(command)
    except ValueError:  # an open quote: the command goes on on the next line
        return False
    return True


def shell_commands(block: str) -> list[str]:
    """A shell block's commands: continuation lines and multi-line quoted arguments joined,
    comments and blank lines dropped. A line whose quote never closes is a command of its own."""
    logical, current = [], ""
    for line in block.splitlines():
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        logical.append(current + line)
        current = ""
    if current:
        logical.append(current)
    commands, i = [], 0
    while i < len(logical):
        line = logical[i]
        if not line.strip() or line.lstrip().startswith("#"):
            i += 1
            continue
        end, joined = i, line
        while not _complete(joined) and end + 1 < len(logical):
            end += 1
            joined += "\n" + logical[end]
        if _complete(joined):
            commands.append(joined.strip())
            i = end + 1
        else:
            commands.append(line.strip())
            i += 1
    return commands


def program_of(command: str) -> tuple[str, list[str]]:
    """The program a command runs and its arguments, past ``NAME=value`` prefixes; for
    ``KEY=$(az ...)`` the command substituted."""
    if substituted := re.fullmatch(r"\w+=\$\((.*)\)", command):
        command = substituted.group(1)
    try:
        words = _words(command)
    except ValueError:
        words = command.split()
    while words and re.fullmatch(r"\w+=.*", words[0]):
        words.pop(0)
    return (words[0] if words else ""), words[1:]


def all_commands() -> list[str]:
    return [command for block in blocks("bash", "sh", "shell", "console") for command in shell_commands(block)]


# The one shell variable the README's commands may use and tests can give: the function key.
GIVEN_VARIABLES = {"KEY"}


def runnable(command: str) -> bool:
    """A curl command runs here unless it needs a value from elsewhere (``$TOKEN`` from an earlier
    stream, say): those are held to the code like deployment commands."""
    return set(re.findall(r"\$\{?(\w+)", command)) <= GIVEN_VARIABLES


def curl_commands() -> list[str]:
    return [c for c in all_commands() if program_of(c)[0] == "curl" and runnable(c)]


# ------------------------------------------------------------------------------------------ the code they name


@functools.cache
def app_functions() -> dict[str, str]:
    """Function name -> route, as the Functions host indexes them (once: indexing twice fails)."""
    import function_app

    routes = {}
    # A fresh app: get_functions() refuses to index the same app object twice.
    for function in importlib.reload(function_app).app.get_functions():
        (trigger,) = [b for b in function.get_bindings() if b.type == "httpTrigger"]
        routes[function.get_function_name()] = trigger.route
    return routes


def route_exists(path: str) -> bool:
    path = path.split("?")[0].removeprefix("/api/").rstrip("/")
    for route in app_functions().values():
        pattern = re.sub(r"\\\{[^}]*\\\}", "[^/]+", re.escape(route.strip("/")))
        if re.fullmatch(pattern, path):
            return True
    return False


NOT_APP_CODE = {"tests", "bench", "node_modules", "infra", "test-output"}
# Prefixes of settings the Functions platform itself reads.
PLATFORM_PREFIXES = ("AzureWebJobs", "WEBSITE_", "FUNCTIONS_", "APPLICATIONINSIGHTS_", "OTEL_", "SCM_")


def is_known(name: str, known: set[str]) -> bool:
    return name in known or name.startswith(PLATFORM_PREFIXES)


def settings_read_by_the_app() -> set[str]:
    """Upper-case names the app's own code mentions as strings (every runtime module)."""
    sources = sorted(ROOT.glob("*.py"))
    for package in sorted(p for p in ROOT.iterdir() if p.is_dir() and (p / "__init__.py").exists()):
        if package.name not in NOT_APP_CODE:
            sources += sorted(package.rglob("*.py"))
    names: set[str] = set()
    for source in sources:
        names |= set(re.findall(r"[\"']([A-Z][A-Z0-9_]{3,})[\"']", source.read_text(encoding="utf-8")))
    return names


def make_targets() -> set[str]:
    return set(re.findall(r"^([\w.-]+):", (ROOT / "Makefile").read_text(), re.MULTILINE))


def test_every_shell_command_is_run_or_held_to_the_code() -> None:
    known = settings_read_by_the_app() | PLATFORM_SETTINGS
    functions = app_functions()
    unhandled = []
    for command in all_commands():
        program, args = program_of(command)
        for url in re.findall(r"https?://\S+?(/api/[^\s\"']*)", command):
            assert route_exists(url), f"{command!r}: no function serves {url}"
        if program == "curl":
            continue  # run by test_curl_commands_run_as_written, or its route checked above
        if program == "make":
            targets = [a for a in args if not re.fullmatch(r"\w+=.*", a) and not a.startswith("-")]
            assert set(targets) <= make_targets(), f"{command!r}: no such make target"
        elif program == "az":
            if "--function-name" in args:
                name = args[args.index("--function-name") + 1]
                assert name in functions, f"{command!r}: the app has no function {name!r}"
            if "--settings" in args:
                for setting in args[args.index("--settings") + 1 :]:
                    if setting.startswith("--"):
                        break
                    name = setting.split("=", 1)[0]
                    assert "=" in setting and is_known(name, known), f"{command!r}: {name} is not a setting"
        elif program == "func":
            assert (ROOT / "host.json").exists() and (ROOT / "function_app.py").exists()
        elif program == "azd":
            assert (ROOT / "azure.yaml").exists(), f"{command!r}: no azure.yaml"
        elif program in ("", "source", "cd", "export", "npx", "npm"):
            pass  # "": only variable assignments
        else:
            unhandled.append(command)
    assert unhandled == [], f"README commands no test runs or checks: {unhandled}"


def test_the_configuration_table_names_settings_the_app_reads() -> None:
    text = README.read_text(encoding="utf-8")
    table = text[text.index("| setting | default | meaning |") :]
    table = table[: table.index("\n\n")]
    names = re.findall(r"^\| `(\w+)` \|", table, re.MULTILINE)
    assert len(names) >= 10
    known = settings_read_by_the_app() | PLATFORM_SETTINGS
    missing = {name for name in names if not is_known(name, known)}
    assert missing == set(), f"the README documents settings the code does not read: {missing}"


# ------------------------------------------------------------------------------------------ running them


@pytest.fixture(scope="module")
def offline_app() -> Iterator[AppServer]:
    with AppServer({"MODEL_PROVIDER": "offline", "OFFLINE_MODEL_DELAY_MS": "1"}) as app:
        yield app


def as_here(snippet: str, url: str) -> str:
    """The snippet pointed at the test app: host and port replaced, nothing else."""
    return snippet.replace(DEPLOYED, url).replace(LOCAL, url)


@pytest.mark.parametrize("command", curl_commands())
def test_curl_commands_run_as_written(offline_app: AppServer, command: str) -> None:
    env = {**os.environ, "KEY": "not-needed-locally"}
    done = subprocess.run(
        ["bash", "-c", "set -euo pipefail\n" + as_here(command, offline_app.url)],
        capture_output=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode()
    output = done.stdout.decode("utf-8")
    if "text/plain" in command:
        assert output.strip() and "[error]" not in output
    elif "x-ndjson" in command:
        assert json.loads(output.strip().splitlines()[-1])["event"] == "done"
    else:
        events = parse_sse(re.split(r"\r\n|\r|\n", output))
        assert events, output[-500:]
        last = events[-1]
        # The app's contract ends with `done`; the AG-UI protocol with RUN_FINISHED.
        finished = isinstance(last.data, dict) and last.data.get("type") == "RUN_FINISHED"
        assert last.event == "done" or finished, output[-500:]


def test_request_bodies_shown_are_accepted(offline_app: AppServer) -> None:
    bodies = [json.loads(b) for b in blocks("json") if b.lstrip().startswith("{") and '"message"' in b]
    assert bodies, "the README shows no request body"
    with httpx.Client(base_url=offline_app.url, timeout=30) as client:
        for body in bodies:
            response, events = stream_events(client, "/api/agent/stream", json_body=body)
            assert response.status_code == 200 and events[-1].event == "done", body


def test_json_blocks_are_json_and_settings_fragments_name_real_settings() -> None:
    known = settings_read_by_the_app() | PLATFORM_SETTINGS
    for block in blocks("json"):
        try:
            value = json.loads(block)
        except ValueError:
            value = json.loads("{" + block.strip().rstrip(",") + "}")  # a fragment of local.settings.json Values
            unknown = {name for name in value if not is_known(name, known)}
            assert not unknown, f"not settings the app reads: {unknown}"
        assert isinstance(value, dict | list)


def test_the_weather_report_shown_is_what_the_tool_returns() -> None:
    from tools import WeatherReport

    fields = set(WeatherReport.__dataclass_fields__)
    shown = [json.loads(b) for b in blocks("json") if '"source"' in b and '"location"' in b]
    assert shown and all(set(report) <= fields for report in shown)


# ------------------------------------------------------------------------------------------ the Python client

# Every character a model can write, including the line separators str.splitlines() splits at.
TRICKY = [
    "Line one\u2028line two",
    "\u2029paragraph",
    " next\x85line",
    " CR\rLF\nCRLF\r\n",
    " rain 🌦️ and ünïcödé",
    ' quote " backslash \\ tab\t',
    "\ndata: not an event\n\nevent: done\n",
    " \u0000nul and \x1b esc",
]


def python_clients() -> list[str]:
    """The README's SSE client for the stream endpoints."""
    return [block for block in blocks("python") if f"{LOCAL}/api/agent/stream" in block]


def run_python(snippet: str, url: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", as_here(snippet, url)],
        capture_output=True,
        env={**os.environ, "PYTHONIOENCODING": "utf-8"},
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode()
    return done.stdout.decode("utf-8")


@pytest.fixture(scope="module")
def model() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(api_key="sk-readme", chunk_delay=0.02) as server:
        yield server


def test_the_python_client_prints_every_character_the_model_wrote(model: FakeOpenAI) -> None:
    (client,) = python_clients()
    values = {"OPENAI_BASE_URL": model.openai_base_url, "OPENAI_API_KEY": "sk-readme", "OPENAI_MODEL": "m"}
    # Pings between events too: the client must skip comments.
    with AppServer({**values, "HEARTBEAT_SECONDS": "0.05"}) as app, model.fresh():
        model.enqueue(
            tool_call_response([("get_weather", {"location": "Seattle"}, "call_1")], delay=0.2),
            text_response(TRICKY, delay=0.1),
        )
        printed = run_python(client, app.url)
    assert printed == "\n[get_weather({'location': 'Seattle'})]\n" + "".join(TRICKY) + "\n"


SYNTHETIC = [
    # Everything the SSE format allows, cut at awkward places: CRLF split in two, a UTF-8
    # character split in two, CR-only line ends, multi-line data, comments, retry and id lines,
    # an event the client does not know, and one with no data.
    b"retry: 3000\r",
    b'\n: a comment\r\n\r\nid: 1\r\ndata: {"text": "Hel",\r\ndata:  "agent": "w"}\r\n\r\n',
    b'id: 2\rdata: {"text": "lo \xf0\x9f',
    b'\x8c\xa6\xe2\x80\xa8!"}\r\r',
    b'event: tool_call\ndata: {"name": "get_weather", "arguments": {"location": "Oslo"}}\n\n',
    b'event: something_new\ndata: {"x": 1}\n\nevent: agent_completed\n\n',
    b'data:{"text":" bye"}\n\nevent: done\ndata: {}\n\n',
]


class _Synthetic(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length", "0")))
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.end_headers()
        for chunk in SYNTHETIC:
            self.wfile.write(chunk)
            self.wfile.flush()
            time.sleep(0.02)

    def log_message(self, *args: object) -> None:
        pass


def test_the_python_client_follows_the_sse_rules() -> None:
    (client,) = python_clients()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Synthetic)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        printed = run_python(client, f"http://127.0.0.1:{server.server_address[1]}")
    finally:
        server.shutdown()
        server.server_close()
    assert printed == "Hello 🌦\u2028!\n[get_weather({'location': 'Oslo'})]\n bye\n"


# ------------------------------------------------------------------------------------------ EventSource in Chromium

CHROMIUM = Path("/usr/bin/chromium")


def event_source_snippets() -> list[str]:
    return [block for block in blocks("js", "javascript") if "new EventSource(" in block]


HARNESS = """(snippetMsg) => new Promise((resolve) => {
    const shown = [], logged = [];
    const show = (text) => shown.push(text);
    const log = (name, data) => logged.push(name);
    const report = (outcome, data) => setTimeout(() => resolve({
        outcome, data, shown: shown.join(""), logged, state: window.__es.readyState }), 300);
    const finish = (data) => report("done", data);
    const fail = (error) => report("failed", error);
    const msg = snippetMsg;
    SNIPPET
    window.__es = es;
})"""


@pytest.mark.browser
@pytest.mark.parametrize("snippet", event_source_snippets())
def test_the_event_source_snippet_runs_in_chromium(offline_app: AppServer, snippet: str) -> None:
    from playwright.sync_api import sync_playwright

    script = HARNESS.replace("SNIPPET", snippet)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page()
            streams: list[str] = []
            page.on("request", lambda r: streams.append(r.url) if "/api/agent/stream" in r.url else None)
            page.goto(f"{offline_app.url}/api/health")
            result = page.evaluate(script, "What's the weather in Oslo?")
            assert result["outcome"] == "done", result
            assert result["data"]["provider"] == "offline" and "Oslo" in result["shown"]
            assert {"agent_started", "tool_call", "tool_result", "agent_completed"} <= set(result["logged"])
            assert result["state"] == 2, "closed on done: no reconnect, no second run"

            failed = page.evaluate(script, "")  # a 400: EventSource sees only a failed connection
            assert failed["outcome"] == "failed" and failed["data"]["code"] == "connection"
            assert failed["state"] == 2
            assert len(streams) == 2, streams
        finally:
            browser.close()


def test_every_snippet_kind_was_found() -> None:
    """Renaming a fence's language would silently skip a snippet."""
    assert curl_commands() and len(python_clients()) == 1 and event_source_snippets()
