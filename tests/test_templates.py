"""Rendering: locale choice, money and dates per locale, HTML escaping, the sandbox."""

from __future__ import annotations

import pytest
from jinja2.exceptions import SecurityError

from tidings.errors import ConfigError
from tidings.templates import Templates, money, pick_locale

SOURCES = {
    "paid": {
        "en-US": {
            "title": "Paid {{ amount | money(currency) }}",
            "body": "{{ order_id }}",
            "html": "<p>{{ text }}</p>",
        },
        "zh-CN": {"title": "已支付 {{ amount | money(currency) }}", "body": "{{ order_id }}"},
    }
}


def test_money_per_locale() -> None:
    assert money("99.00", "CNY", "zh-CN") == "¥99.00"
    assert money("99.00", "USD", "en-US") == "$99.00"
    assert money("1234.5", "EUR", "de-DE") == "1.234,50\xa0€"


@pytest.mark.parametrize(
    ("wanted", "chosen"),
    [
        ("zh-CN", "zh-CN"),
        ("zh-TW", "zh-CN"),
        ("en-GB", "en-US"),
        ("fr-FR", "en-US"),
        (None, "en-US"),
    ],
)
def test_locale_fallback(wanted: str | None, chosen: str) -> None:
    assert pick_locale(SOURCES["paid"], wanted, "en-US") == chosen


def test_render_in_the_subscribers_locale() -> None:
    templates = Templates(SOURCES, "en-US")
    locale, fields = templates.render(
        "paid", "zh-CN", {"amount": "99.00", "currency": "CNY", "order_id": "o1"}
    )
    assert locale == "zh-CN"
    assert fields == {"title": "已支付 ¥99.00", "body": "o1"}


def test_html_is_escaped_text_is_not() -> None:
    templates = Templates(SOURCES, "en-US")
    _, fields = templates.render(
        "paid",
        "en-US",
        {"text": "<script>x</script>", "amount": "1", "currency": "USD", "order_id": "<b>"},
    )
    assert fields["html"] == "<p>&lt;script&gt;x&lt;/script&gt;</p>"
    assert fields["body"] == "<b>"


def test_sandbox_blocks_attribute_escapes() -> None:
    templates = Templates(
        {"evil": {"en-US": {"title": "{{ ''.__class__.__mro__ }}", "body": "x"}}}, "en-US"
    )
    with pytest.raises(SecurityError):
        templates.render("evil", "en-US", {})


def test_check_names_the_broken_variant() -> None:
    templates = Templates({"t": {"en-US": {"title": "{{ missing_field }}", "body": "x"}}}, "en-US")
    with pytest.raises(ConfigError) as caught:
        templates.check("t", {})
    assert caught.value.path == "templates.t.en-US"


def test_each_render_returns_its_own_fields() -> None:
    nested = {"push": {"en-US": {"title": "{{ order_id }}", "data": {"kind": "order", "n": 1}}}}
    templates = Templates(nested, "en-US")
    _, first = templates.render("push", "en-US", {"order_id": "o-1"})
    first["data"]["n"] = 99
    first["extra"] = True
    _, second = templates.render("push", "en-US", {"order_id": "o-2"})
    assert second == {"title": "o-2", "data": {"kind": "order", "n": 1}}


def test_jinja_globals_still_render() -> None:
    templates = Templates(
        {"t": {"en-US": {"body": "{% for i in range(3) %}{{ i }}{% endfor %}"}}}, "en-US"
    )
    assert templates.render("t", "en-US", {}) == ("en-US", {"body": "012"})
