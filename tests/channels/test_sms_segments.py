"""SMS segment counting: GSM-7 (with the extension table) and UCS-2 (with surrogate pairs)."""

from __future__ import annotations

import pytest

from tidings.channels.sms_segments import (
    GSM7_BASIC,
    GSM7_EXTENSION,
    Segments,
    count_segments,
    encoding_of,
    is_gsm7,
)


def test_basic_table_has_127_characters_and_excludes_escape() -> None:
    assert len(GSM7_BASIC) == 127  # 128 codes minus ESC
    assert "\x1b" not in GSM7_BASIC
    assert GSM7_BASIC.isdisjoint(GSM7_EXTENSION)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", Segments("GSM-7", 0, 1)),
        ("a" * 160, Segments("GSM-7", 160, 1)),
        ("a" * 161, Segments("GSM-7", 161, 2)),
        ("a" * 306, Segments("GSM-7", 306, 2)),
        ("a" * 307, Segments("GSM-7", 307, 3)),
        ("Ünïcödé? nö: ñ is GSM, ï is not", Segments("UCS-2", 31, 1)),
        ("€" * 80, Segments("GSM-7", 160, 1)),
        ("€" * 81, Segments("GSM-7", 162, 2)),
        ("订" * 70, Segments("UCS-2", 70, 1)),
        ("订" * 71, Segments("UCS-2", 71, 2)),
        ("订" * 134, Segments("UCS-2", 134, 2)),
        ("订" * 135, Segments("UCS-2", 135, 3)),
        ("😀" * 35, Segments("UCS-2", 70, 1)),
        ("😀" * 36, Segments("UCS-2", 72, 2)),
    ],
)
def test_counts(text: str, expected: Segments) -> None:
    assert count_segments(text) == expected


def test_extension_characters_count_two_septets() -> None:
    for ch in "^{}\\[~]|€\f":
        assert count_segments(ch).units == 2
    assert count_segments("price: 5€ [ok]").units == 17  # 14 characters, 3 escaped


def test_an_escape_pair_is_not_split_across_parts() -> None:
    # 152 plain septets, then "€" (2): it cannot fit the first 153-septet part
    text = "a" * 152 + "€" + "b" * 10
    assert count_segments(text) == Segments("GSM-7", 164, 2)
    text = "a" * 152 + "€" + "b" * 152  # 152 | 2+151 | 1
    assert count_segments(text).segments == 3


def test_a_surrogate_pair_is_not_split_across_parts() -> None:
    text = "订" * 66 + "😀" + "订" * 10  # the emoji would straddle unit 67
    assert count_segments(text) == Segments("UCS-2", 78, 2)
    text = "订" * 66 + "😀" + "订" * 66  # 66 | 2+65 | 1
    assert count_segments(text).segments == 3


def test_one_non_gsm_character_turns_the_whole_text_into_ucs2() -> None:
    text = "Your order has shipped " * 6 + "✓"
    assert encoding_of(text) == "UCS-2"
    assert count_segments(text).segments == 3  # 139 units
    assert is_gsm7("Your order has shipped")
    assert not is_gsm7("Order 订单 42")


def test_mixed_chinese_and_latin_order_message() -> None:
    text = "订单 ORD-20240501-0042 已支付 ¥1,299.00,预计 3 天内发货。"
    result = count_segments(text)
    assert result.encoding == "UCS-2"
    assert result.units == len(text)
    assert result.segments == 1
