"""The HTTP way's inherited listening socket (SOURCE_LISTEN_FD): what it accepts and refuses."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator

import pytest

from common.env import ConfigError
from source.__main__ import main
from source.listener import inherited_listener, listen_address


@pytest.fixture
def listening() -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    yield sock
    sock.close()


def test_a_listening_tcp_socket_is_taken(listening: socket.socket) -> None:
    taken = inherited_listener(listening.fileno(), "SOURCE_LISTEN_FD")
    try:
        assert taken.getsockname() == listening.getsockname()
        assert not taken.getblocking()  # uvicorn's event loop needs it non-blocking
        assert listen_address(taken) == f"127.0.0.1:{listening.getsockname()[1]}"
    finally:
        taken.detach()  # the fixture owns the descriptor


def test_an_ipv6_address_is_bracketed() -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6 here")
    with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("::1", 0))
        except OSError:
            pytest.skip("no IPv6 loopback here")
        assert listen_address(sock) == f"[::1]:{sock.getsockname()[1]}"


def test_a_bound_but_not_listening_socket_is_refused() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        with pytest.raises(ConfigError, match="not listening"):
            inherited_listener(sock.fileno(), "SOURCE_LISTEN_FD")
        assert sock.fileno() >= 0  # left open for its owner


def test_a_udp_socket_is_refused() -> None:
    with (
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock,
        pytest.raises(ConfigError, match="not a TCP socket"),
    ):
        inherited_listener(sock.fileno(), "SOURCE_LISTEN_FD")


def test_a_pipe_is_refused() -> None:
    read_end, write_end = os.pipe()
    try:
        with pytest.raises(ConfigError, match="not a socket"):
            inherited_listener(read_end, "SOURCE_LISTEN_FD")
    finally:
        os.close(read_end)
        os.close(write_end)


def test_a_closed_descriptor_is_refused() -> None:
    read_end, write_end = os.pipe()
    os.close(read_end)
    os.close(write_end)
    with pytest.raises(ConfigError, match="no such open file descriptor"):
        inherited_listener(read_end, "SOURCE_LISTEN_FD")


def test_cli_with_a_bad_listen_fd_exits_with_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    read_end, write_end = os.pipe()
    os.close(read_end)
    os.close(write_end)
    environ = {"K_SINK": "http://127.0.0.1:1/", "HOST": "127.0.0.1"}
    assert main(["http", "--listen-fd", str(read_end)], environ=environ) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert f"SOURCE_LISTEN_FD={read_end}" in err
