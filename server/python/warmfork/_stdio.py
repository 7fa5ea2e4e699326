"""Fresh ``sys.std*`` streams for a worker, built the way CPython builds them.

The server's own streams point at the server's terminal or log; a worker needs
streams over the client's descriptors 0, 1 and 2, with the buffering CPython
would choose for *those* descriptors: line-buffered on a terminal (stderr
always), block-buffered on a pipe or file, and unbuffered under ``-u``; and
with the encoding and error handler CPython would choose for the client's
environment, whose ``LC_CTYPE`` the worker takes first (:func:`set_up`).
This must be decided in the worker, after the client's descriptors and
environment are in place, never in the server.
"""

from __future__ import annotations

import _locale
import _signal
import _thread
import builtins
import codecs
import contextlib
import errno
import fcntl
import io
import os
import signal
import stat
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import _native
from .pyoptions import FatalError, env_flag, utf8_mode_per_run

_SIGCONT = int(signal.SIGCONT)
_NOT_READING = object()

_NAMES = ("<stdin>", "<stdout>", "<stderr>")

# The locales python coerces the C locale to (PEP 538), in its order of trial.
_COERCION_TARGETS = ("C.UTF-8", "C.utf8", "UTF-8")

#: What :func:`install` last built the streams for: (unbuffered, whether
#: ``PYTHON*`` variables were read, UTF-8 mode).
installed_with: tuple[bool, bool, int] | None = None

#: Whether this run is in UTF-8 mode (PEP 540), as its streams are built;
#: :func:`set_up` decides it for the run.
utf8_mode = sys.flags.utf8_mode


class StreamError(FatalError):
    """The standard streams cannot be made; CPython refuses to start then."""

    def __init__(self, message: str, cause: str | None = None) -> None:
        super().__init__(message, state="core initialized", cause=cause)

    def report(self) -> str:
        # Then CPython dumps its threads' stacks (faulthandler's format): the
        # one thread there is, with no Python code running yet.
        thread = f"Current thread 0x{_thread.get_ident():016x} (most recent call first):\n  <no Python frame>\n"
        return super().report() + thread


def set_up() -> None:
    """What a fresh python does for its standard streams, from the (client's)
    environment: take ``LC_CTYPE`` from it, then build ``sys.std*``."""
    use_environment = not sys.flags.ignore_environment
    c_locale = adopt_locale(use_environment)
    variable = _variable(b"PYTHONUTF8", use_environment)
    # As python's preconfig_init_utf8_mode: PYTHONUTF8 if valid (an invalid
    # one stops the run later, with python's message), else on in the C
    # locale, which python reads before coercing it. `-X utf8` comes later,
    # with the other options (see `pymain`).
    set_utf8_mode(int(variable) if variable in ("0", "1") else int(c_locale))
    unbuffered = env_flag(_variable(b"PYTHONUNBUFFERED", use_environment)) > 0
    install(unbuffered=unbuffered, use_environment=use_environment)


def adopt_locale(use_environment: bool) -> bool:
    """Set ``LC_CTYPE`` from the environment, as python does at start-up, and
    coerce the C locale to a UTF-8 one as python does (PEP 538): unless
    ``LC_ALL`` is set or ``PYTHONCOERCECLOCALE=0``, the first of
    :data:`_COERCION_TARGETS` this system has becomes ``LC_CTYPE``, in the
    environment too (``PYTHONCOERCECLOCALE=warn`` says so on stderr).

    Every other category starts as python's do, in the C locale, whatever
    the server's warm-up set; coercion sets them all from the environment,
    as python's does (``LC_TIME`` from ``LANG``, say).

    Returns whether the environment's ``LC_CTYPE`` was the C (or POSIX)
    locale, coerced or not."""
    _locale.setlocale(_locale.LC_ALL, "C")
    try:
        ctype = _locale.setlocale(_locale.LC_CTYPE, "")
    except _locale.Error:  # a locale this system lacks: python is left in C
        ctype = _locale.setlocale(_locale.LC_CTYPE, "C")
    if ctype not in ("C", "POSIX"):
        return False
    coerce = _variable(b"PYTHONCOERCECLOCALE", use_environment)
    if ctype != "C" or coerce == "0" or os.environ._data.get(b"LC_ALL"):  # type: ignore[attr-defined]
        return True
    for target in _COERCION_TARGETS:
        try:
            _locale.setlocale(_locale.LC_CTYPE, target)
        except _locale.Error:
            continue
        os.environ["LC_CTYPE"] = target
        # All or nothing: where one category's locale is missing, the
        # others stay C and LC_CTYPE the target, as in python.
        with contextlib.suppress(_locale.Error):
            _locale.setlocale(_locale.LC_ALL, "")
        if coerce == "warn":
            os.write(
                2,
                f"Python detected LC_CTYPE=C: LC_CTYPE coerced to {target} (set another locale "
                "or PYTHONCOERCECLOCALE=0 to disable this locale coercion behavior).\n".encode(),
            )
        break
    return True


