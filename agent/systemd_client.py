"""systemd's two client protocols, written here in full (no libsystemd, no C build):

- sd_notify: one datagram of `KEY=VALUE` lines to the socket named by `$NOTIFY_SOCKET` (a
  leading `@` is Linux's abstract namespace): READY=1, WATCHDOG=1, STATUS=..., STOPPING=1.
- the journal's native protocol: one datagram of fields to /run/systemd/journal/socket; a value
  holding a newline uses the binary form (KEY, newline, 64-bit little-endian length, value);
  an entry too big for a datagram goes as a sealed memfd passed with SCM_RIGHTS.

Both are documented by systemd for clients without libsystemd (sd_notify(3), systemd.journal-
fields(7), "Native Journal Protocol") and stable; a maintained pure-Python package for both
would add a dependency for about 100 lines. The names follow libsystemd's sd-daemon/sd-journal.
Nothing here raises for a missing systemd: outside it every call is a no-op returning False.
"""

from __future__ import annotations

import array
import contextlib
import errno
import fcntl
import os
import re
import socket
import struct
from collections.abc import Mapping
from pathlib import Path

JOURNAL_SOCKET = Path("/run/systemd/journal/socket")
PRIORITY = {"emerg": 0, "alert": 1, "crit": 2, "error": 3, "warning": 4, "notice": 5, "info": 6}
_FIELD = re.compile(r"[^A-Z0-9_]")


class Notifier:
    """sd_notify for this process: `notify("READY=1", "STATUS=...")`."""

    def __init__(self, address: str | None) -> None:
        self.address = address or None
        self._sock: socket.socket | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Notifier:
        return cls(env.get("NOTIFY_SOCKET"))

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def notify(self, *lines: str) -> bool:
        if self.address is None:
            return False
        target = "\0" + self.address[1:] if self.address.startswith("@") else self.address
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._sock.sendto("\n".join(lines).encode(), target)
        except OSError:
            return False
        return True

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def watchdog_interval(env: Mapping[str, str]) -> float | None:
    """Seconds between WATCHDOG=1 pings (half of WatchdogSec), None when systemd wants none."""
    usec = env.get("WATCHDOG_USEC", "")
    pid = env.get("WATCHDOG_PID", "")
    if not usec.isdigit() or (pid and pid != str(os.getpid())):
        return None
    return int(usec) / 2e6


def field_name(key: str) -> str:
    """A journal field name: upper case letters, digits and _, not starting with _ or a digit."""
    name = _FIELD.sub("_", key.upper()).lstrip("_")
    return ("X" + name if name[:1].isdigit() else name)[:64] or "X"


def encode(fields: Mapping[str, object]) -> bytes:
    out = bytearray()
    for key, value in fields.items():
        if value is None:
            continue
        name = field_name(key).encode()
        data = value if isinstance(value, bytes) else str(value).encode()
        if b"\n" in data:
            out += name + b"\n" + struct.pack("<Q", len(data)) + data + b"\n"
        else:
            out += name + b"=" + data + b"\n"
    return bytes(out)


class Journal:
    """Native journal entries: `send("restarted vllm", "warning", SANDBOX_EVENT="...")`."""

    def __init__(self, path: Path = JOURNAL_SOCKET) -> None:
        self.path = path
        self._sock: socket.socket | None = None

    @property
    def available(self) -> bool:
        return self.path.is_socket()

    def send(self, message: str, priority: str = "info", **fields: object) -> bool:
        payload = encode({"MESSAGE": message, "PRIORITY": PRIORITY.get(priority, 6), **fields})
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            try:
                self._sock.sendto(payload, str(self.path))
            except OSError as exc:
                if exc.errno not in (errno.EMSGSIZE, errno.ENOBUFS):
                    raise
                self._send_memfd(payload)
        except OSError:
            return False
        return True

    def _send_memfd(self, payload: bytes) -> None:
        """journald takes an entry too big for a datagram as a sealed memfd."""
        assert self._sock is not None
        fd = os.memfd_create("journal-entry", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        try:
            os.write(fd, payload)
            seals = fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE | fcntl.F_SEAL_SEAL
            fcntl.fcntl(fd, fcntl.F_ADD_SEALS, seals)
            rights = (socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [fd]).tobytes())
            self._sock.sendmsg([], [rights], 0, str(self.path))
        finally:
            os.close(fd)

    def close(self) -> None:
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.close()
            self._sock = None


def journal_stream_is_stderr(env: Mapping[str, str]) -> bool:
    """True when systemd connected our stderr to the journal (JOURNAL_STREAM=dev:inode)."""
    dev, _, ino = env.get("JOURNAL_STREAM", "").partition(":")
    try:
        st = os.fstat(2)
    except OSError:
        return False
    return dev.isdigit() and ino.isdigit() and (st.st_dev, st.st_ino) == (int(dev), int(ino))
