"""An inherited listening socket for the HTTP way (socket activation).

Why: RGW 16.2 retries a failed push of its persistent queue at once, with no backoff. While no
process listens on the source's port (a crash, a restart), every push is refused within a
millisecond and RGW loops thousands of times a second; in one SIGKILL-and-restart run in three
or four, radosgw 16.2.15 then loses the completion of one push and that queue's worker waits
for it forever (nothing is lost, but nothing is pushed until radosgw restarts; see
docs/source.md). A socket that outlives the source process, held by a supervisor (systemd's
.socket unit, or the local stack), turns that gap into a wait: the kernel accepts RGW's
connections into the backlog and the restarted source answers them.
"""

from __future__ import annotations

import os
import socket

from common.env import ConfigError


def inherited_listener(fd: int, variable: str) -> socket.socket:
    """The listening TCP socket open as file descriptor `fd`; ConfigError if it is not one."""
    try:
        os.fstat(fd)
    except OSError as exc:
        reason = f"no such open file descriptor ({exc.strerror})"
        raise ConfigError(f"{variable}={fd}: {reason}") from exc
    try:
        sock = socket.socket(fileno=fd)
    except OSError as exc:
        raise ConfigError(f"{variable}={fd}: not a socket ({exc.strerror})") from exc
    if sock.type != socket.SOCK_STREAM or sock.family not in (socket.AF_INET, socket.AF_INET6):
        sock.detach()
        raise ConfigError(f"{variable}={fd}: not a TCP socket")
    if not sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
        sock.detach()
        raise ConfigError(f"{variable}={fd}: the socket is not listening (call listen() first)")
    sock.setblocking(False)
    return sock


def listen_address(sock: socket.socket) -> str:
    """host:port the socket is bound to, as RGW's push endpoint would name it."""
    host, port = sock.getsockname()[:2]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
