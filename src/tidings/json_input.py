"""JSON from outside (HTTP bodies, AMQP messages), decoded so that nothing downstream chokes.

Python's :mod:`json` takes more than RFC 8259 allows and more than the stores can keep:
``NaN`` and ``Infinity``, ``1e999`` (a float that overflows to infinity), lone UTF-16
surrogates (``"\\ud800"``, or their raw bytes), ``\\u0000`` (PostgreSQL text refuses NUL),
integers of more than 4,300 digits (a ``ValueError``) and nesting deep enough for a
``RecursionError``. :func:`decode` refuses all of them as :class:`~tidings.errors.InvalidInput`
(status 400) naming where, as a JSON pointer (RFC 6901), in the spirit of I-JSON (RFC 7493).

The checks cost next to nothing on ordinary input: the scanner's hooks run only for floats
and the non-numbers, the walk that names a bad string runs only when a substring search of
the text found an escape that can make one (``\\ud…``, ``\\u0000``), and nesting is looked at
only when the text has more than :data:`MAX_DEPTH` brackets (a batch: a level at a time, with
C-level iteration).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from itertools import chain, compress
from typing import Any

from tidings.errors import InvalidInput

MAX_DEPTH = 64
"""The deepest nesting of arrays and objects a document may have (a top-level object is 1)."""

MAX_DIGITS = sys.get_int_max_str_digits() or 4300
"""The longest integer literal Python converts (``sys.int_max_str_digits``)."""

_IS_CONTAINER = frozenset((dict, list)).__contains__
_SUSPECT_ESCAPES = ("\\ud", "\\uD", "\\u0000")
"""Escapes that can decode to a lone surrogate or a NUL; raw ones are refused by UTF-8 or by
the scanner (a raw control character in a string is not JSON)."""


class _NotFinite(ValueError):
    """Raised by the scanner's hooks for ``NaN``, ``Infinity`` and overflowing floats."""


def _refuse_constant(text: str) -> Any:
    raise _NotFinite(text)


def _finite_float(text: str) -> float:
    value = float(text)
    if value - value != 0:  # inf - inf is nan; nan != 0
        raise _NotFinite(text)
    return value


_DECODER = json.JSONDecoder(parse_constant=_refuse_constant, parse_float=_finite_float)


class _Marker:
    """Where a refused number was, once the text is decoded again to name its place."""

    __slots__ = ("literal",)

    def __init__(self, literal: str) -> None:
        self.literal = literal


def _mark_float(text: str) -> Any:
    value = float(text)
    return value if value - value == 0 else _Marker(text)


def _mark_int(text: str) -> Any:
    return _Marker(text) if len(text.lstrip("-")) > MAX_DIGITS else int(text)


_LOCATOR = json.JSONDecoder(parse_constant=_Marker, parse_float=_mark_float, parse_int=_mark_int)


def decode(body: bytes | str, prefix: str = "") -> Any:
    """``body`` as JSON, refusing what RFC 8259 or the stores cannot take (400, naming where).

    >>> decode(b'{"a": [1, 2]}')
    {'a': [1, 2]}
    """
    text = _text(body)
    value = _loads(text)
    refusal = check(value, text, prefix)
    if refusal is not None:
        raise refusal
    return value


def decode_lax(body: bytes | str) -> Any:
    """``body`` as JSON, refusing only what cannot be decoded at all (syntax, numbers, depth).

    Strings are not checked: :func:`check` does that, so a batch can refuse one item of it.
    """
    return _loads(_text(body))


def _text(body: bytes | str) -> str:
    if isinstance(body, str):
        return body
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidInput(
            f"the body is not UTF-8 (byte {exc.start}): JSON text must be UTF-8", "/", status=400
        ) from exc


def _loads(text: str) -> Any:
    try:
        return _DECODER.decode(text)
    except RecursionError as exc:
        raise _too_deep("") from exc
    except json.JSONDecodeError as exc:
        raise InvalidInput(
            f"the body is not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})",
            "/",
            status=400,
        ) from exc
    except ValueError as exc:  # _NotFinite, or an integer past MAX_DIGITS
        raise _bad_number(text) from exc


def _bad_number(text: str) -> InvalidInput:
    """The refusal of the first number Python cannot hold, named by where it is."""
    try:
        located = _LOCATOR.decode(text)
    except ValueError:  # a syntax error after the number: the scanner stopped there first
        located = None
    for pointer, value in _leaves(located, ""):
        if isinstance(value, _Marker):
            if value.literal.lstrip("-").isdigit():
                detail = f"an integer has more than {MAX_DIGITS} digits"
            else:
                detail = f"{value.literal[:20]} is not a finite JSON number"
            return InvalidInput(detail, pointer or "/", status=400)
    return InvalidInput("the body holds a number that cannot be read", "/", status=400)


def decode_batch(body: bytes | str) -> tuple[Any, dict[int, InvalidInput]]:
    """``body`` as JSON, with the elements of a top-level array checked one by one.

    Returns the value and, by index, the refusal of each element that :func:`decode` would
    refuse: a batch refuses its bad items and accepts the rest. Anything that is not an array
    is checked whole, as :func:`decode` does.
    """
    text = _text(body)
    value = _loads(text)
    if value.__class__ is not list:
        refusal = check(value, text)
        if refusal is not None:
            raise refusal
        return value, {}
    return value, check_items(value, text)


