"""What goes wrong between client and server: the client's own failures, and
the server's answers to requests that break the protocol, sent by a raw
client (tests/support/raw_client.py) that the real client could never be.

After every refusal the server must keep serving, and nothing a client does
(silence, half a frame, wrong descriptors) may stall other clients or leak
the server's descriptors.
"""

from __future__ import annotations

import contextlib
import os
import select
import socket
import struct
import subprocess
import time
from pathlib import Path

import pytest
from conftest import CLIENT, Server, start_server
from support.differential import shared_server
from support.raw_client import (
    ALL_FDS,
    BAD_REQUEST,
    ERROR,
    EXIT,
    EXTRA_FDS,
    INTERNAL,
    MAX_EXTRA_FDS,
    MAX_FRAME_LEN,
    RUN,
    RUN_FIXED,
    STARTED,
    STDERR,
    STDIN,
    TIMEOUT,
    TOO_LARGE,
    UNSUPPORTED_VERSION,
    RawClient,
    close_all,
    prefix,
    run_frame,
    stdio_and_cwd,
)
from support.server_process import (
    open_fd_count,
    settled_fd_count,
    stop_when_idle,
    wait_until,
)

server = shared_server()


def run_client(env: dict[str, str], *args: str) -> tuple[int, str]:
    """Run the real client with exactly ``env``; its status and stderr."""
    done = subprocess.run([CLIENT, *args], env=env, capture_output=True, timeout=30, check=False)
    assert done.stdout == b""
    return done.returncode, done.stderr.decode()


def assert_one_warmfork_line(stderr: str) -> None:
    assert stderr.startswith("warmfork: "), stderr
    assert stderr.endswith("\n") and stderr.count("\n") == 1, stderr


def assert_still_serving(server: Server) -> None:
    done = server.run("-c", "print('still serving')")
    assert (done.returncode, done.stdout, done.stderr) == (0, b"still serving\n", b"")


def good_frame(*argv: bytes) -> bytes:
    return run_frame([b"warmfork", *argv], [b"LANG=C.UTF-8"])


# -- the client's own failures ------------------------------------------------


def test_no_server_exits_202_naming_the_socket_and_how_to_start_one(tmp_path: Path) -> None:
    sock = tmp_path / "nobody-here.sock"
    code, stderr = run_client({"WARMFORK_SOCKET": os.fspath(sock)}, "-c", "pass")
    assert code == 202
    assert_one_warmfork_line(stderr)
    assert os.fspath(sock) in stderr
    assert "warmfork-server" in stderr


