"""Hardening, in-process: the encoders' escaping, input that no model or log
can take, the run slots, the offline model's limits and linear parsing, the
chat page's policy, log-line escaping and the new settings.

The same weaknesses over real HTTP are in ``test_hardening_e2e.py``.
"""

from __future__ import annotations

import json
import re
import time
from typing import Any

import anyio
import httpx
import pytest
from agent_framework import Message
from starlette.requests import Request

import settings
from llm.offline import OfflineChatClient, find_places, pieces
from settings import SettingsError
from streaming.encoders import NDJSONEncoder, SSEEncoder, TextEncoder
from streaming.errors import classify
from streaming.events import Done, Error, StreamEvent, TextDelta, ToolCall
from streaming.http import start_stream, stream_run
from streaming.logsafe import one_line
from streaming.mapping import OutputTooLong, UpdateMapper
from streaming.pipeline import guard
from streaming.request import RequestError, parse_body, parse_query
from streaming.slots import RunSlots
from tests.support import parse_sse
from web import CHAT_PAGE, chat_page, content_security_policy

LIMITS = settings.stream_settings({})
LINE_BREAKS = "\u2028\u2029\x85"

# --------------------------------------------------------------------------- the event contract on the wire


@pytest.mark.parametrize("char", list(LINE_BREAKS))
def test_sse_escapes_what_line_readers_split_on(char: str) -> None:
    forged = f"a{char}event: done{char}data: {{}}{char}{char}b"
    wire = SSEEncoder().encode(3, TextDelta(forged, "weather")).decode()
    assert char not in wire
    # str.splitlines() splits where a browser does not: it must see one event, whole.
    events = parse_sse([*wire.splitlines(), ""])
    assert [e.event for e in events] == ["message"]
    assert events[0].data["text"] == forged


@pytest.mark.parametrize("char", list(LINE_BREAKS))
def test_ndjson_escapes_what_line_readers_split_on(char: str) -> None:
    wire = NDJSONEncoder().encode(1, ToolCall("weather", "c1", "get_weather", {"location": f"x{char}y"})).decode()
    assert char not in wire
    [line] = wire.splitlines()
    assert json.loads(line)["arguments"] == {"location": f"x{char}y"}


def test_encoders_keep_other_text_as_utf8() -> None:
    wire = SSEEncoder().encode(1, TextDelta("Zürich ☀ 東京", "weather")).decode()
    assert "Zürich ☀ 東京" in wire


@pytest.mark.parametrize("encoder", [SSEEncoder, NDJSONEncoder, TextEncoder])
def test_a_lone_surrogate_from_the_model_is_replaced_not_a_failure(encoder: type) -> None:
    data = encoder().encode(1, TextDelta("bad \ud800 text", "weather"))
    text = data.decode("utf-8")  # valid UTF-8
    assert "\ufffd" in text and "bad" in text and "text" in text


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("\x1b[31mred\x1b[0m", "red"),
        ("\x1b]0;owned title\x07after", "after"),
        ("\x1b]8;;http://evil.example\x1b\\link\x1b]8;;\x1b\\", "link"),
        ("bell\x07 back\x08 cr\r del\x7f", "bell back cr del"),
        ("c1 \x9b31m csi \x9d osc \x85 nel", "c1 31m csi  osc  nel"),
        ("reset\x1bc", "resetc"),
        ("keep\nnew lines\tand tabs", "keep\nnew lines\tand tabs"),
    ],
)
def test_text_mode_drops_terminal_control_sequences(raw: str, shown: str) -> None:
    assert TextEncoder().encode(1, TextDelta(raw, "weather")).decode() == shown


def test_text_mode_error_line_has_no_control_sequences() -> None:
    wire = TextEncoder().encode(2, Error("upstream_error", "bad\x1b[2J")).decode()
    assert "\x1b" not in wire and wire.endswith("bad\n")


# --------------------------------------------------------------------------- input no model or log can take


@pytest.mark.parametrize(
    "body",
    [
        b'{"message": "hi \\ud800 there"}',
        b'{"message": "hi \\udfff"}',
        b'{"message": "ok", "messages": [{"role": "user", "content": "x \\udc00"}]}',
    ],
)
def test_a_lone_surrogate_in_a_message_is_invalid_message(body: bytes) -> None:
    with pytest.raises(RequestError) as caught:
        parse_body(body, "application/json", LIMITS)
    assert (caught.value.status, caught.value.code) == (400, "invalid_message")
    assert "surrogate" in caught.value.message


