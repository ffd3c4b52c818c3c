"""How many SMS segments a text costs: GSM-7 (160/153 septets) or UCS-2 (70/67 code units).

A text is sent as GSM-7 when every character is in the GSM 03.38 basic table or its
extension table (extension characters take two septets: ESC + the character); otherwise the
whole text goes as UCS-2, where each UTF-16 code unit counts — so an emoji outside the BMP
(a surrogate pair) takes two. A concatenated message loses room to the user data header
(153 septets / 67 units per part), and a part never splits an escape sequence or a
surrogate pair, which is why the count packs character by character rather than dividing.

>>> count_segments("Your order 42 has shipped")
Segments(encoding='GSM-7', units=25, segments=1)
>>> count_segments("订单已发货").encoding
'UCS-2'
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Encoding = Literal["GSM-7", "UCS-2"]

GSM7_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
"""The GSM 03.38 default alphabet (without the ESC code itself)."""

GSM7_EXTENSION = frozenset("\f^{}\\[~]|€")
"""Characters reached through ESC: each costs two septets."""

GSM7_SINGLE, GSM7_MULTI = 160, 153
UCS2_SINGLE, UCS2_MULTI = 70, 67


@dataclass(frozen=True, slots=True)
class Segments:
    """The cost of one text: its encoding, its length in septets/code units, its parts."""

    encoding: Encoding
    units: int
    segments: int


def is_gsm7(text: str) -> bool:
    """Whether every character of ``text`` can be sent in GSM-7."""
    return all(ch in GSM7_BASIC or ch in GSM7_EXTENSION for ch in text)


def char_units(ch: str, encoding: Encoding) -> int:
    """Septets (GSM-7) or UTF-16 code units (UCS-2) one character takes."""
    if encoding == "GSM-7":
        return 2 if ch in GSM7_EXTENSION else 1
    return 2 if ord(ch) > 0xFFFF else 1


def encoding_of(text: str) -> Encoding:
    """The encoding a carrier will use for ``text``."""
    return "GSM-7" if is_gsm7(text) else "UCS-2"


def count_segments(text: str) -> Segments:
    """Encoding, length and number of SMS parts ``text`` is sent as (at least one)."""
    encoding = encoding_of(text)
    sizes = [char_units(ch, encoding) for ch in text]
    units = sum(sizes)
    single, multi = (GSM7_SINGLE, GSM7_MULTI) if encoding == "GSM-7" else (UCS2_SINGLE, UCS2_MULTI)
    if units <= single:
        return Segments(encoding, units, 1)
    parts, used = 1, 0
    for size in sizes:
        if used + size > multi:  # an escape pair / surrogate pair moves whole to the next part
            parts, used = parts + 1, 0
        used += size
    return Segments(encoding, units, parts)
