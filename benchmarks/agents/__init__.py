"""Processes the runner starts: load clients, echo services, event handlers, raw scripts.

Each file runs in the interpreter of the system it measures (the project's venv for
amqprpc, the benchmark venv for Nameko and raw py-amqp), so nothing here imports across
those worlds: ``_common`` is plain standard library.
"""
