"""Which TCP sockets a set of processes listen on, read from /proc (no `ss` needed), so a test
can check that each binds loopback only.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Listener:
    process: str
    pid: int
    address: str  # e.g. 127.0.0.1 or ::1 or 0.0.0.0
    port: int

    @property
    def loopback(self) -> bool:
        return self.address.startswith("127.") or self.address in ("::1", "::ffff:127.0.0.1")


def _hex_address(text: str) -> tuple[str, int]:
    address, port = text.split(":")
    raw = bytes.fromhex(address)
    if len(raw) == 4:
        return ".".join(str(b) for b in reversed(raw)), int(port, 16)
    # IPv6: four little-endian 32-bit words.
    words = [raw[i : i + 4][::-1] for i in range(0, 16, 4)]
    packed = b"".join(words)
    if packed[:12] == b"\0" * 10 + b"\xff\xff":
        return "::ffff:" + ".".join(str(b) for b in packed[12:]), int(port, 16)
    groups = [packed[i : i + 2].hex() for i in range(0, 16, 2)]
    return str(ipaddress.IPv6Address(":".join(groups))), int(port, 16)


def _listening_inodes() -> dict[int, tuple[str, int]]:
    inodes: dict[int, tuple[str, int]] = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except FileNotFoundError:
            continue
        for line in lines:
            fields = line.split()
            if fields[3] == "0A":  # TCP_LISTEN
                inodes[int(fields[9])] = _hex_address(fields[1])
    return inodes


def listening_sockets(pids: dict[str, int]) -> list[Listener]:
    """Every TCP socket in LISTEN state held by these processes (and their threads)."""
    inodes = _listening_inodes()
    found: list[Listener] = []
    for name, pid in pids.items():
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except (FileNotFoundError, PermissionError):
            continue
        for fd in fds:
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:["):
                inode = int(target[8:-1])
                if inode in inodes:
                    address, port = inodes[inode]
                    found.append(Listener(name, pid, address, port))
    return found
