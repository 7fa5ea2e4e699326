"""Compiled ``-c`` commands kept by the server (warmfork/_codecache.py): a
worker that compiled its command leaves the text for the server, which
compiles it before its next fork once it has seen it twice; workers forked
after that run the server's code without compiling. Whether a worker
compiled is seen through ``builtins.compile``, which the warm-up wraps."""

from __future__ import annotations

import contextlib
import mmap
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import Server, python, start_server
from warmfork import _codecache, pymain

#: Says on stderr when a worker (not the server) compiles a `-c` command.
COUNTING_WARMUP = """import builtins, os
_server = os.getpid()
_compile = builtins.compile
def _counted(source, filename, *args, **kwargs):
    if filename == "<string>" and os.getpid() != _server:
        os.write(2, b"compiled here\\n")
    return _compile(source, filename, *args, **kwargs)
builtins.compile = _counted
"""

#: Says on stderr what `compile` audit events a run raises: as a warm-up, or
#: as python's sitecustomize.
AUDIT_HOOK = """import os, sys
def _hook(event, args):
    if event == "compile":
        os.write(2, f"audit {args!r}\\n".encode())
sys.addaudithook(_hook)
"""

COMMAND = "total = sum(range(10))\nprint('total', total)"


#: Says on stderr when a worker runs a script from the server's code.
SCRIPT_WARMUP = """\
import os
from warmfork import _codecache, pymain
_script_code = _codecache.script_code
def _said(filename, source):
    code = _script_code(filename, source)
    if code is not None:
        os.write(2, b"kept code\\n")
    return code
_codecache.script_code = _said
"""

SCRIPT = """\
import sys

def total(values):
    return sum(values)

print("total", total(range(10)), sys.argv[1:])
if sys.argv[1:] == ["fail"]:
    raise ValueError("on line 8")
"""


def _audited_server(
    tmp_path: Path, *args: str, warmup_text: str = COUNTING_WARMUP
) -> Server:
    warmup = tmp_path / "counting.py"
    warmup.write_text(warmup_text)
    return start_server(tmp_path, "--pool", "1", "--warmup", os.fspath(warmup), *args)


@pytest.fixture
def audited(tmp_path: Path) -> Iterator[Server]:
    server = _audited_server(tmp_path)
    yield server
    server.stop()


def test_a_command_run_again_is_not_compiled_again(audited: Server) -> None:
    runs = [audited.run("-c", COMMAND) for _ in range(6)]
    assert [(run.returncode, run.stdout) for run in runs] == [(0, b"total 45\n")] * 6
    compiled = [run.stderr == b"compiled here\n" for run in runs]
    assert compiled[:2] == [True, True], runs
    # The second worker's command is kept before the pool's next fork; allow
    # one more for a refill that came first.
    assert compiled[3:] == [False] * 3, runs
    assert all(run.stderr in (b"", b"compiled here\n") for run in runs), runs


def test_each_command_runs_its_own_code(audited: Server) -> None:
    for _ in range(3):
        assert audited.run("-c", "print('first')").stdout == b"first\n"
    for _ in range(3):
        assert audited.run("-c", "print('second')").stdout == b"second\n"
    assert audited.run("-c", "print('first')").stdout == b"first\n"


def test_a_command_that_warns_is_compiled_and_warns_in_every_run(
    audited: Server,
) -> None:
    command = "print(1 is 1)"
    expected = python("-c", command)
    assert b"SyntaxWarning" in expected.stderr
    for _ in range(4):
        done = audited.run("-c", command)
        assert (done.returncode, done.stdout) == (expected.returncode, expected.stdout)
        assert done.stderr == b"compiled here\n" + expected.stderr


def test_a_command_that_does_not_compile_fails_as_in_python_every_time(
    audited: Server,
) -> None:
    expected = python("-c", "print(")
    for _ in range(3):
        done = audited.run("-c", "print(")
        assert (done.returncode, done.stdout) == (expected.returncode, expected.stdout)
        assert done.stderr.endswith(expected.stderr), done.stderr


def test_a_run_s_lower_digit_limit_holds_for_a_command_run_before(
    audited: Server,
) -> None:
    command = "x = 1" + "0" * 700 + "\nprint('ran')"
    for _ in range(4):
        assert audited.run("-c", command).stdout == b"ran\n"
    limited = {"PYTHONINTMAXSTRDIGITS": "640"}
    expected = python("-c", command, env={**os.environ, **limited})
    assert expected.returncode == 1 and b"Exceeds the limit" in expected.stderr, (
        expected
    )
    done = audited.run("-c", command, env=limited)
    assert (done.returncode, done.stdout) == (1, b"")
    assert done.stderr.endswith(expected.stderr), done.stderr


