"""A server you do not have to babysit: status and stop, the grace period
for runs in progress, one log line per run, named servers through symlinks,
and falling back to plain python when warmfork cannot run the program."""

from __future__ import annotations

import contextlib
import fcntl
import os
import resource
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import termios
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import CLIENT, Server, start_server, wait_for_socket
from support import nobody, old_kernel
from support.server_process import wait_until

SERVER = [sys.executable, "-m", "warmfork"]

#: fcntl(2): the capacity of a pipe.
F_SETPIPE_SZ = 1031


def control(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*SERVER, *args], capture_output=True, text=True, timeout=60, check=False)


def test_status_reports_a_running_server_and_its_pid(server: Server) -> None:
    done = control("status", "--socket", os.fspath(server.socket))
    assert done.returncode == 0
    assert f"pid {server.process.pid}" in done.stdout


def test_status_without_a_server_exits_3(tmp_path: Path) -> None:
    done = control("status", "--socket", os.fspath(tmp_path / "none.sock"))
    assert done.returncode == 3
    assert "no server" in done.stdout


def test_stop_ends_the_server_and_removes_its_socket(server: Server) -> None:
    done = control("stop", "--socket", os.fspath(server.socket))
    assert done.returncode == 0, done.stdout + done.stderr
    assert server.process.wait(timeout=10) == 0
    assert not server.socket.exists()
    assert control("stop", "--socket", os.fspath(server.socket)).returncode == 3


def test_a_run_in_progress_finishes_within_the_grace_period(tmp_path: Path) -> None:
    srv = start_server(tmp_path, "--grace", "10")
    try:
        run = subprocess.Popen(
            [CLIENT, "-c", "import time; time.sleep(1); print('finished')"],
            env=srv.env,
            stdout=subprocess.PIPE,
        )
        time.sleep(0.3)
        assert control("stop", "--socket", os.fspath(srv.socket)).returncode == 0
        out, _ = run.communicate(timeout=15)
        assert (run.returncode, out) == (0, b"finished\n")
    finally:
        srv.stop()


def test_a_run_outlasting_the_grace_period_is_killed_and_its_client_told(tmp_path: Path) -> None:
    srv = start_server(tmp_path, "--grace", "0.5")
    try:
        run = subprocess.Popen([CLIENT, "-c", "import time; time.sleep(30)"], env=srv.env)
        time.sleep(0.5)
        started = time.monotonic()
        assert control("stop", "--socket", os.fspath(srv.socket)).returncode == 0
        assert run.wait(timeout=15) == -9
        assert time.monotonic() - started < 10
    finally:
        srv.stop()


def test_stop_that_times_out_before_the_grace_period_ends_the_runs_too(tmp_path: Path) -> None:
    # It SIGKILLed the server alone: the run went on with nothing to end it
    # at the grace period's end, or to hang it up when its client died.
    srv = start_server(tmp_path, "--grace", "60")
    program = (
        "import os, subprocess, time\n"
        "child = subprocess.Popen(['sleep', '60'])\n"
        "print(os.getpid(), child.pid, flush=True)\n"
        "time.sleep(60)\n"
    )
    run = subprocess.Popen([CLIENT, "-c", program], env=srv.env, stdout=subprocess.PIPE)
    pids = []
    try:
        assert run.stdout is not None
        pids = [int(pid) for pid in run.stdout.readline().split()]
        started = time.monotonic()
        stopped = control("stop", "--socket", os.fspath(srv.socket), "--timeout", "0.5")
        assert stopped.returncode == 1 and "did not stop within 0.5s" in stopped.stdout, stopped
        assert run.wait(timeout=15) == -signal.SIGKILL  # the server told the client how its run ended
        assert time.monotonic() - started < 10
        assert wait_until(lambda: not any(os.path.exists(f"/proc/{pid}") for pid in pids), 5), pids
        assert srv.process.wait(timeout=5) is not None
    finally:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        run.kill()
        srv.stop()


def test_the_server_logs_one_line_per_run(server: Server) -> None:
    done = server.run("-c", "raise SystemExit(3)", "first-arg")
    assert done.returncode == 3
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        lines = [line for line in server.log.read_text().splitlines() if " run pid=" in line]
        if lines:
            break
        time.sleep(0.05)
    assert len(lines) == 1
    assert "uid=" in lines[0]
    assert "first-arg" in lines[0]
    assert lines[0].endswith("exit 3")


