"""Contracts between services, from the type hints they already have (docs/contracts.md).

``validation``: arguments checked (and returns dumped) by pydantic on the worker, when it is
installed and a method names a type that needs it. ``diff``: a service's contract as data
and the breaking changes between two of them. Nothing here is imported unless used.
"""
