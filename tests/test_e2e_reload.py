"""Edits take effect, and never leave the socket without a server: an edit of
loaded code hands the socket to a fresh server once the files are quiet; a
fresh server that cannot start leaves the old one serving, and a later fix
is picked up."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import CLIENT, Server, start_server

SERVER = [sys.executable, "-m", "warmfork"]

#: Prints the preloaded module's value.
SHOW = ["-c", "import settings_mod; print(settings_mod.VALUE)"]


def control(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*SERVER, *args], capture_output=True, text=True, timeout=60, check=False)


def wait_for_log(server: Server, text: str, count: int = 1, timeout: float = 60) -> str:
    """The server log once ``text`` appears in it ``count`` times."""
    deadline = time.monotonic() + timeout
    while True:
        log = server.log.read_text(errors="replace")
        if log.count(text) >= count:
            return log
        if time.monotonic() > deadline:
            raise AssertionError(f"{text!r} not in the server log within {timeout}s:\n{log}")
        time.sleep(0.05)


def shown(server: Server, program: list[str] = SHOW) -> tuple[int, bytes, bytes]:
    done = server.run(*program, timeout=60)
    return done.returncode, done.stdout, done.stderr


@pytest.fixture
def reloading(tmp_path: Path) -> Iterator[tuple[Server, Path]]:
    """A server with reload on that preloads ``settings_mod`` (VALUE 'old')
    from its working directory, and that module's file."""
    module = tmp_path / "settings_mod.py"
    module.write_text("VALUE = 'old'\n")
    server = start_server(tmp_path, "--preload", "settings_mod", reload=True)
    try:
        wait_for_log(server, "watching")
        yield server, module
    finally:
        # Whichever server holds the socket by now (the first may have retired).
        control("stop", "--socket", os.fspath(server.socket))
        server.stop()


def test_an_edit_of_a_preloaded_module_is_seen_by_the_next_run(reloading: tuple[Server, Path]) -> None:
    server, module = reloading
    assert shown(server)[:2] == (0, b"old\n")
    # A run in progress when the file changes finishes on the code it started with.
    slow = subprocess.Popen(
        [CLIENT, "-c", "import settings_mod, time; time.sleep(1); print(settings_mod.VALUE)"],
        env=server.env,
        stdout=subprocess.PIPE,
    )
    time.sleep(0.3)
    module.write_text("VALUE = 'new'\n")
    code, out, err = shown(server)
    assert (code, out) == (0, b"new\n"), err
    assert slow.communicate(timeout=30)[0] == b"old\n"
    assert server.process.wait(timeout=15) == 0  # the old server retires once its run is done
    assert "changed: handing the socket to a fresh server" in server.log.read_text()
    status = control("status", "--socket", os.fspath(server.socket))
    assert status.returncode == 0
    assert f"pid {server.process.pid}" not in status.stdout


def test_clients_are_refused_at_once_when_the_fresh_server_dies_while_the_old_one_finishes(
    reloading: tuple[Server, Path],
) -> None:
    # The retiring server kept its copy of the listening socket: clients then
    # waited in a backlog no one accepted from until its last run ended.
    server, module = reloading
    slow = subprocess.Popen([CLIENT, "-c", "import time; time.sleep(8)"], env=server.env)
    try:
        time.sleep(0.3)
        module.write_text("VALUE = 'new'\n")
        assert shown(server)[:2] == (0, b"new\n")
        wait_for_log(server, "is ready; this one")  # the old server has let go
        fresh = int(Path(f"{server.socket}.lock").read_text())
        assert fresh != server.process.pid
        os.kill(fresh, signal.SIGKILL)
        gone_by = time.monotonic() + 10
        while _alive(fresh) and time.monotonic() < gone_by:  # its descriptors close as it dies
            time.sleep(0.01)
        began = time.monotonic()
        code, _, err = shown(server)
        assert code == 202 and b"no server" in err, err
        assert time.monotonic() - began < 3
    finally:
        slow.kill()
        slow.wait()


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs still (a zombie has let go of its descriptors)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def test_an_edit_that_breaks_a_preloaded_module_leaves_the_old_code_serving(
    reloading: tuple[Server, Path],
) -> None:
    server, module = reloading
    assert shown(server)[:2] == (0, b"old\n")
    module.write_text("raise RuntimeError('broken on purpose')\n")
    # The first run waited while the fresh server tried to start; none is refused.
    for _ in range(3):
        code, out, err = shown(server)
        assert (code, out) == (0, b"old\n"), err
    log = wait_for_log(server, "serves on with the code it has")
    assert "broken on purpose" in log  # the fresh server's own report
    assert "exited with status 1 before it was ready" in log
    assert server.process.poll() is None
    status = control("status", "--socket", os.fspath(server.socket))
    assert f"pid {server.process.pid}" in status.stdout
    # Fixed: the very next run sees the fixed code.
    module.write_text("VALUE = 'fixed'\n")
    code, out, err = shown(server)
    assert (code, out) == (0, b"fixed\n"), err
    assert server.process.wait(timeout=15) == 0