def set_utf8_mode(mode: int) -> None:
    """Put the run in UTF-8 mode (``mode`` 1) or out of it (0), as python
    with that mode: the default encoding of files and ``sys.flags`` where
    :func:`utf8_mode_per_run`, else (the server's mode stays) only the
    streams built from here on, in the C locale."""
    global utf8_mode
    if not utf8_mode_per_run():
        utf8_mode = sys.flags.utf8_mode or mode
        return
    if mode != sys.flags.utf8_mode:
        _native.set_utf8_mode(bool(mode))
    utf8_mode = mode


def stream_settings(use_environment: bool) -> tuple[str, str]:
    """The encoding and error handler of ``sys.stdin`` and ``sys.stdout``, as
    python chooses them for the current ``LC_CTYPE`` (``config_init_stdio_encoding``
    in CPython's Python/initconfig.c); ``sys.stderr`` always has
    ``backslashreplace``.

    ``PYTHONIOENCODING=ENCODING:ERRORS`` overrides either (an encoding given
    alone makes the handler ``strict``). Otherwise the encoding is the
    locale's, or UTF-8 in UTF-8 mode, which the C locale turns on; the
    handler is ``surrogateescape`` in UTF-8 mode and in the C locale and
    those it is coerced to, ``strict`` elsewhere. The encoding is named as
    its codec names itself (``latin-1`` is ``iso8859-1``).
    """
    ctype = _locale.setlocale(_locale.LC_CTYPE)
    c_locale = ctype in ("C", "POSIX")
    utf8 = utf8_mode
    encoding = "utf-8" if utf8 else _locale.nl_langinfo(_locale.CODESET) or "utf-8"
    errors = "surrogateescape" if utf8 or c_locale or ctype in _COERCION_TARGETS else "strict"
    value = _variable(b"PYTHONIOENCODING", use_environment)
    if value is not None:
        name, _, handler = value.partition(":")
        if name:
            encoding, errors = name, handler or "strict"
        elif handler:
            errors = handler
    try:
        encoding = codecs.lookup(encoding).name
    except LookupError as exc:
        raise StreamError(
            "init_stdio_encoding: failed to get the Python codec name of the stdio encoding",
            cause=f"LookupError: {exc}",
        ) from None
    return encoding, errors


def _variable(name: bytes, use_environment: bool) -> str | None:
    """A ``PYTHON*`` variable as python reads it at start-up: None when unset,
    empty, or ignored (``-E``). Read from the environment's bytes, which
    spares the run the ``os.environ`` mapping's Python code."""
    value = os.environ._data.get(name) if use_environment else None  # type: ignore[attr-defined]
    return os.fsdecode(value) if value else None


