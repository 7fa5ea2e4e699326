"""What python derives from its environment once and keeps (the temporary
directory, the time zone search path, the user base, the warning filters of
PYTHONWARNINGS) comes from the client's environment, not from the server's,
even when the server's warm-up has already filled those caches."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import Server, start_server
from support.differential import assert_same_as_python, both, warmfork
from support.server_process import stop_when_idle

_WARMUP = """\
import site, sysconfig, tempfile, zoneinfo
tempfile.gettempdir()
sysconfig.get_config_vars()
site.getusersitepackages()
zoneinfo.ZoneInfo("UTC")
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server whose environment names its own temporary directory, time
    zone path, user base and warning filters, and whose warm-up has used
    them all."""
    home = tmp_path_factory.mktemp("server")
    (home / "tmp").mkdir()
    (home / "warm.py").write_text(_WARMUP)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TMPDIR", os.fspath(home / "tmp"))
        patch.setenv("PYTHONTZPATH", "/usr/share/zoneinfo")
        patch.setenv("PYTHONUSERBASE", os.fspath(home / "userbase"))
        # The second equals one of the filters python starts with.
        patch.setenv("PYTHONWARNINGS", "error::UserWarning,ignore::DeprecationWarning")
        srv = start_server(home, "--warmup", os.fspath(home / "warm.py"))
    yield srv
    stop_when_idle(srv)


def test_tempfile_uses_the_clients_tmpdir(server, tmp_path: Path) -> None:
    program = "import tempfile; print(tempfile.gettempdir(), tempfile.mkdtemp().startswith(tempfile.gettempdir()))"
    out = assert_same_as_python(server, "-c", program, env={"TMPDIR": os.fspath(tmp_path)}, cwd=tmp_path)
    assert out.stdout == f"{tmp_path} True\n".encode()


def test_zoneinfo_searches_the_clients_pythontzpath(server, tmp_path: Path) -> None:
    # A "UTC" on the client's path that is not UTC: the server's cached
    # UTC must not be the answer.
    shutil.copy("/usr/share/zoneinfo/Asia/Tokyo", tmp_path / "UTC")
    program = (
        "import zoneinfo, datetime\n"
        "print(zoneinfo.TZPATH, datetime.datetime(2020, 1, 1, tzinfo=zoneinfo.ZoneInfo('UTC')).utcoffset())\n"
    )
    out = assert_same_as_python(server, "-c", program, env={"PYTHONTZPATH": os.fspath(tmp_path)}, cwd=tmp_path)
    assert out.stdout.endswith(b"9:00:00\n")
    assert_same_as_python(server, "-c", program, cwd=tmp_path)  # the default path


def test_a_relative_pythontzpath_entry_warns_only_a_program_that_imports_zoneinfo(server, tmp_path: Path) -> None:
    env = {"PYTHONTZPATH": f"relative{os.pathsep}/usr/share/zoneinfo"}
    out = assert_same_as_python(server, "-c", "print('ok')", env=env, cwd=tmp_path)
    assert (out.stdout, out.stderr) == (b"ok\n", b"")
    # A program that imports zoneinfo gets the same path; python also warns
    # then, at the import, which a warm zoneinfo does not run again.
    ours, theirs = both(server, "-c", "import zoneinfo; print(zoneinfo.TZPATH)", env=env, cwd=tmp_path)
    assert ours.stdout == theirs.stdout == b"('/usr/share/zoneinfo',)\n"


def test_the_user_base_is_the_clients(server, tmp_path: Path) -> None:
    program = (
        "import site, sysconfig\n"
        "print(site.USER_BASE, site.USER_SITE)\n"  # site sets them at start-up
        "print(site.getuserbase(), site.getusersitepackages(), sysconfig.get_config_var('userbase'))\n"
    )
    assert_same_as_python(server, "-c", program, env={"PYTHONUSERBASE": os.fspath(tmp_path)}, cwd=tmp_path)
    assert_same_as_python(server, "-c", program, env={"HOME": os.fspath(tmp_path)}, cwd=tmp_path)


@pytest.mark.parametrize("warnings", [None, "ignore", "error::UserWarning"])
def test_the_servers_pythonwarnings_does_not_apply_to_the_program(server, tmp_path: Path, warnings: str | None) -> None:
    program = "import sys, warnings; warnings.warn('careful'); print('went on', sys.warnoptions)"
    env = {} if warnings is None else {"PYTHONWARNINGS": warnings}
    assert_same_as_python(server, "-c", program, env=env, cwd=tmp_path)
    assert_same_as_python(server, "-W", "always", "-c", program, env=env, cwd=tmp_path)


def test_a_default_filter_the_servers_options_repeated_stays_in_place(server, tmp_path: Path) -> None:
    # The server's `ignore::DeprecationWarning` moved python's own filter of
    # that name to the front; without it a library's DeprecationWarning
    # would show.
    program = (
        "import warnings\n"
        "warnings.warn_explicit('old', DeprecationWarning, 'lib.py', 1, module='lib')\n"
        "print([f[0] for f in warnings.filters if f[2] is DeprecationWarning])\n"
    )
    out = assert_same_as_python(server, "-c", program, cwd=tmp_path)
    assert out.stderr == b""


def test_the_user_base_follows_the_clients_home(tmp_path: Path) -> None:
    (tmp_path / "warm.py").write_text(_WARMUP)
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("PYTHONUSERBASE", raising=False)
        srv = start_server(tmp_path, "--warmup", os.fspath(tmp_path / "warm.py"))
    try:
        program = "import site, sysconfig; print(site.getuserbase(), site.USER_SITE, sysconfig.get_config_var('userbase'))"
        home = tmp_path / "home"
        out = assert_same_as_python(srv, "-c", program, env={"HOME": os.fspath(home)}, cwd=tmp_path)
        assert out.stdout.startswith(f"{home}/.local ".encode())
    finally:
        stop_when_idle(srv)


@pytest.fixture(scope="module")
def stdlib_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server whose warm-up loaded multiprocessing, logging and threading,
    then spent a second before serving."""
    where = tmp_path_factory.mktemp("stdlib")
    warmup = where / "warm.py"
    warmup.write_text("import logging, multiprocessing, threading, time\ntime.sleep(1)\n")
    srv = start_server(where, "--warmup", os.fspath(warmup))
    yield srv
    stop_when_idle(srv)


