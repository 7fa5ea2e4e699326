"""Faults: workers that die badly, a client or the server SIGKILLed mid-run,
the socket file deleted under a running server, a server short of
descriptors. Each ends with the documented status (the program's own, as
python would end, or one of the client's codes 201-204), the server keeps
serving, and nothing is left behind: no worker, no zombie, no descriptor.

Every test notes what it expected and what happened with ``record_property``
before it asserts; ``scripts/stress`` runs this module as its fault suite and
prints those notes as its fault table.
"""

from __future__ import annotations

import os
import resource
import select
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import CLIENT, Server, start_server
from support import process_limit
from support.differential import Outcome, env_for, reference, warmfork
from support.raw_client import ERROR, EXIT, INTERNAL, RawClient, close_all, run_frame, stdio_and_cwd
from support.server_process import (
    can_unshare_pids,
    children_of,
    cpu_seconds,
    has_ended,
    launch,
    process_state,
    server_in_pid_namespace,
    settled_fd_count,
    stop,
    wait_listening,
    wait_until,
)

#: The client's own exit codes (README, "Exit codes of the client").
CLIENT_CODES = {201: "refused", 202: "no server", 203: "protocol error or connection lost", 204: "system error"}

#: What a program under test writes first: its pid, for the checks on what
#: is left behind, and a line that says it is running.
ANNOUNCE = "import os\nopen('pid', 'w').write(str(os.getpid()))\nprint('ready', flush=True)\n"

Note = Callable[[str, str], None]


@pytest.fixture
def note(record_property: Callable[[str, object], None]) -> Note:
    """``note(expected, actual)``: what the test expected and what happened,
    for scripts/stress's fault table (and for the reader of a failure)."""

    def record(expected: str, actual: str) -> None:
        record_property("expected", expected)
        record_property("actual", actual)

    return record


# -- processes seen through /proc ----------------------------------------------


def zombie_children(pid: int) -> list[int]:
    return sorted(child for child, state in children_of(pid).items() if state == "Z")


def settled(server: Server) -> int:
    """The server's descriptor count once it is idle again (pool refilled,
    finished workers reaped)."""
    return settled_fd_count(server.process.pid)


def assert_nothing_left_behind(server: Server, fds_before: int) -> None:
    """The server is up, serves, has its descriptors back and no zombie."""
    assert server.process.poll() is None, f"the server died with {server.process.returncode}"
    done = server.run("-c", "print('still serving')")
    assert (done.returncode, done.stdout, done.stderr) == (0, b"still serving\n", b"")
    assert settled(server) == fds_before, "the server's descriptor count did not come back"
    assert zombie_children(server.process.pid) == [], "the server left zombie children"


def no_core_dumps() -> None:
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def describe(status: int) -> str:
    """A status as a reader wants it: `exit 7`, `SIGSEGV`, `203 (protocol ...)`."""
    if status < 0:
        return signal.Signals(-status).name
    if status in CLIENT_CODES:
        return f"{status} ({CLIENT_CODES[status]})"
    return f"exit {status}"


def start_client(server: Server, program: str, cwd: Path) -> subprocess.Popen[bytes]:
    """The client running ``program``, its stdout and stderr piped."""
    return subprocess.Popen(
        [CLIENT, "-c", program],
        env=env_for(server),
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        preexec_fn=no_core_dumps,  # noqa: PLW1509 - the limit must be set before exec
    )


def read_line(process: subprocess.Popen[bytes], timeout: float = 10.0) -> bytes:
    """The first line ``process`` prints, without blocking past ``timeout``."""
    assert process.stdout is not None
    line = b""
    deadline = time.monotonic() + timeout
    while not line.endswith(b"\n"):
        ready, _, _ = select.select([process.stdout], [], [], max(0.0, deadline - time.monotonic()))
        assert ready, f"no line within {timeout}s, only {line!r}"
        chunk = os.read(process.stdout.fileno(), 1)
        assert chunk, f"the client ended ({process.wait()}) before its first line"
        line += chunk
    return line


# -- a worker that dies badly --------------------------------------------------