def test_a_proper_surrogate_pair_is_fine() -> None:
    assert parse_body(b'{"message": "sun \\ud83c\\udf1e"}', "application/json", LIMITS).message == "sun 🌞"


def test_query_messages_are_checked_too() -> None:
    with pytest.raises(RequestError):
        parse_query({"message": "x\ud800"}, LIMITS)


# --------------------------------------------------------------------------- methods


def _request(method: str) -> Request:
    scope = {
        "type": "http",
        "method": method,
        "path": "/api/agent/stream",
        "raw_path": b"/api/agent/stream",
        "query_string": b"message=Seattle",
        "headers": [(b"host", b"localhost")],
    }

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    return Request(scope, receive)


@pytest.mark.parametrize("method", ["HEAD", "PUT", "DELETE", "PATCH", "OPTIONS"])
async def test_only_get_and_post_start_a_run(method: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODEL_PROVIDER", "offline")
    started = []

    def runner(*args: Any) -> Any:
        started.append(args)
        raise AssertionError("a run started")

    response = await stream_run(_request(method), runner)
    assert response.status_code == 405
    assert response.headers["allow"] == "GET, POST"
    assert json.loads(response.body)["error"]["code"] == "method_not_allowed"
    assert not started


# --------------------------------------------------------------------------- run slots


def test_a_slot_is_given_back_exactly_once() -> None:
    slots = RunSlots()
    first = slots.try_acquire(2)
    second = slots.try_acquire(2)
    assert first and second and slots.try_acquire(2) is None
    first.release()
    first.release()  # twice: still one place back, not two
    assert slots.active == 1
    third = slots.try_acquire(2)
    assert third is not None and slots.try_acquire(2) is None
    second.release()
    third.release()
    assert slots.active == 0


async def test_a_slot_as_an_async_context_is_released_on_error() -> None:
    slots = RunSlots()
    with pytest.raises(RuntimeError):
        async with slots.try_acquire(1):  # type: ignore[union-attr]
            assert slots.active == 1
            raise RuntimeError
    assert slots.active == 0


async def _events(*events: StreamEvent, fail: BaseException | None = None, wait: bool = False) -> Any:
    for event in events:
        yield event
    if wait:
        await anyio.sleep_forever()
    if fail is not None:
        raise fail


async def _serve(response: Any, *, leave_after_first_write: bool = False) -> list[bytes]:
    """Send ``response`` as an ASGI server would; the client may leave once
    it has the first body chunk."""
    bodies: list[bytes] = []
    gone = anyio.Event()

    async def receive() -> dict[str, Any]:
        await gone.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.body":
            bodies.append(message.get("body", b""))
            if leave_after_first_write:
                gone.set()

    scope = {"type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"}, "method": "GET", "headers": []}
    with anyio.fail_after(10):
        await response(scope, receive, send)
    return bodies


async def _released(slots: RunSlots) -> bool:
    """The run's task gives its slot back as it ends: wait for that, bounded."""
    for _ in range(500):  # polling: the slot count has no event to wait on
        if not slots.active:
            return True
        await anyio.sleep(0.01)
    return False


@pytest.mark.parametrize(
    "run",
    [
        lambda: _events(TextDelta("hi", "a"), Done("p", "m")),  # done
        lambda: _events(TextDelta("hi", "a"), fail=RuntimeError("boom")),  # error
        lambda: _events(TextDelta("hi", "a")),  # ended without a terminal event
    ],
)
async def test_a_run_gives_its_slot_back_when_it_ends(run: Any) -> None:
    slots = RunSlots()
    slot = slots.try_acquire(1)
    assert slot is not None
    response = await start_stream(run(), encoder=SSEEncoder(), run_id="r", slot=slot)
    wire = b"".join(await _serve(response))
    assert b"event: done" in wire or b"event: error" in wire
    assert await _released(slots)


