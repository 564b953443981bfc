"""A py-amqp connection from an ``amqp://`` URL (both venvs have py-amqp 5.4.2)."""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote, urlsplit

import amqp


def connect(url: str, **options: Any) -> amqp.Connection:
    parts = urlsplit(url)
    connection = amqp.Connection(
        host=f"{parts.hostname or '127.0.0.1'}:{parts.port or 5672}",
        userid=unquote(parts.username or "guest"),
        password=unquote(parts.password or "guest"),
        virtual_host=unquote(parts.path[1:]) if len(parts.path) > 1 else "/",
        **options,
    )
    connection.connect()
    return connection
