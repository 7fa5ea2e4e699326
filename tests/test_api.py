"""``warmfork.serve`` called with what it cannot serve with: a
:class:`~warmfork.errors.ServerError` that names the argument, raised before
the socket is bound (no server that says it serves and then fails), and no
socket file left behind."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

CALL = """
import sys, threading, time
import warmfork
from warmfork.errors import ServerError

def spin():
    time.sleep(30)

try:
    warmfork.serve(socket=sys.argv[1], log_level="error", {arguments})
except ServerError as error:
    print("ServerError:", error)
"""

BAD_ARGUMENTS = {
    "pool_a_float": ("pool=1.5", "the pool size must be a whole number from 0 to 1024, not 1.5"),
    "pool_a_string": ("pool='4'", "the pool size must be a whole number from 0 to 1024, not '4'"),
    "pool_a_bool": ("pool=True", "the pool size must be a whole number from 0 to 1024, not True"),
    "grace_none": ("grace=None", "grace must be 0 to 86400 seconds, not None"),
    "request_timeout_0": ("request_timeout=0", "request_timeout must be more than 0"),
    "handler_not_callable": ("handler=5", "handler must be callable or None, not 5"),
    "on_ready_not_callable": ("on_ready=5", "on_ready must be callable or None, not 5"),
    "preload_a_string": ("preload='json'", "preload must be a list of module names, not 'json'"),
    "socket_a_number": ("socket=123", "socket must be a path or None, not 123"),
    "on_ready_starts_a_thread": (
        "on_ready=lambda: threading.Thread(target=spin, daemon=True, name='spinner').start()",
        "on_ready left 1 thread(s) running (spinner)",
    ),
}


@pytest.mark.parametrize(("arguments", "message"), BAD_ARGUMENTS.values(), ids=BAD_ARGUMENTS.keys())
def test_a_bad_argument_is_a_server_error_and_leaves_no_socket(tmp_path: Path, arguments: str, message: str) -> None:
    sock_dir = tmp_path / "sock"
    sock_dir.mkdir(mode=0o700)
    sock = sock_dir / "s.sock"
    # `socket=` given twice would be a SyntaxError: the keyword wins here.
    call = CALL.replace("socket=sys.argv[1], ", "") if arguments.startswith("socket=") else CALL
    done = subprocess.run(
        [sys.executable, "-c", call.format(arguments=arguments), os.fspath(sock)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("ServerError: ") and message in done.stdout, done.stdout + done.stderr
    assert [path.name for path in sock_dir.iterdir() if path.name.endswith(".sock")] == []


def test_serve_outside_the_main_thread_is_a_server_error(tmp_path: Path) -> None:
    program = """
import sys, threading
import warmfork
from warmfork.errors import ServerError

def serve():
    try:
        warmfork.serve(socket=sys.argv[1], log_level="error")
    except ServerError as error:
        print("ServerError:", error)

thread = threading.Thread(target=serve)
thread.start()
thread.join()
"""
    sock_dir = tmp_path / "sock"
    sock_dir.mkdir(mode=0o700)
    done = subprocess.run(
        [sys.executable, "-c", program, os.fspath(sock_dir / "s.sock")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.stdout == "ServerError: serve() must be called from the main thread, which signals reach\n", (
        done.stdout + done.stderr
    )
    assert list(sock_dir.iterdir()) == []
