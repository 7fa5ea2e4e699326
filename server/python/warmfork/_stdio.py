"""Fresh ``sys.std*`` streams for a worker, built the way CPython builds them.

The server's own streams point at the server's terminal or log; a worker needs
streams over the client's descriptors 0, 1 and 2, with the buffering CPython
would choose for *those* descriptors: line-buffered on a terminal (stderr
always), block-buffered on a pipe or file, and unbuffered under ``-u``. This
must be decided in the worker, after the client's descriptors are in place,
never in the server.
"""

from __future__ import annotations

import builtins
import contextlib
import io
import os
import signal
import stat
import sys
from pathlib import Path
from typing import Any

_NAMES = ("<stdin>", "<stdout>", "<stderr>")


def _encoding() -> tuple[str, str | None]:
    """Encoding and error handler from ``PYTHONIOENCODING``, as CPython reads it."""
    value = os.environ.get("PYTHONIOENCODING", "")
    encoding, _, errors = value.partition(":")
    return encoding or sys.getfilesystemencoding(), errors or None


class StreamError(Exception):
    """A standard descriptor no stream can be made over; CPython refuses to
    start in that case."""


def open_stream(fd: int, *, unbuffered: bool, encoding: tuple[str, str | None]) -> io.TextIOWrapper | None:
    """A text stream over ``fd`` (0, 1 or 2), or None when ``fd`` is closed;
    ``encoding`` is the encoding and error handler :func:`_encoding` read."""
    try:
        status = os.fstat(fd)
    except OSError:
        return None
    if stat.S_ISDIR(status.st_mode):
        raise StreamError(f"{_NAMES[fd]} is a directory, cannot continue")
    write = fd != 0
    encoding, errors = encoding
    if errors is None:
        errors = "backslashreplace" if fd == 2 else "strict"
    if not write and client_pid > 0 and os.isatty(fd) and not _is_controlling_terminal(fd):
        raw: io.FileIO = TerminalReader(fd, client_pid)
    else:
        raw = io.FileIO(fd, "wb" if write else "rb", closefd=False)
    raw.name = _NAMES[fd]  # type: ignore[misc]  # CPython names its std streams this way
    buffered: io.RawIOBase | io.BufferedIOBase
    if unbuffered and write:
        buffered = raw
    else:
        # The buffer is as large as the file says it likes, as io.open makes
        # it; this decides when a write reaches the file, and so what is
        # left unwritten when a pipe closes.
        size = status.st_blksize if status.st_blksize > 1 else io.DEFAULT_BUFFER_SIZE
        buffered = io.BufferedWriter(raw, size) if write else io.BufferedReader(raw, size)
    stream = io.TextIOWrapper(
        buffered,  # type: ignore[arg-type]
        encoding=encoding,
        errors=errors,
        newline="\n",
        line_buffering=not unbuffered and (fd == 2 or raw.isatty()),
        write_through=unbuffered,
    )
    stream.mode = "w" if write else "r"  # type: ignore[misc]
    return stream


def rehearse() -> None:
    """Build (and drop) streams over the server's own descriptors 0, 1 and 2:
    see :func:`warmfork.pymain.rehearse`. Nothing is written or closed, and
    the server's own ``PYTHONIOENCODING`` is looked up but not used."""
    _encoding()
    for fd in (0, 1, 2):
        with contextlib.suppress(StreamError, OSError):
            open_stream(fd, unbuffered=False, encoding=("utf-8", None))


def _is_controlling_terminal(fd: int) -> bool:
    """Whether ``fd`` is this worker's controlling terminal (the client's
    pseudo-terminal under ``WARMFORK_PTY=1``), where the kernel does the job
    control that :class:`TerminalReader` otherwise emulates."""
    try:
        os.tcgetpgrp(fd)
    except OSError:  # ENOTTY: a terminal, but not this session's
        return False
    return True


#: The pid of the client this worker runs for (0 if unknown); see
#: :class:`TerminalReader`.
client_pid = 0


