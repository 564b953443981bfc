"""Dependency providers: what a handler gets injected."""
