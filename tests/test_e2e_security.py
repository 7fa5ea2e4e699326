"""The client hands its environment and files only to its own user's server,
through a socket no one else can swap."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from conftest import CLIENT, Server


def run_client(sock: Path) -> subprocess.CompletedProcess[bytes]:
    env = {**os.environ, "WARMFORK_SOCKET": os.fspath(sock)}
    return subprocess.run([CLIENT, "-c", "print('ran')"], env=env, capture_output=True, timeout=30, check=False)


def test_a_socket_planted_by_another_user_gets_nothing() -> None:
    # `nobody` listens on a socket in a directory it owns, where the client
    # looks; the client must not send it a byte of its request.
    planted = Path(tempfile.mkdtemp(prefix="warmfork-planted-", dir="/tmp"))
    try:
        os.chmod(planted, 0o755)
        shutil.chown(planted, "nobody", "nogroup")
        sock = planted / "s.sock"
        received = planted / "received"
        listener = (
            "import socket, sys, os\n"
            "s = socket.socket(socket.AF_UNIX); s.bind(sys.argv[1]); os.chmod(sys.argv[1], 0o777); s.listen()\n"
            "c, _ = s.accept(); c.settimeout(2)\n"
            "try:\n    data = c.recv(65536)\nexcept OSError:\n    data = b''\n"
            "open(sys.argv[2], 'wb').write(data)\n"
        )
        process = subprocess.Popen(
            ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", sys.executable, "-c", listener, sock, received]
        )
        try:
            deadline = time.monotonic() + 10
            while not sock.exists() and time.monotonic() < deadline:
                time.sleep(0.02)
            done = run_client(sock)
            assert done.returncode == 202
            assert b"runs as uid 65534, not as you" in done.stderr
            assert process.wait(timeout=10) == 0
            assert received.read_bytes() == b""
        finally:
            if process.poll() is None:
                process.kill()
    finally:
        shutil.rmtree(planted, ignore_errors=True)


def test_a_socket_directory_others_can_write_is_refused(server: Server) -> None:
    assert run_client(server.socket).stdout == b"ran\n"
    os.chmod(server.socket.parent, 0o777)
    try:
        done = run_client(server.socket)
        assert done.returncode == 202
        assert done.stdout == b""
        assert b"mode 777): another user could replace it" in done.stderr
    finally:
        os.chmod(server.socket.parent, 0o700)


def test_a_socket_in_another_users_directory_is_refused(server: Server) -> None:
    shutil.chown(server.socket.parent, "nobody", "nogroup")
    try:
        done = run_client(server.socket)
        assert done.returncode == 202
        assert b"(owner uid 65534," in done.stderr
    finally:
        shutil.chown(server.socket.parent, os.getuid(), os.getgid())


def test_a_thousand_idle_connections_do_not_hold_up_a_real_client(server: Server) -> None:
    idle = [socket.socket(socket.AF_UNIX) for _ in range(1000)]
    try:
        for connection in idle:
            connection.connect(os.fspath(server.socket))
        started = time.monotonic()
        assert run_client(server.socket).stdout == b"ran\n"
        # Not a speed claim: idle clients are cut off after the 10 s request
        # timeout, so a server that waited on them would take at least that.
        assert time.monotonic() - started < 5
    finally:
        for connection in idle:
            connection.close()
