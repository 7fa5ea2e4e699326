"""``warmfork-server --daemon``: serve in the background, and return only
once the server is ready to serve, or with the reason it is not."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable
from pathlib import Path

from . import _native
from .errors import WarmforkError


def start(socket: Path, serve: Callable[[Callable[[], object]], object]) -> int:
    """Fork; the child detaches and runs ``serve(on_ready)`` with its output
    in ``SOCKET.log``. Returns the parent's exit status: 0 once the child
    said it is ready, 1 (after printing why) if it failed first."""
    ready_read, ready_write = os.pipe()
    pid = os.fork()
    if pid:
        os.close(ready_write)
        try:
            with os.fdopen(ready_read, "rb") as ready:
                word = ready.read().decode(errors="replace")
        except KeyboardInterrupt:
            # The server is detached already and goes on starting, as a
            # service manager's job does when its client stops waiting.
            _say(2, f"warmfork-server: not waiting any longer; the server (pid {pid}) goes on starting: see {socket}.log")
            return 130
        if word == "ready":
            _say(1, f"warmfork-server: serving on {socket} (pid {pid}); log in {socket}.log")
            return 0
        reason = word or f"it exited; see {socket}.log"
        _say(2, f"warmfork-server: the server did not start: {reason}")
        return 1
    os.close(ready_read)
    code = _detached(socket, serve, ready_write)
    os._exit(code)


def _detached(socket: Path, serve: Callable[[Callable[[], object]], object], ready_write: int) -> int:
    os.setsid()
    # The log goes beside the socket: only once its directory is checked as
    # the server checks it (this user's, not writable by others), so that
    # the log is never opened where another user could have put a link.
    try:
        _native.private_socket_dir(socket)
        log = os.open(f"{socket}.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    except OSError as exc:
        os.write(ready_write, str(exc).encode())
        return 1
    null = os.open(os.devnull, os.O_RDONLY)
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(null, 0)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(null)
    os.close(log)
    # Nothing else the starting shell had open stays open in the daemon: a
    # pipe it holds (`$(warmfork-server --daemon)`, `| cat`) would never
    # reach its end.
    os.closerange(3, ready_write)
    os.closerange(ready_write + 1, os.sysconf("SC_OPEN_MAX"))

    def on_ready() -> None:
        with contextlib.suppress(OSError):  # the parent stopped waiting (Ctrl-C, killed): serve anyway
            os.write(ready_write, b"ready")
        os.close(ready_write)

    try:
        serve(on_ready)
    except WarmforkError as exc:
        print(f"warmfork-server: {exc}", file=sys.stderr, flush=True)
        with contextlib.suppress(OSError):  # already closed if it failed after starting
            os.write(ready_write, str(exc).encode())
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


def _say(fd: int, line: str) -> None:
    """Write ``line`` to ``fd``, unbuffered: a reader that has gone (``| head``)
    must not turn the server's start into a failure."""
    with contextlib.suppress(OSError):
        os.write(fd, f"{line}\n".encode(errors="backslashreplace"))