DIES_BADLY = {
    "segfault-by-signal": ("import signal\nos.kill(os.getpid(), signal.SIGSEGV)\n", -signal.SIGSEGV),
    "segfault-in-c": ("import ctypes\nctypes.string_at(0)\n", -signal.SIGSEGV),
    "abort": ("os.abort()\n", -signal.SIGABRT),
    "sigkill-itself": ("import signal\nos.kill(os.getpid(), signal.SIGKILL)\n", -signal.SIGKILL),
    "os-exit-7": ("print('buffered, so lost')\nos._exit(7)\n", 7),
    # python cannot flush stdout at exit: "Exception ignored ...", status 120.
    "closes-its-stdout": ("os.close(1)\nprint('to a closed stdout')\n", 120),
}


@pytest.mark.parametrize("case", list(DIES_BADLY))
def test_a_worker_that_dies_badly_ends_the_client_as_python_ends(
    server: Server, tmp_path: Path, note: Note, case: str
) -> None:
    program, status = DIES_BADLY[case]
    fds_before = settled(server)
    ours = Outcome.of(warmfork(server, "-c", ANNOUNCE + program, cwd=tmp_path, preexec_fn=no_core_dumps))
    worker = int((tmp_path / "pid").read_text())
    theirs = Outcome.of(reference("-c", ANNOUNCE + program, cwd=tmp_path, preexec_fn=no_core_dumps))
    same = "same as" if ours.stderr == theirs.stderr else "unlike"
    note(
        f"{describe(status)}, as python: {describe(theirs.status)}, same output; server serves on",
        f"{describe(ours.status)}, stdout {ours.stdout!r}, stderr {same} python's",
    )
    assert ours == theirs
    assert ours.status == status
    assert wait_until(lambda: has_ended(worker)), f"worker {worker} is still there ({process_state(worker)})"
    assert_nothing_left_behind(server, fds_before)


# -- a client SIGKILLed mid-run ------------------------------------------------


@pytest.mark.parametrize("ignores_sighup", [False, True], ids=["program-dies-of-sighup", "program-ignores-sighup"])
def test_a_client_sigkilled_mid_run_takes_its_worker_with_it_within_7s(
    server: Server, tmp_path: Path, note: Note, ignores_sighup: bool
) -> None:
    # The server sends the worker SIGHUP at once, and SIGKILL 5 s later if it survives that.
    ignore = "import signal\nsignal.signal(signal.SIGHUP, signal.SIG_IGN)\n" if ignores_sighup else ""
    fds_before = settled(server)
    client = start_client(server, ignore + ANNOUNCE + "import time\ntime.sleep(60)\n", tmp_path)
    try:
        read_line(client)
    finally:
        client.kill()
        client.wait()
    killed = time.monotonic()
    worker = int((tmp_path / "pid").read_text())
    gone = wait_until(lambda: has_ended(worker), timeout=9)
    took = time.monotonic() - killed
    if not gone:
        os.kill(worker, signal.SIGKILL)
    note("worker gone within 7 s", f"gone after {took:.1f} s" if gone else f"still there after {took:.1f} s")
    assert gone and took < 7, f"worker {worker} took {took:.1f}s to go"
    assert_nothing_left_behind(server, fds_before)


# -- the server SIGKILLed mid-run ----------------------------------------------

# Each program is running when the server is killed, and ends 2 s after it started.
AFTER_THE_SERVER_DIES = {
    "exits-5": ("print('done')\nraise SystemExit(5)\n", {5}),
    # Only the server reports a death by signal or os._exit: with it gone the
    # client cannot know the status, and says so with 203.
    "segfaults": ("import signal\nos.kill(os.getpid(), signal.SIGSEGV)\n", {-signal.SIGSEGV, 203}),
    "os-exit-7": ("os._exit(7)\n", {7, 203}),
}