class TerminalReader(io.FileIO):
    """Standard input on a terminal, read as a job-controlled process reads it.

    A worker has no controlling terminal, so the kernel never stops it for
    reading the client's terminal from the background; it would steal the
    shell's input. Before each read this checks, in ``/proc``, whether the
    client's process group is in the terminal's foreground; if not, it does
    what the kernel does to a background reader: SIGTTIN to the client's
    process group (the shell sees the job stop for terminal input), and the
    worker stops too. ``fg`` continues the client, which forwards SIGCONT
    here, and the read goes ahead. (Reads that bypass ``sys.stdin``, such
    as ``os.read(0, ...)``, are not covered.)
    """

    def __init__(self, fd: int, client: int) -> None:
        super().__init__(fd, "rb", closefd=False)
        self._client = client

    def readinto(self, buffer: Any) -> int | None:  # any writable buffer, as FileIO takes
        self.wait_for_foreground()
        return super().readinto(buffer)

    def wait_for_foreground(self) -> None:
        """Stop this worker and the client's job while the job is in the
        background of the terminal."""
        while (group := self._background_group()) is not None:
            os.killpg(group, signal.SIGTTIN)
            os.kill(os.getpid(), signal.SIGSTOP)

    def _background_group(self) -> int | None:
        """The client's process group if it is in the background of its
        terminal, else None."""
        try:
            stat_line = Path(f"/proc/{self._client}/stat").read_bytes()
        except OSError:
            return None
        # After the command name: state ppid pgrp session tty_nr tpgid ...
        fields = stat_line.rsplit(b")", 1)[1].split()
        group, foreground = int(fields[2]), int(fields[5])
        return group if foreground not in (-1, group) else None


# Streams replaced in this process. They stay referenced: freeing them would
# only write to (and so copy) their memory pages in a worker that never needs
# the memory back.
_replaced: list[object] = []


def install(*, unbuffered: bool = False) -> None:
    """Replace ``sys.stdin``, ``sys.stdout`` and ``sys.stderr`` (and their
    ``__std*__`` twins) with fresh streams over descriptors 0, 1 and 2."""
    _replaced.extend((sys.stdin, sys.stdout, sys.stderr, sys.__stdin__, sys.__stdout__, sys.__stderr__))
    encoding = _encoding()
    streams = [open_stream(fd, unbuffered=unbuffered, encoding=encoding) for fd in (0, 1, 2)]
    sys.stdin, sys.stdout, sys.stderr = streams
    sys.__stdin__, sys.__stdout__, sys.__stderr__ = streams
    stdin_raw = getattr(streams[0], "buffer", None)
    if isinstance(getattr(stdin_raw, "raw", None), TerminalReader):
        _guard_input(stdin_raw.raw)  # type: ignore[union-attr]


def _guard_input(reader: TerminalReader) -> None:
    """``input()`` on a terminal reads descriptor 0 from C, past
    ``sys.stdin``; give it the same job control as :class:`TerminalReader`."""
    original = _original_input

    def input(prompt: object = "") -> str:  # the builtin, wrapped
        reader.wait_for_foreground()
        return original(prompt)

    builtins.input = input


_original_input = builtins.input


def flush() -> bool:
    """Flush ``sys.stdout`` and ``sys.stderr`` as CPython does at exit.

    Returns False when stdout could not be flushed (CPython then exits 120),
    after reporting it the way CPython does.
    """
    ok = True
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        if stream is None or getattr(stream, "closed", False):
            continue
        try:
            stream.flush()
        except Exception as exc:  # noqa: BLE001 - any failure is reported, as CPython does
            if name == "stdout":
                ok = False
                _report_unraisable(stream, exc)
    return ok


def _report_unraisable(stream: object, exc: BaseException) -> None:
    err = sys.stderr
    if err is None:
        return
    with contextlib.suppress(Exception):  # nowhere left to report to
        err.write(f"Exception ignored in: {stream!r}\n{type(exc).__name__}: {exc}\n")
        err.flush()
