"""Odd descriptors and odd strings: a directory, a socket or a closed pipe as
standard streams, and argument and environment strings a shell would never
make, all end as they would under python, and the server keeps serving."""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

from conftest import CLIENT, Server
from support.differential import assert_same_as_python, both
from support.raw_client import RawClient, parse_replies, run_frame


def test_a_directory_as_stdin_fails_as_python_fails(server: Server, tmp_path: Path) -> None:
    directory = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        ours, pythons = both(server, "-c", "print('never')", stdin=directory)
    finally:
        os.close(directory)
    # python goes on with a dump of its threads, addresses included; the
    # line that says what happened, and the status, are the same.
    assert (ours.status, ours.stdout) == (pythons.status, pythons.stdout) == (1, b"")
    assert ours.stderr.splitlines()[0] == pythons.stderr.splitlines()[0]
    assert b"<stdin> is a directory" in ours.stderr
    assert server.run("-c", "print('still serving')").stdout == b"still serving\n"


def test_a_directory_as_stdout_fails_as_python_fails(server: Server, tmp_path: Path) -> None:
    # Python opens the stream and fails: "can't initialize sys standard
    # streams", and IsADirectoryError. A run said "<stdout> is a directory".
    directory = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        ours, pythons = both(server, "-c", "print('never')", stdout=directory, stderr=subprocess.PIPE)
    finally:
        os.close(directory)
    assert (ours.status, ours.stdout) == (pythons.status, pythons.stdout) == (1, b"")
    assert ours.stderr.splitlines()[:3] == pythons.stderr.splitlines()[:3]
    assert b"IsADirectoryError: [Errno 21] Is a directory: 1" in ours.stderr


def test_a_directory_as_stderr_ends_the_run_with_status_1_as_python(server: Server, tmp_path: Path) -> None:
    # Nothing can be said there: python's fatal error fails to write too.
    directory = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        ours, pythons = both(server, "-c", "print('never')", stdout=subprocess.PIPE, stderr=directory)
    finally:
        os.close(directory)
    assert (ours.status, ours.stdout) == (pythons.status, pythons.stdout) == (1, b"")
    assert server.run("-c", "print('still serving')").stdout == b"still serving\n"


def test_a_socket_as_stdout_carries_the_output(server: Server) -> None:
    ours, theirs = socket.socketpair()
    with ours, theirs:
        done = subprocess.run(
            [CLIENT, "-c", "print('through a socket')"], env=server.env, stdout=theirs.fileno(), timeout=30, check=False
        )
        theirs.close()
        assert done.returncode == 0
        assert ours.recv(1024) == b"through a socket\n"


def test_a_pipe_whose_reader_is_gone_as_stdout_ends_as_python(server: Server) -> None:
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        assert_same_as_python(server, "-c", "print('x' * 100000)", stdout=write_end)
    finally:
        os.close(write_end)


def test_strings_no_shell_would_make_are_served_as_python_reads_them(server: Server) -> None:
    # An environment entry without '=', one with an empty name, duplicates,
    # an empty argument and an empty argv[0]: python keeps the first of two
    # names and skips entries it cannot split.
    program = (
        b"import os, sys; "
        b"print(sorted(k for k in os.environ if k.startswith('ODD')), os.environ.get('ODD_DUP'), sys.argv)"
    )
    env = [b"ODD_NO_EQUALS", b"=empty-name", b"ODD_DUP=first", b"ODD_DUP=second", b"ODD_EMPTY="]
    read_end, write_end = os.pipe()
    null_in = os.open(os.devnull, os.O_RDONLY)
    cwd = os.open("/", os.O_PATH | os.O_DIRECTORY)
    try:
        with RawClient(server.socket) as client:
            client.send(run_frame([b"", b"-c", program, b""], env), [null_in, write_end, write_end, cwd])
            os.close(write_end)
            write_end = -1
            replies = client.replies()
        output = os.read(read_end, 65536)
    finally:
        for fd in (read_end, write_end, null_in, cwd):
            if fd >= 0:
                os.close(fd)
    assert [reply.kind for reply in replies][-1] == 3  # EXIT
    assert replies[1].exit == (0, 0), output
    assert output == b"['ODD_DUP', 'ODD_EMPTY'] first ['-c', '']\n"
    assert parse_replies(b"") == []