def test_a_server_sigkilled_mid_run_leaves_clients_a_status_and_no_worker(tmp_path: Path, note: Note) -> None:
    srv = start_server(tmp_path)
    clients: dict[str, subprocess.Popen[bytes]] = {}
    try:
        settled(srv)
        for name, (ending, _) in AFTER_THE_SERVER_DIES.items():
            (tmp_path / name).mkdir()
            clients[name] = start_client(srv, ANNOUNCE + "import time\ntime.sleep(2)\n" + ending, tmp_path / name)
        for client in clients.values():
            read_line(client)
        settled(srv)  # the pool refilled: every worker is in the list
        workers = children_of(srv.process.pid)
        srv.process.kill()
        srv.process.wait()
        outcomes = {name: client.communicate(timeout=20) + (client.returncode,) for name, client in clients.items()}
        wait_until(lambda: all(map(has_ended, workers)), timeout=5)
        lingering = [worker for worker in workers if not has_ended(worker)]
        after = srv.run("-c", "pass")
    finally:
        srv.stop()
        for client in clients.values():
            client.kill()
    note(
        "exits-5: 5 and its output; segfaults: SIGSEGV or 203; os-exit-7: 7 or 203; no worker lingers; new clients 202",
        "; ".join(f"{name}: {describe(status)}" for name, (_, _, status) in outcomes.items())
        + f"; {len(workers)} workers, {len(lingering)} lingering; new client {describe(after.returncode)}",
    )
    for name, (out, err, status) in outcomes.items():
        assert status in AFTER_THE_SERVER_DIES[name][1], (name, status, err)
        if status == 203:
            assert err.startswith(b"warmfork: "), err
    assert outcomes["exits-5"][:2] == (b"done\n", b"")
    assert lingering == [], f"workers still running after the server was killed: {lingering}"
    assert after.returncode == 202, after.stderr


def test_a_new_server_takes_over_the_socket_of_a_sigkilled_one(tmp_path: Path, note: Note) -> None:
    srv = start_server(tmp_path)
    assert srv.run("-c", "pass").returncode == 0
    srv.process.kill()
    srv.process.wait()
    successor = launch(srv.socket)
    try:
        wait_listening(srv.socket, successor)
        done = srv.run("-c", "print('served by the successor')")
    finally:
        stop(successor)
    note("the stale socket is replaced; the run succeeds", f"{describe(done.returncode)}, stdout {done.stdout!r}")
    assert (done.returncode, done.stdout) == (0, b"served by the successor\n")


# -- a log that cannot be written -------------------------------------------


def test_a_server_whose_log_cannot_be_written_serves_on(tmp_path: Path, note: Note) -> None:
    # As a daemon's log on a full disk: every line the server writes fails
    # with ENOSPC. Each is lost; the server is not.
    srv = start_server(tmp_path, log=Path("/dev/full"))
    try:
        runs = [srv.run("-c", f"print({n})") for n in range(3)]
    finally:
        srv.stop()
    note("runs against a server logging to /dev/full", ", ".join(describe(done.returncode) for done in runs))
    assert [(done.returncode, done.stdout) for done in runs] == [(0, b"0\n"), (0, b"1\n"), (0, b"2\n")]


# -- the socket file or its directory gone under a running server ------------


