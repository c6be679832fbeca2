"""Outside text on one log line: escaped, not dropped, so the line still
says what was sent."""

from __future__ import annotations

from streaming.logsafe import one_line


def test_each_unsafe_character_is_escaped_by_its_name_or_code() -> None:
    assert one_line("a\nb\rc\td") == "a\\nb\\rc\\td"
    assert one_line("\x00\x1b[2J\x7f\x85\x9f") == "\\x00\\x1b[2J\\x7f\\x85\\x9f"
    assert one_line("\u2028\u2029\ud800\udfff") == "\\u2028\\u2029\\ud800\\udfff"
    assert one_line("é ü 雪 \xa0 ~") == "é ü 雪 \xa0 ~", "printable text is left alone"


def test_only_text_over_the_limit_is_cut() -> None:
    assert one_line("x" * 10, limit=10) == "x" * 10
    assert one_line("x" * 11, limit=10) == "x" * 10 + "..."
    assert one_line(ValueError("\n" * 3), limit=2) == "\\n\\n...", "cut first, then escaped"
