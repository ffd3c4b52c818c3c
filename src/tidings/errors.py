"""The one exception tree of tidings.

::

    TidingsError
    ├── ConfigError                 the configuration is invalid (names the key path)
    │   └── ConfigProblems          several at once (``tidings check`` reports every one)
    ├── InvalidInput                a request/event is malformed (names the field) → 400/422
    │   └── PayloadTooLarge         → 413
    ├── NotFound                    → 404
    ├── Conflict                    → 409 (e.g. switching off a required category)
    ├── ProviderError               a provider refused or failed a send
    │   ├── TransientProviderError  worth retrying, maybe after ``retry_after`` seconds
    │   │   └── RateLimited         the provider said "too many": slow down, then retry
    │   └── PermanentProviderError  retrying cannot help
    │       ├── DestinationGone     the device token / endpoint is dead: deactivate it
    │       └── Suppressed          the recipient cannot take this message now (no reason to fail)
    ├── BrokerError                 the queue backend failed
    └── StoreError                  the database failed

Third-party exceptions are mapped at the boundary with ``raise … from exc``.
"""

from __future__ import annotations

from collections.abc import Sequence


class TidingsError(Exception):
    """Base class of every error tidings raises on purpose."""


class ConfigError(TidingsError):
    """The configuration is invalid; ``path`` names the faulty key (``rules[2].channels``)."""

    def __init__(self, message: str, path: str = "") -> None:
        self.path = path
        super().__init__(f"{path}: {message}" if path else message)


class ConfigProblems(ConfigError):
    """Several configuration errors found at once; ``problems`` lists each, one per line."""

    def __init__(self, problems: Sequence[ConfigError]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


def raise_problems(problems: Sequence[ConfigError]) -> None:
    """Raise nothing, the one problem, or :class:`ConfigProblems` listing them all."""
    flat = [q for p in problems for q in (p.problems if isinstance(p, ConfigProblems) else [p])]
    if len(flat) == 1:
        raise flat[0]
    if flat:
        raise ConfigProblems(flat)


class InvalidInput(TidingsError):
    """Input that cannot be accepted; ``field`` names the offending field (JSON pointer-ish)."""

    status = 422

    def __init__(self, message: str, field: str | None = None, status: int | None = None) -> None:
        self.field = field
        if status is not None:
            self.status = status
        super().__init__(message)


class PayloadTooLarge(InvalidInput):
    """The request body is over the limit."""

    status = 413


class NotFound(TidingsError):
    """The named resource does not exist."""


class Conflict(TidingsError):
    """The request contradicts the configuration or the current state."""


class ProviderError(TidingsError):
    """A provider did not take the message."""

    def __init__(self, message: str, *, code: str | None = None) -> None:
        self.code = code
        super().__init__(message)


class TransientProviderError(ProviderError):
    """A failure worth retrying (5xx, timeout, 429); ``retry_after`` is the provider's wish."""

    def __init__(
        self, message: str, *, retry_after: float | None = None, code: str | None = None
    ) -> None:
        self.retry_after = retry_after
        super().__init__(message, code=code)


class RateLimited(TransientProviderError):
    """The provider refused for rate or quota (HTTP 429, Aliyun ``isv.BUSINESS_LIMIT_CONTROL``,
    a maker's daily quota): retried after ``retry_after``."""


class PermanentProviderError(ProviderError):
    """A failure that retrying cannot fix (bad request, payload too large, auth refused)."""


class Suppressed(PermanentProviderError):
    """The provider will not deliver to this recipient now, and that is no fault (a WeChat
    buyer with no subscription left for the template): the delivery is ``suppressed``."""


class DestinationGone(PermanentProviderError):
    """The destination no longer exists (FCM UNREGISTERED, APNs 410, Web Push 404/410,
    webhook 410): the device or endpoint is deactivated."""


class BrokerError(TidingsError):
    """The queue backend failed."""


class StoreError(TidingsError):
    """The database failed."""
