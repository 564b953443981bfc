"""``amqprpc run``: serve services in this process, or in N supervised worker processes."""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from functools import partial
from typing import TYPE_CHECKING, Any

import click

from ..config import Config
from . import EXIT_CONFIG, CliError, _build_config, _friendly, _log, broker_option, config_option

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(process)d] %(message)s"

if TYPE_CHECKING:
    _IntParam = click.ParamType[int]  # generic in the click mypy sees; plain in click 8.1
else:
    _IntParam = click.ParamType


class WorkerCount(_IntParam):
    """A positive number of processes, or ``auto`` (one per core)."""

    name = "N|auto"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        if value == "auto":
            return os.cpu_count() or 1
        try:
            count = int(value)
        except ValueError:
            self.fail(f"{value!r} is not a number of workers or 'auto'", param, ctx)
        if count < 1:
            self.fail("--workers must be at least 1", param, ctx)
        return count


@click.command()
@click.argument("targets", nargs=-1, required=True, metavar="MODULE[:Class]...")
@broker_option
@config_option
@click.option("--workers", type=WorkerCount(), default="1", show_default=True,
              help="Worker processes (prefork); `auto` = one per core.")
@click.option("--concurrency", type=click.IntRange(min=1),
              help="Handlers at a time per process (default 10).")
@click.option("--pool", type=click.Choice(["threads", "gevent"]), default="threads", show_default=True,
              help="Run handlers in threads (and asyncio for `async def`) or on gevent.")
@click.option("--grace", type=click.FloatRange(min=0),
              help="Seconds in-flight calls get on stop (default 30).")
@click.option("--health-port", type=click.IntRange(min=0, max=65535),
              help="Serve /healthz and /readyz on this port (worker i of N uses PORT+i).")
@click.option("--metrics-port", type=click.IntRange(min=1, max=65535),
              help="Serve Prometheus /metrics on this port (worker i of N uses PORT+i); "
                   "needs the `metrics` extra. Config key: metrics_port.")
@click.option("--reload", is_flag=True,
              help="Restart the workers when a service module or the config file changes "
                   "(new workers first, then the old ones drain); needs the `reload` extra.")
@click.option("--version", "service_version", metavar="VERSION",
              help="Announce this version and also serve its own queue, rpc-<service>@VERSION, "
                   "which callers route a canary share to ([routing.<service>], amqprpc route).")
@click.option("--canary", is_flag=True, default=None,
              help="With --version: take only the calls routed to this version, none of the "
                   "shared queue's.")
@click.option("--log-level", default="INFO", show_default=True,
              type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False))
@click.option("--log-format", type=click.Choice(["text", "json"]), default="text", show_default=True,
              help="json: one object per line, with trace_id, span_id and call_id.")
def run(targets: tuple[str, ...], broker_url: str | None, config_path: str | None, workers: int,
        concurrency: int | None, pool: str, grace: float | None, health_port: int | None,
        metrics_port: int | None, log_level: str, log_format: str = "text",
        reload: bool = False, service_version: str | None = None,
        canary: bool | None = None) -> None:
    """Run the services found in MODULE (or just MODULE:Class) until SIGTERM/SIGINT.

    A first signal stops gracefully (in-flight calls finish, up to --grace seconds, and
    are acked); a second one stops at once (unfinished calls go back to the queue). A
    broker that is down is retried until it answers. Exit code 0 on a clean stop.
    """
    if pool == "gevent" and "gevent.monkey" not in sys.modules:
        _reexec_with_gevent()
    if log_format == "json":
        from ..tracing.logs import json_logging
        json_logging(log_level.upper())
    else:
        logging.basicConfig(level=log_level.upper(), format=LOG_FORMAT)
    config = _build_config(config_path, broker_url=broker_url, concurrency=concurrency, grace=grace,
                           metrics_port=metrics_port, service_version=service_version,
                           canary=None if canary is None else int(canary))
    _check_metrics_extra(config)
    if reload:
        sys.exit(_run_reloader(targets, config_path, workers))
    classes = _find_services(targets)
    if workers == 1:
        sys.exit(serve(config, classes, health_port))
    from ..supervisor import Supervisor

    def child(index: int) -> int:
        port = None if health_port is None else (health_port + index if health_port else 0)
        own = config.replace(metrics_port=config.metrics_port + index) if config.metrics_port else config
        try:
            return serve(own, classes, port)
        except click.ClickException as exc:  # one line, and an exit code the supervisor reads
            exc.show()
            return exc.exit_code

    _log.info("starting %d worker processes", workers)
    sys.exit(Supervisor(workers, child, fatal_exit_codes=(EXIT_CONFIG,)).run())


