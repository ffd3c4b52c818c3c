"""Real PostgreSQL and RabbitMQ for the tests: a pytest plugin of session fixtures.

`make test` starts the services once (scripts/services.sh start DIR) and exports DIR/env:
TIDINGS_TEST_POSTGRES_URL, TIDINGS_TEST_AMQP_URL and TIDINGS_TEST_SERVICES_DIR. Without those
variables the `services` fixture starts its own pair in a temp dir and stops it at the end of the
session. If they cannot be started the fixture fails: a scale-out test never skips silently.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

import asyncpg
import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "services.sh"
POSTGRES_ENV = "TIDINGS_TEST_POSTGRES_URL"
AMQP_ENV = "TIDINGS_TEST_AMQP_URL"
DIR_ENV = "TIDINGS_TEST_SERVICES_DIR"
# A cold RabbitMQ boot takes ~5 s here; the margin covers a loaded CI machine.
START_TIMEOUT = 240.0
COMMAND_TIMEOUT = 240.0


class ServicesError(RuntimeError):
    """scripts/services.sh failed; the message carries the tail of its output."""


def read_env_file(path: Path) -> dict[str, str]:
    """Parse the KEY=VALUE lines that scripts/services.sh writes to DIR/env."""
    values: dict[str, str] = {}
    for line in path.read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip() and not key.startswith("#"):
            values[key.strip()] = value.strip()
    return values


def _tail(text: str, limit: int = 4000) -> str:
    return text if len(text) <= limit else "…" + text[-limit:]


def run_script(command: str, *args: str, timeout: float = COMMAND_TIMEOUT) -> str:
    """Run scripts/services.sh synchronously; raise ServicesError with its output on failure."""
    try:
        result = subprocess.run(
            ["bash", str(SCRIPT), command, *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired as exc:
        raise ServicesError(f"services.sh {command} timed out after {timeout:.0f}s") from exc
    if result.returncode != 0:
        raise ServicesError(
            f"services.sh {command} exited {result.returncode}:\n{_tail(result.stderr)}"
        )
    return result.stdout


async def arun_script(command: str, *args: str) -> str:
    """Run scripts/services.sh without blocking the event loop (clients keep running meanwhile)."""
    proc = await asyncio.create_subprocess_exec(
        "bash",
        str(SCRIPT),
        command,
        *args,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(COMMAND_TIMEOUT):
            out, err = await proc.communicate()
    except TimeoutError as exc:
        proc.kill()
        await proc.wait()
        raise ServicesError(f"services.sh {command} timed out") from exc
    if proc.returncode != 0:
        output = _tail(err.decode(errors="replace"))
        raise ServicesError(f"services.sh {command} exited {proc.returncode}:\n{output}")
    return out.decode()


def with_path(url: str, path: str) -> str:
    """Return `url` with its path replaced (a database name or an AMQP vhost)."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + path, parts.query, parts.fragment))


@dataclass(frozen=True)
class Services:
    """The running PostgreSQL and RabbitMQ: their URLs and the directory that controls them."""

    postgres_url: str
    amqp_url: str
    directory: Path | None

    async def _control(self, command: str, *args: str) -> None:
        if self.directory is None:
            raise ServicesError(
                f"{command} needs {DIR_ENV}: these services are not managed by scripts/services.sh"
            )
        await arun_script(command, str(self.directory), *args)

    async def restart_rabbitmq(self) -> None:
        """Stop the broker gracefully and start it again on the same port and data; wait ready."""
        await self._control("restart-rabbit")

    async def restart_postgres(self) -> None:
        """Stop PostgreSQL (fast mode) and start it again on the same port and data; wait ready."""
        await self._control("restart-postgres")

    async def stop_rabbitmq(self) -> None:
        """Stop the broker (an outage until start_rabbitmq)."""
        await self._control("stop-rabbit")

    async def start_rabbitmq(self) -> None:
        """Start the broker again after stop_rabbitmq or kill_rabbitmq; wait ready."""
        await self._control("start-rabbit")

    async def kill_rabbitmq(self) -> None:
        """SIGKILL the broker: a crash, not a shutdown."""
        await self._control("kill-rabbit")

    async def stop_postgres(self) -> None:
        """Stop PostgreSQL (an outage until start_postgres)."""
        await self._control("stop-postgres")

    async def start_postgres(self) -> None:
        """Start PostgreSQL again after stop_postgres or kill_postgres; wait ready."""
        await self._control("start-postgres")

    async def kill_postgres(self) -> None:
        """SIGKILL the postmaster and its backends: a crash; restart recovers from the WAL."""
        await self._control("kill-postgres")

    async def add_vhost(self, name: str) -> str:
        """Create a RabbitMQ vhost with full rights for guest; return its AMQP URL."""
        await self._control("vhost", name)
        return with_path(self.amqp_url, quote(name, safe=""))


