"""Test session set-up: fixture plugins, one per real service the tests start.

`tests.fixtures.processes` comes first: it makes every process started during the session belong
to it (none may outlive it, SIGTERM unwinds like Ctrl-C).
"""

pytest_plugins = [
    "tests.fixtures.processes",
    "tests.fixtures.logs",
    "tests.fixtures.rgw",
    "tests.fixtures.rabbitmq",
    "tests.fixtures.recorder",
    "tests.fixtures.modelserver",
    "tests.fixtures.resnet",
    "tests.fixtures.vision",
    "tests.fixtures.source",
]
