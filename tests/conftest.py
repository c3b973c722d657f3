"""Test session set-up: fixture plugins, one per real service the tests start."""

pytest_plugins = [
    "tests.fixtures.logs",
    "tests.fixtures.rgw",
    "tests.fixtures.rabbitmq",
    "tests.fixtures.recorder",
    "tests.fixtures.modelserver",
    "tests.fixtures.resnet",
    "tests.fixtures.vision",
    "tests.fixtures.source",
]
