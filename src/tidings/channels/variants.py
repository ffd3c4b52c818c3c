"""The pre-approved template a China provider sends by: a template's ``sms`` / ``wechat`` variant.

Domestic SMS carries only templates approved in advance (a code and its parameters), and a
WeChat subscribe message names a template and fills its keys. The strategy renders these
variants beside the locale's fields (``content["variants"]``, see :mod:`tidings.templates`);
a provider that needs one and finds none fails the delivery permanently: no retry brings it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tidings.channels.base import Message
from tidings.errors import PermanentProviderError


def variant(message: Message, key: str, provider: str) -> Mapping[str, Any]:
    """The rendered ``key`` variant of ``message``'s template; permanent error if it has none."""
    variants = message.content.get("variants") or {}
    found = variants.get(key) if isinstance(variants, Mapping) else None
    if not isinstance(found, Mapping):
        raise PermanentProviderError(
            f"{provider}: the template has no `{key}` variant (an approved template to send by)",
            code="no_template",
        )
    return found


def sms_template(message: Message, provider: str) -> tuple[str, dict[str, str]]:
    """``(template_code, params)`` of the template's ``sms`` variant, params in their order."""
    found = variant(message, "sms", provider)
    code = found.get("template_code")
    if not code:
        raise PermanentProviderError(
            f"{provider}: the `sms` variant names no template_code", code="no_template"
        )
    params = found.get("params") or {}
    names = found.get("param_names") or list(params)  # the config's order (see templates)
    return str(code), {str(name): str(params[name]) for name in names if name in params}


def mainland_number(phone: str) -> str:
    """An E.164 number as the domestic SMS APIs spell it: ``13800138000`` for +86, else the
    country code and number without ``+``."""
    digits = phone.lstrip("+")
    return digits[2:] if phone.startswith("+86") else digits