def test_a_broken_warm_up_file_leaves_the_old_server_serving(tmp_path: Path) -> None:
    warmup = tmp_path / "warm.py"
    warmup.write_text("GREETING = 'hello'\n")
    server = start_server(tmp_path, "--warmup", os.fspath(warmup), reload=True)
    try:
        wait_for_log(server, "watching")
        warmup.write_text("GREETING = (\n")  # a syntax error
        code, out, err = shown(server, ["-c", "print('served')"])
        assert (code, out) == (0, b"served\n"), err
        log = wait_for_log(server, "serves on with the code it has")
        assert "SyntaxError" in log
        assert server.process.poll() is None
    finally:
        control("stop", "--socket", os.fspath(server.socket))
        server.stop()


def test_a_module_deleted_and_recreated_as_by_an_install_is_replaced_once_refusing_no_one(
    reloading: tuple[Server, Path],
) -> None:
    server, module = reloading
    assert shown(server)[:2] == (0, b"old\n")
    # As pip does: the old file goes, and the new one comes a moment later.
    module.unlink()
    during = [
        subprocess.Popen([CLIENT, *SHOW], env=server.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for _ in range(3)
    ]
    time.sleep(1)
    module.write_text("VALUE = 'new'\n")
    for client in during:
        out, err = client.communicate(timeout=60)
        assert (client.returncode, out) == (0, b"new\n"), err
    assert server.process.wait(timeout=15) == 0
    log = server.log.read_text()
    assert log.count("handing the socket to a fresh server") == 1, log
    assert "before it was ready" not in log, log


def test_a_package_replaced_by_a_broken_install_then_fixed_in_place_is_noticed(tmp_path: Path) -> None:
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "mod.py").write_text("VALUE = 'old'\n")
    program = ["-c", "import pkg.mod; print(pkg.mod.VALUE)"]
    server = start_server(tmp_path, "--preload", "pkg.mod", reload=True)
    try:
        wait_for_log(server, "watching")
        assert shown(server, program)[:2] == (0, b"old\n")
        # As pip does: the old directory is moved aside, a new one written,
        # the old one removed; here the new code is broken.
        stash = tmp_path / "pkg-stash"
        package.rename(stash)
        package.mkdir()
        (package / "__init__.py").write_text("")
        (package / "mod.py").write_text("VALUE = (\n")
        for file in stash.iterdir():
            file.unlink()
        stash.rmdir()
        code, out, err = shown(server, program)
        assert (code, out) == (0, b"old\n"), err
        wait_for_log(server, "serves on with the code it has")
        # The new directory is watched now: fixing the file in place is seen.
        (package / "mod.py").write_text("VALUE = 'fixed'\n")
        code, out, err = shown(server, program)
        assert (code, out) == (0, b"fixed\n"), err
        assert server.process.wait(timeout=15) == 0
    finally:
        control("stop", "--socket", os.fspath(server.socket))
        server.stop()


def test_a_deploy_that_points_a_link_at_another_release_is_served(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # `current -> r1` swapped for `current -> r2` (`ln -sfn r2 current.tmp &&
    # mv -T current.tmp current`) changes no file the server loaded, so it
    # went unnoticed and r1 was served for good.
    for release in ("r1", "r2"):
        (tmp_path / release).mkdir()
        (tmp_path / release / "deployed_mod.py").write_text(f"VALUE = {release!r}\n")
    (tmp_path / "current").symlink_to("r1")
    monkeypatch.setenv("PYTHONPATH", os.fspath(tmp_path / "current"))
    server = start_server(tmp_path, "--preload", "deployed_mod", reload=True)
    show = ["-c", "import deployed_mod; print(deployed_mod.VALUE)"]
    try:
        wait_for_log(server, "watching")
        assert shown(server, show)[:2] == (0, b"r1\n")
        (tmp_path / "current.tmp").symlink_to("r2")
        os.rename(tmp_path / "current.tmp", tmp_path / "current")
        wait_for_log(server, "changed: handing the socket to a fresh server")
        assert shown(server, show)[:2] == (0, b"r2\n")
    finally:
        control("stop", "--socket", os.fspath(server.socket))
        server.stop()


def test_an_edit_made_while_the_server_warms_up_is_served(tmp_path: Path) -> None:
    # The module is loaded, then edited while the warm-up goes on: the first
    # run must not see the code the server loaded before the edit.
    module = tmp_path / "settings_mod.py"
    module.write_text("VALUE = 'old'\n")
    warmup = tmp_path / "warm.py"
    warmup.write_text("import time\nimport settings_mod\ntime.sleep(2)\n")
    server = start_server(tmp_path, "--warmup", str(warmup), reload=True)
    try:
        module.write_text("VALUE = 'new'\n")  # the server listens, and warms up for 2 s more
        assert shown(server) == (0, b"new\n", b"")
        assert "changed while this server warmed up" in server.log.read_text()
    finally:
        control("stop", "--socket", os.fspath(server.socket))
        server.stop()
