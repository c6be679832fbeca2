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


def call(call_id: str, name: str = "get_weather", arguments: str | dict = "", occurrence: str | None = None) -> Content:
    return Content.from_function_call(call_id=call_id, name=name, arguments=arguments, id=occurrence)


def result(call_id: str, value: str, occurrence: str | None = None) -> Content:
    return Content.from_function_result(call_id=call_id, result=value, id=occurrence)


def test_ids_reused_across_steps_pair_each_result_with_its_own_call() -> None:
    """As the framework streams a server that numbers calls per response:
    each step's call_0 is a new occurrence (its own Content.id)."""
    mapper = UpdateMapper()
    events = []
    for step, city in enumerate(["Seattle", "Paris"]):
        events += mapper.feed(
            update(call("call_0", arguments=f'{{"location":"{city}"}}', occurrence=f"af-{step}")), "a"
        )
        events += mapper.feed(update(finish_reason="tool_calls"), "a")
        events += mapper.feed(update(result("call_0", city, occurrence=f"af-{step}"), role="tool"), "a")
    assert events == [
        ToolCall("a", "call_0", "get_weather", {"location": "Seattle"}),
        ToolResult("a", "call_0", "get_weather", "Seattle", False),
        ToolCall("a", "call-app-1", "get_weather", {"location": "Paris"}),
        ToolResult("a", "call-app-1", "get_weather", "Paris", False),
    ]


def test_ids_reused_without_occurrence_ids_still_make_new_calls_after_a_result() -> None:
    mapper = UpdateMapper()
    events = []
    for city in ["Seattle", "Paris"]:
        events += mapper.feed(update(call("call_0", arguments={"location": city})), "a")
        events += mapper.feed(update(result("call_0", city), role="tool"), "a")
    assert [(e.call_id, type(e).__name__) for e in events] == [
        ("call_0", "ToolCall"),
        ("call_0", "ToolResult"),
        ("call-app-1", "ToolCall"),
        ("call-app-1", "ToolResult"),
    ]


def test_empty_ids_get_app_ids_and_the_framework_filled_in_id_pairs_the_result() -> None:
    """No model id: the streamed call has call_id "" and the framework's
    result uses its occurrence id as call_id."""
    mapper = UpdateMapper()
    events = mapper.feed(
        update(call("", arguments="{}", occurrence="af-x"), call("", "t", "{}", occurrence="af-y")), "a"
    )
    events += mapper.feed(update(result("af-y", "Y", occurrence="af-y"), result("af-x", "X", occurrence="af-x")), "a")
    events += mapper.feed(update(result("af-x", "X", occurrence="af-x")), "a")  # the same result again: once only
    assert events == [
        ToolCall("a", "call-app-1", "get_weather", {}),
        ToolCall("a", "call-app-2", "t", {}),
        ToolResult("a", "call-app-2", "t", "Y", False),
        ToolResult("a", "call-app-1", "get_weather", "X", False),
    ]


def test_a_call_repeated_while_it_waits_for_its_result_is_not_a_new_call() -> None:
    """The framework repeats a call it hands back to the caller (a
    declaration-only tool) in one more update, arguments None."""
    mapper = UpdateMapper()
    events = mapper.feed(update(call("c1", "client_tool", '{"a":1}', occurrence="af-1")), "a")
    events += mapper.feed(update(finish_reason="tool_calls"), "a")
    events += mapper.feed(update(Content.from_function_call(call_id="c1", name="client_tool", id="af-1")), "a")
    events += mapper.flush()
    assert events == [ToolCall("a", "c1", "client_tool", {"a": 1})]


def test_a_result_naming_no_known_call_goes_to_the_oldest_waiting_call() -> None:
    mapper = UpdateMapper()
    events = mapper.feed(update(call("m1", arguments="{}"), call("m2", arguments="{}")), "a")
    events += mapper.feed(update(result("unknown", "first")), "a")
    assert [e.call_id for e in events] == ["m1", "m2", "m1"]


