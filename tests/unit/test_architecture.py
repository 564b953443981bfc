"""The import graph keeps the shape docs/architecture.md draws: no cycles, no upward imports.

grimp reads every import in the source (function-level ones too), without running it.
``LAYERS`` is the layering as data, highest first: a module may import its own layer (unless
the layer is marked independent) and any layer below, never one above. Every module of
amqprpc must sit in a layer, so a new module is placed on purpose (a layer may name a module
that another branch is adding: grimp skips names it does not find).
"""

from __future__ import annotations

from dataclasses import dataclass

import grimp
import pytest

PACKAGES = ("amqprpc", "http_bridge")


@dataclass(frozen=True)
class Layer:
    modules: tuple[str, ...]  # relative to amqprpc
    why: str
    independent: bool = False  # True: the modules of this layer do not import each other


LAYERS = (
    Layer(("cli", "testing", "__main__"), "Entry points for people: the command line and the testing kit; "
          "nothing imports them (command plugins such as http_bridge.command import cli's helpers)."),
    Layer(("runner", "health", "supervisor", "reload", "devservers"),
          "A process: its containers, its signals, "
          "its health port, its worker processes (and the local servers `amqprpc dev` starts); the "
          "runner gives each container the announcer."),
    Layer(("metrics",), "Prometheus metrics of a process: the registry, the extension the runner "
          "adds to each container, the /metrics server the runner owns."),
    Layer(("contracts.model", "contracts.diff", "contracts.asyncapi", "contracts.stubs"), "Contracts as "
          "data, built from descriptors: the dump, the breaking-change diff, AsyncAPI, stubs.",
          independent=False),
    Layer(("discovery",), "What services say about themselves: descriptors from bound entrypoints, "
          "the announcer extension, the registry that listens."),
    Layer(("containers", "pool", "tracing.worker"), "One service in one process: binds extensions "
          "and runs workers on its pool and loop; knows nothing of discovery. The span hooks the "
          "runner adds to every worker when tracing is on."),
    Layer(("entrypoints", "dependencies"), "What triggers a worker, and what it is given; written "
          "against the extension base classes, never against the container.", independent=True),
    Layer(("cancellation.worker",), "A container's consumer of cancels, and the calls it may cancel."),
    Layer(("extensions",), "The vocabulary: Extension, Entrypoint, DependencyProvider, WorkerContext, "
          "and the Container protocol through which extensions see their container."),
    Layer(("client", "dlq", "subscriber"), "Programs on the bus that are not services: the RPC "
          "clients, the dead-letter tool, the event subscriber (the bridge's live feed).", independent=True),
    Layer(("proxies",), "`caller.<service>.<method>(...)`: the one proxy tree the clients and "
          "RpcProxy build on a send and a wait callable."),
    Layer(("calls", "publisher"), "Sending: calls awaiting replies, events awaiting confirms.",
          independent=True),
    Layer(("resilience.guard", "resilience.announce", "resilience.breaker", "resilience.budget",
           "resilience.retries", "resilience.window"),
          "Failing fast and retrying safely: circuit breakers, retry budgets, "
          "hedging, and the caller-side limits on what may wait."),
    Layer(("cancellation.sender", "route_updates"), "A caller's side of cancellation: publishing "
          "cancels; live routing rules heard from `amqprpc route`.", independent=True),
    Layer(("cancellation.wire", "cancellation.token"), "The cancel message and the set of cancelled "
          "ids; one call's cancelled flag.", independent=True),
    Layer(("tracing.spans", "tracing.setup", "tracing.logs"), "The caller's spans, who installs "
          "OpenTelemetry, log records with trace ids.", independent=True),
    Layer(("tracing.propagation",), "W3C trace context in message headers."),
    Layer(("topology", "dead_letters", "presence", "identity", "signatures"), "Names and shapes on "
          "the broker: exchanges, queues, dead letters and their headers, whether a queue has "
          "consumers, signed identity, signed control messages.", independent=True),
    Layer(("messages",), "Sans-I/O envelopes: requests, replies, events, context headers."),
    Layer(("resilience.overload",), "Bounds on what may wait for a service: its queue's length, "
          "a caller's calls in flight (read by topology and calls)."),
    Layer(("config", "serialization", "contracts.validation"), "Values every part reads: settings, how "
          "bodies encode, and how pydantic checks the values of typed arguments.",
          independent=True),
    Layer(("routing",), "Versions and canary shares: queue names, rules, the per-call choice."),
    Layer(("transport",), "The seam to the broker; imports nothing of amqprpc but exceptions."),
    Layer(("exceptions", "futures", "_version"), "At the bottom: the one exception tree (everything "
          "may raise), settling futures (everything that waits) and the package's version.",
          independent=True),
)

# What http_bridge may import of amqprpc: the public API, the descriptor API, the CLI's
# helpers for its `amqprpc bridge` command, and the prefork supervisor (`--workers N` runs
# the same one as `amqprpc run --workers N`).
BRIDGE_MAY_IMPORT = {"amqprpc", "amqprpc.discovery", "amqprpc.cli", "amqprpc.supervisor",
                     "amqprpc.metrics.registry", "amqprpc.contracts.asyncapi"}


