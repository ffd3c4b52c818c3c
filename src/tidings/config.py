"""The configuration: one typed model loaded from YAML (SPEC §4).

Loading order: the YAML file (``--config``, ``TIDINGS_CONFIG``, ``./tidings.yaml``, else the
built-in e-commerce pack), ``${ENV}`` / ``${ENV:-default}`` interpolation in every string,
then the env overrides of SPEC §1 (``TIDINGS_DATABASE_URL`` …). Errors are
:class:`~tidings.errors.ConfigError` naming the key path (``rules[2].channels[0]``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from tidings.durations import Duration
from tidings.errors import ConfigError, ConfigProblems, raise_problems
from tidings.vocabulary import TEMPLATE_VARIANTS, Channel, Priority

Scope = Literal["events", "read", "pii", "tokens", "admin"]
SCOPES: tuple[Scope, ...] = ("events", "read", "pii", "tokens", "admin")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class RetrySettings(_Model):
    """Retry budget: ``attempts`` in all, exponential ``backoff`` with full jitter."""

    attempts: int = Field(8, ge=1, le=100)
    backoff: Duration = 1.0
    max_backoff: Duration = 3600.0


class DeliverySettings(_Model):
    """Global delivery tuning; any provider entry may override each key."""

    retry: RetrySettings = RetrySettings()
    timeout: Duration = 10.0
    concurrency: int = Field(256, ge=1)
    """Deliveries in flight per process."""


class ProviderSettings(BaseModel):
    """One provider entry of a channel list; provider-specific keys stay in ``options``."""

    model_config = ConfigDict(extra="allow")

    kind: str
    name: str | None = None
    retry: RetrySettings | None = None
    timeout: Duration | None = None
    concurrency: int | None = Field(None, ge=1)
    """Calls in flight to this provider at once."""
    rate_limit: float | None = Field(None, gt=0)
    """Calls per second to this provider."""

    @property
    def options(self) -> dict[str, Any]:
        """The provider-specific keys (``host``, ``base_url``, ``team_id`` …)."""
        return dict(self.model_extra or {})

    def option(self, key: str, default: Any = None) -> Any:
        """One provider-specific key, or ``default``."""
        return (self.model_extra or {}).get(key, default)


class CapSettings(_Model):
    """At most ``count`` notifications of a category per subscriber per ``per``."""

    count: int = Field(ge=1)
    per: Duration


class CategorySettings(_Model):
    """A notification category (``order_updates``, ``marketing`` …)."""

    description: str = ""
    required: bool = False
    """Cannot be opted out of; ignores quiet hours."""
    quiet_hours: bool = False
    """Deferred during the subscriber's quiet hours."""
    cap: CapSettings | None = None


class DigestSettings(_Model):
    """Collect events per recipient and rule for ``window``; at most ``max`` per digest."""

    window: Duration
    max: int | None = Field(None, ge=1)


class DedupSettings(_Model):
    """What makes two events one notice: ``by: [subject, type]`` (``data.<field>`` too)."""

    by: list[str] = Field(min_length=1)

    @field_validator("by")
    @classmethod
    def _known_parts(cls, value: list[str]) -> list[str]:
        for part in value:
            if part not in ("subject", "type") and not part.startswith("data."):
                raise ValueError(f"dedup by {part!r}: use subject, type or data.<field>")
        return value


class RuleSettings(_Model):
    """Who hears about which event, how and when."""

    id: str = Field(pattern=r"^[A-Za-z0-9_.:-]+$")
    on: str
    to: str = "buyer"
    """``buyer``/``seller``/… resolves ``data.<to>_id``; ``data.<field>`` names a field."""
    category: str = "order_updates"
    priority: Priority = "normal"
    channels: list[Channel] = Field(min_length=1)
    fallback: list[Channel] = []
    fallback_after: Duration | None = None
    template: str
    delay: Duration | None = None
    cancel_on: list[str] = []
    digest: DigestSettings | None = None
    ttl: Duration | None = None
    when: dict[str, Any] = {}
    """Equality conditions on ``data`` fields (``{payment_method: card}``)."""
    dedup: Literal["event"] | DedupSettings | None = None
    """One notice per ``event`` (× rule × recipient), or per ``{by: [...]}``; unset: by
    ``[subject, type]`` for the order life cycle's events, else per event."""
    description: str = ""

    @field_validator("on", mode="before")
    @classmethod
    def _on_is_a_string(cls, value: Any) -> Any:
        if value is True:  # a YAML 1.1 reader made a bare key `on` into true
            raise ValueError("`on` must be an event type string")
        return value


