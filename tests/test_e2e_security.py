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

import pytest
from conftest import CLIENT, Server
from support import nobody


def run_client(sock: Path | str) -> subprocess.CompletedProcess[bytes]:
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
        process = subprocess.Popen(nobody.python(listener, sock, received))
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


SERVER = [sys.executable, "-m", "warmfork"]


def control(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*SERVER, *args], capture_output=True, text=True, timeout=60, check=False)


def test_stop_believes_no_lock_file_another_user_could_have_written(tmp_path: Path) -> None:
    # Another user who made the socket directory (the /tmp fallback) wrote
    # a lock naming one of your processes: `stop` killed it.
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    victim = subprocess.Popen(["sleep", "60"])
    lock = shared / "s.sock.lock"
    lock.write_text(f"{victim.pid}\n")
    holder = subprocess.Popen(["flock", "-x", os.fspath(lock), "sleep", "60"])
    try:
        time.sleep(0.3)  # the lock is held
        for command in ("stop", "status"):
            done = control(command, "--socket", os.fspath(shared / "s.sock"))
            assert done.returncode == 1, done
            assert "is not yours alone" in done.stderr and "not acting on it" in done.stderr, done.stderr
        assert victim.poll() is None, "stop killed the process the planted lock named"
    finally:
        for process in (victim, holder):
            process.kill()
            process.wait()


def test_a_lock_file_that_is_a_link_is_neither_believed_nor_followed(tmp_path: Path) -> None:
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    target = tmp_path / "important.txt"
    target.write_text("keep me\n")
    (private / "s.sock.lock").symlink_to(target)
    done = control("stop", "--socket", os.fspath(private / "s.sock"))
    assert done.returncode == 1 and "cannot open" in done.stderr, done
    started = subprocess.run(
        [*SERVER, "--socket", os.fspath(private / "s.sock"), "--no-reload"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert started.returncode == 1 and "lock file" in started.stderr, started.stderr
    assert target.read_text() == "keep me\n"


def test_a_server_refuses_a_socket_directory_another_user_could_swap(tmp_path: Path) -> None:
    # A directory above the socket's that another user owns lets them rename
    # the socket directory away and put one of theirs in its place, where
    # the server then wrote its lock (into any file, through a link).
    theirs = tmp_path / "theirs"
    theirs.mkdir(mode=0o755)
    (theirs / "run").mkdir(mode=0o700)
    shutil.chown(theirs, "nobody", "nogroup")
    linked = tmp_path / "linked"  # a link of root's (the tests' user): where it leads counts
    linked.symlink_to(theirs / "run")
    their_link = tmp_path / "their-link"
    their_link.symlink_to(tmp_path)
    os.lchown(their_link, 65534, 65534)
    cases = {
        theirs / "run" / "s.sock": "above the socket directory",
        linked / "s.sock": "belongs to uid 65534, who could swap",
        their_link / "s.sock": "is a symbolic link of uid 65534",
    }
    for sock, message in cases.items():
        started = subprocess.run(
            [*SERVER, "--socket", os.fspath(sock), "--no-reload"], capture_output=True, text=True, timeout=60, check=False
        )
        assert started.returncode == 1 and message in started.stderr, (sock, started.stderr)
        assert not sock.exists()


@pytest.mark.parametrize("spelling", ["{}/{}", "{}//{}", "{}/./{}"], ids=["plain", "slash", "dot"])
def test_a_client_refuses_a_socket_directory_that_is_another_users_link(
    server: Server, tmp_path: Path, spelling: str
) -> None:
    linked = tmp_path / "linked"
    linked.symlink_to(server.socket.parent)
    os.lchown(linked, 65534, 65534)
    done = run_client(spelling.format(linked, server.socket.name))  # as written: no pathlib clean-up
    assert done.returncode == 202 and b"or it is a symbolic link" in done.stderr, done.stderr
    # One of the user's own (a home reached through a link) leads as well as the directory.
    mine = tmp_path / "mine"
    mine.symlink_to(server.socket.parent)
    assert run_client(mine / server.socket.name).stdout == b"ran\n"
