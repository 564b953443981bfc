"""``GET /asyncapi.json``: the AsyncAPI 3.0 document of the services the bridge sees live.

The same document as ``amqprpc asyncapi`` (amqprpc.contracts.asyncapi), from the registry's
newest descriptor of each live service the bridge exposes (its ``services`` allow-list).
"""

from __future__ import annotations

import json

from aiohttp import web

from amqprpc import Config, ServiceRegistry
from amqprpc.contracts.asyncapi import build_asyncapi


def asyncapi_document(registry: ServiceRegistry | None, config: Config,
                      allowed: tuple[str, ...] = ()) -> dict[str, object]:
    descriptors = [view.instances[0] for view in (registry.services() if registry else [])
                   if view.instances and (not allowed or view.name in allowed)]
    return build_asyncapi(descriptors, config, title="amqprpc services behind the HTTP bridge")


def asyncapi_response(registry: ServiceRegistry | None, allowed: tuple[str, ...]) -> web.Response:
    config = registry.config if registry is not None else Config()
    document = asyncapi_document(registry, config, allowed)
    return web.Response(text=json.dumps(document, indent=1), content_type="application/json",
                        headers={"Cache-Control": "no-store"})
