"""The public surface is deliberate, and importing it is cheap and inert."""

import subprocess
import sys

import amqprpc


def test_all_is_sorted_and_complete():
    assert amqprpc.__all__ == sorted(amqprpc.__all__)
    public = {name for name in vars(amqprpc) if not name.startswith("_")} | set(amqprpc._LAZY)
    modules = {name for name, value in vars(amqprpc).items() if type(value).__name__ == "module"}
    assert public - modules == set(amqprpc.__all__)


def test_import_is_inert():
    code = (
        "import sys, threading, socket\n"
        "opened = []\n"
        "socket.socket.connect = lambda *a: opened.append(a)\n"
        "import amqprpc\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in "
        "('sqlalchemy', 'pymongo', 'aiohttp', 'click', 'kombu', 'gevent'))\n"
        "assert not heavy, heavy\n"
        "assert threading.active_count() == 1\n"
        "assert not opened\n"
        "import logging; assert not logging.getLogger().handlers\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=30)