class ApiKeySettings(_Model):
    """An API key and its scopes."""

    key: str
    scopes: list[Scope] = ["admin"]
    origin: str = Field("", exclude=True)
    """Where the key was named, for errors that must not show it (``TIDINGS_API_KEYS[0]``)."""


_ORIGIN = re.compile(r"https?://([A-Za-z0-9.-]+|\[[0-9A-Fa-f:]+\])(:\d{1,5})?")


class ApiSettings(_Model):
    """HTTP API limits."""

    rate_limit: float | None = Field(None, gt=0)
    """Requests per second per API key (``429`` with ``Retry-After`` past it); off if unset."""
    burst: int | None = Field(None, ge=1)
    cors_origins: list[str] = []
    """Origins (``https://shop.example``) that may call the inbox routes and embed the
    widget from their pages; the admin API never answers cross-origin requests."""

    @field_validator("cors_origins")
    @classmethod
    def _origins(cls, value: list[str]) -> list[str]:
        for origin in value:
            if not _ORIGIN.fullmatch(origin.lower()):
                raise ValueError(f"{origin!r} is not an origin (scheme://host[:port], no path)")
        return [origin.lower() for origin in value]


class IntakeSettings(_Model):
    """Event intake limits (SPEC §2 backpressure)."""

    max_backlog: int = Field(10_000, ge=1)
    """Accepted-but-undecided events (all processes) at which ``POST /v1/events`` answers
    ``503`` with ``Retry-After`` and stores nothing, until the decisions catch up."""


class InboxSettings(_Model):
    """The subscriber-facing inbox."""

    secret: str | None = None
    """HS256 secret for inbox JWTs; generated and stored if absent."""
    max_ttl: Duration = 86400.0
    """The longest life of an inbox token: minting caps at it, and a longer-lived token
    (``exp - iat``, or ``exp`` from now without ``iat``) is refused."""
    max_streams: int = Field(5, ge=1)
    """Live streams (``/v1/inbox/stream``) open at once per subscriber, counted across the
    processes of one machine (per API process in scale-out); past it ``429``."""


TemplateVariant = dict[str, Any]
"""Template fields for one locale: ``title``, ``body`` and optional ``subject``, ``html`` …"""