def test_content_filter_finish_is_an_error_and_length_is_kept_for_done() -> None:
    mapper = UpdateMapper()
    assert mapper.feed(update(Content.from_text("Part")), "a") == [TextDelta("Part", "a")]
    assert mapper.done("p", "m").finish_reason == "stop"
    mapper.feed(update(call("c", arguments='{"loc'), finish_reason="length"), "a")
    assert mapper.done("p", "m").finish_reason == "stop", "a cut tool call fails; the answer is not cut"
    mapper.feed(update(Content.from_text("More")), "a")
    mapper.feed(update(finish_reason="length"), "a")
    assert mapper.done("p", "m").finish_reason == "length"
    (error,) = mapper.feed(update(finish_reason="content_filter"), "a")
    assert error.terminal and error.code == "content_filtered" and "content filter" in error.message


def test_calls_with_no_id_at_all_are_told_apart_by_their_names() -> None:
    """Neither the framework nor the model named them: each fragment with a
    name starts a call, the ones after it continue it."""
    mapper = UpdateMapper()
    events = mapper.feed(update(call("", "a", '{"x":'), call("", "", "1}")), "w")
    events += mapper.feed(update(finish_reason="tool_calls"), "w")
    events += mapper.feed(update(result("", "ra")), "w")
    events += mapper.feed(update(call("", "b", "{}"), call("", "c", "{")), "w")
    events += mapper.feed(update(call("", "", "}")), "w")
    events += mapper.feed(update(result("", "rb"), result("", "rc")), "w")
    assert events == [
        ToolCall("w", "call-app-1", "a", {"x": 1}),
        ToolResult("w", "call-app-1", "a", "ra", False),
        ToolCall("w", "call-app-2", "b", {}),
        ToolCall("w", "call-app-3", "c", {}),
        ToolResult("w", "call-app-2", "b", "rb", False),
        ToolResult("w", "call-app-3", "c", "rc", False),
    ]


def test_a_call_with_no_arguments_has_an_empty_object() -> None:
    """The contract: ``arguments`` is the parsed JSON object, so a call with
    none (``""`` on the wire, or only whitespace) has ``{}``, never ``""``."""
    for raw in ("", "  "):
        mapper = UpdateMapper()
        mapper.feed(update(Content.from_function_call(call_id="c", name="now", arguments=raw)), "a")
        assert mapper.flush() == [ToolCall("a", "c", "now", {})]


def fragment(call_id: str | None, name: str = "", arguments: object = "") -> Content:
    return Content.from_function_call(call_id=call_id, name=name, arguments=arguments)


def test_fragments_without_a_call_id_belong_to_the_last_call() -> None:
    mapper = UpdateMapper()
    mapper.feed(update(fragment(None, "first", "{}")), "a")  # no call before it: a call with an id the app makes
    mapper.feed(update(fragment("c1", "", '{"location":')), "a")
    mapper.feed(update(fragment(None, "get_weather", ' "Oslo"}')), "a")  # the name may come late, too
    assert mapper.flush() == [
        ToolCall("a", "call-app-1", "first", {}),
        ToolCall("a", "c1", "get_weather", {"location": "Oslo"}),
    ]
    mapper.feed(update(fragment("c1", "get_weather", '{"location": "again"}')), "a")
    assert mapper.flush() == [], "a call already emitted is not emitted twice"
    result = Content.from_function_result(call_id="c1", result="[1, 2]")
    assert mapper.feed(update(result, role="tool"), "a") == [ToolResult("a", "c1", "get_weather", [1, 2], False)]


def test_arguments_that_are_not_json_stay_as_sent() -> None:
    mapper = UpdateMapper()
    mapper.feed(update(fragment("c", "t", '{"broken": ')), "a")
    mapper.feed(update(fragment("d", "t", "[1, 2]")), "a")
    assert mapper.flush() == [ToolCall("a", "c", "t", '{"broken": '), ToolCall("a", "d", "t", [1, 2])]


def test_a_result_with_no_known_call_still_gets_an_id() -> None:
    """Ids are never empty in a stream, even for a result no call announced."""
    orphan = Content.from_function_result(call_id=None, result="plain text")
    assert UpdateMapper().feed(update(orphan, role="tool"), "a") == [
        ToolResult("a", "call-app-1", "", "plain text", False)
    ]


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
    assert mapper.feed(update(fragment("c", "t", '{"k": 1}')), "a") == []
    assert mapper.feed(update(finish_reason="stop"), "a") == [ToolCall("a", "c", "t", {"k": 1})]


