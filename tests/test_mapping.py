"""The one mapping from framework updates to events."""

from __future__ import annotations

from agent_framework import AgentResponseUpdate, ChatResponseUpdate, Content

from streaming.events import TextDelta, ToolCall, ToolResult
from streaming.mapping import UpdateMapper


def update(*contents: Content, finish_reason: str | None = None, role: str = "assistant", model: str | None = None):
    raw = ChatResponseUpdate(role=role, contents=list(contents), model=model)
    return AgentResponseUpdate(contents=list(contents), role=role, finish_reason=finish_reason, raw_representation=raw)


def test_fragmented_tool_call_is_emitted_once_and_whole() -> None:
    mapper = UpdateMapper()
    events = []
    events += mapper.feed(update(Content.from_function_call(call_id="c1", name="get_weather", arguments="")), "a")
    events += mapper.feed(update(Content.from_function_call(call_id="c1", name="", arguments='{"loca')), "a")
    assert events == [], "a call must not be emitted while its arguments are still arriving"
    events += mapper.feed(update(Content.from_function_call(call_id="c1", name="", arguments='tion": "Oslo"}')), "a")
    events += mapper.feed(update(finish_reason="tool_calls"), "a")
    assert events == [ToolCall("a", "c1", "get_weather", {"location": "Oslo"})]
    result = Content.from_function_result(call_id="c1", result='{"location": "Oslo", "temperature_c": 3}')
    assert mapper.feed(update(result, role="tool"), "a") == [
        ToolResult("a", "c1", "get_weather", {"location": "Oslo", "temperature_c": 3}, False)
    ]


def test_parallel_calls_and_a_failed_result() -> None:
    mapper = UpdateMapper()
    mapper.feed(update(Content.from_function_call(call_id="x", name="get_weather", arguments='{"location":"A"}')), "r")
    mapper.feed(update(Content.from_function_call(call_id="y", name="get_weather", arguments="not json")), "r")
    failed = Content.from_function_result(call_id="y", result="Error: Function failed.", exception="boom")
    events = mapper.feed(update(failed, role="tool"), "r")
    assert events == [
        ToolCall("r", "x", "get_weather", {"location": "A"}),
        ToolCall("r", "y", "get_weather", "not json"),
        ToolResult("r", "y", "get_weather", "Error: Function failed.", True),
    ]


def test_text_flushes_pending_calls_and_empty_text_is_dropped() -> None:
    mapper = UpdateMapper()
    mapper.feed(update(Content.from_function_call(call_id="c", name="t", arguments={"k": 1})), "w")
    events = mapper.feed(update(Content.from_text(""), Content.from_text("Hi")), "w")
    assert events == [ToolCall("w", "c", "t", {"k": 1}), TextDelta("Hi", "w")]
    assert mapper.flush() == []


def test_usage_is_summed_across_model_calls_and_model_remembered() -> None:
    mapper = UpdateMapper()
    usage = {"input_token_count": 10, "output_token_count": 5}
    mapper.feed(update(Content.from_usage(usage), model="gpt-x-2025"), "a")
    mapper.feed(
        update(Content.from_usage({"input_token_count": 1, "output_token_count": 2, "total_token_count": 3})), "a"
    )
    done = mapper.done("openai", "configured-name")
    assert done.model == "gpt-x-2025"
    assert done.usage == {"input_tokens": 11, "output_tokens": 7, "total_tokens": 18}


def test_done_without_usage_says_none() -> None:
    done = UpdateMapper().done("openai", "m")
    assert (done.model, done.usage) == ("m", None)


def test_a_call_with_no_arguments_has_an_empty_object() -> None:
    """The contract: ``arguments`` is the parsed JSON object, so a call with
    none (``""`` on the wire, or only whitespace) has ``{}``, never ``""``."""
    for raw in ("", "  "):
        mapper = UpdateMapper()
        mapper.feed(update(Content.from_function_call(call_id="c", name="now", arguments=raw)), "a")
        assert mapper.flush() == [ToolCall("a", "c", "now", {})]


def call(call_id: str | None, name: str = "", arguments: object = "") -> Content:
    return Content.from_function_call(call_id=call_id, name=name, arguments=arguments)


def test_fragments_without_a_call_id_belong_to_the_last_call() -> None:
    mapper = UpdateMapper()
    mapper.feed(update(call(None, "ignored", "{}")), "a")  # nothing to attach it to
    mapper.feed(update(call("c1", "", '{"location":')), "a")
    mapper.feed(update(call(None, "get_weather", ' "Oslo"}')), "a")  # the name may come late, too
    assert mapper.flush() == [ToolCall("a", "c1", "get_weather", {"location": "Oslo"})]
    mapper.feed(update(call("c1", "get_weather", '{"location": "again"}')), "a")
    assert mapper.flush() == [], "a call already emitted is not emitted twice"
    result = Content.from_function_result(call_id="c1", result="[1, 2]")
    assert mapper.feed(update(result, role="tool"), "a") == [ToolResult("a", "c1", "get_weather", [1, 2], False)]


def test_arguments_that_are_not_json_stay_as_sent() -> None:
    mapper = UpdateMapper()
    mapper.feed(update(call("c", "t", '{"broken": ')), "a")
    mapper.feed(update(call("d", "t", "[1, 2]")), "a")
    assert mapper.flush() == [ToolCall("a", "c", "t", '{"broken": '), ToolCall("a", "d", "t", [1, 2])]


def test_a_result_with_no_known_call() -> None:
    result = Content.from_function_result(call_id=None, result="plain text")
    assert UpdateMapper().feed(update(result, role="tool"), "a") == [ToolResult("a", "", "", "plain text", False)]


def test_usage_totals_are_derived_when_the_service_leaves_them_out() -> None:
    mapper = UpdateMapper()
    mapper.feed(update(Content.from_usage({"input_token_count": 4})), "a")
    assert mapper.done("openai", "m").usage == {"input_tokens": 4, "total_tokens": 4}
    mapper = UpdateMapper()
    mapper.feed(update(Content.from_usage({"output_token_count": 6, "total_token_count": 99})), "a")
    assert mapper.done("openai", "m").usage == {"output_tokens": 6, "total_tokens": 6}
    mapper = UpdateMapper()
    mapper.feed(update(Content.from_usage({"total_token_count": 7, "input_token_count": "n/a"})), "a")
    assert mapper.done("openai", "m").usage == {"total_tokens": 7}


def test_a_blank_model_name_does_not_replace_the_known_one() -> None:
    mapper = UpdateMapper()
    mapper.feed(update(Content.from_text("a"), model="gpt-real"), "a")
    mapper.feed(update(Content.from_text("b"), model=""), "a")
    assert mapper.done("openai", "configured").model == "gpt-real"


def test_the_end_of_a_turn_emits_the_calls_made_in_it() -> None:
    mapper = UpdateMapper()
    assert mapper.feed(update(call("c", "t", '{"k": 1}')), "a") == []
    assert mapper.feed(update(finish_reason="stop"), "a") == [ToolCall("a", "c", "t", {"k": 1})]