@pytest.fixture
def scripts(tmp_path: Path) -> Iterator[Server]:
    server = _audited_server(tmp_path, warmup_text=SCRIPT_WARMUP)
    yield server
    server.stop()


def _kept(runs: list[subprocess.CompletedProcess[bytes]]) -> list[bool]:
    return [run.stderr.startswith(b"kept code\n") for run in runs]


def test_a_script_run_again_runs_the_server_s_code_and_behaves_as_in_python(
    scripts: Server, tmp_path: Path
) -> None:
    script = tmp_path / "loop.py"
    script.write_text(SCRIPT)
    runs = [scripts.run(os.fspath(script), "a") for _ in range(6)]
    assert _kept(runs)[:2] == [False, False] and _kept(runs)[3:] == [True] * 3, runs
    for run in runs:
        _assert_as_in_python(run, script, "a")
    # A traceback through kept code says what python says.
    failed = scripts.run(os.fspath(script), "fail")
    assert _kept([failed]) == [True]
    _assert_as_in_python(failed, script, "fail")


def _assert_as_in_python(
    run: subprocess.CompletedProcess[bytes], script: Path, *args: str
) -> None:
    """``run`` did what python does with ``script`` (past what the warm-up said)."""
    expected = python(os.fspath(script), *args)
    seen = (run.returncode, run.stdout, run.stderr.removeprefix(b"kept code\n"))
    assert seen == (expected.returncode, expected.stdout, expected.stderr)


def test_an_edited_script_runs_as_edited_at_once(
    scripts: Server, tmp_path: Path
) -> None:
    script = tmp_path / "edited.py"
    script.write_text("print('before')\n")
    for _ in range(4):
        assert scripts.run(os.fspath(script)).stdout == b"before\n"
    script.write_text("print('after!')\n")  # the same size
    done = scripts.run(os.fspath(script))
    assert (done.stdout, _kept([done])) == (b"after!\n", [False])


@pytest.mark.parametrize(
    "source",
    [
        b"# -*- coding: latin-1 -*-\nprint('\xe9')\n",
        b"print('ok')  # \xff not UTF-8\n",
        b"\xef\xbb\xbfprint('bom')\n",
        b"print('x')\n\0\n",
    ],
    ids=["cookie", "not-utf-8-in-a-comment", "byte-order-mark", "null-byte"],
)
def test_a_script_python_s_file_parser_reads_its_own_way_is_never_kept(
    scripts: Server, tmp_path: Path, source: bytes
) -> None:
    script = tmp_path / "odd.py"
    script.write_bytes(source)
    expected = python(os.fspath(script))
    for _ in range(4):
        done = scripts.run(os.fspath(script))
        assert _kept([done]) == [False]
        assert (done.returncode, done.stdout) == (expected.returncode, expected.stdout)
        assert done.stderr.endswith(expected.stderr), (done.stderr, expected.stderr)


def test_a_kept_command_raises_the_audit_event_python_raises(tmp_path: Path) -> None:
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(AUDIT_HOOK)
    expected = python("-c", COMMAND, env={**os.environ, "PYTHONPATH": os.fspath(hook)})
    assert expected.stderr.startswith(b'audit (b"total = '), expected.stderr
    server = _audited_server(tmp_path, warmup_text=COUNTING_WARMUP + AUDIT_HOOK)
    try:
        runs = [server.run("-c", COMMAND) for _ in range(5)]
    finally:
        server.stop()
    compiled = [run.stderr.startswith(b"compiled here\n") for run in runs]
    assert compiled[-1] is False, runs
    for run in runs:
        assert run.stderr.removeprefix(b"compiled here\n") == expected.stderr, run


def test_no_code_cache_compiles_every_run(tmp_path: Path) -> None:
    server = _audited_server(tmp_path, "--no-code-cache")
    try:
        runs = [server.run("-c", COMMAND) for _ in range(5)]
    finally:
        server.stop()
    assert [(run.returncode, run.stdout, run.stderr) for run in runs] == [
        (0, b"total 45\n", b"compiled here\n")
    ] * 5


# --- the shared slots, in this process -------------------------------------


