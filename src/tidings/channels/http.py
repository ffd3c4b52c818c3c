"""Shared plumbing for providers that speak HTTP: one pooled client, error mapping."""

from __future__ import annotations

import os
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from tidings.errors import PermanentProviderError, TransientProviderError


def tls_context() -> ssl.SSLContext:
    """The system trust store, plus ``SSL_CERT_FILE`` / ``SSL_CERT_DIR`` when set."""
    context = ssl.create_default_context()
    cafile, capath = os.environ.get("SSL_CERT_FILE"), os.environ.get("SSL_CERT_DIR")
    if cafile or capath:
        context.load_verify_locations(cafile=cafile, capath=capath)
    return context


def make_client(
    *,
    timeout: float,
    http2: bool = False,
    max_connections: int = 100,
    base_url: str = "",
) -> httpx.AsyncClient:
    """A pooled keep-alive client for one provider instance."""
    return httpx.AsyncClient(
        base_url=base_url,
        http2=http2,
        verify=tls_context(),
        timeout=httpx.Timeout(timeout),
        limits=httpx.Limits(
            max_connections=max_connections, max_keepalive_connections=max_connections
        ),
        trust_env=False,  # proxies from the environment must not see tokens
    )


def retry_after_seconds(value: str | None) -> float | None:
    """A ``Retry-After`` header (delta-seconds or HTTP-date) in seconds, if present."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


@asynccontextmanager
async def transport_errors(provider: str) -> AsyncIterator[None]:
    """Map httpx transport failures (timeouts, refused connections) to transient errors."""
    try:
        yield
    except httpx.TimeoutException as exc:
        raise TransientProviderError(f"{provider}: timed out", code="timeout") from exc
    except httpx.TransportError as exc:
        raise TransientProviderError(
            f"{provider}: {type(exc).__name__}: {exc}", code="transport"
        ) from exc
    except httpx.InvalidURL as exc:
        raise PermanentProviderError(f"{provider}: invalid URL", code="invalid_url") from exc


def raise_for_status(provider: str, response: httpx.Response, detail: str = "") -> None:
    """Generic mapping: 2xx passes; 408/425/429/5xx transient; other 4xx permanent."""
    status = response.status_code
    if 200 <= status < 300:
        return
    text = detail or response.text[:300]
    if status in (408, 425, 429) or status >= 500:
        raise TransientProviderError(
            f"{provider}: HTTP {status}: {text}",
            retry_after=retry_after_seconds(response.headers.get("retry-after")),
            code=str(status),
        )
    raise PermanentProviderError(f"{provider}: HTTP {status}: {text}", code=str(status))


def json_object(response: httpx.Response) -> dict[str, Any]:
    """The JSON object a service answered, or ``{}`` when it answered anything else."""
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}