def test_a_client_invoked_through_a_symlink_uses_the_server_of_that_name(tmp_path: Path) -> None:
    runtime = tmp_path / "runtime"
    runtime.mkdir(mode=0o700)
    env = {key: value for key, value in os.environ.items() if key != "WARMFORK_SOCKET"}
    env["XDG_RUNTIME_DIR"] = os.fspath(runtime)
    (runtime / "warmfork").mkdir(mode=0o700)
    sage = tmp_path / "sage"
    sage.symlink_to(CLIENT)
    process = subprocess.Popen([*SERVER, "--name", "sage"], env=env, stderr=subprocess.PIPE, cwd=tmp_path)
    try:
        sock = runtime / "warmfork" / "sage.sock"
        deadline = time.monotonic() + 30
        while not sock.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        named = subprocess.run([sage, "-c", "print('by name')"], env=env, capture_output=True, timeout=30, check=False)
        assert (named.returncode, named.stdout) == (0, b"by name\n")
        default = subprocess.run([CLIENT, "-c", "pass"], env=env, capture_output=True, timeout=30, check=False)
        assert default.returncode == 202
        assert b"default.sock" in default.stderr
    finally:
        process.terminate()
        process.wait(timeout=15)


def test_a_client_invoked_by_another_name_starts_the_server_of_that_name(tmp_path: Path) -> None:
    # The server command names no socket: the client tells it its own.
    runtime = tmp_path / "runtime"
    runtime.mkdir(mode=0o700)
    env = {key: value for key, value in os.environ.items() if key != "WARMFORK_SOCKET"}
    env.update(XDG_RUNTIME_DIR=os.fspath(runtime), WARMFORK_SERVER=" ".join(SERVER))
    cold = tmp_path / "cold"
    cold.symlink_to(CLIENT)
    sock = runtime / "warmfork" / "cold.sock"
    try:
        done = subprocess.run([cold, "-c", "print('started')"], env=env, capture_output=True, timeout=60, check=False)
        assert (done.returncode, done.stdout) == (0, b"started\n"), done.stderr
        assert sock.exists() and not (runtime / "warmfork" / "default.sock").exists()
    finally:
        control("stop", "--socket", os.fspath(sock))


@pytest.mark.parametrize("log", ["pipe", "stopped terminal"])
def test_a_log_nobody_reads_loses_lines_not_the_server(tmp_path: Path, log: str) -> None:
    # The server's stderr is a pipe of one page that nobody drains, or a
    # terminal whose output is stopped (Ctrl-S): once it is full, a blocking
    # write of the next line would stop the serving loop.
    if log == "pipe":
        read_end, write_end = os.pipe()
        fcntl.fcntl(write_end, F_SETPIPE_SZ, 4096)
    else:
        read_end, write_end = os.openpty()
        termios.tcflow(write_end, termios.TCOOFF)
    private = tmp_path / "s"
    private.mkdir(mode=0o700)
    sock = private / "default.sock"
    env = {**os.environ, "WARMFORK_SOCKET": os.fspath(sock)}
    server = subprocess.Popen([*SERVER, "--no-reload"], env=env, stdin=subprocess.DEVNULL, stdout=write_end, stderr=write_end)
    os.close(write_end)
    try:
        wait_for_socket(sock, server, 30)
        for i in range(60):  # a line a run, about 130 bytes each
            done = subprocess.run([CLIENT, "-c", f"print({i})"], env=env, capture_output=True, timeout=30, check=False)
            assert (done.returncode, done.stdout) == (0, f"{i}\n".encode()), done.stderr
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=30) == 0
        if log == "pipe":  # the lines that fitted are whole (a stopped terminal took none)
            assert os.read(read_end, 4096).startswith(b"warmfork-server: ")
    finally:
        os.close(read_end)
        if server.poll() is None:
            server.kill()
            server.wait()


def test_without_a_server_the_fallback_interpreter_runs_the_program(tmp_path: Path) -> None:
    env = {**os.environ, "WARMFORK_SOCKET": os.fspath(tmp_path / "none.sock"), "WARMFORK_FALLBACK": sys.executable}
    done = subprocess.run(
        [CLIENT, "-c", "import sys; print(sys.argv); raise SystemExit(5)", "arg"],
        env=env,
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert (done.returncode, done.stdout, done.stderr) == (5, b"['-c', 'arg']\n", b"")


def test_an_option_the_server_refuses_runs_under_the_fallback(server: Server) -> None:
    done = server.run(
        "-O", "-c", "import sys; print(sys.flags.optimize)", env={"WARMFORK_FALLBACK": "python3"}
    )
    assert (done.returncode, done.stdout) == (0, b"1\n")


def test_a_fallback_found_but_not_executable_is_reported_as_such(tmp_path: Path) -> None:
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "notrunnable").write_text("#!/bin/sh\n")
    env = {
        **os.environ,
        "WARMFORK_SOCKET": os.fspath(tmp_path / "none.sock"),
        "WARMFORK_FALLBACK": "notrunnable",
        "PATH": os.fspath(tmp_path / "bin"),
    }
    done = subprocess.run([CLIENT, "-c", "pass"], env=env, capture_output=True, timeout=30, check=False)
    assert done.returncode == 204
    assert done.stderr.endswith(b"notrunnable (WARMFORK_FALLBACK): permission denied\n"), done.stderr


