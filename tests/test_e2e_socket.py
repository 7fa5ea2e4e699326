"""The server's socket: one server per socket, a private directory and modes
that do not depend on the umask, and no socket left behind after SIGTERM."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import time
from pathlib import Path

import pytest
from conftest import CLIENT, Server, start_server
from support import server_process
from support.server_process import settled_fd_count, stop_when_idle


def second_server_message(first: Server) -> str:
    """What a second server started on ``first``'s socket says as it fails."""
    second = server_process.launch(first.socket)
    _, err = second.communicate(timeout=30)
    assert second.returncode != 0
    return err.decode()


def test_a_second_server_on_the_same_socket_fails_naming_the_running_one(tmp_path: Path) -> None:
    first = start_server(tmp_path)
    try:
        message = second_server_message(first)
        assert message.startswith("warmfork-server: "), message
        assert os.fspath(first.socket) in message
        assert "already" in message
        # The first server is untouched: its socket is still there and serving.
        assert first.socket.exists()
        done = first.run("-c", "print('first')")
        assert (done.returncode, done.stdout) == (0, b"first\n")
    finally:
        stop_when_idle(first)


def test_a_second_server_is_told_the_pid_of_the_running_one(tmp_path: Path) -> None:
    first = start_server(tmp_path)
    try:
        message = second_server_message(first)
    finally:
        stop_when_idle(first)
    assert str(first.process.pid) in message, message


def stop_within(process: subprocess.Popen[bytes], seconds: float, signum: int = signal.SIGTERM) -> int | None:
    """Send ``process`` ``signum``; its status, or None if it is still
    running after ``seconds`` (it is then killed)."""
    process.send_signal(signum)
    try:
        return process.wait(timeout=seconds)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        return None


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP], ids=["sigterm", "sighup"])
def test_the_server_removes_its_socket_on_sigterm_or_sighup(tmp_path: Path, signum: int) -> None:
    # SIGHUP: the terminal a server was started at has closed.
    srv = start_server(tmp_path)
    assert srv.run("-c", "pass").returncode == 0
    settled_fd_count(srv.process.pid)  # idle, waiting for clients
    assert stop_within(srv.process, 10, signum) == 0
    assert not srv.socket.exists()
    assert f"stopped by {signal.Signals(signum).name}" in srv.log.read_text()


def test_a_server_started_under_nohup_serves_on_after_sighup(tmp_path: Path) -> None:
    previous = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        srv = start_server(tmp_path)  # inherits SIGHUP ignored, as from nohup
    finally:
        signal.signal(signal.SIGHUP, previous)
    try:
        srv.process.send_signal(signal.SIGHUP)
        time.sleep(0.2)
        assert srv.process.poll() is None
        assert srv.run("-c", "print('served')").stdout == b"served\n"
    finally:
        stop_when_idle(srv)


def test_sigterm_during_warm_up_stops_the_server_and_removes_its_socket(tmp_path: Path) -> None:
    warmup = tmp_path / "slow_warmup.py"
    warmup.write_text("import time\ntime.sleep(3)\n")
    # start_server returns once the socket accepts connections, which it
    # does before warming up.
    srv = start_server(tmp_path, "--warmup", os.fspath(warmup))
    assert stop_within(srv.process, 10) is not None
    assert not srv.socket.exists()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["sigterm", "ctrl-c"])
def test_a_stop_signal_during_a_fork_hook_stops_the_server(tmp_path: Path, signum: int) -> None:
    # os.register_at_fork hooks (logging's, asyncio's) run Python code in
    # every fork: the stop handler raised there, and the hook's caller only
    # reported the exception ("Exception ignored") and served on.
    warmup = tmp_path / "fork_hook.py"
    warmup.write_text("import os, time\nos.register_at_fork(after_in_parent=lambda: time.sleep(0.3))\n")
    srv = start_server(tmp_path, "--warmup", os.fspath(warmup), "--pool", "4")
    deadline = time.monotonic() + 30
    while "serving on" not in srv.log.read_text() and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.1)  # into the refill: four forks of 0.3 s each
    status = stop_within(srv.process, 10, signum)
    log = srv.log.read_text()
    assert status in (0, 130), log
    assert "Exception ignored" not in log, log
    assert not srv.socket.exists()


def test_sigterm_while_the_server_is_busy_with_clients_still_stops_it(tmp_path: Path) -> None:
    srv = start_server(tmp_path)
    assert srv.run("-c", "pass").returncode == 0
    clients = [
        subprocess.Popen([CLIENT, "-c", "pass"], env=srv.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(30)
    ]
    time.sleep(0.01)
    status = stop_within(srv.process, 5)
    for client in clients:
        client.wait(timeout=30)
    assert status == 0, "the server ignored a SIGTERM that arrived while it was not waiting in poll"
    assert not srv.socket.exists()


def test_a_new_server_takes_over_the_socket_after_sigterm(tmp_path: Path) -> None:
    first = start_server(tmp_path)
    assert first.run("-c", "pass").returncode == 0
    settled_fd_count(first.process.pid)
    assert stop_within(first.process, 10) == 0
    second = server_process.launch(first.socket)
    try:
        server_process.wait_listening(first.socket, second)
        done = first.run("-c", "print('again')")
        assert (done.returncode, done.stdout) == (0, b"again\n")
    finally:
        server_process.stop(second)


def test_socket_dir_is_0700_and_socket_0600_even_with_umask_000(tmp_path: Path) -> None:
    sock = tmp_path / "made-by-server" / "default.sock"
    process = server_process.launch(sock, preexec_fn=lambda: os.umask(0))
    try:
        server_process.wait_listening(sock, process)
        assert stat.S_IMODE(sock.parent.stat().st_mode) == 0o700
        assert stat.S_IMODE(sock.lstat().st_mode) == 0o600
        assert stat.S_ISSOCK(sock.lstat().st_mode)
        done = subprocess.run(
            [CLIENT, "-c", "print('private')"],
            env={"WARMFORK_SOCKET": os.fspath(sock)},
            capture_output=True,
            timeout=30,
            check=False,
        )
        assert (done.returncode, done.stdout) == (0, b"private\n")
    finally:
        assert server_process.stop(process) == 0
    assert not sock.exists()


@pytest.mark.parametrize("mode", [0o777, 0o1777, 0o720, 0o702], ids=oct)
def test_a_socket_dir_writable_by_others_is_refused(tmp_path: Path, mode: int) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(mode)
    sock = shared / "default.sock"
    process = server_process.launch(sock)
    _, err = process.communicate(timeout=30)
    assert process.returncode != 0
    message = err.decode()
    assert message.startswith("warmfork-server: "), message
    assert os.fspath(shared) in message
    assert "writable" in message
    assert not sock.exists()
