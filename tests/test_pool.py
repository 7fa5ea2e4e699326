"""When the server forks and when a worker ends, around a run: the pool is
refilled after the runs in progress, or soon anyway; a worker that has
reported its status lets the client exit first, but not for ever."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

from conftest import CLIENT, start_server
from support.raw_client import EXIT, RawClient, close_all, parse_replies, run_frame, stdio_and_cwd
from support.server_process import children_of, cpu_seconds, has_ended, wait_until


def test_a_run_that_lasts_does_not_keep_the_pool_short(tmp_path: Path) -> None:
    srv = start_server(tmp_path, "--pool", "2")
    try:
        assert wait_until(lambda: len(children_of(srv.process.pid)) == 2, timeout=10)
        lasting = subprocess.Popen(
            [CLIENT, "-c", "print('running', flush=True)\nimport time\ntime.sleep(60)"],
            env=srv.env,
            stdout=subprocess.PIPE,
        )
        try:
            assert lasting.stdout is not None and lasting.stdout.readline() == b"running\n"
            # One worker runs, and the one it took is replaced while it runs.
            assert wait_until(lambda: len(children_of(srv.process.pid)) == 3, timeout=10), children_of(
                srv.process.pid
            )
        finally:
            lasting.kill()
            lasting.wait()
    finally:
        srv.stop()


def test_a_worker_ends_even_if_its_client_never_hangs_up(tmp_path: Path) -> None:
    srv = start_server(tmp_path)
    fds = stdio_and_cwd()
    reader, writer = os.pipe()
    fds[1], stdout = writer, fds[1]
    os.close(stdout)
    try:
        with RawClient(srv.socket) as client:
            client.send(run_frame([b"warmfork", b"-c", b"import os; print(os.getpid())"]), fds)
            close_all(fds)
            fds = []
            worker = int(os.read(reader, 64))
            read_until_exit(client)
            # The connection stays open: the worker must end all the same.
            assert wait_until(lambda: has_ended(worker), timeout=5), f"worker {worker} is still alive"
    finally:
        close_all(fds)
        os.close(reader)
        srv.stop()


def read_until_exit(client: RawClient) -> None:
    """Reads frames until the EXIT one, leaving the connection open."""
    received = b""
    while True:
        chunk = client.sock.recv(4096)
        assert chunk, "the server closed the connection before the exit status"
        received += chunk
        try:
            replies = parse_replies(received)
        except AssertionError:  # a frame cut off: read on
            continue
        if any(reply.kind == EXIT for reply in replies):
            return


def test_idle_workers_that_die_at_once_are_replaced_after_a_pause_and_logged(tmp_path: Path) -> None:
    # A fork hook that ends every child: each replacement died as it was
    # forked, and the server forked the next at once, some 2700 a second,
    # and said nothing.
    warmup = tmp_path / "fork_hook.py"
    warmup.write_text("import os\nos.register_at_fork(after_in_child=lambda: os._exit(3))\n")
    server = start_server(tmp_path, "--warmup", os.fspath(warmup), "--pool", "2")
    try:
        assert wait_until(lambda: "serving on" in server.log.read_text(), timeout=30)
        began = cpu_seconds(server.process.pid)
        time.sleep(3)
        used = cpu_seconds(server.process.pid) - began
        log = server.log.read_text()
    finally:
        server.stop()
    assert used < 0.5, used
    assert log.count("ended before it had a request (exit 3)") == 1, log