def _external_services() -> Services | None:
    postgres_url = os.environ.get(POSTGRES_ENV)
    amqp_url = os.environ.get(AMQP_ENV)
    if not (postgres_url and amqp_url):
        return None
    directory = os.environ.get(DIR_ENV)
    return Services(postgres_url, amqp_url, Path(directory) if directory else None)


@pytest.fixture(scope="session")
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Services]:
    """PostgreSQL + RabbitMQ for the whole session: from the environment, or started here."""
    external = _external_services()
    if external is not None:
        yield external
        return
    directory = tmp_path_factory.mktemp("services")
    try:
        run_script("start", str(directory), timeout=START_TIMEOUT)
        env = read_env_file(directory / "env")
        started = Services(env[POSTGRES_ENV], env[AMQP_ENV], directory)
    except (ServicesError, OSError, KeyError) as exc:
        try:
            run_script("stop", str(directory))
        except ServicesError:
            pass
        pytest.fail(
            "could not start PostgreSQL and RabbitMQ "
            f"(is `scripts/services.sh install` done?): {exc}",
            pytrace=False,
        )
    try:
        yield started
    finally:
        run_script("stop", str(directory))


@pytest.fixture(scope="session")
def postgres_url(services: Services) -> str:
    """URL of the session's PostgreSQL server (the `postgres` maintenance database)."""
    return services.postgres_url


@pytest.fixture(scope="session")
def amqp_url(services: Services) -> str:
    """URL of the session's RabbitMQ node (default vhost `/`, user guest)."""
    return services.amqp_url


@pytest.fixture
def restart_rabbitmq(services: Services) -> Callable[[], Awaitable[None]]:
    """`await restart_rabbitmq()` restarts the broker in place (fault tests)."""
    return services.restart_rabbitmq


@pytest.fixture
def restart_postgres(services: Services) -> Callable[[], Awaitable[None]]:
    """`await restart_postgres()` restarts PostgreSQL in place (fault tests)."""
    return services.restart_postgres


def unique_name(prefix: str) -> str:
    """A name no other test uses: `prefix` + 16 random hex digits."""
    return f"{prefix}{uuid.uuid4().hex[:16]}"


async def create_database(postgres_url: str, name: str | None = None) -> str:
    """Create an empty database on the server of `postgres_url`; return its URL."""
    name = name or unique_name("tidings_test_")
    conn = await asyncpg.connect(postgres_url)
    try:
        # Identifiers cannot be bound as parameters; the name is ours (hex), quoting is for safety.
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return with_path(postgres_url, name)


async def drop_database(database_url: str) -> None:
    """Drop the database of `database_url`, disconnecting whoever still uses it."""
    name = urlsplit(database_url).path.lstrip("/")
    conn = await asyncpg.connect(with_path(database_url, "postgres"))
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


@pytest.fixture
async def postgres_database(postgres_url: str) -> AsyncIterator[str]:
    """A fresh, empty database for one test; dropped afterwards. Yields its URL."""
    url = await create_database(postgres_url)
    try:
        yield url
    finally:
        await drop_database(url)


@pytest.fixture
async def amqp_vhost(services: Services) -> AsyncIterator[str]:
    """A fresh RabbitMQ vhost for one test (fixed names like `tidings.events` don't collide)."""
    # Vhosts are left to die with the throwaway node: deleting costs another CLI boot (~0.5 s).
    yield await services.add_vhost(unique_name("tidings-test-"))
