"""The package's version, read by setuptools at build time (pyproject.toml) and by the
announcer at run time without ``importlib.metadata`` (~1.5 MiB of a worker's RSS)."""

__version__ = "0.1.0"