def test_spawned_children_find_the_programs_modules_in_its_directory(stdlib_server: Server, tmp_path: Path) -> None:
    # multiprocessing noted the server's directory at import (ORIGINAL_DIR),
    # and spawn children of a -c program looked for its modules there: the
    # pool's workers failed to import and the run hung.
    (tmp_path / "helper.py").write_text("def f(x):\n    return x * 10\n")
    program = (
        "import helper, multiprocessing as mp\n"
        "if __name__ == '__main__':\n"
        "    with mp.get_context('spawn').Pool(1) as pool:\n"
        "        print(pool.map(helper.f, [1, 2]))\n"
    )
    out = assert_same_as_python(stdlib_server, "-c", program, cwd=tmp_path)
    assert out.stdout == b"[10, 20]\n", out


def test_what_modules_noted_at_import_is_the_runs(stdlib_server: Server, tmp_path: Path) -> None:
    program = (
        "import logging, os, sys, threading\n"
        "logging.basicConfig(format='%(relativeCreated)d', stream=sys.stdout)\n"
        "logging.warning('x')\n"
        "print(threading.main_thread().native_id == os.getpid())\n"
    )
    done = warmfork(stdlib_server, "-c", program, cwd=tmp_path)
    relative, native = done.stdout.split()
    assert int(relative) < 500, "relativeCreated counts from the server's start"
    assert native == b"True"
