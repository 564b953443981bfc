"""``python -m amqprpc`` is the ``amqprpc`` command (``amqprpc dev`` spawns its workers so)."""

from .cli import main

main(prog_name="amqprpc")
