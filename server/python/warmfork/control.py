"""``warmfork-server status`` and ``warmfork-server stop``: finding and
stopping the server that holds a socket.

A running server holds an exclusive ``flock`` on ``SOCKET.lock`` and has
written its pid there; the lock, not the socket file, says whether it runs
(a socket can outlive a crashed server; a lock cannot).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import time
from pathlib import Path

#: Exit status of ``status`` and ``stop`` when no server runs (as LSB init
#: scripts report "not running").
EXIT_NOT_RUNNING = 3


def running_pid(socket: Path) -> int | None:
    """The pid of the server holding ``socket``, or None if none does."""
    lock = Path(f"{socket}.lock")
    try:
        fd = os.open(lock, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
            return int(text) if text.isdigit() else -1
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def status(socket: Path) -> int:
    """Print whether a server holds ``socket``; 0 if one does."""
    pid = running_pid(socket)
    if pid is None:
        print(f"warmfork-server: no server on {socket}")
        return EXIT_NOT_RUNNING
    print(f"warmfork-server: serving on {socket} (pid {pid})")
    return 0


def stop(socket: Path, timeout: float) -> int:
    """SIGTERM the server holding ``socket`` and wait for it to go.

    The server lets runs in progress finish within its grace period
    (``--grace``), then ends them; after ``timeout`` seconds this gives up
    waiting and kills the server.
    """
    pid = running_pid(socket)
    if pid is None:
        print(f"warmfork-server: no server on {socket}")
        return EXIT_NOT_RUNNING
    if pid <= 0:
        print(f"warmfork-server: a server holds {socket}.lock but its pid is unknown; stop it by hand")
        return 1
    with contextlib.suppress(ProcessLookupError):  # it may have just gone
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if running_pid(socket) is None:
            print(f"warmfork-server: stopped the server on {socket} (pid {pid})")
            return 0
        time.sleep(0.02)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    print(f"warmfork-server: the server on {socket} (pid {pid}) did not stop within {timeout:g}s; killed it")
    return 1
