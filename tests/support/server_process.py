"""Server processes seen from outside: starting one by hand (for the tests
about how a server starts, its socket directory and modes, which
``start_server`` in conftest.py cannot express because it prepares the
directory itself), watching its descriptors, and stopping it once idle."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from conftest import SERVER_STARTUP_TIMEOUT, Server


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


def cpu_seconds(pid: int) -> float:
    """User and system time ``pid`` has used."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


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


def can_unshare_pids() -> bool:
    """Whether ``unshare --pid`` is there (it needs root, or user namespaces)."""
    return shutil.which("unshare") is not None and os.geteuid() == 0


@contextlib.contextmanager
def server_in_pid_namespace(tmp_path: Path) -> Iterator[Server]:
    """A server (``--no-reload``) in a pid namespace of its own, as in a
    container: its clients' pids mean nothing there, and a ``kill(-1)`` it
    sends reaches only its own workers. Its ``process`` is the server itself,
    seen from here."""
    sock_dir = tmp_path / "sock"
    sock_dir.mkdir(mode=0o700)
    sock = sock_dir / "default.sock"
    log = tmp_path / "server.log"
    env = {**os.environ, "WARMFORK_SOCKET": os.fspath(sock)}
    command = [sys.executable, "-m", "warmfork", "--socket", os.fspath(sock), "--no-reload"]
    with log.open("wb") as out:
        wrapper = subprocess.Popen(
            ["unshare", "--pid", "--fork", "--kill-child", *command],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=tmp_path,
        )
    try:
        wait_listening(sock, wrapper, SERVER_STARTUP_TIMEOUT)
        (pid,) = children_of(wrapper.pid)
        yield Server(socket=sock, process=_Adopted(pid, wrapper), log=log, env=env)  # type: ignore[arg-type]
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(wrapper.pid, signal.SIGKILL)  # --kill-child: the server goes too
        wrapper.wait()


class _Adopted:
    """The bits of ``Popen`` the tests use, for a process this one did not
    start: the server, a child of ``unshare``."""

    def __init__(self, pid: int, wrapper: subprocess.Popen[bytes]) -> None:
        self.pid = pid
        self._wrapper = wrapper

    def poll(self) -> int | None:
        # The server is its namespace's init: when it ends, so does unshare.
        return self._wrapper.poll()

    def send_signal(self, number: int) -> None:
        os.kill(self.pid, number)

    def wait(self, timeout: float | None = None) -> int:
        return self._wrapper.wait(timeout)

    def kill(self) -> None:
        os.kill(self.pid, signal.SIGKILL)

    @property
    def returncode(self) -> int | None:
        return self._wrapper.returncode