class Settings(_Model):
    """The whole configuration."""

    database: str = "sqlite:///./tidings.db"
    broker: str = "embedded"
    default_locale: str = "en-US"
    api_keys: list[ApiKeySettings] = []
    api: ApiSettings = ApiSettings()
    intake: IntakeSettings = IntakeSettings()
    inbox: InboxSettings = InboxSettings()
    encryption_key: str | None = None
    categories: dict[str, CategorySettings] = {}
    providers: dict[Channel, list[ProviderSettings]] = {}
    rules: list[RuleSettings] = []
    templates: dict[str, dict[str, TemplateVariant]] = {}
    delivery: DeliverySettings = DeliverySettings()
    source: str = Field("", exclude=True)
    """Where this config came from (a path or ``built-in``)."""

    @field_validator("broker")
    @classmethod
    def _broker_scheme(cls, value: str) -> str:
        if value != "embedded" and not value.startswith(("amqp://", "amqps://")):
            raise ValueError("broker must be `embedded` or an amqp:// URL")
        return value

    @field_validator("database")
    @classmethod
    def _database_scheme(cls, value: str) -> str:
        if not value.startswith(("sqlite://", "postgresql://", "postgres://")):
            raise ValueError("database must be a sqlite:///path or postgresql:// URL")
        return value

    def check_references(self) -> None:
        """Cross-check names: every rule's category, template and channels exist.

        Every problem is reported at once (:class:`~tidings.errors.ConfigProblems`).
        """
        problems: list[ConfigError] = []
        seen: set[str] = set()
        for index, rule in enumerate(self.rules):
            path = f"rules[{index}]"
            if rule.id in seen:
                problems.append(ConfigError(f"duplicate rule id {rule.id!r}", f"{path}.id"))
            seen.add(rule.id)
            if rule.category not in self.categories:
                problems.append(_unknown_category(rule, path, list(self.categories)))
            if rule.template not in self.templates:
                problems.append(
                    ConfigError(f"unknown template {rule.template!r}", f"{path}.template")
                )
            for position, channel in enumerate(rule.fallback):
                if channel in rule.channels:
                    problems.append(
                        ConfigError(
                            f"{channel!r} is both a channel and a fallback",
                            f"{path}.fallback[{position}]",
                        )
                    )
            if rule.fallback_after is not None and not rule.fallback:
                problems.append(
                    ConfigError("fallback_after needs a fallback", f"{path}.fallback_after")
                )
            if rule.digest is not None and rule.delay is not None:
                problems.append(
                    ConfigError("a rule is either delayed or digested", f"{path}.digest")
                )
        for name, locales in self.templates.items():
            if not locales:
                problems.append(
                    ConfigError("a template needs at least one locale", f"templates.{name}")
                )
            for locale, variant in locales.items():
                if locale in TEMPLATE_VARIANTS:  # an approved template (SPEC §12), no locale
                    continue
                for key in ("title", "body"):
                    if not isinstance(variant.get(key), str):
                        problems.append(
                            ConfigError(f"missing {key!r}", f"templates.{name}.{locale}.{key}")
                        )
        names: set[str] = set()
        for channel, entries in self.providers.items():
            for position, entry in enumerate(entries):
                name = entry.name or entry.kind
                if name in names:
                    problems.append(
                        ConfigError(
                            f"duplicate provider name {name!r} (set `name`)",
                            f"providers.{channel}[{position}].name",
                        )
                    )
                names.add(name)
        raise_problems(problems)

    @property
    def sqlalchemy_url(self) -> str:
        """The database URL in SQLAlchemy's async dialect spelling."""
        return sqlalchemy_url(self.database)


def _unknown_category(rule: RuleSettings, path: str, defined: list[str]) -> ConfigError:
    """The rule's category is missing: say which rule, and what to add."""
    choose = f"one of {', '.join(defined)}" if defined else "a category defined under `categories:`"
    if "category" not in rule.model_fields_set:
        return ConfigError(
            f"rule {rule.id!r} names no category and no category {rule.category!r} is defined: "
            f"add `category: <name>` to the rule ({choose}), or define `{rule.category}` under "
            f"`categories:` (e.g. `categories: {{{rule.category}: {{required: true}}}}`)",
            path,
        )
    return ConfigError(
        f"rule {rule.id!r}: unknown category {rule.category!r} ({choose})", f"{path}.category"
    )


def sqlalchemy_url(url: str) -> str:
    """``sqlite:///x.db`` → ``sqlite+aiosqlite:///x.db``; ``postgresql://`` → asyncpg."""
    if url.startswith("sqlite://"):
        return "sqlite+aiosqlite://" + url.removeprefix("sqlite://")
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+asyncpg://" + url.removeprefix(prefix)
    return url


# --- YAML ------------------------------------------------------------------------------


