"""Entrypoints: what makes a service method run."""
