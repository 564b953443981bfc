"""Example services used by the README, the demo and the tests."""
