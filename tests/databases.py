"""pytest plugin: the database servers the integration tests run on.

* ``sql_url``: parametrized over PostgreSQL, MariaDB and SQLite. The server URLs come
  from ``TEST_PG_URL`` / ``TEST_MYSQL_URL``, else the machine's servers on 5432 and
  3306 (trust / root without password, database ``test``). SQLite is a fresh file.
* ``mongo_url``: ``TEST_MONGO_URL``, else a SecantusDB server (MongoDB wire protocol,
  in memory) started once per session on a free port.

A server that does not answer skips its tests on a developer machine and **fails**
them under ``CI=true``, so a green CI never hides a suite that did not run.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

SQL_SERVERS = {
    "postgresql": ("TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"),
    "mariadb": ("TEST_MYSQL_URL", "mysql+pymysql://root@127.0.0.1:3306/test?charset=utf8mb4"),
}


def unavailable(what: str) -> None:
    """Skip, or fail under CI: the server a test needs is not there."""
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"{what} (CI=true: integration tests must not skip)", pytrace=False)
    pytest.skip(what)


def _check_sql(url: str) -> str | None:
    import sqlalchemy as sa

    engine = sa.create_engine(url, connect_args={"connect_timeout": 3})
    try:
        with engine.connect() as connection:
            connection.execute(sa.text("SELECT 1"))
    except Exception as exc:
        return " ".join(str(getattr(exc, "orig", exc)).split())[:200]
    finally:
        engine.dispose()
    return None


_checked: dict[str, str | None] = {}


@pytest.fixture(params=["postgresql", "mariadb", "sqlite"])
def sql_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    kind = request.param
    if kind == "sqlite":
        return f"sqlite:///{tmp_path / 'test.db'}"
    variable, default = SQL_SERVERS[kind]
    url = os.environ.get(variable) or default
    if url not in _checked:
        _checked[url] = _check_sql(url)
    if _checked[url] is not None:
        unavailable(f"no {kind} at {url} ({_checked[url]}); set {variable}")
    return url


@pytest.fixture(scope="session")
def mongo_url() -> Iterator[str]:
    url = os.environ.get("TEST_MONGO_URL")
    if url:
        yield url
        return
    try:
        from amqprpc.devservers import SecantusServer
    except ImportError as exc:
        unavailable(f"cannot start SecantusDB ({exc})")
    server = SecantusServer()
    try:
        server.start()
    except Exception as exc:
        unavailable(f"cannot start SecantusDB: {exc}")
    try:
        yield server.url
    finally:
        server.stop()


def unique_table(prefix: str = "t") -> str:
    """A table name no other test uses (short: MySQL allows 64 characters)."""
    return f"{prefix}_{uuid.uuid4().hex[:10]}"