def test_a_fallback_that_cannot_run_says_so_and_exits_204(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "WARMFORK_SOCKET": os.fspath(tmp_path / "none.sock"),
        "WARMFORK_FALLBACK": "no-such-python-here",
    }
    done = subprocess.run([CLIENT, "-c", "pass"], env=env, capture_output=True, timeout=30, check=False)
    assert done.returncode == 204
    assert done.stderr.startswith(b"warmfork: cannot run the fallback interpreter no-such-python-here")


@pytest.fixture
def reachable_server(tmp_path: Path) -> Iterator[Server]:
    """A server whose socket `nobody` can reach: a 0711 directory under /tmp
    (pytest's own temporary directories are private to their owner), the
    socket itself made 0666 after start. Only the server's uid check is left
    to keep another user out."""
    private = Path(tempfile.mkdtemp(prefix="warmfork-uid-", dir="/tmp"))
    try:
        os.chmod(private, 0o711)
        sock = private / "s.sock"
        log = tmp_path / "server.log"
        env = {**os.environ, "WARMFORK_SOCKET": os.fspath(sock)}
        with log.open("wb") as out:
            process = subprocess.Popen([*SERVER, "--socket", os.fspath(sock)], env=env, stdout=out, stderr=out)
        srv = Server(socket=sock, process=process, log=log, env=env)
        deadline = time.monotonic() + 30
        while "serving on" not in log.read_text() and time.monotonic() < deadline:
            time.sleep(0.05)
        os.chmod(sock, 0o666)
        yield srv
        srv.stop()
    finally:
        shutil.rmtree(private, ignore_errors=True)


