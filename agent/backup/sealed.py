"""gzip (RFC 1952) sealed with the sha256 of its own bytes, so that one changed byte anywhere
in an archive is seen, even one that still inflates to the same data (deflate has such bits).

The header carries a comment (FCOMMENT), filled in once the file is written: `sandbox-agent
sha256=<hex>` of every byte of the file but the comment itself. Any gzip reader (`tar -xzf`,
`gzip -d`, Python's gzip) reads the file as it is; `Verified` reads it back and checks the seal.
"""

from __future__ import annotations

import hashlib
import struct
import zlib
from typing import IO

FIXED = b"\x1f\x8b\x08\x10" + struct.pack("<I", 0) + b"\x00\xff"  # magic, deflate, FCOMMENT,
PREFIX = b"sandbox-agent sha256="  # no mtime, no extra flags, OS unknown
COMMENT_SIZE = len(PREFIX) + 64 + 1  # the hex digest and its NUL


class SealBroken(ValueError):
    """The file is not what was sealed (or not sealed at all)."""


class SealedWriter:
    """A gzip stream written to `out` (a seekable file), its seal filled in by `close`."""

    def __init__(self, out: IO[bytes], level: int) -> None:
        self.out = out
        self.start = out.tell()
        self.digest = hashlib.sha256(FIXED)
        out.write(FIXED + b"\0" * COMMENT_SIZE)
        self.deflate = zlib.compressobj(level, zlib.DEFLATED, -zlib.MAX_WBITS)
        self.crc, self.size, self.closed = 0, 0, False

    def write(self, data: bytes) -> int:
        self.crc = zlib.crc32(data, self.crc)
        self.size += len(data)
        self._emit(self.deflate.compress(data))
        return len(data)

    def _emit(self, chunk: bytes) -> None:
        if chunk:
            self.out.write(chunk)
            self.digest.update(chunk)

    def flush(self) -> None:
        pass  # tarfile flushes; what is deflated goes out when the stream closes

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._emit(self.deflate.flush())
        self._emit(struct.pack("<II", self.crc, self.size & 0xFFFFFFFF))
        end = self.out.tell()
        self.out.seek(self.start + len(FIXED))
        self.out.write(PREFIX + self.digest.hexdigest().encode() + b"\0")
        self.out.seek(end)


class Verified:
    """A sealed file read through (for gzip.GzipFile), every byte hashed; `check()` once it
    is read to its end raises SealBroken unless the seal holds."""

    def __init__(self, raw: IO[bytes]) -> None:
        self.raw = raw
        head = raw.read(len(FIXED) + COMMENT_SIZE)
        if len(head) < len(FIXED) + COMMENT_SIZE or head[: len(FIXED)] != FIXED:
            raise SealBroken("its gzip header is not the one a backup writes")
        comment = head[len(FIXED) :]
        if not comment.startswith(PREFIX) or comment[-1:] != b"\0":
            raise SealBroken("its gzip header carries no seal")
        self.sealed = comment[len(PREFIX) : -1].decode("ascii", errors="replace")
        self.digest = hashlib.sha256(FIXED)
        self.head = head  # handed to the gzip reader first
        self.at = 0

    def read(self, n: int = -1) -> bytes:
        if self.at < len(self.head):
            want = len(self.head) - self.at if n < 0 else min(n, len(self.head) - self.at)
            chunk = self.head[self.at : self.at + want]
            self.at += len(chunk)
            return chunk
        chunk = self.raw.read(n)
        self.digest.update(chunk)
        return chunk

    def check(self) -> None:
        while self.read(1 << 20):  # what the gzip reader left (nothing, normally)
            pass
        if self.digest.hexdigest() != self.sealed:
            raise SealBroken("its bytes do not match the sha256 sealed in its header")
