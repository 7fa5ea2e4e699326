"""A client written from protocol.md alone, for sending the server requests
the real client never would (wrong versions, bad lengths, wrong descriptor
counts, silence) and reading exactly what the server answers.

It speaks the wire format with ``socket.sendmsg`` and ``SCM_RIGHTS`` and
shares no code with the implementation, so a test that passes here checks the
server against the document, not against itself.
"""

from __future__ import annotations

import array
import os
import socket
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from typing import Self

VERSION = 1

RUN, STARTED, EXIT, ERROR = 1, 2, 3, 4

# Descriptor bits of a RUN frame, in SCM_RIGHTS order.
STDIN, STDOUT, STDERR, CWD = 0x1, 0x2, 0x4, 0x8
ALL_FDS = STDIN | STDOUT | STDERR | CWD
# The RUN flag that announces no descriptor: stdin becomes the worker's
# controlling terminal.
CONTROLLING_TTY = 0x10
# The RUN flag that announces the client's other descriptors: their count and
# numbers follow the fixed fields, the descriptors ride after the standard ones.
EXTRA_FDS = 0x20
MAX_EXTRA_FDS = 248

# ERROR codes (protocol.md §6).
BAD_REQUEST = 1
UNSUPPORTED_VERSION = 2
TOO_LARGE = 3
PERMISSION_DENIED = 4
TIMEOUT = 5
UNSUPPORTED = 6
INTERNAL = 7

MAX_FRAME_LEN = 8 << 20
PREFIX = struct.Struct("<BBHI")
RUN_FIXED = struct.Struct("<IIIQ")  # argc, envc, umask, ignored signals


def prefix(kind: int, flags: int, length: int, version: int = VERSION) -> bytes:
    """The 8 bytes every frame starts with."""
    return PREFIX.pack(version, kind, flags, length)


def run_frame(
    argv: Sequence[bytes],
    env: Sequence[bytes] = (),
    *,
    umask: int = 0o022,
    ignored_signals: int = 0,
    flags: int = ALL_FDS,
    version: int = VERSION,
    kind: int = RUN,
    length: int | None = None,
    extra_fds: Sequence[int] | None = None,
    fdc: int | None = None,
) -> bytes:
    """A RUN frame; every field can be set wrong on purpose. With
    ``extra_fds`` (numbers), the frame holds the EXTRA_FDS list, whose count
    is ``fdc`` if given; the flag is up to ``flags``."""
    strings = b"".join(s + b"\0" for s in (*argv, *env))
    if extra_fds is not None:
        count = len(extra_fds) if fdc is None else fdc
        strings = struct.pack(f"<I{len(extra_fds)}I", count, *extra_fds) + strings
    body = RUN_FIXED.pack(len(argv), len(env), umask, ignored_signals) + strings
    total = PREFIX.size + len(body) if length is None else length
    return prefix(kind, flags, total, version) + body


@dataclass(frozen=True)
class Reply:
    """One frame from the server."""

    version: int
    kind: int
    flags: int
    body: bytes

    @property
    def code(self) -> int:
        """The code of an ERROR frame."""
        assert self.kind == ERROR, self
        return struct.unpack_from("<H", self.body)[0]

    @property
    def message(self) -> str:
        """The message of an ERROR frame."""
        assert self.kind == ERROR, self
        return self.body[4:].decode("utf-8", "replace")

    @property
    def exit(self) -> tuple[int, int]:
        """``(how, value)`` of an EXIT frame."""
        assert self.kind == EXIT, self
        return self.body[0], self.body[1]


def parse_replies(data: bytes) -> list[Reply]:
    """Split a byte stream from the server into frames; a cut-off frame at
    the end is an error, as it would be for a real client."""
    replies = []
    at = 0
    while at < len(data):
        version, kind, flags, length = PREFIX.unpack_from(data, at)
        assert 8 <= length <= len(data) - at, f"cut-off or bad frame at {at}: {data[at:]!r}"
        replies.append(Reply(version, kind, flags, data[at + 8 : at + length]))
        at += length
    return replies


class RawClient:
    """One connection to a server, driven byte by byte."""

    def __init__(self, path: Path, timeout: float = 10.0) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(os.fspath(path))

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send(self, data: bytes, fds: Sequence[int] = ()) -> None:
        """Send ``data`` with ``fds`` in SCM_RIGHTS on its first byte."""
        ancillary = []
        if fds:
            ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds).tobytes())]
        sent = self.sock.sendmsg([data], ancillary)
        if sent < len(data):
            self.sock.sendall(data[sent:])

    def read_all(self) -> bytes:
        """Everything the server sends until it closes the connection.

        A server that closes with part of our frame unread makes the kernel
        report ECONNRESET after the frames it did send; that is an end too.
        """
        chunks = []
        while True:
            try:
                chunk = self.sock.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)

    def replies(self) -> list[Reply]:
        """The frames the server sends until it closes the connection."""
        return parse_replies(self.read_all())

    def close(self) -> None:
        self.sock.close()


def stdio_and_cwd(directory: str | os.PathLike[str] = "/") -> list[int]:
    """Four fresh descriptors for a RUN: /dev/null as stdin, stdout and
    stderr, and ``directory`` opened O_PATH. The caller closes them."""
    null_in = os.open(os.devnull, os.O_RDONLY)
    null_out = os.open(os.devnull, os.O_WRONLY)
    null_err = os.open(os.devnull, os.O_WRONLY)
    cwd = os.open(directory, os.O_PATH | os.O_DIRECTORY)
    return [null_in, null_out, null_err, cwd]


def close_all(fds: Sequence[int]) -> None:
    for fd in fds:
        os.close(fd)