def as_nobody(*command: str | os.PathLike[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", *command],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_another_user_is_refused_by_the_server_and_told_why(reachable_server: Server) -> None:
    probe = (
        "import socket, struct, sys\n"
        "s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1])\n"
        "data = b''\n"
        "while chunk := s.recv(4096): data += chunk\n"
        "version, kind, flags, length, code = struct.unpack_from('<BBHIH', data)\n"
        "print(kind, code, data[12:length].decode())\n"
    )
    done = subprocess.run(
        nobody.python(probe, reachable_server.socket), capture_output=True, text=True, timeout=30, check=False
    )
    assert done.returncode == 0, done.stderr
    kind, code, message = done.stdout.split(" ", 2)
    assert (kind, code) == ("4", "4")  # ERROR, PERMISSION_DENIED
    assert "another user" in message
    assert "refused a client of uid 65534" in reachable_server.log.read_text()
    assert reachable_server.run("-c", "print('still serving')").stdout == b"still serving\n"


def test_the_client_will_not_send_its_environment_to_another_users_server(reachable_server: Server) -> None:
    done = as_nobody(CLIENT, "-c", "pass", env={"WARMFORK_SOCKET": os.fspath(reachable_server.socket)})
    assert done.returncode == 202
    assert "runs as uid 0, not as you" in done.stderr


def test_ten_clients_on_a_cold_socket_start_exactly_one_server(tmp_path: Path) -> None:
    private = tmp_path / "runtime"
    private.mkdir(mode=0o700)
    sock = private / "warmfork" / "default.sock"
    env = {**os.environ, "WARMFORK_SOCKET": os.fspath(sock), "WARMFORK_SERVER": " ".join(SERVER)}
    clients = [
        subprocess.Popen([CLIENT, "-c", f"print({i})"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for i in range(10)
    ]
    try:
        outputs = [client.communicate(timeout=60) for client in clients]
        assert [client.returncode for client in clients] == [0] * 10, outputs
        assert sorted(int(out) for out, _ in outputs) == list(range(10))
        log = Path(f"{sock}.log").read_text()
        assert log.count("serving on") == 1, log
    finally:
        control("stop", "--socket", os.fspath(sock))


@pytest.mark.parametrize(
    "kernel",
    [
        "this one",
        pytest.param(
            "before 5.9",
            marks=pytest.mark.skipif(not old_kernel.supported(), reason="the seccomp filter is for x86_64"),
        ),
    ],
)
def test_a_server_the_client_starts_keeps_none_of_the_clients_descriptors(tmp_path: Path, kernel: str) -> None:
    # `x=$(warmfork ...)` with a descriptor beyond 2 on the same pipe: a
    # server that kept it would hold the pipe open for its whole life.
    # Before Linux 5.9 there is no close_range: the client closes them one
    # by one.
    before = [sys.executable, old_kernel.__file__, "close_range"] if kernel == "before 5.9" else []
    private = tmp_path / "runtime"
    private.mkdir(mode=0o700)
    sock = private / "warmfork" / "default.sock"
    env = {**os.environ, "WARMFORK_SOCKET": os.fspath(sock), "WARMFORK_SERVER": " ".join(SERVER)}
    read_end, write_end = os.pipe()
    try:
        client = subprocess.Popen(
            [*before, CLIENT, "-c", "print('hi')"],
            env=env,
            stdout=write_end,
            stderr=subprocess.PIPE,
            pass_fds=(write_end,),
        )
        os.close(write_end)
        assert client.wait(timeout=60) == 0, client.stderr.read() if client.stderr else ""
        output = b""
        while select.select([read_end], [], [], 10)[0]:
            chunk = os.read(read_end, 4096)
            if not chunk:
                break
            output += chunk
        else:
            raise AssertionError(f"no end of file on the pipe after {output!r}: the server holds it")
        assert output == b"hi\n"
    finally:
        os.close(read_end)
        control("stop", "--socket", os.fspath(sock))


def test_a_client_under_ulimit_n_7_starts_a_server_that_serves_it(tmp_path: Path) -> None:
    # It needed eight descriptors (204, "start the server failed"), and the
    # server it started kept the low limit and failed importing its own code.
    private = tmp_path / "runtime"
    private.mkdir(mode=0o700)
    sock = private / "warmfork" / "default.sock"
    env = {**os.environ, "WARMFORK_SOCKET": os.fspath(sock), "WARMFORK_SERVER": " ".join(SERVER)}

    def seven() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (7, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))

    try:
        done = subprocess.run(
            [CLIENT, "-c", "print('ran')"], env=env, capture_output=True, timeout=60, check=False, preexec_fn=seven
        )
        assert (done.returncode, done.stdout) == (0, b"ran\n"), done.stderr
    finally:
        control("stop", "--socket", os.fspath(sock))


def test_a_client_starts_no_server_in_a_directory_others_can_write_to(tmp_path: Path) -> None:
    # Its lock and log would go where another user could have put links.
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    env = {**os.environ, "WARMFORK_SOCKET": os.fspath(shared / "s.sock"), "WARMFORK_SERVER": " ".join(SERVER)}
    done = subprocess.run([CLIENT, "-c", "pass"], env=env, capture_output=True, timeout=60, check=False)
    assert done.returncode == 202
    assert b"refusing the socket in" in done.stderr
    assert list(shared.iterdir()) == []


def test_a_server_warns_when_warmfork_socket_names_another_socket(tmp_path: Path) -> None:
    # `WARMFORK_SERVER="warmfork-server --socket elsewhere"`: the client that
    # started it waited a minute for its own socket, and the log said only
    # "serving on elsewhere".
    private = tmp_path / "s"
    private.mkdir(mode=0o700)
    sock, wanted = private / "served.sock", private / "wanted.sock"
    log = tmp_path / "server.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [*SERVER, "--socket", os.fspath(sock), "--no-reload"],
            env={**os.environ, "WARMFORK_SOCKET": os.fspath(wanted)},
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
        )
    try:
        wait_for_socket(sock, process, 30)
        text = wait_for_log(log, "this one serves")
        assert f"warning: WARMFORK_SOCKET names {wanted}, where clients" in text, text
        assert f"this one serves {sock}" in text, text
    finally:
        process.terminate()
        process.wait(timeout=30)


def wait_for_log(log: Path, text: str) -> str:
    """The log once it holds ``text`` (all of it so far, if it never does)."""
    wait_until(lambda: text in log.read_text(errors="replace"), timeout=10)
    return log.read_text(errors="replace")


def test_a_socket_path_that_is_not_utf8_is_logged_not_fatal(tmp_path: Path) -> None:
    # The server exited 2 ("surrogates not allowed") right after listening,
    # writing the path in its "serving on" line (and in the warning when
    # WARMFORK_SOCKET, not UTF-8 either, named another socket).
    private = tmp_path / "s"
    private.mkdir(mode=0o700)
    sock, wanted = os.fsencode(private) + b"/caf\xe9.sock", os.fsencode(private) + b"/\xff.sock"
    log = tmp_path / "server.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [*SERVER, "--socket", sock, "--no-reload"],
            env={**os.environb, b"WARMFORK_SOCKET": wanted},
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
        )
    try:
        wait_for_socket(Path(os.fsdecode(sock)), process, 30)
        text = wait_for_log(log, "this one serves")
        assert "serving on " in text and "caf\\xe9.sock" in text, text
        assert "WARMFORK_SOCKET names " in text and "\\xff.sock" in text, text
        done = subprocess.run(
            [CLIENT, "-c", "print('served')"],
            env={**os.environb, b"WARMFORK_SOCKET": sock},
            capture_output=True,
            timeout=30,
            check=False,
        )
        assert (done.returncode, done.stdout) == (0, b"served\n"), done.stderr
        assert process.poll() is None
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_a_server_on_the_socket_warmfork_socket_names_does_not_warn(server: Server) -> None:
    server.run("-c", "pass")
    assert "serving on" in server.log.read_text()
    assert "WARMFORK_SOCKET names" not in server.log.read_text()


def test_a_server_command_that_fails_is_reported_with_its_log(tmp_path: Path) -> None:
    sock = tmp_path / "s" / "default.sock"
    env = {**os.environ, "WARMFORK_SOCKET": os.fspath(sock), "WARMFORK_SERVER": "echo no numpy here >&2; exit 3"}
    done = subprocess.run([CLIENT, "-c", "pass"], env=env, capture_output=True, timeout=60, check=False)
    assert done.returncode == 202
    assert b"exited with status 3" in done.stderr
    assert Path(f"{sock}.log").read_text() == "no numpy here\n"


# Starts its arguments with SIGCHLD ignored, as a parent that ignores it does.
IGNORING_SIGCHLD = "import os, signal, sys\nsignal.signal(signal.SIGCHLD, signal.SIG_IGN)\nos.execvp(sys.argv[1], sys.argv[1:])\n"


def test_a_failing_server_command_is_reported_at_once_by_a_client_ignoring_sigchld(tmp_path: Path) -> None:
    # The kernel reaped the command, waitid said ECHILD, and the client
    # waited the whole minute for a server to listen (later it failed at
    # once, but could not say with what status).
    sock = tmp_path / "s" / "default.sock"
    env = {**os.environ, "WARMFORK_SOCKET": os.fspath(sock), "WARMFORK_SERVER": "exit 3"}
    began = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-c", IGNORING_SIGCHLD, CLIENT, "-c", "pass"], env=env, capture_output=True, timeout=60, check=False
    )
    assert done.returncode == 202 and b"(WARMFORK_SERVER) exited with status 3;" in done.stderr, done.stderr
    assert time.monotonic() - began < 10