def check(value: Any, text: str | None = None, prefix: str = "") -> InvalidInput | None:
    """The refusal of ``value`` (decoded JSON) if it nests too deep or holds bad text, else None.

    ``text`` is the JSON it was decoded from, when known: with few brackets in it the nesting
    needs no look, and without a suspect escape in it the strings need no walk.
    """
    if text is None:
        return _refusal(value, prefix, deep=True, strings=True)
    deep = text.count("{") + text.count("[") > MAX_DEPTH
    return _refusal(value, prefix, deep=deep, strings=_suspect(text))


def check_items(items: list[Any], text: str, prefix: str = "") -> dict[int, InvalidInput]:
    """The refusal of each element of ``items`` (a decoded batch) that :func:`check` refuses."""
    strings = _suspect(text)
    if not strings and _shallow(items, MAX_DEPTH + 1):
        return {}
    refused: dict[int, InvalidInput] = {}
    for index, item in enumerate(items):
        refusal = _refusal(item, f"{prefix}/{index}", deep=True, strings=strings)
        if refusal is not None:
            refused[index] = refusal
    return refused


def _suspect(text: str) -> bool:
    # one memchr for the backslash first: most bodies have no escape at all, and the
    # three-character searches cost far more over a large batch
    return "\\" in text and any(escape in text for escape in _SUSPECT_ESCAPES)


def _refusal(value: Any, prefix: str, *, deep: bool, strings: bool) -> InvalidInput | None:
    if deep and (value.__class__ is dict or value.__class__ is list) and not _shallow(value):
        return _too_deep(prefix, value)
    if strings:
        for pointer, string, is_key in _strings(value, prefix):
            reason = _unstorable(string)
            if reason is not None:
                reason = f"an object key: {reason}" if is_key else reason
                return InvalidInput(reason, pointer or "/", status=400)
    return None


def _shallow(value: dict[str, Any] | list[Any], limit: int = MAX_DEPTH) -> bool:
    """Whether ``value`` nests at most ``limit`` levels (iterated a level at a time, in C)."""
    level: list[Any] = [value]
    for _ in range(limit):
        children = list(
            chain.from_iterable(c.values() if c.__class__ is dict else c for c in level)
        )
        level = list(compress(children, map(_IS_CONTAINER, map(type, children))))
        if not level:
            return True
    return False


def _too_deep(prefix: str, value: Any = None) -> InvalidInput:
    pointer = prefix
    if value is not None:
        pointer = next(_deepest(value, prefix, MAX_DEPTH), prefix)
    return InvalidInput(
        f"JSON nested deeper than {MAX_DEPTH} levels is not accepted", pointer or "/", status=400
    )


def _deepest(value: Any, pointer: str, budget: int) -> Iterator[str]:
    """The pointer of the first container past ``budget`` levels below ``value``."""
    if budget == 0:
        yield pointer
        return
    pairs = value.items() if value.__class__ is dict else enumerate(value)
    for key, child in pairs:
        if child.__class__ is dict or child.__class__ is list:
            yield from _deepest(child, f"{pointer}/{_segment(key)}", budget - 1)


def _strings(value: Any, pointer: str) -> Iterator[tuple[str, str, bool]]:
    """Every string of ``value`` with its JSON pointer, and whether it is an object's key."""
    stack = [(pointer, value)]
    while stack:
        where, node = stack.pop()
        if node.__class__ is str:
            yield where, node, False
        elif node.__class__ is dict:
            for key, child in node.items():
                member = f"{where}/{_segment(key)}"
                yield member, key, True
                stack.append((member, child))
        elif node.__class__ is list:
            stack.extend((f"{where}/{i}", child) for i, child in enumerate(node))


def _leaves(value: Any, pointer: str) -> Iterator[tuple[str, Any]]:
    """Every scalar of ``value`` with its JSON pointer."""
    stack = [(pointer, value)]
    while stack:
        where, node = stack.pop()
        if node.__class__ is dict:
            stack.extend((f"{where}/{_segment(k)}", v) for k, v in node.items())
        elif node.__class__ is list:
            stack.extend((f"{where}/{i}", v) for i, v in enumerate(node))
        else:
            yield where, node


def is_text(string: str) -> bool:
    """Whether ``string`` is text every store keeps: Unicode (no lone surrogate), no NUL."""
    return _unstorable(string) is None


def _unstorable(string: str) -> str | None:
    """Why ``string`` cannot be accepted (a NUL, a lone surrogate), or None."""
    if "\x00" in string:
        return "text may not contain NUL (U+0000)"
    try:
        string.encode("utf-8")
    except UnicodeEncodeError as exc:
        code = ord(string[exc.start])
        return f"text holds a lone UTF-16 surrogate (\\u{code:04x}): it is not Unicode text"
    return None


def _segment(key: object) -> str:
    """A JSON pointer segment (RFC 6901), printable even where the key itself is bad."""
    text = str(key).replace("~", "~0").replace("/", "~1").replace("\x00", "\\u0000")
    if not _encodable(text):
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