def control(command: str, sock: Path) -> subprocess.CompletedProcess[str]:
    """``warmfork-server COMMAND --socket SOCK``."""
    return subprocess.run(
        [sys.executable, "-m", "warmfork", command, "--socket", os.fspath(sock)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_a_deleted_socket_turns_new_clients_away_and_connected_ones_are_served(tmp_path: Path, note: Note) -> None:
    srv = start_server(tmp_path)
    try:
        running = start_client(
            srv, ANNOUNCE + "import time\ntime.sleep(1)\nprint('done')\nraise SystemExit(3)\n", tmp_path
        )
        read_line(running)
        connected = RawClient(srv.socket)
        srv.socket.unlink()
        newcomer = srv.run("-c", "print('should not run')")
        # The connection made before the deletion sends its request only now.
        read_end, write_end = os.pipe()
        null_in, null_err = os.open(os.devnull, os.O_RDONLY), os.open(os.devnull, os.O_WRONLY)
        fds = [null_in, write_end, null_err, os.open(tmp_path, os.O_PATH | os.O_DIRECTORY)]
        with connected:
            connected.send(run_frame([b"warmfork", b"-c", b"print('connected before')"]), fds)
            close_all(fds)
            replies = [(reply.kind, reply.exit if reply.kind == EXIT else reply.body) for reply in connected.replies()]
        with os.fdopen(read_end, "rb") as output:
            connected_output = output.read()
        running_out, _ = running.communicate(timeout=20)
        # No one can reach it any more: it stops by itself once its runs end.
        stopped = srv.process.wait(timeout=10)
        status = control("status", srv.socket)
        left = children_of(srv.process.pid)
    finally:
        srv.stop()
    note(
        "new client 202; running client exit 3 with its output; connected client served; the server stops by itself",
        f"new client {describe(newcomer.returncode)}; running client {describe(running.returncode)};"
        f" connected client {connected_output!r}; server exit {stopped}, status exit {status.returncode}",
    )
    assert newcomer.returncode == 202, newcomer.stderr
    assert (running.returncode, running_out) == (3, b"done\n")
    assert (EXIT, (0, 0)) in replies and connected_output == b"connected before\n", (replies, connected_output)
    assert stopped == 0
    assert "the socket" in srv.log.read_text() and "is gone" in srv.log.read_text()
    assert status.returncode == 3, status.stdout
    assert left == {}, f"the stopped server left children: {left}"


@pytest.mark.parametrize("how", ["removed", "replaced-by-another-servers"])
def test_a_server_whose_socket_directory_goes_serves_its_runs_to_the_end_and_stops(
    tmp_path: Path, note: Note, how: str
) -> None:
    # A user's runtime directory (/run/user/UID) is removed at logout. The
    # server, unreachable, once lived on for ever: its lock file gone with
    # the directory, `status` and `stop` could not find it either.
    srv = start_server(tmp_path)
    successor = None
    try:
        running = start_client(
            srv, ANNOUNCE + "import time\ntime.sleep(3)\nprint('done')\nraise SystemExit(3)\n", tmp_path
        )
        read_line(running)
        old_dir = srv.socket.parent
        if how == "removed":
            shutil.rmtree(old_dir)
        else:
            old_dir.rename(tmp_path / "moved-aside")
            old_dir.mkdir(mode=0o700)
            successor = launch(srv.socket)
            wait_listening(srv.socket, successor)
        newcomer = srv.run("-c", "print('served')")
        running_out, _ = running.communicate(timeout=20)
        stopped = srv.process.wait(timeout=10)
        status = control("status", srv.socket)
        left = children_of(srv.process.pid)
    finally:
        srv.stop()
        if successor is not None:
            stop(successor)
    expected_newcomer = 202 if how == "removed" else 0
    note(
        f"running client exit 3 with its output; new client {describe(expected_newcomer)}; the old server stops",
        f"running client {describe(running.returncode)} {running_out!r}; new client {describe(newcomer.returncode)};"
        f" old server exit {stopped}; status exit {status.returncode}",
    )
    assert (running.returncode, running_out) == (3, b"done\n")
    assert newcomer.returncode == expected_newcomer, newcomer.stderr
    assert stopped == 0
    assert "is gone" in srv.log.read_text()
    assert left == {}, f"the stopped server left children: {left}"
    if successor is None:
        assert status.returncode == 3, status.stdout
    else:
        assert (status.returncode, f"(pid {successor.pid})" in status.stdout) == (0, True), status.stdout


# -- a server with 32 descriptors ----------------------------------------------

FD_LIMIT = 32
CLIENTS = 40


@pytest.fixture
def short_of_fds(tmp_path: Path) -> Iterator[Server]:
    """A server whose RLIMIT_NOFILE is lowered to 32 once it serves."""
    srv = start_server(tmp_path)
    try:
        settled(srv)
        resource.prlimit(srv.process.pid, resource.RLIMIT_NOFILE, (FD_LIMIT, FD_LIMIT))
        yield srv
    finally:
        srv.stop()


def test_a_server_limited_to_32_fds_gives_40_clients_a_status_each_and_survives(
    short_of_fds: Server, tmp_path: Path, note: Note
) -> None:
    fds_before = settled(short_of_fds)
    program = "import sys, time\ntime.sleep(0.5)\nprint('run', sys.argv[1])\n"
    clients = [
        subprocess.Popen(
            [CLIENT, "-c", program, str(n)],
            env=env_for(short_of_fds),
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for n in range(CLIENTS)
    ]
    ends: list[tuple[int | str, bytes, bytes]] = []
    deadline = time.monotonic() + 30
    for client in clients:
        try:
            out, err = client.communicate(timeout=max(0.1, deadline - time.monotonic()))
            ends.append((client.returncode, out, err))
        except subprocess.TimeoutExpired:
            client.kill()
            client.communicate()
            ends.append(("hung", b"", b""))
    counts = Counter(status for status, _, _ in ends)
    messages = Counter(err.decode(errors="replace").strip() for status, _, err in ends if status != 0)
    note(
        f"each of {CLIENTS} clients: exit 0 with its output, or 201-204 with a message; none hangs; server survives",
        ", ".join(f"{count} x {status}" for status, count in sorted(counts.items(), key=str))
        + "".join(f"; {count} x {message!r}" for message, count in messages.items()),
    )
    for n, (status, out, err) in enumerate(ends):
        assert status != "hung", f"client {n} hung"
        if status == 0:
            assert out == f"run {n}\n".encode(), (n, out, err)
        else:
            assert status in CLIENT_CODES and err.startswith(b"warmfork: "), (n, status, err)
    assert_nothing_left_behind(short_of_fds, fds_before)


def last_answer(connection: RawClient) -> str:
    """The last frame the server sent on ``connection``, in words."""
    replies = connection.replies()
    if not replies:
        return "closed without an answer"
    reply = replies[-1]
    return f"ERROR {reply.code} {reply.message!r}" if reply.kind == ERROR else f"EXIT {reply.exit}"


def test_a_server_out_of_fds_does_not_call_a_well_formed_request_malformed(short_of_fds: Server, note: Note) -> None:
    # When the server has no descriptor left for a client's four, the kernel
    # truncates them (MSG_CTRUNC). That is the server's failure (INTERNAL, or
    # waiting for a free descriptor), not a malformed request (BAD_REQUEST).
    frame = run_frame([b"warmfork", b"-c", b"import time; time.sleep(0.5)"], [b"LANG=C.UTF-8"])
    connections = []
    try:
        for _ in range(CLIENTS):
            fds = stdio_and_cwd()
            connection = RawClient(short_of_fds.socket, timeout=20)
            connections.append(connection)
            connection.send(frame, fds)
            close_all(fds)
        answers = Counter(last_answer(connection) for connection in connections)
    finally:
        for connection in connections:
            connection.close()
    note(f"EXIT (0, 0) or ERROR {INTERNAL} (INTERNAL) for each", "; ".join(f"{n} x {a}" for a, n in answers.items()))
    assert set(answers) <= {"EXIT (0, 0)"} | {a for a in answers if a.startswith(f"ERROR {INTERNAL} ")}, answers


def test_a_server_out_of_fds_waits_for_one_without_spinning_or_flooding_its_log(
    short_of_fds: Server, note: Note
) -> None:
    # Connections that send nothing hold the server's descriptors for the
    # request timeout. The listener stayed readable, so the server polled
    # and failed to accept in a loop: a CPU at 100 % and a warning per turn
    # (1.9 million lines in 6 s).
    fds_before = settled(short_of_fds)
    connections = []
    try:
        for _ in range(FD_LIMIT + 8):
            connections.append(RawClient(short_of_fds.socket, timeout=20))
        began = cpu_seconds(short_of_fds.process.pid)
        time.sleep(2)
        used = cpu_seconds(short_of_fds.process.pid) - began
        warnings = short_of_fds.log.read_text().count("out of file descriptors")
    finally:
        for connection in connections:
            connection.close()
    note("under 0.2 s of CPU in 2 s, one warning", f"{used:.2f} s of CPU, {warnings} warning(s)")
    assert used < 0.2, used
    assert warnings == 1
    assert_nothing_left_behind(short_of_fds, fds_before)


# -- a server in a container ---------------------------------------------------


@pytest.mark.skipif(not can_unshare_pids(), reason="needs unshare --pid")
def test_a_client_outside_the_servers_pid_namespace_is_served(tmp_path: Path, note: Note) -> None:
    # The server cannot name such a client's pid (SO_PEERCRED reads 0); it
    # once took that for a failure to read the credentials and hung up on
    # every client, who exited 203 without a word from the server.
    with server_in_pid_namespace(tmp_path) as srv:
        fds_before = settled(srv)
        done = srv.run("-c", "import sys; print('served'); sys.exit(4)")
        note("exit 4, 'served'", f"{describe(done.returncode)}, {done.stdout!r} {done.stderr!r}")
        assert (done.returncode, done.stdout, done.stderr) == (4, b"served\n", b"")
        assert "credentials" not in srv.log.read_text()
        assert_nothing_left_behind(srv, fds_before)


@pytest.mark.skipif(not can_unshare_pids(), reason="needs unshare --pid")
def test_a_client_in_a_container_is_served_by_a_server_outside_it(server: Server, note: Note) -> None:
    # The other way round: the client cannot name the server's pid
    # (SO_PEERCRED reads 0), which rustix's credentials type cannot hold; the
    # client took that for a failure and exited 204 on every run.
    done = server.run(
        "-c", "import sys; print('served'); sys.exit(4)", client=("unshare", "--pid", "--fork", CLIENT)
    )
    note("exit 4, 'served'", f"{describe(done.returncode)}, {done.stdout!r} {done.stderr!r}")
    assert (done.returncode, done.stdout, done.stderr) == (4, b"served\n", b"")


# -- a server that cannot fork -------------------------------------------------


@pytest.mark.skipif(not (process_limit.supported() and can_unshare_pids()), reason="needs root and a pids cgroup")
def test_a_server_that_cannot_fork_refuses_runs_it_has_no_worker_for_and_recovers(tmp_path: Path, note: Note) -> None:
    # As at RLIMIT_NPROC: fork fails with EAGAIN. The server once took the
    # failed fork's -1 for a worker's pid and SIGKILLed "it": kill(-1)
    # signals every process it may, as root the whole machine. Here it runs
    # in a pid namespace of its own, so such a kill reaches only its workers.
    with (
        server_in_pid_namespace(tmp_path) as srv,
        process_limit.pids_cgroup(f"warmfork-test-{os.getpid()}") as group,
    ):
        fds_before = settled(srv)
        running = start_client(srv, ANNOUNCE + "import time\ntime.sleep(2)\nprint('done')\n", tmp_path)
        read_line(running)
        settled(srv)  # its replacement forked: four idle workers
        process_limit.confine(group, srv.process.pid)
        confined = time.monotonic()
        runs = [srv.run("-c", f"print({n})", timeout=20) for n in range(6)]
        busy_from = process_limit.cpu_seconds(srv.process.pid)
        time.sleep(2)
        busy = process_limit.cpu_seconds(srv.process.pid) - busy_from
        running_out, _ = running.communicate(timeout=20)
        process_limit.release(group)
        seconds = time.monotonic() - confined
        recovered = wait_until(lambda: srv.run("-c", "pass").returncode == 0, timeout=10)
        settled(srv)
        idle = children_of(srv.process.pid)
        warnings = srv.log.read_text().count("cannot fork a worker")
        after = [srv.run("-c", f"print({n})") for n in range(5)]
        assert_nothing_left_behind(srv, fds_before)
    note(
        "idle workers serve 4 runs, then 201 'cannot fork'; the running client ends 0; the server idles; "
        "once forks work again it serves and refills",
        f"{[describe(run.returncode) for run in runs]}; running client {describe(running.returncode)} "
        f"{running_out!r}; {busy:.2f} s CPU in 2 s; recovered {recovered}, {len(idle)} idle workers; "
        f"{warnings} fork warnings",
    )
    assert (running.returncode, running_out) == (0, b"done\n"), "the run in progress was killed"
    assert [(run.returncode, run.stdout) for run in runs[:4]] == [(0, f"{n}\n".encode()) for n in range(4)]
    for run in runs[4:]:
        assert run.returncode == 201, run
        assert run.stderr.startswith(b"warmfork: server refused the run: cannot fork a worker: "), run.stderr
        assert b"try again" in run.stderr, run.stderr
    assert busy < 0.5, f"the server spun: {busy:.2f} s of CPU in 2 s"
    # One a run that ended or was refused, and one a second of retrying.
    assert warnings <= len(runs) + 1 + seconds, f"{warnings} warnings about forks in {seconds:.1f} s: a flood"
    assert recovered and len(idle) == 4, idle
    assert [(run.returncode, run.stdout) for run in after] == [(0, f"{n}\n".encode()) for n in range(5)]
