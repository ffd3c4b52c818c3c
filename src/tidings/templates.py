"""Rendering per locale: a sandboxed Jinja2 environment with money and date filters.

Each template has one variant per locale (``en-US``, ``zh-CN`` …); the subscriber's locale is
matched exactly, then by language, then the default locale, then the first variant. Fields named
``html`` are autoescaped; every other field is plain text.
"""

from __future__ import annotations

import functools
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from babel.core import Locale, UnknownLocaleError
from babel.dates import format_datetime, get_timezone
from babel.numbers import format_currency, format_decimal
from jinja2 import Template, TemplateError, Undefined, pass_context
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment

from tidings.errors import ConfigError, raise_problems
from tidings.vocabulary import TEMPLATE_VARIANTS


@functools.lru_cache(maxsize=256)
def _babel_locale(tag: str) -> Locale:
    try:
        return Locale.parse(tag.replace("-", "_"))
    except (UnknownLocaleError, ValueError):
        return Locale.parse("en_US")


def money(amount: Any, currency: str = "USD", locale: str = "en-US") -> str:
    """``99.00`` + ``CNY`` → ``¥99.00`` in zh-CN, ``CN¥99.00`` in en-US."""
    return _money(str(amount), str(currency), locale)


@functools.lru_cache(maxsize=65536)
def _money(amount: str, currency: str, locale: str) -> str:
    # babel spends ~130 µs per call; shops repeat price points, so the cache pays
    try:
        value = Decimal(str(amount))
    except (InvalidOperation, ValueError):
        return str(amount)
    return format_currency(value, currency, locale=_babel_locale(locale))


def number(value: Any, locale: str = "en-US") -> str:
    """A decimal number in the locale's spelling."""
    try:
        return format_decimal(Decimal(str(value)), locale=_babel_locale(locale))
    except (InvalidOperation, ValueError):
        return str(value)


def date(value: Any, fmt: str = "medium", locale: str = "en-US", tz: str = "UTC") -> str:
    """An RFC 3339 string or epoch seconds as a date-time in the locale's spelling."""
    try:
        if isinstance(value, int | float):
            moment = datetime.fromtimestamp(value, UTC)
        else:
            moment = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return str(value)
    return format_datetime(moment, fmt, tzinfo=get_timezone(tz), locale=_babel_locale(locale))


@pass_context
def _money_filter(context: Context, amount: Any, currency: str = "USD") -> str:
    return money(amount, currency, context.get("locale", "en-US"))


@pass_context
def _number_filter(context: Context, value: Any) -> str:
    return number(value, context.get("locale", "en-US"))


@pass_context
def _date_filter(context: Context, value: Any, fmt: str = "medium") -> str:
    return date(value, fmt, context.get("locale", "en-US"), context.get("timezone") or "UTC")


class _Environment(ImmutableSandboxedEnvironment):
    pass


def _environment(undefined: type[Undefined]) -> _Environment:
    env = _Environment(undefined=undefined, autoescape=False, trim_blocks=True)
    env.filters.update(money=_money_filter, date=_date_filter, number=_number_filter)
    return env


class _CheckUndefined(Undefined):
    """What ``tidings check`` renders a missing field as: an error when printed or computed
    with (a typo), but false and empty when tested or looped over, as under ``serve`` — so
    ``{% if paid_at %}`` for an optional field passes check and renders alike in both."""

    __slots__ = ()
    __str__ = Undefined._fail_with_undefined_error
    __contains__ = Undefined._fail_with_undefined_error


_TEXT = _environment(Undefined)
_HTML = _environment(Undefined)
_HTML.autoescape = True
_STRICT_TEXT = _environment(_CheckUndefined)
_STRICT_HTML = _environment(_CheckUndefined)
_STRICT_HTML.autoescape = True


def pick_locale(available: Mapping[str, Any], wanted: str | None, default: str) -> str:
    """The best variant for ``wanted``: exact, same language, default, then the first."""
    if wanted and wanted in available:
        return wanted
    if wanted:
        language = wanted.split("-")[0].lower()
        for tag in available:
            if tag.split("-")[0].lower() == language:
                return tag
    if default in available:
        return default
    return next(iter(available))


_SEPARATOR = f"\x1e{secrets.token_hex(8)}\x1e"
"""Joins a variant's fields into one template: unguessable, so data cannot forge a split."""

Path = tuple[str | int, ...]


@dataclass(slots=True)
class _Bundle:
    """A variant compiled into one text and one HTML template (one render call each)."""

    skeleton: Any
    text: Template | None
    text_paths: list[Path]
    html: Template | None
    html_paths: list[Path]


def _leaves(value: Any, path: Path, out: list[tuple[Path, str]]) -> Any:
    """Collect string leaves with their paths; return the structure with placeholders."""
    if isinstance(value, str):
        out.append((path, value))
        return None
    if isinstance(value, Mapping):
        return {k: _leaves(v, (*path, str(k)), out) for k, v in value.items()}
    if isinstance(value, list):
        return [_leaves(v, (*path, i), out) for i, v in enumerate(value)]
    return value


def _fresh(skeleton: Any) -> Any:
    """A copy of a skeleton's dicts and lists (its other leaves are immutable scalars).

    ``copy.deepcopy`` did the same at several times the cost, twice per notification.
    """
    if isinstance(skeleton, dict):
        return {k: _fresh(v) for k, v in skeleton.items()}
    if isinstance(skeleton, list):
        return [_fresh(v) for v in skeleton]
    return skeleton


