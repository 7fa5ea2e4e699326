"""Reloading under stress and faults: edits during bursts of runs, edits in
quick succession, files that go odd, servers told to stop mid-hand-over,
and what many reloads leave behind."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import CLIENT, Server, start_server
from support.server_process import (
    children_of,
    has_ended,
    process_state,
    settled_fd_count,
    wait_listening,
    wait_until,
)
from test_e2e_reload import control, wait_for_log

PAIR = ["-c", "import mod_a, mod_b; print(mod_a.VALUE, mod_b.VALUE)"]


def test_an_edit_during_a_burst_of_runs_fails_none_and_mixes_no_code(
    tmp_path: Path,
) -> None:
    (tmp_path / "mod_a.py").write_text("VALUE = 'old'\n")
    (tmp_path / "mod_b.py").write_text("VALUE = 'old'\n")
    server = start_server(tmp_path, "--preload", "mod_a,mod_b", reload=True)
    results: list[tuple[float, float, int, bytes, bytes]] = []
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            began = time.monotonic()
            done = subprocess.run(
                [CLIENT, *PAIR],
                env=server.env,
                capture_output=True,
                timeout=60,
                check=False,
            )
            results.append(
                (began, time.monotonic(), done.returncode, done.stdout, done.stderr)
            )

    try:
        wait_for_log(server, "watching")
        loops = [threading.Thread(target=loop) for _ in range(6)]
        for thread in loops:
            thread.start()
        time.sleep(1)
        edited = time.monotonic()
        (tmp_path / "mod_a.py").write_text("VALUE = 'new'\n")
        (tmp_path / "mod_b.py").write_text("VALUE = 'new'\n")
        time.sleep(3)
        stop.set()
        for thread in loops:
            thread.join()
    finally:
        control("stop", "--socket", os.fspath(server.socket))
        server.stop()
    assert results
    for began, ended, code, out, err in results:
        assert code == 0, err
        assert out in (b"old old\n", b"new new\n"), out
        # Started well after the edit was settled: new code.
        if began > edited + 1.5:
            assert out == b"new new\n"
        assert ended - began < 5, (ended - began, out)
    assert any(out == b"new new\n" for *_, out, _ in results)
    print(len(results), max(e - b for b, e, *_ in results))


def slow_warmup_server(tmp_path: Path, value: str = "old"):
    """A server whose warm-up imports ``settings_mod`` and then takes 1.5 s."""
    module = tmp_path / "settings_mod.py"
    module.write_text(f"VALUE = '{value}'\n")
    warmup = tmp_path / "warm.py"
    warmup.write_text("import time\nimport settings_mod\ntime.sleep(1.5)\n")
    server = start_server(tmp_path, "--warmup", os.fspath(warmup), reload=True)
    wait_for_log(server, "watching", timeout=30)
    return server, module


SHOW = ["-c", "import settings_mod; print(settings_mod.VALUE)"]


def test_a_file_moved_into_place_while_the_fresh_server_warms_up_is_served(
    tmp_path: Path,
) -> None:
    server, module = slow_warmup_server(tmp_path)
    try:
        module.write_text("VALUE = 'first'\n")
        wait_for_log(server, "handing the socket to a fresh server")
        time.sleep(0.5)  # the fresh server has imported the first edit and warms up
        # As `mv` from elsewhere, `cp -p` or an archive: the new file keeps an old time.
        staged = tmp_path / "staged.py"
        staged.write_text("VALUE = 'second'\n")
        os.utime(staged, (1_000_000_000, 1_000_000_000))
        os.replace(staged, module)
        deadline = time.monotonic() + 20
        out = b""
        while time.monotonic() < deadline:
            out = server.run(*SHOW, timeout=60).stdout
            if out == b"second\n":
                break
            time.sleep(0.2)
        assert out == b"second\n", server.log.read_text()
    finally:
        control("stop", "--socket", os.fspath(server.socket))
        server.stop()


def fresh_pid(log: str) -> int:
    """The pid of the latest fresh server the log names."""
    marker = "handing the socket to a fresh server (pid "
    return int(log[log.rindex(marker) + len(marker) :].split(")")[0])


def test_stop_during_a_hand_over_stops_both_servers(tmp_path: Path) -> None:
    server, module = slow_warmup_server(tmp_path)
    try:
        module.write_text("VALUE = 'new'\n")
        fresh = fresh_pid(wait_for_log(server, "handing the socket to a fresh server"))
        status = control("status", "--socket", os.fspath(server.socket))
        assert (
            f"pid {server.process.pid}" in status.stdout
        )  # not ready: still the old one's
        began = time.monotonic()
        stopped = control("stop", "--socket", os.fspath(server.socket))
        assert stopped.returncode == 0, stopped.stdout
        assert time.monotonic() - began < 5
        assert server.process.wait(timeout=5) is not None
        assert wait_until(lambda: has_ended(fresh))
        assert not server.socket.exists()
        assert control("status", "--socket", os.fspath(server.socket)).returncode == 3
    finally:
        server.stop()


def test_a_fresh_server_stopped_before_it_is_ready_leaves_the_old_one_serving(
    tmp_path: Path,
) -> None:
    server, module = slow_warmup_server(tmp_path)
    try:
        module.write_text("VALUE = 'new'\n")
        fresh = fresh_pid(wait_for_log(server, "handing the socket to a fresh server"))
        os.kill(fresh, signal.SIGTERM)
        done = server.run(*SHOW, timeout=60)
        assert (done.returncode, done.stdout) == (0, b"old\n"), done.stderr
        log = wait_for_log(server, "serves on with the code it has")
        assert server.process.poll() is None
        status = control("status", "--socket", os.fspath(server.socket))
        assert f"pid {server.process.pid}" in status.stdout, (status.stdout, log)
    finally:
        control("stop", "--socket", os.fspath(server.socket))
        server.stop()


def test_stop_while_the_old_server_finishes_a_run_stops_the_fresh_one_at_once(
    tmp_path: Path,
) -> None:
    module = tmp_path / "settings_mod.py"
    module.write_text("VALUE = 'old'\n")
    server = start_server(tmp_path, "--preload", "settings_mod", reload=True)
    try:
        wait_for_log(server, "watching")
        slow = subprocess.Popen(
            [CLIENT, "-c", "import time; time.sleep(6); print('slow')"],
            env=server.env,
            stdout=subprocess.PIPE,
        )
        time.sleep(0.3)
        module.write_text("VALUE = 'new'\n")
        assert server.run(*SHOW, timeout=60).stdout == b"new\n"
        fresh = fresh_pid(server.log.read_text())
        status = control("status", "--socket", os.fspath(server.socket))
        assert f"pid {fresh}" in status.stdout
        began = time.monotonic()
        stopped = control("stop", "--socket", os.fspath(server.socket))
        assert (stopped.returncode, time.monotonic() - began < 3) == (0, True), (
            stopped.stdout
        )
        assert f"pid {fresh}" in stopped.stdout
        assert control("status", "--socket", os.fspath(server.socket)).returncode == 3
        # The old server is no one's to stop: it finishes its run and exits.
        assert slow.communicate(timeout=30)[0] == b"slow\n"
        assert server.process.wait(timeout=10) == 0
    finally:
        control("stop", "--socket", os.fspath(server.socket))
        server.stop()


def servers_in(log: str) -> list[int]:
    """The pids of the servers a log says started serving, in order."""
    return [int(pid) for pid in re.findall(r"serving on .* \(pid (\d+)\)", log)]


def test_twenty_edits_in_a_row_leave_one_server_with_its_first_descriptors_and_no_zombie(
    tmp_path: Path,
) -> None:
    module = tmp_path / "settings_mod.py"
    module.write_text("VALUE = 0\n")
    server = start_server(tmp_path, "--preload", "settings_mod", reload=True)
    try:
        wait_for_log(server, "watching")
        first = settled_fd_count(server.process.pid)
        for edit in range(1, 21):
            module.write_text(f"VALUE = {edit}\n")
            assert server.run(*SHOW, timeout=60).stdout == f"{edit}\n".encode()
        assert server.process.wait(timeout=10) == 0
        log = server.log.read_text()
        *retired, last = servers_in(log)
        assert len(retired) == 20, log
        # Every server but the last has exited, and nothing reaps them but
        # their parents: no zombie, here or among the last one's children.
        assert wait_until(
            lambda: all(process_state(pid) is None for pid in retired), 10
        )
        status = control("status", "--socket", os.fspath(server.socket))
        assert f"pid {last}" in status.stdout
        assert settled_fd_count(last) == first
        assert "Z" not in children_of(last).values()
        assert server.log.read_text().count("is ready; this one") == 20
    finally:
        control("stop", "--socket", os.fspath(server.socket))
        server.stop()


def test_a_daemon_reloads_into_the_same_log_and_its_lock_names_the_fresh_server(
    tmp_path: Path,
) -> None:
    module = tmp_path / "settings_mod.py"
    module.write_text("VALUE = 'old'\n")
    sock_dir = tmp_path / "sock"
    sock_dir.mkdir(mode=0o700)
    sock = sock_dir / "default.sock"
    log = Path(f"{sock}.log")
    env = {**os.environ, "WARMFORK_SOCKET": os.fspath(sock)}
    started = subprocess.run(
        [
            sys.executable,
            "-m",
            "warmfork",
            "--daemon",
            "--socket",
            os.fspath(sock),
            "--preload",
            "settings_mod",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert started.returncode == 0, started.stderr
    try:
        wait_for_log_file(log, "watching")
        module.write_text("VALUE = 'new'\n")
        done = subprocess.run(
            [CLIENT, *SHOW], env=env, capture_output=True, timeout=60, check=False
        )
        assert (done.returncode, done.stdout) == (0, b"new\n"), done.stderr
        first, fresh = servers_in(wait_for_log_file(log, "is ready; this one"))
        assert wait_until(lambda: has_ended(first))
        assert f"pid {fresh}" in control("status", "--socket", os.fspath(sock)).stdout
        assert Path(f"{sock}.lock").read_text().strip() == str(fresh)
        # The fresh server logs where the first did, and is as detached.
        assert os.readlink(f"/proc/{fresh}/fd/2") == os.fspath(log)
        assert os.getsid(fresh) != os.getsid(0)
        stopped = control("stop", "--socket", os.fspath(sock))
        assert stopped.returncode == 0, stopped.stdout
        assert wait_until(lambda: has_ended(fresh))
        assert "stopped by SIGTERM" in log.read_text()
    finally:
        control("stop", "--socket", os.fspath(sock))


def wait_for_log_file(log: Path, text: str, timeout: float = 30) -> str:
    deadline = time.monotonic() + timeout
    while text not in (
        content := log.read_text(errors="replace") if log.exists() else ""
    ):
        assert time.monotonic() < deadline, content
        time.sleep(0.05)
    return content


def launch(tmp_path: Path, python: list[str | Path], *args: str, relative: bool = False) -> Server:
    """Start ``python -m warmfork`` (``python`` may be a command that ends in
    one) with reload on, on a socket of its own (named by a path relative to
    ``tmp_path`` if ``relative``), its output in ``tmp_path/server.log``, in
    ``tmp_path``; it is not waited for."""
    sock_dir = tmp_path / "sock"
    sock_dir.mkdir(mode=0o700)
    sock = sock_dir / "default.sock"
    log = tmp_path / "server.log"
    env = {**os.environ, "WARMFORK_SOCKET": os.fspath(sock)}
    named = sock.relative_to(tmp_path) if relative else sock
    with log.open("wb") as out:
        process = subprocess.Popen(
            [*python, "-m", "warmfork", "--socket", os.fspath(named), *args],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=tmp_path,
        )
    return Server(socket=sock, process=process, log=log, env=env)


def server_with_inotify_limits(
    tmp_path: Path, limits: dict[str, int], *args: str
) -> Server:
    """A server (reload on) in a user namespace of its own whose inotify
    limits are ``limits`` (``max_inotify_watches``, ``max_inotify_instances``):
    reaching them there leaves the machine's own alone. The namespace maps
    root to root, so the server sees its clients as they are."""
    setup = "".join(
        f"echo {value} > /proc/sys/user/{name} && " for name, value in limits.items()
    )
    # `exec`: the process started here is the server itself.
    wrap = ["unshare", "--user", "--map-root-user", "sh", "-c", f'{setup}exec "$@"', "sh"]
    server = launch(tmp_path, [*wrap, sys.executable], *args)
    try:
        wait_listening(server.socket, server.process)
    except BaseException:
        server.stop()
        raise
    return server


def test_the_inotify_watch_limit_reached_is_said_and_the_server_serves(
    tmp_path: Path,
) -> None:
    (tmp_path / "settings_mod.py").write_text("VALUE = 'old'\n")
    server = server_with_inotify_limits(
        tmp_path, {"max_inotify_watches": 2}, "--preload", "settings_mod"
    )
    try:
        assert server.run(*SHOW, timeout=60).stdout == b"old\n"
        log = wait_for_log(server, "watching")
        assert "max_user_watches" in log, log
    finally:
        server.stop()


def test_no_inotify_instance_left_means_serving_without_reloading(
    tmp_path: Path,
) -> None:
    (tmp_path / "settings_mod.py").write_text("VALUE = 'old'\n")
    server = server_with_inotify_limits(
        tmp_path, {"max_inotify_instances": 0}, "--preload", "settings_mod"
    )
    try:
        done = server.run(*SHOW, timeout=60)
        assert (done.returncode, done.stdout) == (0, b"old\n"), server.log.read_text()
        assert "edits do not take effect" in server.log.read_text()
    finally:
        server.stop()


def test_a_python_gone_since_the_server_started_leaves_it_serving_and_says_why(
    tmp_path: Path,
) -> None:
    # A venv of its own, whose python goes away once the server runs (the
    # venv removed, a python upgraded away).
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    lib = venv / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}"
    lib.mkdir(parents=True)
    (venv / "pyvenv.cfg").write_text(
        (Path(sys.executable).parent.parent / "pyvenv.cfg").read_text()
    )
    site_packages = Path(sys.executable).parent.parent / lib.relative_to(venv) / "site-packages"
    (lib / "site-packages").symlink_to(site_packages)
    python = venv / "bin" / "python"
    python.symlink_to(os.path.realpath(sys.executable))
    module = tmp_path / "settings_mod.py"
    module.write_text("VALUE = 'old'\n")
    server = launch(tmp_path, [python], "--preload", "settings_mod")
    try:
        wait_for_log(server, "watching")
        python.unlink()
        module.write_text("VALUE = 'new'\n")
        began = time.monotonic()
        done = server.run(*SHOW, timeout=60)
        assert (done.returncode, done.stdout) == (0, b"old\n"), done.stderr
        assert time.monotonic() - began < 3
        text = wait_for_log(server, "serves on with the code it has")
        assert f"cannot start a fresh server with {python}" in text, text
        assert server.process.poll() is None
    finally:
        server.stop()


@pytest.mark.parametrize(
    ("how", "expected", "longest"),
    [
        ("deleted", b"old\n", 7.0),  # waits the 5 s a missing file is given, once
        ("directory", b"old\n", 2.0),
        ("symlink", b"linked\n", 2.0),
    ],
)
def test_a_module_file_deleted_or_replaced_by_a_directory_or_a_symlink(
    tmp_path: Path, how: str, expected: bytes, longest: float
) -> None:
    module = tmp_path / "settings_mod.py"
    module.write_text("VALUE = 'old'\n")
    server = start_server(tmp_path, "--preload", "settings_mod", reload=True)
    try:
        wait_for_log(server, "watching")
        module.unlink()
        if how == "directory":
            module.mkdir()
        elif how == "symlink":
            target = tmp_path / "elsewhere.py"
            target.write_text("VALUE = 'linked'\n")
            module.symlink_to(target)
        for _ in range(3):
            began = time.monotonic()
            done = server.run(*SHOW, timeout=60)
            assert (done.returncode, done.stdout) == (0, expected), done.stderr
            assert time.monotonic() - began < longest
            longest = 1.0  # after the first, no run waits
    finally:
        control("stop", "--socket", os.fspath(server.socket))
        server.stop()


# -- a warm-up that changes directory ------------------------------------------


def moving_warm_up_server(tmp_path: Path, warm_up: str, *args: str) -> Server:
    """A server on a socket named relative to ``tmp_path``, whose warm-up
    ``warm.py`` is ``warm_up`` and then changes into ``/``."""
    (tmp_path / "warm.py").write_text(f"import os\n{warm_up}os.chdir('/')\n")
    return launch(tmp_path, [sys.executable], "--warmup", "warm.py", *args, relative=True)


def test_a_relative_socket_path_stays_served_after_a_warm_up_that_changes_directory(tmp_path: Path) -> None:
    # The server looks its socket up again every 2 s, to stop once it is
    # gone: relative to wherever the warm-up left it, it was "gone" at once,
    # and the server stopped, leaving the socket file behind.
    server = moving_warm_up_server(tmp_path, "", "--no-reload")
    try:
        wait_listening(server.socket, server.process)
        time.sleep(3)
        done = server.run("-c", "import os; print(os.getcwd())", cwd=tmp_path)
        assert (done.returncode, done.stdout) == (0, f"{tmp_path}\n".encode()), server.log.read_text()
        assert server.process.poll() is None, server.log.read_text()
    finally:
        assert server.stop() == 0
    assert not server.socket.exists()


def test_a_server_whose_warm_up_changes_directory_is_replaced_from_where_it_started(tmp_path: Path) -> None:
    # The fresh server runs the same command line, `--warmup warm.py` and the
    # relative socket path included: from "/", where the warm-up had left
    # the old server, it found neither.
    (tmp_path / "settings_mod.py").write_text("VALUE = 'old'\n")
    server = moving_warm_up_server(tmp_path, "import settings_mod\n")
    try:
        wait_listening(server.socket, server.process)
        wait_for_log(server, "watching")
        (tmp_path / "settings_mod.py").write_text("VALUE = 'new'\n")
        wait_for_log(server, "is ready", timeout=30)
        assert server.run(*SHOW, timeout=60).stdout == b"new\n", server.log.read_text()
    finally:
        control("stop", "--socket", os.fspath(server.socket))
        server.stop()


def test_a_warm_up_that_changes_directory_and_fails_leaves_no_socket_behind(tmp_path: Path) -> None:
    # The relative socket path was removed from where the warm-up had moved.
    (tmp_path / "warm.py").write_text("import os\nos.chdir('/')\nraise RuntimeError('broken')\n")
    server = launch(tmp_path, [sys.executable], "--warmup", "warm.py", "--no-reload", relative=True)
    try:
        assert server.process.wait(timeout=30) == 1, server.log.read_text()
    finally:
        server.stop()
    assert "broken" in server.log.read_text()
    assert not server.socket.exists()
