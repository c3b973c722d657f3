"""The one test kit: supervised local processes (RGW, RabbitMQ, the model server, functions),
free ports, HTTP sinks, record and sample builders, fault scenarios. The tests, the benchmarks
and the demo all use it; it imports nothing from tests/."""
