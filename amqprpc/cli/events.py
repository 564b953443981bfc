"""``amqprpc dispatch`` and ``amqprpc dlq list|replay|purge``: events from the command line."""

from __future__ import annotations

import datetime
import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import click

from ..dead_letters import DeadLetterInfo
from . import (
    EXIT_BROKER,
    EXIT_CONFIG,
    CliError,
    _build_config,
    _friendly,
    broker_option,
    config_option,
)

if TYPE_CHECKING:
    from ..dlq import DeadLetterQueue

EXIT_NOT_FOUND = 4
_PREVIEW = 200


@click.command()
@click.argument("source")
@click.argument("event_type")
@click.argument("payload", required=False, metavar="[JSON]")
@broker_option
@config_option
@click.option("--context", "context_json", metavar="JSON",
              help='Context headers to send, e.g. \'{"user_id": "u-1"}\' (sent as nameko.<key>).')
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True),
              help="Seconds to wait for the broker's confirm (default 30).")
def dispatch(source: str, event_type: str, payload: str | None, broker_url: str | None,
             config_path: str | None, context_json: str | None, timeout: float | None) -> None:
    """Dispatch EVENT_TYPE as service SOURCE, with JSON as the payload (default null).

    Returns once the broker has confirmed the event; handlers run later.
    """
    from ..publisher import dispatch_event

    value = _parse_json(payload, "payload") if payload is not None else None
    context = _parse_json(context_json, "--context") if context_json is not None else None
    if context is not None and not isinstance(context, dict):
        raise CliError("--context must be a JSON object", EXIT_CONFIG)
    config = _build_config(config_path, broker_url=broker_url)
    try:
        _friendly(lambda: dispatch_event(source, event_type, value, config=config,
                                         context=context, timeout=timeout))
    except TimeoutError:
        raise CliError("the broker did not confirm the event in time", EXIT_BROKER) from None
    click.echo(f"dispatched {event_type!r} on {source}.events", err=True)


@click.group()
def dlq() -> None:
    """Look at, replay or purge the dead letters of an event handler's queue.

    QUEUE is the handler's queue (evt-<source>-<type>--<service>.<method>) or its
    dead-letter queue (the same name ending in .dlq).
    """


@dlq.command("list")
@click.argument("queue")
@broker_option
@config_option
@click.option("--limit", type=click.IntRange(min=1), default=20, show_default=True,
              help="Dead letters to show, from the oldest.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line, with the payload.")
def list_(queue: str, broker_url: str | None, config_path: str | None, limit: int,
          as_json: bool) -> None:
    """Show dead letters without removing them."""
    with _open(queue, broker_url, config_path) as letters:
        total = _friendly(letters.count)
        shown = _friendly(lambda: letters.peek(limit))
    if as_json:
        for letter in shown:
            click.echo(json.dumps({**letter.as_dict(), "payload": _payload_text(letter)},
                                  ensure_ascii=False, default=str))
        return
    click.echo(f"{letters.name}: {total} dead letters" + (f", showing {len(shown)}" if shown else ""))
    for number, letter in enumerate(shown, 1):
        click.echo(_describe(number, letter))


@dlq.command()
@click.argument("queue")
@broker_option
@config_option
@click.option("--limit", type=click.IntRange(min=1), help="Replay at most this many (oldest first).")
@click.option("--to", "target", metavar="QUEUE", help="Send them to this queue instead of their own.")
def replay(queue: str, broker_url: str | None, config_path: str | None, limit: int | None,
           target: str | None) -> None:
    """Send dead letters back to the queue they died in, for a fresh set of attempts."""
    with _open(queue, broker_url, config_path) as letters:
        report = _friendly(lambda: letters.replay(limit=limit, target=target))
    click.echo(f"replayed {report.replayed} dead letters from {letters.name}")
    for letter, why in report.kept:
        click.echo(f"kept {letter.message_id or '(no id)'}: {why}", err=True)
    if report.kept:
        raise CliError(f"{len(report.kept)} dead letters could not be replayed and stay in "
                       f"{letters.name}", 1)


@dlq.command()
@click.argument("queue")
@broker_option
@config_option
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def purge(queue: str, broker_url: str | None, config_path: str | None, yes: bool) -> None:
    """Delete every dead letter of QUEUE."""
    with _open(queue, broker_url, config_path) as letters:
        if not yes:
            total = _friendly(letters.count)
            click.confirm(f"delete {total} dead letters from {letters.name}?", abort=True)
        removed = _friendly(letters.purge)
    click.echo(f"purged {removed} dead letters from {letters.name}")


@contextmanager
def _open(queue: str, broker_url: str | None, config_path: str | None) -> Iterator[DeadLetterQueue]:
    """A connected DeadLetterQueue; its errors become one-line CLI errors."""
    from ..dlq import DeadLetterQueue, QueueNotFound

    # A missing queue closes the channel and the transport says so at WARNING level;
    # the command reports it in one line of its own instead.
    logging.getLogger("amqprpc.transport").setLevel(logging.ERROR)
    letters = DeadLetterQueue(queue, config=_build_config(config_path, broker_url=broker_url))
    _friendly(letters.__enter__)
    try:
        yield letters
    except QueueNotFound as exc:
        raise CliError(str(exc), EXIT_NOT_FOUND) from None
    except TimeoutError:
        raise CliError("the broker did not answer in time", EXIT_BROKER) from None
    finally:
        letters.__exit__()


def _describe(number: int, letter: DeadLetterInfo) -> str:
    when = (datetime.datetime.fromtimestamp(letter.dead_lettered_at).isoformat(timespec="seconds")
            if letter.dead_lettered_at else "?")
    why = letter.error or (f"dead-lettered by the broker ({letter.reason})" if letter.reason else "?")
    lines = [
        f"#{number} {letter.message_id or '(no message id)'}  dead since {when}",
        f"   queue: {letter.queue or '?'}  event: {letter.exchange or '?'} / {letter.routing_key or '?'}",
        f"   attempts: {letter.attempts if letter.attempts is not None else '?'}"
        + (f"  replays: {letter.replays}" if letter.replays else ""),
        f"   error: {why}",
        f"   payload: {_payload_text(letter)[:_PREVIEW]}",
    ]
    return "\n".join(lines)


def _payload_text(letter: DeadLetterInfo) -> str:
    if letter.content_type in (None, "application/json"):
        try:
            return letter.body.decode("utf-8")
        except UnicodeDecodeError:
            pass
    return f"<{len(letter.body)} bytes of {letter.content_type or 'unknown content type'}>"


def _parse_json(text: str, what: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise CliError(f"{what} is not valid JSON: {exc}", EXIT_CONFIG) from None
