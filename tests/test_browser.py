"""The chat page (web/chat.html) in real headless Chromium, against the app
on the local host with the offline model. Everything stays on 127.0.0.1."""

from __future__ import annotations

import http.server
import json
import os
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Page, Request, Route, expect, sync_playwright

from tests.support import ROOT, AppServer

# Debian's chromium by default; CHROMIUM_PATH points at another Chrome or Chromium.
CHROMIUM = Path(os.environ.get("CHROMIUM_PATH") or "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
OUTPUT = ROOT / "test-output"
WAIT_MS = 15_000

pytestmark = pytest.mark.browser

# Records, at every DOM change in the conversation, how much answer text is
# shown, how many tool results and whether the done line is there yet.
RECORD_MUTATIONS = """() => {
    window.__samples = [];
    const conv = document.getElementById("conversation");
    new MutationObserver(() => {
        const text = [...conv.querySelectorAll('[data-testid="agent-text"]')].map((n) => n.textContent).join("");
        window.__samples.push({
            t: performance.now(),
            text: text.length,
            tools: conv.querySelectorAll('[data-testid="tool-line"]:not(.pending)').length,
            done: conv.querySelector('[data-testid="done-info"]') !== null,
        });
    }).observe(conv, { subtree: true, childList: true, characterData: true });
}"""

# Keeps every EventSource the page creates, and when close() was called on it.
TRACK_EVENT_SOURCES = """() => {
    window.__sources = [];
    const Native = window.EventSource;
    window.EventSource = class extends Native {
        constructor(...args) { super(...args); this.closedAt = null; window.__sources.push(this); }
        close() { if (this.closedAt === null) this.closedAt = performance.now(); super.close(); }
    };
}"""


def require_chromium() -> None:
    """These tests are the only check of the chat page, the offline model's
    pacing in a browser and the 204 on reconnect: a missing browser fails
    them (skipping them is a choice: ``-m "not browser"``)."""
    if not (CHROMIUM.is_file() and os.access(CHROMIUM, os.X_OK)):
        pytest.fail(
            f"Chromium not found at {CHROMIUM} (CHROMIUM_PATH). Install it with `make system-deps` "
            "(Debian's chromium package) or set CHROMIUM_PATH to a Chrome or Chromium executable; "
            "to leave the browser tests out, run pytest -m 'not browser'.",
            pytrace=False,
        )


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    require_chromium()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def paced_app() -> Iterator[AppServer]:
    """The offline model at 60 ms a word: an answer takes about two seconds,
    long enough to watch it grow (and to stop it) on a loaded machine."""
    with AppServer({"MODEL_PROVIDER": "offline", "OFFLINE_MODEL_DELAY_MS": "60"}) as server:
        yield server


@pytest.fixture
def open_chat(browser: Browser) -> Iterator[Callable[..., Page]]:
    """Opens /api/chat of an app in a fresh browser context. At teardown:
    no script error happened, and the page asked nothing of another host."""
    contexts, problems, urls = [], [], []

    def open_(app: AppServer, *, width: int = 1000, height: int = 800, color_scheme: str = "light") -> Page:
        context = browser.new_context(viewport={"width": width, "height": height}, color_scheme=color_scheme)
        contexts.append(context)
        page = context.new_page()
        page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
        page.on(
            "console",
            lambda msg: (
                problems.append(f"console: {msg.text}")
                if msg.type == "error" and "Failed to load resource" not in msg.text
                else None
            ),
        )
        page.on("request", lambda request: urls.append(request.url))
        page.goto(f"{app.url}/api/chat")
        expect(page.get_by_role("textbox", name="Message")).to_be_focused()
        return page

    yield open_
    for context in contexts:
        context.close()
    assert not problems, problems
    assert all(url.startswith("http://127.0.0.1:") for url in urls), urls


def stream_requests(page: Page, path: str = "/api/") -> list[Request]:
    """Every request the page makes to a stream endpoint, as it happens."""
    seen: list[Request] = []

    def record(request: Request) -> None:
        if "/stream" in request.url and path in request.url:
            seen.append(request)

    page.on("request", record)
    return seen


def ask(page: Page, message: str, *, turns: int = 1) -> None:
    """Type ``message``, press Enter, wait until the ``turns``-th answer is done."""
    box = page.get_by_role("textbox", name="Message")
    box.fill(message)
    box.press("Enter")
    expect(page.get_by_test_id("done-info")).to_have_count(turns, timeout=WAIT_MS)


def agent_texts(page: Page, turn: int = -1) -> dict[str, str]:
    """Each agent's text in one turn, in page order."""
    blocks = page.get_by_test_id("turn").nth(turn).get_by_test_id("agent-block").all()
    return {b.get_attribute("data-agent"): "".join(b.get_by_test_id("agent-text").all_text_contents()) for b in blocks}


# (a) ------------------------------------------------------------------------


def test_agent_answer_streams_in_pieces_with_tools_and_done(paced_app: AppServer, open_chat) -> None:
    page = open_chat(paced_app)
    requests = stream_requests(page)
    page.evaluate(RECORD_MUTATIONS)
    ask(page, "What's the weather in Seattle and Portland?")

    samples = page.evaluate("window.__samples")
    final = agent_texts(page)
    assert list(final) == ["weather"]
    answer = final["weather"]
    before_done = [s for s in samples if not s["done"]]
    lengths = sorted({s["text"] for s in before_done if s["text"]})
    # The text grew in many steps, all of them shown before the run ended.
    assert len(lengths) >= 10, lengths
    assert lengths[0] < len(answer) / 4 and lengths[-1] > len(answer) * 3 / 4, (lengths, len(answer))
    first_text = next(s for s in before_done if s["text"])
    last_text = next(s for s in before_done if s["text"] == lengths[-1])
    assert last_text["t"] - first_text["t"] > 500, "the answer should take ~1 s to stream at 30 ms a word"
    # Both tool results were on the page before the first word of the answer.
    assert first_text["tools"] == 2

    lines = page.get_by_test_id("tool-line").all_text_contents()
    assert len(lines) == 2
    for line, place in zip(lines, ("Seattle", "Portland"), strict=True):
        match = re.fullmatch(rf"get_weather\(\{{location: {place}\}}\) → ([a-z ]+), (-?\d+) °C", line)
        assert match, line
        assert f"{place}: {match[1]}, {match[2]} °C" in answer  # the line shows what the answer says
    expect(page.get_by_test_id("tool-line").first).not_to_have_class(re.compile("failed"))

    done = page.get_by_test_id("done-info").text_content()
    assert re.fullmatch(r"Done · offline-demo \(offline\) · \d+(\.\d+)? m?s · \d+ tokens", done), done
    expect(page.get_by_test_id("status")).to_have_text("Done.")
    expect(page.get_by_test_id("conversation")).to_have_attribute("aria-busy", "false")
    assert len(requests) == 1 and requests[0].method == "POST"
    assert requests[0].post_data_json == {"message": "What's the weather in Seattle and Portland?"}
    assert requests[0].headers["accept"] == "text/event-stream"


def test_stop_aborts_the_stream(paced_app: AppServer, open_chat) -> None:
    page = open_chat(paced_app)
    failed: list[Request] = []
    page.on("requestfailed", lambda request: failed.append(request))
    page.get_by_label("Message").fill("What's the weather in Seattle?")
    page.get_by_role("button", name="Send").click()
    expect(page.get_by_test_id("agent-text")).to_contain_text("current", timeout=WAIT_MS)
    page.get_by_role("button", name="Stop").click()

    expect(page.get_by_test_id("stopped")).to_be_visible()
    expect(page.get_by_test_id("status")).to_have_text("Stopped.")
    expect(page.get_by_role("button", name="Send")).to_be_enabled()
    expect(page.get_by_role("button", name="Stop")).to_be_disabled()
    assert [r.url for r in failed] == [f"{paced_app.url}/api/agent/stream"]
    page.wait_for_timeout(2500)  # the rest of the answer would have arrived by now
    expect(page.get_by_test_id("done-info")).to_have_count(0)
    assert "(Offline sample data" not in page.get_by_test_id("agent-text").text_content()
    assert page.evaluate("chatApp.history") == []


# (b) ------------------------------------------------------------------------


def test_workflow_shows_researcher_then_writer(offline_app: AppServer, open_chat) -> None:
    page = open_chat(offline_app, width=900, height=900)
    requests = stream_requests(page)
    page.get_by_label("Run").select_option("workflow")
    ask(page, "Research the weather in Oslo and write a poem")

    texts = agent_texts(page)
    assert list(texts) == ["researcher", "writer"]
    assert page.get_by_test_id("agent-name").all_text_contents() == ["researcher", "writer"]
    assert texts["researcher"].startswith("Here is the current weather. Oslo:")
    assert texts["writer"].startswith("In Oslo it is") and "\n" in texts["writer"]
    researcher = page.locator('[data-agent="researcher"]')
    writer = page.locator('[data-agent="writer"]')
    expect(researcher.get_by_test_id("tool-line")).to_have_text(re.compile(r"^get_weather\(\{location: Oslo\}\) → "))
    expect(writer.get_by_test_id("tool-line")).to_have_count(0)
    expect(page.get_by_test_id("done-info")).to_contain_text("offline-demo")
    assert requests[0].url == f"{offline_app.url}/api/workflow/stream"
    OUTPUT.mkdir(exist_ok=True)
    page.screenshot(path=str(OUTPUT / "chat-workflow.png"))

    # The follow-up carries the writer's text as the assistant's turn.
    ask(page, "Now the same for Bergen", turns=2)
    assert requests[1].post_data_json == {
        "message": "Now the same for Bergen",
        "messages": [
            {"role": "user", "content": "Research the weather in Oslo and write a poem"},
            {"role": "assistant", "content": texts["writer"].strip()},
        ],
    }
    assert "Bergen" in agent_texts(page)["researcher"]


# (c) ------------------------------------------------------------------------


def test_second_turn_sends_earlier_turns_and_new_chat_clears(offline_app: AppServer, open_chat) -> None:
    page = open_chat(offline_app)
    requests = stream_requests(page)
    ask(page, "What's the weather in Rome?")
    first_answer = agent_texts(page)["weather"]
    assert "Rome:" in first_answer
    ask(page, "And in Madrid?", turns=2)

    assert requests[0].post_data_json == {"message": "What's the weather in Rome?"}
    assert requests[1].post_data_json == {
        "message": "And in Madrid?",
        "messages": [
            {"role": "user", "content": "What's the weather in Rome?"},
            {"role": "assistant", "content": first_answer.strip()},
        ],
    }
    assert "x-functions-key" not in requests[1].headers
    assert "Madrid:" in agent_texts(page)["weather"]
    expect(page.get_by_test_id("turn")).to_have_count(2)
    expect(page.get_by_test_id("user-message").nth(0)).to_have_text("You: What's the weather in Rome?")

    page.get_by_role("button", name="New chat").click()
    expect(page.get_by_test_id("turn")).to_have_count(0)
    expect(page.get_by_test_id("empty")).to_be_visible()
    ask(page, "Weather in Lima?")
    assert requests[2].post_data_json == {"message": "Weather in Lima?"}


def test_function_key_is_kept_in_the_tab_and_sent(offline_app: AppServer, open_chat) -> None:
    page = open_chat(offline_app)
    requests = stream_requests(page)
    page.get_by_text("Function key").first.click()  # opens the <details>
    page.get_by_label("Function key (optional)").fill("local-test-key")
    expect(page.get_by_test_id("key-state")).to_have_text("(set)")
    page.reload()
    expect(page.get_by_label("Function key (optional)")).to_have_value("local-test-key")
    assert page.evaluate("sessionStorage.getItem('agentChat.functionKey')") == "local-test-key"

    ask(page, "Weather in Quito?")
    assert requests[0].headers["x-functions-key"] == "local-test-key"
    page.get_by_label("Transport").select_option("eventsource")
    ask(page, "Weather in Cusco?", turns=2)
    assert "code=local-test-key" in requests[1].url and requests[1].method == "GET"


# (d) ------------------------------------------------------------------------


def run_log_lines(app: AppServer, run_id: str) -> list[str]:
    """The app's lines saying that run ``run_id`` started from a GET."""
    return [line for line in app.logs().splitlines() if f"run {run_id}: GET /api/agent/stream" in line]


def test_event_source_transport_closes_on_done_and_never_reconnects(offline_app: AppServer, open_chat) -> None:
    token, control = f"es{uuid.uuid4().hex[:8]}", f"ctl{uuid.uuid4().hex[:8]}"
    page = open_chat(offline_app)
    requests = stream_requests(page, "/api/agent/stream")
    page.evaluate(TRACK_EVENT_SOURCES)
    page.get_by_label("Transport").select_option("eventsource")
    expect(page.get_by_test_id("transport-hint")).to_contain_text("cannot send earlier turns")

    ask(page, f"What's the weather in Lisbon? {token}")
    # Closed by the page on `done`, before it even rendered the done line.
    assert page.evaluate("window.__sources.map((s) => [s.readyState, s.closedAt !== null])") == [[2, True]]
    assert "Lisbon:" in agent_texts(page)["weather"]
    expect(page.get_by_test_id("tool-line")).to_have_text(re.compile(r"^get_weather\(\{location: Lisbon\}\) → "))
    done_at = time.monotonic()

    # Control: a bare EventSource that is NOT closed on done. The browser
    # reconnects it (with Last-Event-ID), the API answers 204, and it stops.
    # Waiting for that proves the window below is long enough to see a reconnect.
    started = page.evaluate(
        """(url) => new Promise((resolve) => {
            const es = new EventSource(url);
            window.__control = es;
            es.addEventListener("done", () => resolve(performance.now()));
        })""",
        f"{offline_app.url}/api/agent/stream?message=weather+in+Porto+{control}",
    )
    assert started
    page.wait_for_function("() => window.__control.readyState === EventSource.CLOSED", timeout=WAIT_MS)
    page.wait_for_timeout(300)
    assert time.monotonic() - done_at > 2.0

    ours = [r for r in requests if token in r.url]
    controls = [r for r in requests if control in r.url]
    assert len(ours) == 1 and ours[0].method == "GET"
    assert "last-event-id" not in ours[0].all_headers()
    assert len(controls) == 2 and controls[1].all_headers().get("last-event-id")
    assert controls[1].response().status == 204

    # The server saw the same: one run for the page, one for the control, and
    # the reconnect ran nothing. (The access log redacts queries, so runs are
    # found by their run ids.)
    run_ids = [r.response().all_headers().get("x-run-id") for r in (ours[0], controls[0])]
    assert all(run_ids), run_ids
    assert "x-run-id" not in controls[1].response().all_headers()
    for run_id in run_ids:
        assert len(run_log_lines(offline_app, run_id)) == 1, run_id


def test_get_with_last_event_id_gets_204(offline_app: AppServer) -> None:
    for path in ("/api/agent/stream", "/api/workflow/stream"):
        url = f"{offline_app.url}{path}"
        response = httpx.get(url, params={"message": "weather in Oslo"}, headers={"Last-Event-ID": "7"}, timeout=10)
        assert response.status_code == 204 and response.content == b""


# (e) ------------------------------------------------------------------------


def test_http_error_is_shown_plainly(offline_app: AppServer, open_chat) -> None:
    page = open_chat(offline_app)
    requests = stream_requests(page)
    # The form refuses a blank message without a request...
    page.get_by_label("Message").fill("   ")
    page.get_by_label("Message").press("Enter")
    expect(page.get_by_test_id("status")).to_have_text("Type a message first.")
    assert requests == []

    # ...and the page's own send path, past that check, shows the API's 400 as it is.
    assert page.evaluate("chatApp.send('   ')") == "error"
    alert = page.get_by_role("alert")
    expect(alert).to_have_text("Error (HTTP 400 · empty_message): 'message' must not be empty.")
    expect(page.get_by_test_id("answer")).to_contain_text("not sent as context")
    assert page.evaluate("chatApp.history") == []

    # EventSource cannot read the 400, but it says the stream was refused.
    page.get_by_label("Transport").select_option("eventsource")
    assert page.evaluate("chatApp.send(' ')") == "error"
    expect(page.get_by_test_id("error").nth(1)).to_have_attribute("data-code", "request_failed")
    expect(page.get_by_test_id("error").nth(1)).to_contain_text("refused")
    assert [r.method for r in requests] == ["POST", "GET"]


STREAM_WITH_ERROR = (
    ": ping\r\n\r\n"
    'id: 1\r\nevent: agent_started\r\ndata: {"agent":"weather"}\r\n\r\n'
    'id: 2\r\nevent: tool_call\r\ndata: {"agent":"weather","call_id":"c1","name":"get_weather",\r\n'
    'data: "arguments":{"location":"<img src=x onerror=alert(1)>"}}\r\n\r\n'
    'id: 3\nevent: tool_result\ndata: {"agent":"weather","call_id":"c1","name":"get_weather",'
    '"result":"No such place.","is_error":true}\n\n'
    'id: 4\rdata: {"text":"Partial <b>answer</b>","agent":"weather"}\r\r'
    ": ping\n\n"
    'id: 5\nevent: error\ndata: {"error":{"code":"deadline_exceeded","message":"The run took too long."}}\n\n'
)


def test_stream_error_event_is_shown_and_model_text_escaped(offline_app: AppServer, open_chat) -> None:
    page = open_chat(offline_app)

    def reply(route: Route) -> None:
        route.fulfill(status=200, headers={"Content-Type": "text/event-stream"}, body=STREAM_WITH_ERROR)

    page.route("**/api/agent/stream", reply)
    page.get_by_label("Message").fill("What's the weather in Atlantis?")
    page.get_by_label("Message").press("Enter")

    expect(page.get_by_role("alert")).to_have_text("Error (deadline_exceeded): The run took too long.")
    expect(page.get_by_test_id("agent-text")).to_have_text("Partial <b>answer</b>")
    tool = page.get_by_test_id("tool-line")
    expect(tool).to_have_text("get_weather({location: <img src=x onerror=alert(1)>}) → error: No such place.")
    expect(tool).to_have_class(re.compile(r"\bfailed\b"))
    assert page.locator("#conversation b, #conversation img").count() == 0
    expect(page.get_by_test_id("done-info")).to_have_count(0)
    assert page.evaluate("chatApp.history") == []


def test_sse_parser_handles_chunks_split_anywhere(offline_app: AppServer, open_chat) -> None:
    page = open_chat(offline_app)
    result = page.evaluate(
        """(text) => {
            const parse = (chunks) => {
                const events = [];
                const parser = chatApp.createSSEParser((e) => events.push(e));
                for (const chunk of chunks) parser.push(chunk);
                parser.end();
                return JSON.stringify(events);
            };
            const whole = parse([text]);
            const mismatches = [];
            if (parse([...text]) !== whole) mismatches.push("char by char");
            for (let i = 1; i < text.length; i++) {
                if (parse([text.slice(0, i), text.slice(i)]) !== whole) mismatches.push(i);
            }
            return { events: JSON.parse(whole), mismatches };
        }""",
        STREAM_WITH_ERROR + "data: unterminated",
    )
    assert result["mismatches"] == []
    events = result["events"]
    assert [(e["type"], e["id"]) for e in events] == [
        ("agent_started", "1"),
        ("tool_call", "2"),
        ("tool_result", "3"),
        ("message", "4"),
        ("error", "5"),
    ]
    assert json.loads(events[1]["data"])["arguments"] == {"location": "<img src=x onerror=alert(1)>"}
    assert "\n" in events[1]["data"]  # two data lines joined with a newline


# (f) ------------------------------------------------------------------------


def overflowing(page: Page, width: int) -> list[str]:
    """Elements reaching past the right edge of the viewport."""
    return page.evaluate(
        """(width) => [...document.querySelectorAll("body *")]
            .filter((el) => el.getClientRects().length && el.getBoundingClientRect().right > width + 0.5)
            .map((el) => el.tagName + (el.id ? "#" + el.id : "") + "." + el.className)""",
        width,
    )


@pytest.mark.parametrize("color_scheme", ["light", "dark"])
def test_usable_at_phone_width_and_labelled(offline_app: AppServer, open_chat, color_scheme: str) -> None:
    page = open_chat(offline_app, width=375, height=740, color_scheme=color_scheme)
    for name in ("Message", "Run", "Transport"):
        expect(page.get_by_label(name, exact=True)).to_have_count(1)
    for name in ("Send", "Stop", "New chat"):
        expect(page.get_by_role("button", name=name)).to_have_count(1)
    expect(page.get_by_role("log", name="Conversation")).to_have_attribute("aria-live", "polite")
    assert page.evaluate("document.scrollingElement.scrollWidth") <= 375

    # Shift+Enter is a new line, not a send.
    box = page.get_by_role("textbox", name="Message")
    box.press("Shift+Enter")
    assert box.input_value() == "\n"
    # Focus is visible on the next control.
    box.press("Tab")
    assert page.evaluate("getComputedStyle(document.activeElement).outlineStyle") == "solid"

    page.get_by_label("Run").select_option("workflow")
    long_word = "Weather in Reykjavik and Ouagadougou for " + "x" * 120
    ask(page, long_word)
    assert list(agent_texts(page)) == ["researcher", "writer"]
    assert page.evaluate("document.scrollingElement.scrollWidth") <= 375
    assert overflowing(page, 375) == []
    background = page.evaluate("getComputedStyle(document.body).backgroundColor")
    dark = [int(c) for c in re.findall(r"\d+", background)[:3]]
    assert (sum(dark) < 150) == (color_scheme == "dark"), background
    OUTPUT.mkdir(exist_ok=True)
    page.screenshot(path=str(OUTPUT / f"chat-phone-{color_scheme}.png"))


# (g) ------------------------------------------------------------------------


def test_cut_and_filtered_answers_say_why(open_chat) -> None:
    """Over Azure OpenAI (the fake, in Azure's shapes): an answer cut at the
    length limit is marked as cut; one the content filter stopped, or a
    prompt it refused, shows the filter's error."""
    from tests.fake_openai import FakeOpenAI, content_filter_error, text_response

    with FakeOpenAI(api_key="browser-key") as fake:
        values = {
            "AZURE_OPENAI_ENDPOINT": fake.azure_endpoint,
            "AZURE_OPENAI_CHAT_DEPLOYMENT_NAME": "chat",
            "AZURE_OPENAI_API_KEY": "browser-key",
            "MODEL_MAX_RETRIES": "0",
        }
        with AppServer(values) as app:
            page = open_chat(app)
            fake.enqueue(text_response(["Seattle:", " light", " rain,"], finish_reason="length"))
            ask(page, "Weather in Seattle?")
            expect(page.get_by_test_id("cut-notice")).to_have_text(
                "Cut short: the model reached its length limit, so part of this answer is missing."
            )
            expect(page.get_by_test_id("agent-text")).to_have_text("Seattle: light rain,")

            box = page.get_by_role("textbox", name="Message")
            fake.enqueue(text_response(["The", " answer"], finish_reason="content_filter"))
            box.fill("Tell me more")
            box.press("Enter")
            alert = page.get_by_role("alert")
            expect(alert).to_have_attribute("data-code", "content_filtered", timeout=WAIT_MS)
            expect(alert).to_contain_text("content filter blocked the rest of the answer")
            expect(page.get_by_test_id("turn").nth(1).get_by_test_id("agent-text")).to_have_text("The answer")

            fake.enqueue(content_filter_error())
            box.fill("And again")
            box.press("Enter")
            expect(page.get_by_role("alert")).to_have_count(2, timeout=WAIT_MS)
            expect(page.get_by_role("alert").nth(1)).to_contain_text("content filter blocked this request")
            expect(page.get_by_test_id("cut-notice")).to_have_count(1)


# (h) security headers --------------------------------------------------------


@pytest.fixture
def other_site() -> Iterator[str]:
    """Another origin on loopback (its own port): a page with nothing but a
    ``<body>``, for framing tests. Loopback, so Chromium's local-network
    rules do not block the frame before the app's policy is even read."""

    class Blank(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = b"<!doctype html><title>another site</title><body></body>"
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Blank)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://localhost:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


def test_the_page_refuses_to_be_framed_by_another_site(
    offline_app: AppServer, browser: Browser, other_site: str
) -> None:
    """``frame-ancestors 'none'``: a page on another origin cannot show the
    chat in a frame (and trick a user into typing into it)."""
    context = browser.new_context()
    try:
        page = context.new_page()
        page.goto(other_site)
        page.evaluate(
            """(src) => new Promise((resolve) => {
                const frame = document.createElement("iframe");
                frame.id = "chat";
                frame.onload = resolve;  // fires for the page and for the error page alike
                frame.src = src;
                document.body.append(frame);
            })""",
            f"{offline_app.url}/api/chat",
        )
        assert page.frame_locator("#chat").locator("#conversation").count() == 0
    finally:
        context.close()


def test_the_page_works_under_its_policy_and_refuses_injected_script(offline_app: AppServer, browser: Browser) -> None:
    """The page's own script runs (allowed by its hash); an inline script that
    is not the page's does not."""
    context = browser.new_context()
    try:
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(f"{offline_app.url}/api/chat")
        expect(page.get_by_role("textbox", name="Message")).to_be_focused()
        ask(page, "Weather in Oslo?")
        assert "Oslo" in agent_texts(page)["weather"]
        ran = page.evaluate(
            """() => new Promise((resolve) => {
                window.__injected = false;
                document.addEventListener("securitypolicyviolation", () => resolve(window.__injected), { once: true });
                const script = document.createElement("script");
                script.textContent = "window.__injected = true";
                document.body.append(script);
                setTimeout(() => resolve(window.__injected), 2000);
            })"""
        )
        assert ran is False
        assert not errors, errors
    finally:
        context.close()
