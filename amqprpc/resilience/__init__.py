"""Failing fast instead of piling up, and retrying safely: bounds on what may wait for a
service (overload), circuit breakers, retry budgets, hedging (docs/resilience.md).

Each module has one job; nothing is shared through this package's namespace.
"""