def open_stream(fd: int, *, unbuffered: bool, encoding: tuple[str, str]) -> io.TextIOWrapper | None:
    """A text stream over ``fd`` (0, 1 or 2), or None when ``fd`` is closed;
    ``encoding`` is what :func:`stream_settings` chose."""
    try:
        status = os.fstat(fd)
    except OSError:
        return None
    if stat.S_ISDIR(status.st_mode):
        # Python checks standard input itself; for the others, opening the
        # stream fails.
        if fd == 0:
            raise StreamError("init_sys_streams: <stdin> is a directory, cannot continue")
        error = IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), fd)
        raise StreamError("init_sys_streams: can't initialize sys standard streams", cause=f"IsADirectoryError: {error}")
    write = fd != 0
    encoding, errors = encoding
    if fd == 2:
        errors = "backslashreplace"
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
    try:
        stream = io.TextIOWrapper(
            buffered,  # type: ignore[arg-type]
            encoding=encoding,
            errors=errors,
            newline="\n",
            line_buffering=not unbuffered and (fd == 2 or raw.isatty()),
            write_through=unbuffered,
        )
    except LookupError as exc:  # a codec, but not a text encoding (PYTHONIOENCODING=rot13)
        raise StreamError(
            "init_sys_streams: can't initialize sys standard streams", cause=f"LookupError: {exc}"
        ) from None
    stream.mode = "w" if write else "r"  # type: ignore[misc]
    return stream


def rehearse() -> None:
    """Build (and drop) streams over the server's own descriptors 0, 1 and 2:
    see :func:`warmfork.pymain.rehearse`. Nothing is written or closed, the
    server's locale stays as it is, and its ``PYTHON*`` variables are looked
    up but not used."""
    with contextlib.suppress(StreamError):
        stream_settings(use_environment=True)
    for fd in (0, 1, 2):
        with contextlib.suppress(StreamError, OSError):
            open_stream(fd, unbuffered=False, encoding=("utf-8", "strict"))


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


# The ioctl that names the terminal behind a descriptor, as /proc/PID/stat's
# tty_nr does: through /dev/tty too, whose own device number is (5, 0).
_TIOCGDEV = 0x80045432


def _terminal_number(fd: int) -> int:
    """The device number of the terminal open at ``fd``."""
    try:
        return int.from_bytes(fcntl.ioctl(fd, _TIOCGDEV, b"\0\0\0\0"), sys.byteorder)
    except OSError:
        return os.fstat(fd).st_rdev


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
        self._terminal = _terminal_number(fd)
        # The SIGCONT handler a read replaced, while one is in progress.
        self._previous: object = _NOT_READING

    # Every way FileIO reads: `sys.stdin.read()` reaches `readall` from C,
    # past `readinto`.
    def readinto(self, buffer: Any) -> int | None:  # any writable buffer, as FileIO takes
        before = self.begin_read()
        try:
            return super().readinto(buffer)
        finally:
            self.end_read(before)

    def readall(self) -> bytes:
        before = self.begin_read()
        try:
            return super().readall()
        finally:
            self.end_read(before)

    def read(self, size: int | None = -1) -> bytes | None:
        before = self.begin_read()
        try:
            return super().read(size)
        finally:
            self.end_read(before)

    def begin_read(self) -> object:
        """Wait for the foreground, and until :meth:`end_read` wait again
        whenever the job is continued: a read the job was stopped in goes on
        after SIGCONT, and after ``bg`` that is in the background. (A Python
        handler makes the read return EINTR, and the handler runs before it
        is retried.) Reads may nest (``input()`` with stdout redirected
        reads through ``sys.stdin``): only the outermost installs the
        handler. Returns what ``end_read`` needs."""
        self.wait_for_foreground()
        if self._previous is not _NOT_READING:
            return _NOT_READING  # nested: the outer read's handler stays
        try:
            self._previous = _signal.signal(_SIGCONT, self._continued)
        except ValueError:  # not the main thread: no handler, the check above only
            return _NOT_READING
        return self._previous

    def end_read(self, previous: object) -> None:
        if previous is not _NOT_READING:
            self._previous = _NOT_READING
            # None: a handler not set from Python, which cannot be put back.
            _signal.signal(_SIGCONT, _signal.SIG_DFL if previous is None else previous)  # type: ignore[arg-type]

    def _continued(self, signum: int, frame: object) -> None:
        self.wait_for_foreground()
        if callable(self._previous):
            self._previous(signum, frame)

    def wait_for_foreground(self) -> None:
        """Stop this worker and the client's job while the job is in the
        background of the terminal."""
        while (group := self._background_group()) is not None:
            os.killpg(group, signal.SIGTTIN)
            os.kill(os.getpid(), signal.SIGSTOP)

    def _background_group(self) -> int | None:
        """The client's process group if it is in the background of its
        terminal, and that terminal is the one read, else None."""
        try:
            stat_line = Path(f"/proc/{self._client}/stat").read_bytes()
        except OSError:
            return None
        # After the command name: state ppid pgrp session tty_nr tpgid ...
        fields = stat_line.rsplit(b")", 1)[1].split()
        group, terminal, foreground = int(fields[2]), int(fields[4]), int(fields[5])
        if terminal != self._terminal:  # another terminal: no job control applies
            return None
        return group if foreground not in (-1, group) else None


