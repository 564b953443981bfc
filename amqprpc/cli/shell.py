"""``amqprpc shell``'s console: ``rpc`` in the namespace, and tab completion on ``rpc.``.

Completion knows the services and methods announced on the bus: the shell runs a
``ServiceRegistry`` of its own (its own connection and I/O thread, stopped on exit), so
``rpc.<TAB>`` lists the running services and ``rpc.users.<TAB>`` their methods. Everything
else completes as Python's ``rlcompleter`` does. Without ``readline`` (some platforms) the
console works, without completion.
"""

from __future__ import annotations

import code
import logging
import re
import rlcompleter
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ..config import Config
from ..discovery import ServiceRegistry

Catalog = Mapping[str, Sequence[str]]  # service -> its method names

_ATTR = re.compile(r"^(?P<name>[A-Za-z_]\w*)\.(?:(?P<service>[A-Za-z_][\w-]*)\.)?(?P<prefix>\w*)$")


class RpcCompleter(rlcompleter.Completer):
    """Completes ``rpc.<service>`` and ``rpc.<service>.<method>`` from ``catalog()``."""

    def __init__(self, namespace: dict[str, Any], catalog: Callable[[], Catalog], name: str = "rpc") -> None:
        super().__init__(namespace)
        self._namespace = namespace
        self._catalog = catalog
        self._name = name

    def attr_matches(self, text: str) -> list[str]:
        found = _ATTR.match(text)
        if found is None or found.group("name") != self._name:
            return list(super().attr_matches(text))
        prefix, service = found.group("prefix"), found.group("service")
        catalog = self._catalog()
        if service is None:  # rpc.<service>, and the client's own public attributes
            client = [name for name in dir(self._namespace[self._name]) if not name.startswith("_")]
            names = sorted(set(catalog) | set(client))
            return [f"{self._name}.{name}" for name in names if name.startswith(prefix)]
        methods = sorted(catalog.get(service, ()))
        return [f"{self._name}.{service}.{method}(" for method in methods if method.startswith(prefix)]


def catalog_of(registry: ServiceRegistry) -> dict[str, list[str]]:
    """What the registry knows now: each service's method names."""
    return {view.name: [method.name for method in view.methods] for view in registry.services()}


def interact(client: Any, banner: str, config: Config) -> None:
    """Run the console with ``rpc = client`` until the user leaves it."""
    namespace: dict[str, Any] = {"rpc": client}
    registry = ServiceRegistry(config)
    # The registry only feeds completion: its warnings (unsigned announcements, a bad one)
    # would interrupt the prompt, so this logger says only errors while the shell runs.
    quiet = logging.getLogger("amqprpc.discovery.registry")
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    registry.start(wait=False)  # no broker yet: no completion yet, and the shell still opens
    restore = _install(RpcCompleter(namespace, lambda: catalog_of(registry)))
    try:
        code.interact(banner=banner, local=namespace, exitmsg="")
    finally:
        restore()
        registry.stop()
        quiet.setLevel(level)


def _install(completer: RpcCompleter) -> Callable[[], None]:
    """Bind Tab to ``completer``; returns what puts the previous completer back."""
    try:
        import readline
    except ImportError:
        return lambda: None
    previous = readline.get_completer()
    readline.set_completer(completer.complete)
    if "libedit" in (readline.__doc__ or ""):
        readline.parse_and_bind("bind ^I rl_complete")  # macOS's readline is libedit
    else:
        readline.parse_and_bind("tab: complete")
    return lambda: readline.set_completer(previous)
