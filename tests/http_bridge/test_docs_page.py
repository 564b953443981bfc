"""/docs renders the live routes in a real browser (Debian's headless chromium), offline."""

from __future__ import annotations

import asyncio
import shutil

import pytest
from aiohttp.test_utils import TestServer

from amqprpc import rpc

from .support import FakeRpc, descriptor_of, make_app

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


class Library:
    name = "library"

    @rpc(http="GET /books/{isbn}", public=True)
    def book(self, isbn: str) -> dict:
        """Find a book by ISBN."""
        return {}

    @rpc(http="POST /books", roles=["librarian"])
    def add(self, title: str) -> dict:
        """Add a book; ``title`` is kept as given, `<b>x</b>` stays text."""
        return {}


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium package (apt-get install chromium)")
def test_docs_page_shows_the_routes(fed_registry):
    fed_registry.ingest(descriptor_of(Library))
    app = make_app(fed_registry, FakeRpc())

    async def main() -> str:
        async with TestServer(app) as server:
            process = await asyncio.create_subprocess_exec(
                CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                "--virtual-time-budget=5000", "--dump-dom", str(server.make_url("/docs")),
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL)
            dom, _ = await asyncio.wait_for(process.communicate(), timeout=60)
            return dom.decode()

    dom = asyncio.run(main())
    assert "(2 routes)" in dom
    assert 'data-operation="library.book"' in dom and 'data-operation="library.add"' in dom
    assert "/books/{isbn}" in dom and "Find a book by ISBN." in dom and "roles: librarian" in dom
    # reStructuredText literals render as code, never as raw backticks or live HTML
    assert "<code>title</code>" in dom and "``title``" not in dom  # summary and description
    assert "<code>&lt;b&gt;x&lt;/b&gt;</code>" in dom
