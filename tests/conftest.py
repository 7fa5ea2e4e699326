"""Shared fixtures: a real warmfork server on a private socket, and the real
static client pointed at it.

Every test that needs a server gets its own, on a socket in its own temporary
directory, started as a subprocess and stopped by its pid; nothing is shared
between tests and nothing is left running.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent
CLIENT = BIN / "warmfork"
SERVER_STARTUP_TIMEOUT = 30.0


def wait_for_socket(path: Path, process: subprocess.Popen[bytes], timeout: float) -> None:
    """Wait until the server accepts connections on ``path`` (it binds before
    warming up and serves queued clients once warm, so a connect is enough)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode} before listening")
        if path.exists():
            with socket.socket(socket.AF_UNIX) as probe:
                try:
                    probe.connect(os.fspath(path))
                    return
                except OSError:
                    pass
        time.sleep(0.01)
    raise RuntimeError(f"server did not listen on {path} within {timeout}s")


@dataclass
class Server:
    """A running server and how to reach it."""

    socket: Path
    process: subprocess.Popen[bytes]
    log: Path
    env: dict[str, str] = field(default_factory=dict)

    def run(
        self,
        *args: str | bytes,
        input: bytes | None = None,  # mirrors subprocess.run
        env: dict[str, str] | None = None,
        cwd: str | os.PathLike[str] | None = None,
        timeout: float = 30,
        client: Sequence[str | os.PathLike[str]] = (CLIENT,),
        **kwargs: object,
    ) -> subprocess.CompletedProcess[bytes]:
        """Run the client with ``args`` against this server."""
        full_env = {**self.env, **(env or {})}
        return subprocess.run(
            [*client, *args],
            input=input,
            env=full_env,
            cwd=cwd,
            capture_output=True,
            timeout=timeout,
            check=False,
            **kwargs,  # type: ignore[arg-type]
        )

    def stop(self) -> int:
        """SIGTERM the server and wait for it; returns its exit status."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


def start_server(
    tmp_path: Path,
    *server_args: str,
    name: str = "s",
    log: Path | None = None,
    reload: bool = False,
    pass_fds: Sequence[int] = (),
) -> Server:
    """Start ``warmfork-server`` on a socket in a fresh private directory;
    its output goes to ``log`` (by default a fresh file in ``tmp_path``).
    With ``reload`` it replaces itself when code it loaded changes. The
    server inherits ``pass_fds`` besides its standard descriptors."""
    sock_dir = tmp_path / f"sock-{name}"
    sock_dir.mkdir(mode=0o700)
    sock = sock_dir / "default.sock"
    log = log or tmp_path / f"server-{name}.log"
    env = {**os.environ, "WARMFORK_SOCKET": os.fspath(sock)}
    with log.open("wb") as log_file:
        process = subprocess.Popen(
            # --no-reload by default: a reinstall of the package during a test
            # run must not make test servers replace themselves.
            [
                sys.executable,
                "-m",
                "warmfork",
                "--socket",
                os.fspath(sock),
                *([] if reload else ["--no-reload"]),
                *server_args,
            ],
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=tmp_path,
            pass_fds=pass_fds,
        )
    server = Server(socket=sock, process=process, log=log, env=env)
    try:
        wait_for_socket(sock, process, SERVER_STARTUP_TIMEOUT)
    except BaseException:
        server.stop()
        raise
    return server


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    """A fresh server with the python-compatible handler."""
    srv = start_server(tmp_path)
    yield srv
    srv.stop()


def python(*args: str | bytes, **kwargs: object) -> subprocess.CompletedProcess[bytes]:
    """Run plain python (the reference behaviour) with ``args``."""
    return subprocess.run([sys.executable, *args], capture_output=True, check=False, timeout=30, **kwargs)  # type: ignore[arg-type]