@pytest.fixture
def slots(monkeypatch: pytest.MonkeyPatch) -> mmap.mmap:
    """The module set up as in a server, outside a server loop; this
    process writes as a worker while ``_server_pid`` is another's."""
    shared = mmap.mmap(-1, _codecache._FIRST_SLOT + _codecache.SLOTS * _codecache._SLOT)
    monkeypatch.setattr(_codecache, "_shared", shared)
    monkeypatch.setattr(_codecache, "_codes", {})
    monkeypatch.setattr(_codecache, "_seen", {})
    monkeypatch.setattr(_codecache, "_kept_bytes", 0)
    monkeypatch.setattr(_codecache, "_enabled", True)
    monkeypatch.setattr(_codecache, "_server_pid", -1)
    return shared


def _as_server(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_codecache, "_server_pid", os.getpid())
    _codecache.take_left_sources()
    monkeypatch.setattr(_codecache, "_server_pid", -1)


def _left_by_a_worker(command: str, monkeypatch: pytest.MonkeyPatch) -> None:
    _codecache._leave(command)
    _as_server(monkeypatch)


def _own_slot() -> int:
    return _codecache._FIRST_SLOT + os.getpid() % _codecache.SLOTS * _codecache._SLOT


def test_a_command_left_twice_is_kept_and_its_slot_emptied(
    slots: mmap.mmap, monkeypatch: pytest.MonkeyPatch
) -> None:
    compiled = _codecache.compile_command("x = 1")
    _as_server(monkeypatch)
    assert _codecache._codes == {}  # seen once: remembered, not compiled
    _left_by_a_worker("x = 1", monkeypatch)
    kept = _codecache._codes["x = 1"]
    assert kept is not compiled and kept.co_code == compiled.co_code
    assert _codecache.compile_command("x = 1") is kept
    assert slots[_codecache._PENDING] == 1  # the next fork looks for more
    assert slots[_own_slot() : _own_slot() + 4] == bytes(4)


def test_a_torn_slot_is_dropped(
    slots: mmap.mmap, monkeypatch: pytest.MonkeyPatch
) -> None:
    _left_by_a_worker("y = 2", monkeypatch)
    _codecache._leave("y = 2")
    # Another writer's text under this one's digest.
    slots[_own_slot() + _codecache._HEADER] = ord("z")
    _as_server(monkeypatch)
    assert _codecache._codes == {}


def test_the_server_compiles_one_command_a_fork(
    slots: mmap.mmap, monkeypatch: pytest.MonkeyPatch
) -> None:
    commands = [f"c = {n}" for n in range(3)]
    for _ in range(2):
        for slot, command in enumerate(commands):
            text = b"c" + command.encode()
            at = _codecache._FIRST_SLOT + slot * _codecache._SLOT
            slots[at + _codecache._HEADER : at + _codecache._HEADER + len(text)] = text
            slots[at : at + _codecache._HEADER] = len(text).to_bytes(
                4, "little"
            ) + _codecache._digest(text)
        slots[_codecache._PENDING] = 1
        _as_server(monkeypatch)  # first time round: all three remembered at once
    for expected in (1, 2, 3, 3):
        assert len(_codecache._codes) == expected
        _as_server(monkeypatch)
    assert sorted(_codecache._codes) == commands
    assert slots[_codecache._PENDING] == 0


