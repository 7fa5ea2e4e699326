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
import stat
import time
from pathlib import Path

from .errors import WarmforkError

#: Exit status of ``status`` and ``stop`` when no server runs (as LSB init
#: scripts report "not running").
EXIT_NOT_RUNNING = 3


class Untrusted(WarmforkError):
    """The socket's directory or lock file is not this user's alone: what it
    says cannot be believed (another user could name any process there)."""


def running_pid(socket: Path) -> int | None:
    """The pid of the server holding ``socket``, or None if none does.
    Raises :class:`Untrusted` where another user could have written the
    lock file."""
    _check_private(socket.parent, "socket directory", directory=True)
    lock = Path(f"{socket}.lock")
    try:
        fd = os.open(lock, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except FileNotFoundError:
        return None
    except OSError as exc:  # ELOOP: a link, which the server never makes
        raise Untrusted(f"cannot open {lock} as the server's lock file: {exc.strerror}") from None
    try:
        _check_private(lock, "lock file", directory=False, fd=fd)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
            return int(text) if text.isdigit() else -1
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def _check_private(path: Path, what: str, *, directory: bool, fd: int | None = None) -> None:
    """That ``path`` (open at ``fd``, if given) is this user's and writable
    by no one else, as the server made it; a missing directory is fine
    (no server there)."""
    try:
        st = os.fstat(fd) if fd is not None else os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISLNK(st.st_mode):
        # A directory reached through a link of the user's or root's, as the
        # server accepts it; a lock file is never a link.
        if not directory or st.st_uid not in (0, os.geteuid()):
            raise Untrusted(f"the {what} {path} is a symbolic link of uid {st.st_uid}; not acting on it")
        st = os.stat(path)
    kind_ok = stat.S_ISDIR(st.st_mode) if directory else stat.S_ISREG(st.st_mode)
    if not kind_ok or st.st_uid != os.geteuid() or st.st_mode & 0o022:
        raise Untrusted(
            f"the {what} {path} is not yours alone (uid {st.st_uid}, mode {stat.filemode(st.st_mode)}): "
            "another user could have put any process's pid in it; not acting on it"
        )


def _is_mine(pid: int) -> bool:
    """Whether process ``pid`` runs as this user (the server would)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    uids = next((line.split()[1:] for line in status.splitlines() if line.startswith("Uid:")), [])
    return str(os.geteuid()) in uids[:2]


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
    (``--grace``), then ends them; after ``timeout`` seconds this sends a
    second SIGTERM, on which the server ends them at once (and reports
    their ends to their clients), and kills the server if it has not gone
    :data:`_SECOND_CHANCE` seconds later.
    """
    pid = running_pid(socket)
    if pid is None:
        print(f"warmfork-server: no server on {socket}")
        return EXIT_NOT_RUNNING
    if pid <= 0:
        print(f"warmfork-server: a server holds {socket}.lock but its pid is unknown; stop it by hand")
        return 1
    if not _is_mine(pid):
        print(f"warmfork-server: {socket}.lock names pid {pid}, which is not a process of yours; stop the server by hand")
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
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + _SECOND_CHANCE
    while time.monotonic() < deadline and running_pid(socket) is not None:
        time.sleep(0.02)
    if running_pid(socket) is None:
        print(f"warmfork-server: the server on {socket} (pid {pid}) did not stop within {timeout:g}s; ended its runs")
        return 1
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    print(f"warmfork-server: the server on {socket} (pid {pid}) did not stop within {timeout:g}s; killed it")
    return 1


#: How long a server told a second time to stop has to end its runs.
_SECOND_CHANCE = 2.0