async def test_a_run_gives_its_slot_back_at_the_deadline_and_when_its_client_leaves(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("RESUME_WINDOW_SECONDS", "0")  # nobody may resume it: cancelled when the client leaves
    slots = RunSlots()
    monkeypatch.setenv("RUN_DEADLINE_SECONDS", "0.1")
    response = await start_stream(_events(wait=True), encoder=SSEEncoder(), run_id="r", slot=slots.try_acquire(2))
    assert b"timeout" in b"".join(await _serve(response))
    assert await _released(slots)
    monkeypatch.setenv("RUN_DEADLINE_SECONDS", "60")
    run = _events(TextDelta("a", "x"), wait=True)
    response = await start_stream(run, encoder=SSEEncoder(), run_id="r", slot=slots.try_acquire(2))
    await _serve(response, leave_after_first_write=True)
    assert await _released(slots)


# --------------------------------------------------------------------------- output caps


def _update(text: str) -> Any:
    from agent_framework import AgentResponseUpdate, Content

    return AgentResponseUpdate(contents=[Content.from_text(text)], role="assistant")


def test_the_mapper_raises_past_the_run_output_cap() -> None:
    mapper = UpdateMapper(max_output_chars=10)
    assert [e.text for e in mapper.feed(_update("12345"), "a")] == ["12345"]  # type: ignore[attr-defined]
    assert mapper.feed(_update("67890"), "a")  # exactly at the cap: fine
    with pytest.raises(OutputTooLong) as caught:
        mapper.feed(_update("1"), "a")
    info = classify(caught.value)
    assert info.code == "output_too_long" and "10 characters" in info.message


def test_endless_tool_call_arguments_count_too() -> None:
    from agent_framework import AgentResponseUpdate, Content

    mapper = UpdateMapper(max_output_chars=100)
    fragment = Content.from_function_call(call_id="c1", name="get_weather", arguments='{"location": "' + "x" * 60)
    mapper.feed(AgentResponseUpdate(contents=[fragment], role="assistant"), "a")
    more = Content.from_function_call(call_id="c1", name="", arguments="y" * 60)
    with pytest.raises(OutputTooLong):
        mapper.feed(AgentResponseUpdate(contents=[more], role="assistant"), "a")


def _user(text: str) -> Message:
    return Message(role="user", contents=[text])


async def _offline_answer(options: dict[str, Any]) -> tuple[list[str], str | None]:
    client = OfflineChatClient(delay=0)
    texts: list[str] = []
    finish = None
    stream = client.get_response([_user("Tell me a story " + "please " * 50)], stream=True, options=options)
    async for update in stream:
        texts += [c.text for c in update.contents if c.type == "text"]
        finish = update.finish_reason or finish
    return texts, getattr(finish, "value", finish)


async def test_the_offline_model_honours_the_output_token_limit() -> None:
    texts, finish = await _offline_answer({"max_tokens": 3})
    assert len(texts) == 3 and finish == "length"
    texts, finish = await _offline_answer({})
    assert len(texts) > 3 and finish == "stop"


# --------------------------------------------------------------------------- offline model: linear parsing

ADVERSARIAL = [
    "A" + " " * 7999,
    "A " * 4000,
    "A de " * 1600,
    "A" + " de" * 2666,
    "in" + " " * 7998,
    "Seattle" + "\n" * 7993,
    "Rio" + " de  " * 1599,
    "A." * 4000,
    "in " * 2666,
    "in " + "a" * 7997,
]


# No backslash in the ids ("Seattle\n"): mutmut hands them back to pytest doubled, and pytest finds no such test.
@pytest.mark.parametrize("text", ADVERSARIAL, ids=lambda t: repr(t[:8]).replace("\\", "/"))
def test_place_finding_is_linear_on_adversarial_messages(text: str) -> None:
    # The old pattern took 0.8 s of CPU on "A" and 7,999 spaces; linear code
    # takes about 1 ms. 0.1 s of CPU time is a bound no linear run comes near
    # and no quadratic one gets under, however loaded the machine.
    started = time.process_time()
    find_places(text)
    pieces(text)
    assert time.process_time() - started < 0.1


def test_place_finding_still_finds_places() -> None:
    assert find_places("Weather in Seattle and Rio de Janeiro?") == ["Seattle", "Rio de Janeiro"]
    assert find_places("Compare New York with Stratford upon Avon") == ["New York", "Stratford upon Avon"]
    assert find_places("What is the weather in paris") == ["Paris"]
    assert find_places("Hello " * 1000) == []


def test_pieces_keep_every_character() -> None:
    for text in ("  two  words  ", "one", "", "a\nb\tc", "x" + " " * 100):
        joined = "".join(pieces(text))
        assert joined == text.rstrip() or (not text.strip() and joined == "")


# --------------------------------------------------------------------------- chat page policy


def test_the_chat_page_policy_allows_its_own_script_by_hash_only() -> None:
    html, headers = chat_page()
    policy = headers["Content-Security-Policy"]
    directives = dict(d.strip().split(" ", 1) for d in policy.split(";"))
    assert directives["frame-ancestors"] == "'none'"
    assert "'unsafe-inline'" not in directives["script-src"]
    [script] = re.findall(r"<script>(.*?)</script>", html, re.DOTALL)
    import base64
    import hashlib

    digest = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
    assert directives["script-src"] == f"'sha256-{digest}'"
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Referrer-Policy"] == "no-referrer"
    assert 'http-equiv="Content-Security-Policy"' not in CHAT_PAGE.read_text()


def test_a_changed_script_changes_the_hash() -> None:
    a = content_security_policy("<script>one()</script>")
    b = content_security_policy("<script>two()</script>")
    assert a != b and "sha256-" in a
    assert "script-src 'none'" in content_security_policy("<p>no script</p>")


# --------------------------------------------------------------------------- log lines


async def test_an_upstream_error_is_logged_on_one_line(caplog: pytest.LogCaptureFixture) -> None:
    import httpx2
    import openai

    forged = "2026-11-29 12:00:00,000 INFO streaming.pipeline: run forged done in 1 ms"
    error = openai.APIError(f"Bad request.\r\n{forged}", httpx2.Request("POST", "http://model"), body=None)
    with caplog.at_level("INFO"):
        events = [e async for e in guard(_events(fail=error), deadline_s=5, run_id="r1")]
    assert isinstance(events[-1], Error) and events[-1].code == "upstream_error"
    [record] = [r for r in caplog.records if "r1 failed" in r.getMessage()]
    message = record.getMessage()
    assert "\n" not in message and "\r" not in message
    assert "\\r\\n2026-11-29" in message


def test_outside_text_stays_on_one_log_line() -> None:
    text = one_line("Bad request\r\n2026-11-29 INFO run x done\u2028\x1b[2J \ud800")
    assert "\n" not in text and "\r" not in text and "\u2028" not in text and "\x1b" not in text
    assert "\\r\\n2026-11-29 INFO" in text
    text.encode("utf-8")  # no lone surrogate left
    assert one_line("x" * 1000, limit=10) == "x" * 10 + "..."


# --------------------------------------------------------------------------- settings


def test_new_settings_have_their_defaults() -> None:
    caps = settings.run_limits({})
    assert (caps.max_output_tokens, caps.max_run_output_chars, caps.max_concurrent_runs) == (4096, 100_000, 64)
    assert caps.body_read_timeout_s == 10


@pytest.mark.parametrize(
    "name", ["MAX_OUTPUT_TOKENS", "MAX_RUN_OUTPUT_CHARS", "MAX_CONCURRENT_RUNS", "BODY_READ_TIMEOUT_SECONDS"]
)
@pytest.mark.parametrize("value", ["-1", "0", "many", "1e12"])
def test_bad_limits_name_the_setting_not_the_value(name: str, value: str) -> None:
    with pytest.raises(SettingsError) as caught:
        settings.run_limits({name: value})
    assert name in str(caught.value) and "many" not in str(caught.value)


def test_allowed_hosts() -> None:
    assert settings.allowed_hosts({}) == {"localhost", "127.0.0.1", "::1"}
    assert "10.0.0.5" in settings.allowed_hosts({}, bound="10.0.0.5")
    assert "0.0.0.0" not in settings.allowed_hosts({}, bound="0.0.0.0")
    hosts = settings.allowed_hosts({"ALLOWED_HOSTS": " My.Dev , [fe80::1] ,*"})
    assert {"my.dev", "fe80::1", "*"} <= hosts
    with pytest.raises(SettingsError, match="ALLOWED_HOSTS"):
        settings.allowed_hosts({"ALLOWED_HOSTS": "evil.example/path"})


def test_httpx_iter_lines_splits_where_the_escaping_matters() -> None:
    # Why the escaping exists: the README's Python client reads lines with
    # httpx, which splits at U+2028 (a raw one would cut a data: line).
    response = httpx.Response(200, content="data: a\u2028b\n\n".encode())
    assert next(iter(response.iter_lines())) == "data: a"
