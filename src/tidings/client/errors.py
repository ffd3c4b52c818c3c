"""What the client raises: the service's problem body, or a connection that never answered.

::

    tidings.errors.TidingsError
    └── TidingsError                 the service answered with a problem (RFC 9457)
        └── TidingsConnectionError   no answer after every retry (refused, reset, timed out)
"""

from __future__ import annotations

from typing import Any

from tidings import errors


class TidingsError(errors.TidingsError):
    """The service refused a request: ``status`` and the ``problem`` body it sent.

    >>> try:
    ...     client.emit("order.paid", {"order_id": "o-1"})
    ... except TidingsError as exc:
    ...     print(exc.status, exc.problem["detail"])
    """

    def __init__(self, status: int | None, problem: dict[str, Any]) -> None:
        self.status = status
        self.problem = problem
        title = problem.get("title") or "error"
        detail = problem.get("detail")
        prefix = f"{status} " if status is not None else ""
        super().__init__(f"{prefix}{title}: {detail}" if detail else f"{prefix}{title}")

    @property
    def detail(self) -> str | None:
        """The problem's ``detail`` (what went wrong, in words)."""
        value = self.problem.get("detail")
        return None if value is None else str(value)


class TidingsConnectionError(TidingsError):
    """The service could not be reached (or answered 5xx/429) on every try."""

    def __init__(self, detail: str, status: int | None = None) -> None:
        super().__init__(status, {"title": "the service did not answer", "detail": detail})