def test_what_is_not_kept(slots: mmap.mmap, monkeypatch: pytest.MonkeyPatch) -> None:
    too_long = "pass\n" * (_codecache._SLOT // 5)
    warns = ("print('\\d')", "f = (1 is 1)")
    fails = (
        "print(",
        "x = 1" + "0" * 700,
    )  # the second fails under python's lowest digit limit
    for command in (too_long, *warns, *fails):
        for _ in range(
            2
        ):  # left twice (a failing compile would not leave it: to be sure)
            _left_by_a_worker(command, monkeypatch)
    assert _codecache._codes == {}
    _left_by_a_worker("x = 1" + "0" * 600, monkeypatch)
    _left_by_a_worker("x = 1" + "0" * 600, monkeypatch)
    assert list(_codecache._codes) == ["x = 1" + "0" * 600]
    assert sys.get_int_max_str_digits() == sys.int_info.default_max_str_digits


def test_a_server_told_to_stop_keeping_neither_uses_nor_takes(
    slots: mmap.mmap, monkeypatch: pytest.MonkeyPatch
) -> None:
    for _ in range(2):
        _left_by_a_worker("z = 3", monkeypatch)
    kept = _codecache._codes["z = 3"]
    _codecache.keep_compiled(False)
    assert _codecache.compile_command("z = 3") is not kept
    _codecache._codes.clear()
    for _ in range(2):
        _left_by_a_worker("w = 4", monkeypatch)
    assert _codecache._codes == {}


def test_the_oldest_command_goes_first(slots: mmap.mmap) -> None:
    for n in range(_codecache.MAX_KEPT + 2):
        _codecache._keep(f"cn = {n}".encode())
    assert len(_codecache._codes) == _codecache.MAX_KEPT
    assert "n = 0" not in _codecache._codes and "n = 1" not in _codecache._codes
    assert f"n = {_codecache.MAX_KEPT + 1}" in _codecache._codes


def test_commands_seen_once_are_remembered_within_a_bound(
    slots: mmap.mmap, monkeypatch: pytest.MonkeyPatch
) -> None:
    for n in range(_codecache.MAX_SEEN + 10):
        _left_by_a_worker(f"print({n})", monkeypatch)
    assert _codecache._codes == {}
    assert len(_codecache._seen) == _codecache.MAX_SEEN
    # The newest are still remembered: a second time keeps them.
    _left_by_a_worker(f"print({_codecache.MAX_SEEN + 9})", monkeypatch)
    assert list(_codecache._codes) == [f"print({_codecache.MAX_SEEN + 9})"]


@pytest.mark.parametrize(
    ("source", "keepable"),
    [
        (b"print(1)\n", True),
        (b"#!/usr/bin/env python\n# vim: set fileencoding=utf-8 :\nprint(1)\n", False),
        (
            b"x = 1\n\n# coding: latin-1 (a third line is code's business, not a cookie)\n",
            True,
        ),
        ("print('\u00e9')\n".encode(), True),
        (b"print('\xe9')\n", False),
        (b"\xef\xbb\xbfx = 1\n", False),
        (b"x = 1\0\n", False),
        (b"#" * (_codecache.MAX_LENGTH + 1), False),
        # A cookie on the second line after a lone carriage return.
        (b"\r# coding: unicode_escape\rs = 'x\\ry'\r", False),
        (b"x = 1\r\ny = 2 \\\r\n", False),  # continued into the end of the file
        (b"y = (2 +\\\n 3)\n", True),
    ],
)
def test_which_scripts_may_be_kept(source: bytes, keepable: bool) -> None:
    assert _codecache.keepable_script(source) is keepable


def test_kept_sources_stay_within_their_bytes(
    slots: mmap.mmap, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_codecache, "MAX_KEPT_BYTES", 100)
    for n in range(5):
        _codecache._keep(b"c" + f"v{n} = '{'x' * 30}'".encode())
    assert list(_codecache._codes) == [f"v{n} = '{'x' * 30}'" for n in (3, 4)]
    assert _codecache._kept_bytes == 2 * len(f"v0 = '{'x' * 30}'")


def test_a_script_whose_compiling_an_audit_hook_refuses_is_closed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    script = tmp_path / "refused.py"
    script.write_text("x = 1\n")

    def refuse(filename: str, source: bytes) -> None:
        raise RuntimeError("refused by an audit hook")

    monkeypatch.setattr(_codecache, "script_code", refuse)
    fd = os.open(script, os.O_RDONLY)
    with pytest.raises(RuntimeError):
        pymain._kept_code(os.fspath(script), fd, b"x = 1\n")
    with pytest.raises(OSError):
        os.fstat(fd)


@pytest.mark.parametrize(
    ("raised", "left"), [(None, True), (ValueError, True), (SyntaxError, False)]
)
def test_a_script_is_left_for_the_server_only_once_it_has_parsed(
    monkeypatch: pytest.MonkeyPatch, raised: type[BaseException] | None, left: bool
) -> None:
    def run(*args: object) -> None:
        if raised is not None:
            raise raised(
                "from the file parser" if raised is SyntaxError else "from the program"
            )

    leaving: list[str] = []
    monkeypatch.setattr(pymain, "run_source_file", run)
    monkeypatch.setattr(
        _codecache, "leave_script", lambda filename, source: leaving.append(filename)
    )
    with contextlib.suppress(ValueError, SyntaxError):
        pymain._parse_and_run("s.py", -1, {}, False, b"x = 1\n")
    assert leaving == (["s.py"] if left else [])