def _compile(env: _Environment, source: str) -> Template:
    """``env.from_string(source)`` with its globals flattened into one plain dict.

    Jinja layers a template's globals over the environment's in a ``ChainMap`` and copies it
    twice per render (into the context's variables and its key set); iterating a ChainMap was
    ~5 % of deciding. The environments' globals never change after start, so a flat copy
    renders the same.
    """
    template = env.from_string(source)
    template.globals = dict(template.globals)
    return template


def _put(target: Any, path: Path, value: str) -> None:
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value


class Templates:
    """Compiled templates: ``render(name, locale, context)`` → the rendered fields."""

    def __init__(
        self, templates: Mapping[str, Mapping[str, Mapping[str, Any]]], default_locale: str
    ) -> None:
        self.default_locale = default_locale
        self._sources = with_variants(templates)
        self._compiled: dict[tuple[str, bool], Template] = {}
        self._bundles: dict[tuple[str, str], _Bundle] = {}

    def _bundle(self, name: str, locale: str) -> _Bundle:
        bundle = self._bundles.get((name, locale))
        if bundle is None:
            leaves: list[tuple[Path, str]] = []
            skeleton = _leaves(self._sources[name][locale], (), leaves)
            html = [(p, src) for p, src in leaves if p and p[-1] == "html"]
            text = [(p, src) for p, src in leaves if not (p and p[-1] == "html")]
            bundle = _Bundle(
                skeleton,
                _compile(_TEXT, _SEPARATOR.join(src for _, src in text)) if text else None,
                [p for p, _ in text],
                _compile(_HTML, _SEPARATOR.join(src for _, src in html)) if html else None,
                [p for p, _ in html],
            )
            self._bundles[(name, locale)] = bundle
        return bundle

    def locales(self, name: str) -> list[str]:
        """The locales ``name`` has variants for."""
        return list(self._sources[name])

    def render(
        self, name: str, locale: str | None, context: Mapping[str, Any], *, strict: bool = False
    ) -> tuple[str, dict[str, Any]]:
        """Render every field of the best variant; returns ``(locale used, fields)``."""
        variants = self._sources[name]
        used = pick_locale(variants, locale, self.default_locale)
        scope = {**context, "locale": used}
        if strict:
            return used, self._render_value(variants[used], scope, strict, (name, used))
        bundle = self._bundle(name, used)
        fields = _fresh(bundle.skeleton)
        for template, paths in ((bundle.text, bundle.text_paths), (bundle.html, bundle.html_paths)):
            if template is None:
                continue
            parts = template.render(scope).split(_SEPARATOR)
            if len(parts) != len(paths):  # a template printed the separator: render one by one
                return used, self._render_value(variants[used], scope, strict, (name, used))
            for path, part in zip(paths, parts, strict=True):
                _put(fields, path, part)
        return used, fields

    def _render_value(
        self, value: Any, context: Mapping[str, Any], strict: bool, path: tuple[str, ...]
    ) -> Any:
        if isinstance(value, str):
            html = path[-1] == "html"
            key = ("/".join(path), strict)
            template = self._compiled.get(key)
            if template is None:
                env = (
                    (_STRICT_HTML if html else _STRICT_TEXT)
                    if strict
                    else (_HTML if html else _TEXT)
                )
                template = env.from_string(value)
                self._compiled[key] = template
            return template.render(context)
        if isinstance(value, Mapping):
            return {
                k: self._render_value(v, context, strict, (*path, str(k))) for k, v in value.items()
            }
        if isinstance(value, list):
            return [self._render_value(v, context, strict, path) for v in value]
        return value

    def check(self, name: str, context: Mapping[str, Any]) -> None:
        """Render every locale of ``name`` strictly; :class:`ConfigError` names each culprit."""
        problems: list[ConfigError] = []
        for locale in self._sources[name]:
            try:
                self.render(name, locale, context, strict=True)
            except TemplateError as exc:
                problems.append(ConfigError(str(exc), f"templates.{name}.{locale}"))
        raise_problems(problems)


def _ordered(key: str, variant: Any) -> Any:
    """The ``sms`` variant with its params' names in config order (``param_names``): Tencent's
    ``TemplateParamSet`` is positional, and stored content (JSON) may reorder the keys."""
    params = variant.get("params") if key == "sms" and isinstance(variant, Mapping) else None
    return {**variant, "param_names": list(params)} if isinstance(params, Mapping) else variant


def with_variants(
    templates: Mapping[str, Mapping[str, Mapping[str, Any]]],
) -> dict[str, dict[str, Mapping[str, Any]]]:
    """Each template's locales, the ``sms``/``wechat`` variants beside them (SPEC §12) folded
    into every locale as its ``variants`` field: they render with the locale's fields (the
    approved template's parameters in the buyer's locale) and providers read
    ``content["variants"]``; a locale is never picked among them.
    """
    out: dict[str, dict[str, Mapping[str, Any]]] = {}
    for name, template in templates.items():
        variants = {k: _ordered(k, v) for k, v in template.items() if k in TEMPLATE_VARIANTS}
        locales = {k: v for k, v in template.items() if k not in TEMPLATE_VARIANTS}
        out[name] = (
            {tag: {**fields, "variants": variants} for tag, fields in locales.items()}
            if variants
            else locales
        )
    return out