class _Loader(yaml.SafeLoader):
    """SafeLoader whose booleans are only ``true``/``false`` (YAML 1.2): ``on`` stays a key."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool",
    re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
    list("tTfF"),
)

_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def _interpolate(value: Any, env: Mapping[str, str]) -> Any:
    if isinstance(value, str):
        return _ENV.sub(lambda m: env.get(m.group(1), m.group(2) or ""), value)
    if isinstance(value, list):
        return [_interpolate(item, env) for item in value]
    if isinstance(value, dict):
        return {key: _interpolate(item, env) for key, item in value.items()}
    return value


def parse_yaml(text: str) -> Any:
    """YAML 1.2-style booleans: a bare ``on`` key stays the string ``"on"``."""
    return yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass


def builtin_config_text() -> str:
    """The built-in e-commerce pack (categories, rules, templates) as YAML text."""
    return resources.files("tidings.rules").joinpath("ecommerce.yaml").read_text("utf-8")


def _loc(loc: tuple[int | str, ...]) -> str:
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path


def build_settings(
    raw: Any, env: Mapping[str, str], source: str, *, check: bool = True
) -> Settings:
    """Validate ``raw`` (parsed YAML), apply interpolation and env overrides.

    ``check=False`` leaves the cross-references to the caller (``tidings check`` reports
    them with every other problem at once).
    """
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError("the config must be a mapping", source)
    raw = _interpolate(raw, env)
    overrides = {
        "TIDINGS_DATABASE_URL": "database",
        "TIDINGS_BROKER_URL": "broker",
        "TIDINGS_ENCRYPTION_KEY": "encryption_key",
    }
    for var, key in overrides.items():
        if env.get(var):
            raw[key] = env[var]
    if env.get("TIDINGS_INBOX_SECRET"):
        raw["inbox"] = {**(raw.get("inbox") or {}), "secret": env["TIDINGS_INBOX_SECRET"]}
    if env.get("TIDINGS_API_KEYS"):
        raw["api_keys"] = [*(raw.get("api_keys") or []), *parse_api_keys(env["TIDINGS_API_KEYS"])]
    raw["api_keys"] = [
        k for k in raw.get("api_keys") or [] if not isinstance(k, dict) or k.get("key")
    ]
    try:
        settings = Settings.model_validate(raw)
    except ValidationError as exc:
        found = [ConfigError(e["msg"], _loc(e["loc"])) for e in exc.errors()]
        raise (found[0] if len(found) == 1 else ConfigProblems(found)) from exc
    settings.source = source
    if check:
        settings.check_references()
    return settings


def parse_api_keys(text: str) -> list[dict[str, Any]]:
    """``KEY:SCOPE+SCOPE,KEY2:events`` → api key entries (scope defaults to admin)."""
    keys: list[dict[str, Any]] = []
    for index, item in enumerate(filter(None, (part.strip() for part in text.split(",")))):
        key, _, scopes = item.partition(":")
        keys.append(
            {
                "key": key,
                "scopes": scopes.split("+") if scopes else ["admin"],
                "origin": f"TIDINGS_API_KEYS item {index + 1}",
            }
        )
    return keys


def config_path(explicit: str | os.PathLike[str] | None, env: Mapping[str, str]) -> Path | None:
    """The config file in force: explicit, ``TIDINGS_CONFIG``, ``./tidings.yaml``, or none."""
    if explicit:
        return Path(explicit)
    if env.get("TIDINGS_CONFIG"):
        return Path(env["TIDINGS_CONFIG"])
    default = Path("tidings.yaml")
    return default if default.exists() else None


def load_settings(
    path: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    *,
    check: bool = True,
) -> Settings:
    """Load the config in force (see module docstring); ``check`` as in :func:`build_settings`."""
    env = os.environ if env is None else env
    file = config_path(path, env)
    if file is None:
        return build_settings(parse_yaml(builtin_config_text()), env, "built-in", check=check)
    try:
        text = file.read_text("utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config: {exc.strerror}", str(file)) from exc
    try:
        raw = parse_yaml(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"not valid YAML: {exc}", str(file)) from exc
    if isinstance(raw, dict) and "rules" not in raw:
        # no rules of its own: the built-in pack's categories, rules and templates apply
        pack = parse_yaml(builtin_config_text())
        for key in ("categories", "rules", "templates"):
            raw.setdefault(key, pack.get(key))
    return build_settings(raw, env, str(file), check=check)
