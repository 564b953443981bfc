"""A service with one database query, for D3 over a link the test cuts (tests/faults/netns_link.py).

The database bounds are shortened at import, as the in-process D3 tests do with monkeypatch:
the worker runs in a process of its own, inside a network namespace.
"""

import os

import sqlalchemy as sa

from amqprpc import Database, rpc
from amqprpc.dependencies import sqlalchemy as sqlalchemy_dependency

sqlalchemy_dependency.STATEMENT_TIMEOUT = 2
sqlalchemy_dependency.CONNECT_TIMEOUT = 2


class PgWaitService:
    name = os.environ.get("PGWAIT_SERVICE_NAME", "pgwait")
    db = Database()

    @rpc
    def one(self):
        return int(self.db.execute(sa.text("SELECT 1")).scalar_one())