# Streams replaced in this process. They stay referenced: freeing them would
# only write to (and so copy) their memory pages in a worker that never needs
# the memory back.
_replaced: list[object] = []


def install(*, unbuffered: bool, use_environment: bool) -> None:
    """Replace ``sys.stdin``, ``sys.stdout`` and ``sys.stderr`` (and their
    ``__std*__`` twins) with fresh streams over descriptors 0, 1 and 2, with
    the encoding :func:`stream_settings` chooses, reading ``PYTHON*``
    variables only if ``use_environment``."""
    global installed_with
    encoding = stream_settings(use_environment)
    streams = [open_stream(fd, unbuffered=unbuffered, encoding=encoding) for fd in (0, 1, 2)]
    _put_in_place(streams)
    installed_with = (unbuffered, use_environment, utf8_mode)
    global terminal_reader, run_input
    stdin_raw = getattr(streams[0], "buffer", None)
    terminal_reader = getattr(stdin_raw, "raw", None)
    if not isinstance(terminal_reader, TerminalReader):
        terminal_reader = None
        run_input = _original_input
        return
    # `input()` on a terminal reads descriptor 0 from C, past `sys.stdin`:
    # it gets the same job control (through a builtin, see
    # `server/src/terminal_input.rs`).
    _native.guard_input(terminal_reader, _original_input)
    builtins.input = run_input = _native.input


def install_stand_ins() -> None:
    """Streams for a run whose own could not be built (:func:`install` raised
    :class:`StreamError`), for a handler that reads its options first and
    then builds them again (see ``_worker.options_first``): the locale's
    encoding, whatever ``PYTHONIOENCODING`` says, and None for a descriptor
    that is closed or a directory. The next :func:`install` builds the
    streams in any case."""
    global installed_with
    try:
        encoding = stream_settings(use_environment=False)
    except StreamError:  # a locale whose codec Python lacks
        encoding = ("utf-8", "backslashreplace")
    streams = []
    for fd in (0, 1, 2):
        try:
            streams.append(open_stream(fd, unbuffered=False, encoding=encoding))
        except StreamError:
            streams.append(None)
    _put_in_place(streams)
    installed_with = None


def _put_in_place(streams: list[io.TextIOWrapper | None]) -> None:
    """Make ``streams`` ``sys.std*`` and ``sys.__std*__``, keeping the
    streams they replace (see :data:`_replaced`)."""
    _replaced.extend((sys.stdin, sys.stdout, sys.stderr, sys.__stdin__, sys.__stdout__, sys.__stderr__))
    sys.stdin, sys.stdout, sys.stderr = streams
    sys.__stdin__, sys.__stdout__, sys.__stderr__ = streams


_original_input = builtins.input

#: The reader of standard input of this run when it is a terminal (see
#: :class:`TerminalReader`), for reads that bypass ``sys.stdin``, such as
#: the prompt's; and the ``input`` the run started with, whatever the
#: program makes of ``builtins.input`` since.
terminal_reader: TerminalReader | None = None
run_input: Callable[..., str] = _original_input


def write_stderr(text: str) -> None:
    """Write to ``sys.stderr`` as CPython's ``PySys_WriteStderr`` does: where
    it is None or missing, or its ``write`` fails, to descriptor 2 (C's
    stderr) instead; and, like it, without flushing."""
    try:
        sys.stderr.write(text)
    except BaseException:  # noqa: BLE001 - CPython clears whatever the program's stream raised
        with contextlib.suppress(OSError):
            os.write(2, text.encode(errors="backslashreplace"))