def test_a_server_command_killed_by_a_signal_is_reported_so(tmp_path: Path) -> None:
    sock = tmp_path / "s" / "default.sock"
    env = {**os.environ, "WARMFORK_SOCKET": os.fspath(sock), "WARMFORK_SERVER": "kill -TERM $$"}
    done = subprocess.run([CLIENT, "-c", "pass"], env=env, capture_output=True, timeout=60, check=False)
    assert done.returncode == 202 and b"(WARMFORK_SERVER) was killed by signal 15;" in done.stderr, done.stderr


@pytest.mark.parametrize("parent", ["a shell", "a parent ignoring SIGCHLD"])
def test_a_server_command_that_starts_the_server_in_the_background_is_waited_for(tmp_path: Path, parent: str) -> None:
    # As `--daemon`, `systemctl --user start` or a trailing `&` do: the
    # command exits 0 before the server listens. The client took that for
    # a failed start (202, "exited with status 0") and nothing ran.
    private = tmp_path / "runtime"
    private.mkdir(mode=0o700)
    sock = private / "warmfork" / "default.sock"
    # The server listens a second after the command has exited.
    command = f"(sleep 1; exec {' '.join(SERVER)} --no-reload) >/dev/null 2>&1 &"
    env = {**os.environ, "WARMFORK_SOCKET": os.fspath(sock), "WARMFORK_SERVER": command}
    before = [sys.executable, "-c", IGNORING_SIGCHLD] if parent != "a shell" else []
    try:
        done = subprocess.run(
            [*before, CLIENT, "-c", "print('ran')"], env=env, capture_output=True, timeout=60, check=False
        )
        assert (done.returncode, done.stdout) == (0, b"ran\n"), done.stderr
    finally:  # the server starts whatever the client did
        deadline = time.monotonic() + 30
        while control("stop", "--socket", os.fspath(sock)).returncode != 0 and time.monotonic() < deadline:
            time.sleep(0.2)


