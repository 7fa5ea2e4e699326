"""``warmfork-server`` given a bad command line or a warm-up that fails:
one line saying what failed and the documented status (2 for the command
line, 1 for a server that cannot start), never a traceback, and never a
server that says it serves and then exits."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from conftest import CLIENT

SERVER = [sys.executable, "-m", "warmfork"]


def server_cli(tmp_path: Path, *args: str) -> tuple[int, str, Path]:
    """Run ``warmfork-server ARGS`` on a socket in a fresh private directory;
    its status, its output and the socket directory."""
    sock_dir = tmp_path / "sock"
    sock_dir.mkdir(mode=0o700, exist_ok=True)
    env = {**os.environ, "WARMFORK_SOCKET": os.fspath(sock_dir / "s.sock"), "PYTHONPATH": os.fspath(tmp_path)}
    done = subprocess.run(
        [*SERVER, *args] if args[0] in ("status", "stop") else [*SERVER, "--no-reload", *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        cwd=tmp_path,
        env=env,
        stdin=subprocess.DEVNULL,
    )
    return done.returncode, done.stdout + done.stderr, sock_dir


@pytest.mark.parametrize(
    "args",
    [
        ["--pool", "-1"],
        ["--pool", "1000000000000000"],
        ["--pool", "99999999999999999999"],
        ["--request-timeout", "-1"],
        ["--request-timeout", "nan"],
        ["--request-timeout", "0"],
        ["--grace", "-1"],
        ["--grace", "1e300"],
        ["--daemon", "--request-timeout", "-1"],
        ["--name", "a/b"],
        ["--name", ""],
    ],
)
def test_a_bad_option_value_exits_2_before_anything_starts(tmp_path: Path, args: list[str]) -> None:
    code, out, sock_dir = server_cli(tmp_path, *args)
    assert code == 2, out
    assert f"argument {args[-2]}:" in out.splitlines()[-1], out
    assert "Traceback" not in out
    assert "serving on" not in out
    assert list(sock_dir.iterdir()) == []


@pytest.mark.parametrize("args", [["--dae"], ["--no-rel"], ["--pre", "json"], ["stop", "--time", "1"]])
def test_options_are_not_abbreviated(tmp_path: Path, args: list[str]) -> None:
    # A fresh server that replaces this one after an edit gets the same
    # command line but for --daemon, taken out by its exact name: an
    # abbreviated --dae made every replacement daemonise itself and fail.
    code, out, sock_dir = server_cli(tmp_path, *args)
    assert code == 2, out
    assert f"unrecognized arguments: {args[-2] if args[0] == 'stop' else args[0]}" in out, out
    assert list(sock_dir.iterdir()) == []


def test_stop_with_a_negative_timeout_exits_2(tmp_path: Path) -> None:
    code, out, _ = server_cli(tmp_path, "stop", "--timeout", "-1")
    assert code == 2, out
    assert "argument --timeout: must be 0 to" in out


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("raise RuntimeError('boom')\n", "RuntimeError: boom (FILE, line 1)"),
        ("def f(:\n", "SyntaxError: invalid syntax (FILE, line 1)"),
        ("import sys\nsys.exit(3)\n", "it called sys.exit(3)"),
    ],
)
@pytest.mark.parametrize("how", ["--preload", "--warmup"])
def test_a_warm_up_that_fails_is_one_line_and_exit_1(tmp_path: Path, how: str, source: str, expected: str) -> None:
    module = tmp_path / "failing_warmup.py"
    module.write_text(source)
    code, out, _ = server_cli(tmp_path, how, "failing_warmup" if how == "--preload" else os.fspath(module))
    assert code == 1, out
    assert "Traceback" not in out
    lines = out.splitlines()
    assert len(lines) == 1 and lines[0].startswith("warmfork-server: "), out
    assert expected.replace("FILE", os.fspath(module)) in lines[0]


def test_a_warm_up_file_that_is_a_directory_says_so(tmp_path: Path) -> None:
    code, out, _ = server_cli(tmp_path, "--warmup", os.fspath(tmp_path))
    assert code == 1, out
    assert out.strip() == f"warmfork-server: cannot run the warm-up file {os.fspath(tmp_path)!r}: it is a directory"


def test_a_failing_warm_up_under_daemon_is_reported_by_the_parent(tmp_path: Path) -> None:
    (tmp_path / "failing_warmup.py").write_text("raise RuntimeError('boom')\n")
    code, out, _ = server_cli(tmp_path, "--daemon", "--preload", "failing_warmup")
    assert code == 1, out
    assert "the server did not start: cannot preload failing_warmup: RuntimeError: boom" in out


@pytest.mark.parametrize("kind", ["file", "directory", "symlink"])
def test_a_socket_path_taken_by_something_else_is_left_alone(tmp_path: Path, kind: str) -> None:
    sock_dir = tmp_path / "sock"
    sock_dir.mkdir(mode=0o700)
    taken = sock_dir / "s.sock"
    if kind == "file":
        taken.write_text("precious\n")
    elif kind == "directory":
        taken.mkdir()
    else:
        taken.symlink_to("nowhere")
    code, out, _ = server_cli(tmp_path, "--socket", os.fspath(taken))
    assert code == 1, out
    what = {"file": "a regular file", "directory": "a directory", "symlink": "a symbolic link"}[kind]
    assert out.strip() == (
        f"warmfork-server: {taken} is {what}, not a socket; "
        "choose another path (--socket or WARMFORK_SOCKET), or remove it"
    )
    assert sorted(p.name for p in sock_dir.iterdir()) == ["s.sock"]
    if kind == "file":
        assert taken.read_text() == "precious\n"


def test_a_socket_path_too_long_names_itself_and_its_length(tmp_path: Path) -> None:
    path = tmp_path / "sock" / ("a" * 120)
    code, out, sock_dir = server_cli(tmp_path, "--socket", os.fspath(path))
    assert code == 1, out
    assert out.strip() == (
        f"warmfork-server: socket path {path} is {len(os.fspath(path))} bytes, longer than the 107 "
        "a Unix socket allows; choose a shorter one (--socket or WARMFORK_SOCKET)"
    )
    assert list(sock_dir.iterdir()) == []


def test_status_with_a_warmfork_socket_too_long_names_the_variable(tmp_path: Path) -> None:
    env = {**os.environ, "WARMFORK_SOCKET": os.fspath(tmp_path / ("a" * 120))}
    done = subprocess.run([*SERVER, "status"], env=env, capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == 2
    assert "WARMFORK_SOCKET is longer than the 107 bytes a Unix socket allows" in done.stderr


def assert_serves(process: subprocess.Popen[bytes], sock: Path, env: dict[str, str]) -> None:
    """Once the server ``process`` listens at ``sock``, a client run through it works."""
    deadline = time.monotonic() + 30
    while not sock.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    done = subprocess.run([CLIENT, "-c", "print('served')"], env=env, capture_output=True, timeout=30, check=False)
    assert (done.returncode, done.stdout) == (0, b"served\n"), done.stderr


def test_a_socket_path_of_107_bytes_is_served(tmp_path: Path) -> None:
    # The server binds at a temporary name first; PATH.PID.tmp would not fit.
    sock_dir = Path(tempfile.mkdtemp(prefix="wf-"))
    try:
        path = sock_dir / ("b" * (107 - len(os.fspath(sock_dir)) - 1))
        assert len(os.fspath(path)) == 107
        env = {**os.environ, "WARMFORK_SOCKET": os.fspath(path)}
        process = subprocess.Popen(
            [*SERVER, "--no-reload", "--pool", "0"],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        try:
            assert_serves(process, path, env)
        finally:
            process.terminate()
            out, _ = process.communicate(timeout=30)
        assert process.returncode == 0, out
    finally:
        shutil.rmtree(sock_dir)


def test_a_server_started_with_stderr_closed_keeps_its_lock_file_clean(tmp_path: Path) -> None:
    # With descriptor 2 closed, the lock file took the number and got the
    # log lines after the pid: `status` then read pid -1.
    sock_dir = tmp_path / "sock"
    sock_dir.mkdir(mode=0o700)
    sock = sock_dir / "s.sock"
    env = {**os.environ, "WARMFORK_SOCKET": os.fspath(sock)}
    process = subprocess.Popen(
        ["sh", "-c", 'exec 2>&- "$@"', "sh", *SERVER, "--no-reload", "--pool", "0"],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
    )
    try:
        assert_serves(process, sock, env)
        assert (sock_dir / "s.sock.lock").read_text() == f"{process.pid}\n"
        status = subprocess.run([*SERVER, "status"], env=env, capture_output=True, text=True, timeout=30, check=False)
        assert (status.returncode, f"(pid {process.pid})" in status.stdout) == (0, True), status
    finally:
        process.terminate()
        process.wait(timeout=30)
    assert process.returncode == 0