@pytest.mark.parametrize("fallback", [False, True], ids=["alone", "with_fallback"])
def test_a_connection_closed_before_the_program_started_ran_nothing(tmp_path: Path, fallback: bool) -> None:
    # A server that stops (or whose warm-up fails) with requests still in
    # its backlog closes their connections before any STARTED: that was 203
    # "before the program finished", with no fallback, though nothing ran.
    path = tmp_path / "s.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(os.fspath(path))
    listener.listen()
    env = {"WARMFORK_SOCKET": os.fspath(path), **({"WARMFORK_FALLBACK": "python3"} if fallback else {})}
    env["PATH"] = os.environ["PATH"]
    client = subprocess.Popen(
        [CLIENT, "-c", "print('ran')"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        connection, _ = listener.accept()
        connection.recv(65536)
        connection.close()
        out, err = client.communicate(timeout=30)
    finally:
        client.kill()
        listener.close()
    assert err.decode().startswith("warmfork: the server closed the connection before the program started"), err
    assert b"nothing ran" in err and err.count(b"\n") == 1, err
    assert (client.returncode, out) == ((0, b"ran\n") if fallback else (202, b""))


def test_without_a_server_a_client_under_another_name_suggests_the_server_its_socket_needs(tmp_path: Path) -> None:
    sage = tmp_path / "sage"
    sage.symlink_to(CLIENT)
    private = {"XDG_RUNTIME_DIR": os.fspath(tmp_path)}
    done = subprocess.run([sage, "-c", "pass"], env=private, capture_output=True, timeout=30, check=False)
    assert done.returncode == 202
    assert b"warmfork-server --name sage" in done.stderr
    # WARMFORK_SOCKET names the socket for every name: a server started
    # under the name would not serve it.
    env = {"WARMFORK_SOCKET": os.fspath(tmp_path / "s.sock")}
    code, stderr = run_client(env, "-c", "pass")
    done = subprocess.run([sage, "-c", "pass"], env=env, capture_output=True, timeout=30, check=False)
    assert (done.returncode, done.stderr.decode()) == (code, stderr) == (202, stderr)
    assert "start one with `warmfork-server &`, which serves $WARMFORK_SOCKET too" in stderr


def test_a_stale_socket_with_no_listener_exits_202(tmp_path: Path) -> None:
    sock = tmp_path / "stale.sock"
    with socket.socket(socket.AF_UNIX) as dead:
        dead.bind(os.fspath(sock))
    code, stderr = run_client({"WARMFORK_SOCKET": os.fspath(sock)}, "-c", "pass")
    assert code == 202
    assert_one_warmfork_line(stderr)
    assert os.fspath(sock) in stderr


@pytest.mark.parametrize("kind", ["file", "directory"])
def test_a_file_or_directory_at_the_socket_path_is_named_not_a_socket(tmp_path: Path, kind: str) -> None:
    sock = tmp_path / "s.sock"
    if kind == "file":
        sock.write_text("")
    else:
        sock.mkdir()
    code, stderr = run_client({"WARMFORK_SOCKET": os.fspath(sock)}, "-c", "pass")
    assert code == 202
    assert_one_warmfork_line(stderr)
    assert f"cannot reach server at {sock}: not a socket" in stderr
    assert "connection refused" not in stderr


def test_a_socket_path_too_long_for_sockaddr_un_exits_204_with_a_message() -> None:
    sock = "/tmp/" + "x" * 200 + ".sock"
    code, stderr = run_client({"WARMFORK_SOCKET": sock}, "-c", "pass")
    assert code == 204
    assert_one_warmfork_line(stderr)
    assert "107" in stderr and "WARMFORK_SOCKET" in stderr


# -- the raw client speaks the protocol ----------------------------------------


def test_a_well_formed_raw_request_gets_started_then_exit(server: Server) -> None:
    fds = stdio_and_cwd()
    try:
        with RawClient(server.socket) as client:
            client.send(good_frame(b"-c", b"raise SystemExit(44)"), fds)
            replies = client.replies()
    finally:
        close_all(fds)
    assert [r.kind for r in replies][:2] == [STARTED, EXIT]
    assert all(r.version == 1 for r in replies)
    assert replies[1].exit == (0, 44)


# -- refusals ------------------------------------------------------------------


def strings_frame(argc: int, strings: bytes, *, umask: int = 0o022, flags: int = 0) -> bytes:
    body = RUN_FIXED.pack(argc, 0, umask, 0) + strings
    return prefix(RUN, flags, 8 + len(body)) + body


REFUSALS = {
    "version_2": (run_frame([b"warmfork"], version=2, flags=0), 0, UNSUPPORTED_VERSION),
    "version_0": (run_frame([b"warmfork"], version=0, flags=0), 0, UNSUPPORTED_VERSION),
    "http_garbage": (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", 0, UNSUPPORTED_VERSION),
    "unknown_kind": (run_frame([b"warmfork"], kind=9, flags=0), 0, BAD_REQUEST),
    "exit_frame_from_a_client": (prefix(EXIT, 0, 12) + b"\0" * 4, 0, BAD_REQUEST),
    "length_over_8_mib": (run_frame([b"warmfork"], flags=0, length=MAX_FRAME_LEN + 1), 0, TOO_LARGE),
    "length_4_gib": (prefix(RUN, 0, 0xFFFF_FFFF), 0, TOO_LARGE),
    "length_below_the_prefix": (prefix(RUN, 0, 4), 0, BAD_REQUEST),
    "length_below_the_run_header": (prefix(RUN, 0, 12) + b"\0" * 4, 0, BAD_REQUEST),
    "more_strings_announced_than_sent": (strings_frame(3, b"warmfork\0-c\0"), 0, BAD_REQUEST),
    "last_string_without_nul": (strings_frame(2, b"warmfork\0-c"), 0, BAD_REQUEST),
    "umask_above_0o777": (strings_frame(1, b"warmfork\0", umask=0o1000), 0, BAD_REQUEST),
    "unknown_flag_bit": (strings_frame(1, b"warmfork\0", flags=0x40), 0, BAD_REQUEST),
    "four_flags_two_fds": (run_frame([b"warmfork", b"-c", b"pass"]), 2, BAD_REQUEST),
    "no_flags_four_fds": (run_frame([b"warmfork", b"-c", b"pass"], flags=0), 4, BAD_REQUEST),
    "two_flags_three_fds": (run_frame([b"warmfork"], flags=STDIN | STDERR), 3, BAD_REQUEST),
    "five_fds": (run_frame([b"warmfork", b"-c", b"pass"], flags=ALL_FDS), 5, BAD_REQUEST),
    "extra_fds_flag_without_a_list": (strings_frame(1, b"warmfork\0", flags=EXTRA_FDS), 0, BAD_REQUEST),
    "extra_fds_count_0": (run_frame([b"warmfork"], flags=ALL_FDS | EXTRA_FDS, extra_fds=[]), 4, BAD_REQUEST),
    "extra_fds_count_over_248": (
        run_frame([b"warmfork"], flags=ALL_FDS | EXTRA_FDS, extra_fds=range(3, 3 + MAX_EXTRA_FDS + 1)),
        4,
        BAD_REQUEST,
    ),
    "extra_fds_253_descriptors": (
        run_frame([b"warmfork"], flags=ALL_FDS | EXTRA_FDS, extra_fds=range(3, 3 + MAX_EXTRA_FDS + 1)),
        253,
        BAD_REQUEST,
    ),
    "extra_fds_count_past_the_frame": (
        run_frame([b"warmfork"], flags=ALL_FDS | EXTRA_FDS, extra_fds=[5], fdc=100),
        5,
        BAD_REQUEST,
    ),
    "extra_fd_number_2": (run_frame([b"warmfork"], flags=ALL_FDS | EXTRA_FDS, extra_fds=[2]), 5, BAD_REQUEST),
    "extra_fd_numbers_not_increasing": (
        run_frame([b"warmfork"], flags=ALL_FDS | EXTRA_FDS, extra_fds=[9, 7]),
        6,
        BAD_REQUEST,
    ),
    "extra_fd_numbers_repeated": (
        run_frame([b"warmfork"], flags=ALL_FDS | EXTRA_FDS, extra_fds=[7, 7]),
        6,
        BAD_REQUEST,
    ),
    "extra_fd_number_above_int_max": (
        run_frame([b"warmfork"], flags=ALL_FDS | EXTRA_FDS, extra_fds=[0x8000_0000]),
        5,
        BAD_REQUEST,
    ),
    "extra_fds_two_numbers_one_descriptor": (
        run_frame([b"warmfork"], flags=ALL_FDS | EXTRA_FDS, extra_fds=[7, 9]),
        5,
        BAD_REQUEST,
    ),
    "extra_fds_one_number_two_descriptors": (
        run_frame([b"warmfork"], flags=ALL_FDS | EXTRA_FDS, extra_fds=[7]),
        6,
        BAD_REQUEST,
    ),
}


@pytest.mark.parametrize("name", list(REFUSALS))
def test_a_bad_request_gets_one_error_frame_and_the_server_keeps_serving(
    server: Server, tmp_path: Path, name: str
) -> None:
    frame, fd_count, expected_code = REFUSALS[name]
    fds = [os.open(tmp_path, os.O_PATH | os.O_DIRECTORY) for _ in range(fd_count)]
    try:
        with RawClient(server.socket) as client:
            client.send(frame, fds)
            replies = client.replies()
    finally:
        close_all(fds)
    assert len(replies) == 1, replies
    (reply,) = replies
    assert (reply.version, reply.kind) == (1, ERROR)
    assert reply.code == expected_code, reply.message
    assert reply.message.strip()
    assert_still_serving(server)


@pytest.mark.parametrize(("first", "later"), [(2, 2), (4, 1)], ids=["split", "one-more-later"])
def test_descriptors_sent_with_a_later_byte_than_the_first_are_refused_and_closed(
    server: Server, tmp_path: Path, first: int, later: int
) -> None:
    # protocol.md §4: descriptors come with the frame's first byte only; two
    # of the four came with byte 10 and the run went ahead with them (and it
    # went ahead when the four came first and a fifth later).
    marker = tmp_path / "ran"
    frame = good_frame(b"-c", f"open({os.fspath(marker)!r}, 'w')".encode())
    read_end, write_end = os.pipe()
    try:
        with RawClient(server.socket) as client:
            client.send(frame[:10], [write_end] * first)
            client.send(frame[10:], [write_end] * later)
            os.close(write_end)
            write_end = -1
            replies = client.replies()
        assert [r.kind for r in replies] == [ERROR], replies
        assert replies[0].code == BAD_REQUEST, replies
        ready, _, _ = select.select([read_end], [], [], 5)
        assert ready and os.read(read_end, 1) == b"", "the server still holds descriptors of the refused request"
    finally:
        os.close(read_end)
        if write_end >= 0:
            os.close(write_end)
    assert not marker.exists()
    assert_still_serving(server)


@pytest.mark.parametrize(
    ("frame", "flags_fds"),
    [
        pytest.param(run_frame([b"warmfork"], version=2), 4, id="bad_version"),
        pytest.param(run_frame([b"warmfork", b"-c", b"pass"]), 2, id="too_few_fds"),
        pytest.param(run_frame([b"warmfork", b"-c", b"pass"], flags=0), 4, id="unannounced_fds"),
        pytest.param(
            run_frame([b"warmfork"], flags=ALL_FDS | EXTRA_FDS, extra_fds=[9, 7]), 6, id="bad_extra_fd_list"
        ),
    ],
)
def test_descriptors_of_a_refused_request_are_closed_by_the_server(
    server: Server, frame: bytes, flags_fds: int
) -> None:
    read_end, write_end = os.pipe()
    fds = [write_end] * flags_fds
    try:
        with RawClient(server.socket) as client:
            client.send(frame, fds)
            os.close(write_end)
            write_end = -1
            assert client.replies()[0].kind == ERROR
        # Our copy of the write end is closed: EOF means the server closed its copies.
        ready, _, _ = select.select([read_end], [], [], 5)
        assert ready, "the server still holds the pipe's write end"
        assert os.read(read_end, 1) == b""
    finally:
        os.close(read_end)
        if write_end >= 0:
            os.close(write_end)


def test_a_frame_cut_short_by_a_hang_up_runs_nothing(server: Server, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    frame = good_frame(b"-c", f"open({os.fspath(marker)!r}, 'w')".encode())
    fds = stdio_and_cwd()
    with RawClient(server.socket) as client:
        client.send(frame[: len(frame) - 5], fds)
        close_all(fds)
        client.sock.shutdown(socket.SHUT_WR)
        replies = client.replies()
    assert all(r.kind == ERROR and r.code == BAD_REQUEST for r in replies), replies
    time.sleep(0.2)
    assert not marker.exists()
    assert_still_serving(server)


# -- silent and slow clients ---------------------------------------------------


def test_a_silent_client_does_not_stall_another_client(server: Server) -> None:
    with RawClient(server.socket), RawClient(server.socket) as half:
        half.send(b"\x01\x01")  # two bytes of a prefix, then nothing
        started = time.monotonic()
        assert_still_serving(server)
        assert time.monotonic() - started < 3


def test_a_silent_client_is_answered_timeout_after_the_request_deadline(
    tmp_path: Path,
) -> None:
    srv = start_server(tmp_path, "--request-timeout", "0.5")
    try:
        with RawClient(srv.socket) as silent, RawClient(srv.socket) as partial:
            partial.send(good_frame(b"-c", b"pass")[:15])
            started = time.monotonic()
            assert [(r.kind, r.code) for r in silent.replies()] == [(ERROR, TIMEOUT)]
            assert [(r.kind, r.code) for r in partial.replies()] == [(ERROR, TIMEOUT)]
            assert time.monotonic() - started < 5
        assert_still_serving(srv)
    finally:
        stop_when_idle(srv)


def test_the_servers_descriptor_count_returns_to_baseline_after_silent_clients(
    server: Server,
) -> None:
    pid = server.process.pid
    assert_still_serving(server)
    baseline = settled_fd_count(pid)
    silent = RawClient(server.socket)
    half = RawClient(server.socket)
    fds = stdio_and_cwd()
    half.send(good_frame(b"-c", b"pass")[:20], fds)
    close_all(fds)
    # The server has accepted both and holds the four descriptors of the half frame.
    assert wait_until(lambda: open_fd_count(pid) >= baseline + 6), open_fd_count(pid)
    silent.close()
    half.close()
    assert wait_until(lambda: open_fd_count(pid) == baseline), (open_fd_count(pid), baseline)
    assert_still_serving(server)
    assert settled_fd_count(pid) == baseline


def test_error_frames_fit_the_reply_limit_and_say_what_failed(server: Server) -> None:
    with RawClient(server.socket) as client:
        client.send(run_frame([b"warmfork"], version=7, flags=0))
        data = client.read_all()
    length = struct.unpack_from("<I", data, 4)[0]
    assert length == len(data) <= 4108
    assert "version" in data[12:].decode()


def test_a_refused_run_is_logged_with_the_clients_status(server: Server) -> None:
    # Ten times: the client's hang-up after the error must not make the
    # server's SIGHUP the worker's end.
    markers = [f"refused-{os.getpid()}-{i}" for i in range(10)]  # the log keeps 40 characters of an argument
    for marker in markers:
        done = server.run("-O", "-c", f"pass  # {marker}")
        assert done.returncode == 201, done.stderr
        assert b"-O" in done.stderr

    def logged() -> list[str]:
        lines = server.log.read_text().splitlines()
        return [line for line in lines if " run pid=" in line and any(f"{m}]" in line for m in markers)]

    wait_until(lambda: len(logged()) == len(markers), timeout=10)
    assert [line.rsplit("] ", 1)[1].split(" ", 1)[1] for line in logged()] == ["exit 201"] * len(markers), logged()


def resident_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        line = next(line for line in status if line.startswith("VmRSS:"))
    return int(line.split()[1]) / 1024


def test_large_requests_being_sent_are_capped_in_all_and_their_memory_given_back(tmp_path: Path) -> None:
    # Each frame is capped at 8 MiB, but their number was not: a few hundred
    # clients sending maximal frames slowly held gigabytes (under a memory
    # limit the server aborted), and what they left in the C library's heap
    # stayed resident. The server now holds 256 MiB of large frames at most,
    # refusing (201, "try again") what would go past that, and hands the
    # memory back once they are gone.
    srv = start_server(tmp_path, "--request-timeout", "60")
    try:
        baseline = resident_mib(srv.process.pid)
        # Clients coming and going, so that frames are freed among others
        # still held (which is what left them in the heap).
        churn: list[RawClient] = []
        for number in range(40):
            churn.append(RawClient(srv.socket, timeout=30))
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                churn[-1].send(prefix(RUN, 0, MAX_FRAME_LEN) + bytes(MAX_FRAME_LEN - 9))
            if number % 7 == 3:
                churn.pop(0).close()
        for client in churn:
            client.close()
        assert wait_until(lambda: resident_mib(srv.process.pid) < baseline + 32, timeout=10), (
            f"{resident_mib(srv.process.pid):.0f} MiB resident after the clients left, {baseline:.0f} MiB before"
        )
        clients = [RawClient(srv.socket, timeout=30) for _ in range(40)]
        held: list[RawClient] = []
        refused: list[str] = []
        for client in clients:
            # All but the frame's last byte: the server holds it, waiting,
            # or refuses it after the prefix and hangs up on the rest.
            try:
                client.send(prefix(RUN, 0, MAX_FRAME_LEN) + bytes(MAX_FRAME_LEN - 9))
            except (BrokenPipeError, ConnectionResetError):
                (reply,) = client.replies()
                assert (reply.kind, reply.code) == (ERROR, INTERNAL), reply
                refused.append(reply.message)
            else:
                held.append(client)
        assert (len(held), len(refused)) == (32, 8)
        assert all("already receiving 256 MiB of large requests" in m and "try again" in m for m in refused), refused
        assert_still_serving(srv)
        for client in clients:
            client.close()
        assert_still_serving(srv)
    finally:
        stop_when_idle(srv)