def test_a_server_started_with_sigchld_ignored_reports_how_runs_end(tmp_path: Path) -> None:
    # Its workers were reaped by the kernel: the server spun at 100 % CPU on
    # their pidfds and the clients waited for ever.
    sock_dir = tmp_path / "s"
    sock_dir.mkdir(mode=0o700)
    sock = sock_dir / "s.sock"
    server = subprocess.Popen(
        [sys.executable, "-c", IGNORING_SIGCHLD, *SERVER, "--socket", os.fspath(sock), "--no-reload"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    env = {**os.environ, "WARMFORK_SOCKET": os.fspath(sock)}
    try:
        deadline = time.monotonic() + 30
        while not sock.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        for program, status in (("import os; os._exit(7)", 7), ("import os; os.kill(os.getpid(), 15)", -15)):
            done = subprocess.run([CLIENT, "-c", program], env=env, capture_output=True, timeout=20, check=False)
            assert done.returncode == status, done.stderr
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_a_server_the_client_starts_does_not_keep_the_first_clients_soft_limits_or_cpus(tmp_path: Path) -> None:
    # It serves every later run: a soft CPU limit of the first would end it
    # after that much CPU, a taskset would pin every run to its CPUs.
    private = tmp_path / "runtime"
    private.mkdir(mode=0o700)
    sock = private / "warmfork" / "default.sock"
    env = {**os.environ, "WARMFORK_SOCKET": os.fspath(sock), "WARMFORK_SERVER": " ".join(SERVER)}
    first_cpu = min(os.sched_getaffinity(0))
    script = f'ulimit -S -t 1000; exec taskset -c {first_cpu} "$@"'
    try:
        done = subprocess.run(
            ["bash", "-c", script, "bash", CLIENT, "-c", "import os; print(len(os.sched_getaffinity(0)))"],
            env=env,
            capture_output=True,
            timeout=60,
            check=False,
        )
        assert (done.returncode, done.stdout) == (0, b"1\n"), done.stderr  # the run keeps its client's
        pid = int(Path(f"{sock}.lock").read_text())
        limits = Path(f"/proc/{pid}/limits").read_text()
        soft, hard = next(line for line in limits.splitlines() if line.startswith("Max cpu time")).split()[3:5]
        assert soft == hard, limits
        assert os.sched_getaffinity(pid) >= os.sched_getaffinity(0)
    finally:
        control("stop", "--socket", os.fspath(sock))


def test_a_run_refused_for_the_start_up_settings_of_the_client_that_started_the_server_says_so(
    tmp_path: Path,
) -> None:
    # A server a client starts has that client's environment, PYTHONOPTIMIZE
    # and PYTHONPATH too (a preload may need that); a later run without the
    # setting is refused, and told that a client started the server and how
    # to have one with its own: the refusal only said "start the server with
    # the same setting", which its user never did.
    private = tmp_path / "runtime"
    private.mkdir(mode=0o700)
    sock = private / "warmfork" / "default.sock"
    env = {**os.environ, "WARMFORK_SOCKET": os.fspath(sock), "WARMFORK_SERVER": " ".join(SERVER)}
    first = {**env, "PYTHONOPTIMIZE": "1", "PYTHONPATH": os.fspath(tmp_path)}
    show = "print(__debug__)"
    try:
        done = subprocess.run([CLIENT, "-c", show], env=first, capture_output=True, timeout=60, check=False)
        assert (done.returncode, done.stdout) == (0, b"False\n"), done.stderr
        pid = int(Path(f"{sock}.lock").read_text())
        variables = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        assert {b"PYTHONOPTIMIZE=1", f"PYTHONPATH={tmp_path}".encode(), b"WARMFORK_AUTOSTARTED=1"} <= set(variables)
        later = subprocess.run([CLIENT, "-c", show], env=env, capture_output=True, timeout=60, check=False)
        assert later.returncode == 201, later
        assert b"a client started this server" in later.stderr and b"warmfork-server stop" in later.stderr, later
        assert control("stop", "--socket", os.fspath(sock)).returncode == 0
        again = subprocess.run([CLIENT, "-c", show], env=env, capture_output=True, timeout=60, check=False)
        assert (again.returncode, again.stdout) == (0, b"True\n"), again.stderr
    finally:
        control("stop", "--socket", os.fspath(sock))


def test_a_server_command_that_fails_gives_way_to_the_fallback_and_says_so(tmp_path: Path) -> None:
    # No server is running, so the fallback runs the program (it once exited
    # 202); the failed start is still reported, or it would go unnoticed.
    sock = tmp_path / "s" / "default.sock"
    env = {
        **os.environ,
        "WARMFORK_SOCKET": os.fspath(sock),
        "WARMFORK_SERVER": "echo no numpy here >&2; exit 3",
        "WARMFORK_FALLBACK": sys.executable,
    }
    done = subprocess.run([CLIENT, "-c", "print('by python')"], env=env, capture_output=True, timeout=60, check=False)
    assert (done.returncode, done.stdout) == (0, b"by python\n"), done.stderr
    assert b"exited with status 3" in done.stderr


def test_ctrl_c_while_the_client_waits_for_a_server_to_start_ends_it_as_python(tmp_path: Path) -> None:
    # A server command that never listens: the client waited out its 60 s
    # with SIGINT held; python would have ended at once.
    sock = tmp_path / "s" / "default.sock"
    pid_file = tmp_path / "server.pid"
    env = {**os.environ, "WARMFORK_SOCKET": os.fspath(sock), "WARMFORK_SERVER": f"echo $$ > {pid_file}; exec sleep 60"}
    client = subprocess.Popen([CLIENT, "-c", "print('never')"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 10
        while not pid_file.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        client.send_signal(signal.SIGINT)
        began = time.monotonic()
        out, err = client.communicate(timeout=20)
        assert (client.returncode, out) == (-signal.SIGINT, b""), err
        assert time.monotonic() - began < 10
    finally:
        client.kill()
        client.wait()
        with contextlib.suppress(OSError, ValueError):
            os.kill(int(pid_file.read_text()), signal.SIGKILL)


def test_daemon_returns_once_ready_and_logs_to_the_socket_directory(tmp_path: Path) -> None:
    sock = tmp_path / "d" / "default.sock"
    started = control("--daemon", "--socket", os.fspath(sock))
    try:
        assert started.returncode == 0, started.stderr
        assert "serving on" in started.stdout
        done = subprocess.run(
            [CLIENT, "-c", "print('from the daemon')"],
            env={**os.environ, "WARMFORK_SOCKET": os.fspath(sock)},
            capture_output=True,
            timeout=30,
            check=False,
        )
        assert (done.returncode, done.stdout) == (0, b"from the daemon\n")
        second = control("--daemon", "--socket", os.fspath(sock))
        assert second.returncode == 1
        assert f"already serving {sock}; stop it first (warmfork-server stop --socket {sock}" in second.stderr
    finally:
        assert control("stop", "--socket", os.fspath(sock)).returncode == 0
    log = Path(f"{sock}.log").read_text()
    assert "serving on" in log
    assert "from the daemon" in log and "exit 0" in log


def test_daemon_keeps_none_of_the_starting_shells_descriptors(tmp_path: Path) -> None:
    # `sh -c 'warmfork-server --daemon 5>&1 | cat'` never ended: the daemon
    # held the pipe on descriptor 5.
    sock = tmp_path / "d" / "default.sock"
    read_end, write_end = os.pipe()
    try:
        started = subprocess.run(
            [*SERVER, "--daemon", "--socket", os.fspath(sock)],
            pass_fds=[write_end],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        os.close(write_end)
        assert started.returncode == 0, started.stderr
        ready, _, _ = select.select([read_end], [], [], 10)
        assert ready and os.read(read_end, 1) == b"", "the daemon still holds the pipe"
    finally:
        os.close(read_end)
        control("stop", "--socket", os.fspath(sock))


def test_daemon_started_with_its_output_unread_still_starts_and_exits_0(tmp_path: Path) -> None:
    sock = tmp_path / "d" / "default.sock"
    read_end, write_end = os.pipe()
    os.close(read_end)  # as `warmfork-server --daemon | (exec 0<&-; ...)`
    try:
        started = subprocess.run(
            [*SERVER, "--daemon", "--socket", os.fspath(sock)],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
            check=False,
        )
        assert (started.returncode, started.stderr) == (0, "")
        assert control("status", "--socket", os.fspath(sock)).returncode == 0
    finally:
        os.close(write_end)
        control("stop", "--socket", os.fspath(sock))


def test_daemon_whose_starter_is_interrupted_goes_on_starting(tmp_path: Path) -> None:
    # Ctrl-C (or a kill) of `warmfork-server --daemon` during a slow warm-up
    # printed tracebacks, and the server died of its write to the gone parent.
    warmup = tmp_path / "slow.py"
    warmup.write_text("import time\ntime.sleep(1.5)\n")
    sock = tmp_path / "d" / "default.sock"
    starter = subprocess.Popen(
        [*SERVER, "--daemon", "--socket", os.fspath(sock), "--warmup", os.fspath(warmup)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        time.sleep(0.5)
        starter.send_signal(signal.SIGINT)
        _, err = starter.communicate(timeout=30)
        assert starter.returncode == 130, err
        assert "not waiting any longer; the server (pid" in err and "Traceback" not in err, err
        env = {**os.environ, "WARMFORK_SOCKET": os.fspath(sock)}
        deadline = time.monotonic() + 30
        while control("status", "--socket", os.fspath(sock)).returncode != 0 and time.monotonic() < deadline:
            time.sleep(0.1)
        done = subprocess.run([CLIENT, "-c", "print('served')"], env=env, capture_output=True, timeout=30, check=False)
        assert (done.returncode, done.stdout) == (0, b"served\n"), done.stderr
    finally:
        starter.kill()
        starter.wait()
        control("stop", "--socket", os.fspath(sock))
    assert "Traceback" not in Path(f"{sock}.log").read_text()


def test_daemon_checks_the_socket_directory_as_the_server_does_before_it_logs(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)  # like /tmp: another user could have put a link at SOCKET.log
    started = control("--daemon", "--socket", os.fspath(shared / "s.sock"))
    assert started.returncode == 1
    assert "writable by other users" in started.stderr
    assert list(shared.iterdir()) == []
    # Only the socket's own directory is created, as in the foreground.
    deep = tmp_path / "missing" / "dir" / "s.sock"
    started = control("--daemon", "--socket", os.fspath(deep))
    assert started.returncode == 1
    assert "cannot create the socket directory" in started.stderr
    assert not (tmp_path / "missing").exists()


def test_a_socket_passed_by_systemd_is_served_and_left_in_place(tmp_path: Path) -> None:
    sock_dir = tmp_path / "activation"
    sock_dir.mkdir(mode=0o700)
    sock = sock_dir / "warmfork.sock"
    # What systemd does: bind and listen, pass the socket as descriptor 3,
    # name this very process in LISTEN_PID, then exec the service.
    launcher = (
        "import os, socket, sys\n"
        "s = socket.socket(socket.AF_UNIX); s.bind(sys.argv[1]); s.listen()\n"
        "os.dup2(s.fileno(), 3); os.set_inheritable(3, True)\n"
        "os.environ.update(LISTEN_PID=str(os.getpid()), LISTEN_FDS='1')\n"
        "os.execv(sys.executable, [sys.executable, '-m', 'warmfork'])\n"
    )
    log = tmp_path / "server.log"
    with log.open("wb") as out:
        process = subprocess.Popen([sys.executable, "-c", launcher, sock], stdout=out, stderr=out)
    try:
        deadline = time.monotonic() + 30
        while "serving on" not in log.read_text() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert f"serving on {sock}" in log.read_text()
        env = {**os.environ, "WARMFORK_SOCKET": os.fspath(sock)}
        done = subprocess.run(
            [CLIENT, "-c", "import os; print(os.environ.get('LISTEN_FDS'))"],
            env=env,
            capture_output=True,
            timeout=30,
            check=False,
        )
        assert (done.returncode, done.stdout) == (0, b"None\n")
    finally:
        process.terminate()
        assert process.wait(timeout=15) == 0
    assert sock.exists()  # the socket file belongs to systemd


def test_a_server_systemd_started_hands_its_socket_over_on_an_edit_and_it_stays_systemds(tmp_path: Path) -> None:
    # The fresh server took the socket file for its own (and the path from
    # its command line, another server's here): stopped, it removed it.
    sock_dir = tmp_path / "activation"
    sock_dir.mkdir(mode=0o700)
    sock = sock_dir / "warmfork.sock"
    module = tmp_path / "activated_mod.py"
    module.write_text("VALUE = 'old'\n")
    launcher = (
        "import os, socket, sys\n"
        "s = socket.socket(socket.AF_UNIX); s.bind(sys.argv[1]); s.listen()\n"
        "os.dup2(s.fileno(), 3); os.set_inheritable(3, True)\n"
        "os.environ.update(LISTEN_PID=str(os.getpid()), LISTEN_FDS='1')\n"
        "os.execv(sys.executable, [sys.executable, '-m', 'warmfork', '--preload', 'activated_mod'])\n"
    )
    elsewhere = sock_dir / "not-this-one.sock"  # what the command line alone would name
    server_env = {**os.environ, "PYTHONPATH": os.fspath(tmp_path), "WARMFORK_SOCKET": os.fspath(elsewhere)}
    log = tmp_path / "server.log"
    with log.open("wb") as out:
        process = subprocess.Popen([sys.executable, "-c", launcher, sock], stdout=out, stderr=out, env=server_env)
    env = {**os.environ, "WARMFORK_SOCKET": os.fspath(sock)}
    show = [CLIENT, "-c", "import activated_mod; print(activated_mod.VALUE)"]
    try:
        deadline = time.monotonic() + 30
        while "watching" not in log.read_text() and time.monotonic() < deadline:
            time.sleep(0.05)
        module.write_text("VALUE = 'new'\n")
        done = subprocess.run(show, env=env, capture_output=True, timeout=60, check=False)
        assert (done.returncode, done.stdout) == (0, b"new\n"), log.read_text()
        assert process.wait(timeout=15) == 0  # the old one retired
        assert log.read_text().count(f"serving on {sock}") == 2, log.read_text()
        assert control("stop", "--socket", os.fspath(sock)).returncode == 0
    finally:
        process.kill()
        process.wait()
        control("stop", "--socket", os.fspath(sock))
    assert sock.exists()  # still systemd's
    assert not elsewhere.exists()

