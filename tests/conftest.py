"""Test session set-up: fixture plugins, one per real service the tests start."""

pytest_plugins = [
    "tests.fixtures.logs",
]