def test_a_result_for_a_call_never_seen_keeps_the_model_s_id() -> None:
    orphan = Content.from_function_result(call_id="call_zz", result="plain text")
    assert UpdateMapper().feed(update(orphan, role="tool"), "a") == [
        ToolResult("a", "call_zz", "", "plain text", False)
    ]


def test_text_in_the_same_update_as_a_call_or_the_finish_is_kept() -> None:
    mapper = UpdateMapper()
    looking, up = Content.from_text("Looking"), Content.from_text(" up")
    events = mapper.feed(update(looking, call("c1", arguments="{}"), up), "a")
    assert events == [TextDelta("Looking", "a"), ToolCall("a", "c1", "get_weather", {}), TextDelta(" up", "a")]
    assert mapper.feed(update(Content.from_text("Done."), finish_reason="stop"), "a") == [TextDelta("Done.", "a")]


def test_an_answer_cut_at_the_length_limit_after_a_tool_round_is_reported() -> None:
    mapper = UpdateMapper()
    mapper.feed(update(call("c1", arguments='{"location": "Oslo"}'), finish_reason="tool_calls"), "a")
    mapper.feed(update(result("c1", '{"temperature_c": 3}'), role="tool"), "a")
    mapper.feed(update(Content.from_text("Oslo is"), finish_reason="length"), "a")
    assert mapper.done("openai", "m").finish_reason == "length"


def test_a_call_without_a_model_id_gets_one_of_the_app_s() -> None:
    """The framework fills a missing call id in with the content's own id:
    that one is not the model's, so the client is shown an app id."""
    first = call("fw-1", arguments="{}", occurrence="fw-1")
    second = call("fw-2", arguments="{}", occurrence="fw-2")
    mapper = UpdateMapper()
    mapper.feed(update(first, second), "a")
    assert [event.call_id for event in mapper.flush()] == ["call-app-1", "call-app-2"]


def test_a_result_without_the_call_s_occurrence_id_is_paired_by_the_model_s_id_or_the_one_shown() -> None:
    """A result that does not carry its call's occurrence id (a result the
    framework did not tag, or one a client hands back) is paired by the
    model's id for the call, or by the id the client was shown, not by order."""
    mapper = UpdateMapper()
    events = mapper.feed(update(call("m1", arguments="{}", occurrence="af-1")), "a")
    events += mapper.feed(update(call("m1", arguments="{}", occurrence="af-2")), "a")  # the model's id again
    events += mapper.feed(update(call("m3", arguments="{}", occurrence="af-3")), "a")
    events += mapper.feed(update(finish_reason="tool_calls"), "a")
    events += mapper.feed(update(result("m3", "third"), role="tool"), "a")
    events += mapper.feed(update(result("call-app-1", "second", occurrence="af-other"), role="tool"), "a")
    events += mapper.feed(update(result("m1", "first"), role="tool"), "a")
    assert [(type(e).__name__, e.call_id, getattr(e, "result", None)) for e in events] == [
        ("ToolCall", "m1", None),
        ("ToolCall", "call-app-1", None),
        ("ToolCall", "m3", None),
        ("ToolResult", "m3", "third"),
        ("ToolResult", "call-app-1", "second"),
        ("ToolResult", "m1", "first"),
    ]


def test_a_call_keeps_the_first_name_and_model_id_it_was_given_as_the_framework_does() -> None:
    """The framework merges a call's fragments keeping the first name and
    call id (``self.name or other.name``) and runs that tool: the event must
    name the same tool and id, whatever later fragments repeat."""
    mapper = UpdateMapper()
    mapper.feed(update(call("m1", "get_weather", '{"location":', occurrence="af-1")), "a")
    mapper.feed(update(call("", "", ' "Oslo"', occurrence="af-1")), "a")
    mapper.feed(update(call("m9", "other_tool", "}", occurrence="af-1")), "a")
    assert mapper.feed(update(finish_reason="tool_calls"), "a") == [
        ToolCall("a", "m1", "get_weather", {"location": "Oslo"})
    ]


def test_an_empty_occurrence_id_counts_as_none() -> None:
    mapper = UpdateMapper()
    mapper.feed(update(call("m1", arguments="{}", occurrence=""), call("m2", "t", "{}", occurrence="")), "a")
    assert mapper.flush() == [ToolCall("a", "m1", "get_weather", {}), ToolCall("a", "m2", "t", {})]