def _run_reloader(targets: tuple[str, ...], config_path: str | None, workers: int) -> int:
    """``--reload``: this process watches; each generation of workers is ``run`` without it."""
    import importlib.util

    from ..reload import Reloader, watched_paths

    if importlib.util.find_spec("watchfiles") is None:
        raise CliError("--reload needs watchfiles: pip install 'amqprpc[reload]'", EXIT_CONFIG)
    paths = _friendly(lambda: watched_paths(targets, config_path))
    command = [sys.executable, "-m", "amqprpc", *[arg for arg in sys.argv[1:] if arg != "--reload"]]
    _log.info("reload: watching %s", ", ".join(str(path) for path in paths))
    return Reloader(command, paths, expect_ready=workers).run()


def _find_services(targets: tuple[str, ...]) -> list[type]:
    """``find_services``, and under ``--reload`` any failure goes to the reloader in one piece."""
    from ..reload import notify_failed, reloading
    from ..runner import find_services

    if not reloading():
        return _friendly(lambda: find_services(targets))  # type: ignore[no-any-return]
    try:
        return find_services(targets)
    except Exception as exc:  # a broken edit: SyntaxError, NameError, ... at import time
        notify_failed(exc)
        raise CliError(f"the services did not import: {exc}", EXIT_CONFIG) from None


def serve(config: Config, classes: list[type], health_port: int | None = None) -> int:
    """Run ``classes`` in this process until a signal; returns the exit code."""
    from ..runner import ServiceRunner

    runner = ServiceRunner(config)
    for cls in classes:
        _friendly(partial(runner.add_service, cls))
    stop_requested = threading.Event()
    signals_seen = 0

    def on_signal(signum: int, frame: Any) -> None:
        nonlocal signals_seen
        signals_seen += 1
        if signals_seen > 1:
            _log.warning("second signal: stopping at once; unfinished calls go back to the queue")
            runner.kill()
            os._exit(1)
        _log.info("signal %d: stopping gracefully", signum)
        stop_requested.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    health = None
    if health_port is not None:  # imported only then: http.server is ~2 MiB of a worker's RSS
        from ..health import HealthServer

        health = HealthServer(runner, health_port)
    _friendly(lambda: runner.start(wait=False))
    if health is not None:
        try:
            _friendly(health.start)
        except CliError:
            runner.kill()  # its requests go back to the queue; nothing was running yet
            raise
    names = ", ".join(c.service_name for c in runner.containers)
    where = getattr(runner.containers[0].connection, "address", "in memory")  # AmqpTransport's node
    _log.info("running %s (pid %d, broker %s)", names, os.getpid(), where)
    _wait_consuming(runner, stop_requested)
    stop_requested.wait()
    if health is not None:
        health.stopping = True
    clean = runner.stop()
    if health is not None:
        health.stop()
    logging.shutdown()
    if not clean:
        os._exit(1)  # handler threads still running past the grace period: leave them
    return 0


def _wait_consuming(runner: Any, stop_requested: threading.Event) -> None:
    """Under ``--reload``: tell the reloader once every container consumes (else return at once)."""
    from ..reload import notify_ready, reloading

    if not reloading():
        return
    while not all(c.connection.is_connected for c in runner.containers):
        if stop_requested.wait(0.05):
            return
    notify_ready()


def _check_metrics_extra(config: Config) -> None:
    """Fail at once, in one line, when metrics are asked for without prometheus-client."""
    if not config.metrics_port:
        return
    import importlib.util

    if importlib.util.find_spec("prometheus_client") is None:
        raise CliError("--metrics-port needs prometheus-client: pip install 'amqprpc[metrics]'",
                       EXIT_CONFIG)


def _reexec_with_gevent() -> None:
    """Start again with gevent's monkey-patching applied before anything else is imported."""
    try:
        import gevent  # noqa: F401
    except ImportError:
        raise click.ClickException(
            "--pool gevent needs gevent: pip install 'amqprpc[gevent]'"
        ) from None
    bootstrap = ("from gevent import monkey; monkey.patch_all(); "
                 "import sys; from amqprpc.cli import main; sys.argv[0] = 'amqprpc'; main()")
    os.execv(sys.executable, [sys.executable, "-c", bootstrap, *sys.argv[1:]])
