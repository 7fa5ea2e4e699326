"""Server processes seen from outside: starting one by hand (for the tests
about how a server starts, its socket directory and modes, which
``start_server`` in conftest.py cannot express because it prepares the
directory itself), watching its descriptors, and stopping it once idle."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from conftest import Server


def launch(sock: Path, *, preexec_fn: Callable[[], object] | None = None) -> subprocess.Popen[bytes]:
    """Start ``python -m warmfork --socket SOCK`` with stdout and stderr piped."""
    return subprocess.Popen(
        [sys.executable, "-m", "warmfork", "--socket", os.fspath(sock)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "WARMFORK_SOCKET": os.fspath(sock)},
        preexec_fn=preexec_fn,  # noqa: PLW1509 - the tests need the child's umask set before exec
    )


def wait_listening(sock: Path, process: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    """Wait until ``process`` accepts connections on ``sock``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            _, err = process.communicate()
            raise AssertionError(f"server exited with {process.returncode}: {err.decode(errors='replace')}")
        with socket.socket(socket.AF_UNIX) as probe:
            try:
                probe.connect(os.fspath(sock))
                return
            except OSError:
                time.sleep(0.01)
    raise AssertionError(f"server did not listen on {sock} within {timeout}s")


def stop(process: subprocess.Popen[bytes]) -> int:
    """SIGTERM ``process`` once it is idle, and wait for it (see stop_when_idle)."""
    if process.poll() is None:
        settled_fd_count(process.pid)
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.returncode


def process_state(pid: int) -> str | None:
    """The state letter of ``pid`` (R, S, Z, ...), or None once it is reaped."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return stat[stat.rindex(")") + 2 :].split()[0]


def has_ended(pid: int) -> bool:
    """True once ``pid`` has exited. A zombie has exited too: after its parent
    died, whoever adopted it reaps it, and that is not the server's doing."""
    return process_state(pid) in (None, "Z")


def children_of(pid: int) -> dict[int, str]:
    """The children of ``pid`` and their states, read from /proc."""
    children = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except (FileNotFoundError, ProcessLookupError):
            continue
        state, parent = stat[stat.rindex(")") + 2 :].split()[:2]
        if int(parent) == pid:
            children[int(entry)] = state
    return children


def open_fd_count(pid: int) -> int:
    """How many descriptors process ``pid`` has open."""
    return len(os.listdir(f"/proc/{pid}/fd"))


def settled_fd_count(pid: int, timeout: float = 5.0) -> int:
    """``pid``'s descriptor count once it has stopped changing for a while
    (a server refills its pool of idle workers and reaps old ones after a run)."""
    deadline = time.monotonic() + timeout
    readings = [open_fd_count(pid)]
    while time.monotonic() < deadline and (len(readings) < 6 or len(set(readings[-6:])) > 1):
        time.sleep(0.05)
        readings.append(open_fd_count(pid))
    return readings[-1]


def wait_until(condition: Callable[[], bool], timeout: float = 5.0, interval: float = 0.02) -> bool:
    """Poll ``condition()`` until it is true or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(interval)
    return condition()


def stop_when_idle(server: Server) -> int:
    """Stop ``server`` once it has settled (pool refilled, old workers reaped).

    A SIGTERM that reaches the server while it is busy is lost (pinned by
    test_e2e_socket.py); tests about other things should not wait on that.
    """
    settled_fd_count(server.process.pid)
    return server.stop()