@pytest.fixture(scope="module")
def graph() -> grimp.ImportGraph:
    return grimp.build_graph(*PACKAGES, cache_dir=None)


@pytest.fixture(scope="module")
def runtime_graph() -> grimp.ImportGraph:
    """Imports that run: those under ``if TYPE_CHECKING:`` only name types for annotations."""
    return grimp.build_graph(*PACKAGES, exclude_type_checking_imports=True, cache_dir=None)


def test_every_module_is_in_a_layer(graph: grimp.ImportGraph) -> None:
    placed = {f"amqprpc.{name.split('.')[0]}" for layer in LAYERS for name in layer.modules}
    unplaced = graph.find_children("amqprpc") - placed
    assert not unplaced, f"place these modules in a layer of LAYERS: {sorted(unplaced)}"


def test_no_upward_imports(graph: grimp.ImportGraph) -> None:
    layers = [grimp.Layer(*layer.modules, independent=layer.independent) for layer in LAYERS]
    illegal = graph.find_illegal_dependencies_for_layers(layers=layers, containers={"amqprpc"})
    found = sorted(
        f"{dependency.importer} -> {dependency.imported}: "
        f"{' | '.join(sorted(route.heads))} -> {' -> '.join(route.middle) or '.'} -> "
        f"{' | '.join(sorted(route.tails))}"
        for dependency in illegal
        for route in dependency.routes
    )
    assert not found, "imports that go up (or across an independent layer):\n" + "\n".join(found)


def test_no_import_cycles(runtime_graph: grimp.ImportGraph) -> None:
    cycles = _cycles(runtime_graph, [m for m in runtime_graph.modules if m.split(".")[0] in PACKAGES])
    assert not cycles, "import cycles:\n" + "\n".join(" <-> ".join(cycle) for cycle in cycles)


def test_amqprpc_never_imports_the_bridge(graph: grimp.ImportGraph) -> None:
    importers = sorted(
        module for module in graph.find_modules_that_directly_import("http_bridge", as_package=True)
        if module.split(".")[0] == "amqprpc"
    )
    assert not importers, f"amqprpc modules importing http_bridge: {importers}"


def test_the_bridge_uses_public_apis_only(graph: grimp.ImportGraph) -> None:
    private = sorted(
        f"{importer} -> {imported}"
        for importer in graph.find_descendants("http_bridge")
        for imported in graph.find_modules_directly_imported_by(importer)
        if imported.split(".")[0] == "amqprpc" and imported not in BRIDGE_MAY_IMPORT
    )
    assert not private, "http_bridge importing amqprpc internals:\n" + "\n".join(private)


def _cycles(graph: grimp.ImportGraph, modules: list[str]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in sorted(modules):
        if root in index:
            continue
        work = [(root, iter(sorted(graph.find_modules_directly_imported_by(root))))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.find_modules_directly_imported_by(child)))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


# Exceptions of amqprpc outside the one tree, and why each may be.
OUTSIDE_THE_TREE = {
    "amqprpc.cli.CliError": "a click.ClickException, so click prints it and exits with its code",
    "amqprpc.transport.memory_broker.PublishBlocked": "the memory broker's signal to its transport, "
                                                      "caught there (memory.py)",
    "amqprpc.transport.tls._EncryptedKey": "private to tls.py, caught there",
    "amqprpc.transport.framing.BadFrame": "a ConnectionError the I/O loop treats as a lost link "
                                          "and reconnects; never reaches a caller",
}


def test_every_exception_amqprpc_raises_has_the_one_root(graph: grimp.ImportGraph) -> None:
    import importlib

    from amqprpc.exceptions import AmqpRpcError

    outside = set()
    for name in sorted(graph.find_descendants("amqprpc")):
        if name.endswith("__main__"):
            continue  # running it is its job
        module = importlib.import_module(name)
        for value in vars(module).values():
            if (isinstance(value, type) and issubclass(value, BaseException)
                    and value.__module__ == name and not issubclass(value, AmqpRpcError)):
                outside.add(f"{name}.{value.__qualname__}")
    assert outside == set(OUTSIDE_THE_TREE)


def test_exceptions_keep_their_builtin_parents_and_wire_names() -> None:
    from amqprpc import exceptions
    from amqprpc.devservers import DevServerError
    from amqprpc.discovery import DescriptorError
    from amqprpc.entrypoints.events import WorkerLost

    assert exceptions.serialize_error(WorkerLost("x"))["exc_path"] == "amqprpc.entrypoints.events.WorkerLost"
    assert issubclass(DescriptorError, ValueError) and issubclass(DevServerError, RuntimeError)
    assert issubclass(exceptions.ConfirmTimeout, exceptions.BrokerError)
    assert issubclass(exceptions.ConfirmTimeout, TimeoutError)
