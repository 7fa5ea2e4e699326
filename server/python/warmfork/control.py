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
    (``--grace``), then ends them; after ``timeout`` seconds this gives up
    waiting: it kills the server's workers, each with its process group
    (what a run's grace would have ended), so that the server reports their
    runs' ends to their clients and exits, and kills the server if it has
    not gone a second later.
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
    ended = _kill_workers(pid)
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline and running_pid(socket) is not None:
        time.sleep(0.02)
    runs = f"killed its {ended} worker{'s' if ended != 1 else ''}"
    if running_pid(socket) is None:
        print(f"warmfork-server: the server on {socket} (pid {pid}) did not stop within {timeout:g}s; {runs}")
        return 1
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    print(f"warmfork-server: the server on {socket} (pid {pid}) did not stop within {timeout:g}s; {runs} and it")
    return 1


def _kill_workers(server: int) -> int:
    """SIGKILL each worker of ``server`` (a child running the server's own
    program, as a forked worker does, unlike a program a host application
    of ``warmfork.serve`` started) and its process group (a worker leads
    one, which the program's children share); returns how many there were.
    Each child is held by a pidfd before it is checked, so that a number the
    server has just reaped, and another process taken, is left alone."""
    children: set[int] = set()
    with contextlib.suppress(OSError):
        for task in os.listdir(f"/proc/{server}/task"):
            with contextlib.suppress(OSError), open(f"/proc/{server}/task/{task}/children") as listed:
                children.update(int(child) for child in listed.read().split())
    program = _program_of(server)
    ended = 0
    for child in children:
        try:
            pidfd = os.pidfd_open(child)
        except OSError:  # gone already
            continue
        try:
            if _parent_of(child) != server or _program_of(child) != program:
                continue
            with contextlib.suppress(OSError):
                os.killpg(child, signal.SIGKILL)
            signal.pidfd_send_signal(pidfd, signal.SIGKILL)
            ended += 1
        except OSError:
            pass
        finally:
            os.close(pidfd)
    return ended


def _parent_of(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return int(stat.read().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return None


def _program_of(pid: int) -> tuple[str, bytes] | None:
    """The executable and command line of process ``pid``."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
            return os.readlink(f"/proc/{pid}/exe"), cmdline.read()
    except OSError:
        return None
