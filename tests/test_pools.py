"""Filling the allocator's half-used pools (server/src/pools.rs): before it
serves, the server takes every free block of pymalloc's half-used pools, so
that a run's new objects go to fresh pools, on pages of the run's own,
instead of into the gaps between warm objects, whose pages it would copy.
When a server takes that speed-up, and packing the code of a run's path
(server/src/codepack.rs, tested in test_codepack.py), which depends on the
same allocator, and when it does not, is tested here."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import python, start_server

#: pymalloc's pool size and the offset of a pool's first block (its header
#: is 48 bytes) on 64-bit builds.
POOL_SIZE, FIRST_BLOCK = 16 << 10, 48

#: Makes a half-used pool of 448-byte blocks (a 400-byte bytes object is
#: 433 bytes; no other object of this process is that size), fills the
#: pools if told to, then prints where the next two such objects land.
PROGRAM = f"""\
import json, sys
from warmfork import _native
kept = [bytes(400) for _ in range(12)]
del kept[5]
filled = _native.fill_pools() if sys.argv[1] == "fill" else (0, 0, None)
a = bytes(400)
b = bytes(400)
print(json.dumps([id(a) % {POOL_SIZE}, id(b) - id(a), filled[0] > 0, filled[1] % 16, filled[2]]))
"""


#: Variables that choose the allocators or hook them.
ALLOCATOR_VARIABLES = ("PYTHONMALLOC", "PYTHONDEVMODE", "PYTHONTRACEMALLOC", "PYTHONMALLOCSTATS")


#: Prints the allocators' name where the build has the module that tells it.
ALLOCATOR_NAME = """\
try:
    from _testinternalcapi import pymem_getallocatorsname
except ImportError:
    print("ran")
else:
    print(pymem_getallocatorsname())
"""


def placement(how: str, **env: str) -> list[object]:
    clean = {name: value for name, value in os.environ.items() if name not in ALLOCATOR_VARIABLES}
    done = subprocess.run(
        [sys.executable, "-c", PROGRAM, how],
        capture_output=True,
        check=False,
        timeout=30,
        env={**clean, **env},
    )
    assert (done.returncode, done.stderr) == (0, b""), done
    return json.loads(done.stdout)


def test_filled_pools_send_new_objects_to_a_fresh_pool() -> None:
    # The first block of a fresh pool, then the block after it.
    assert placement("fill") == [FIRST_BLOCK, 448, True, 0, None]


def test_without_filling_new_objects_take_the_gaps() -> None:
    # What the test above would see had the filling done nothing: the gap
    # left by `del kept[5]`, and the freed block before it.
    offset, step, *_ = placement("keep")
    assert (offset, step) != (FIRST_BLOCK, 448)


@pytest.mark.parametrize("allocator", ["debug", "malloc"])
def test_filling_keeps_nothing_when_blocks_are_not_in_pymalloc_pools(allocator: str) -> None:
    # Debug hooks put each block 16 bytes into a bigger one, whose pool
    # header names another size class; malloc's blocks have no pool header,
    # and what lies where one would be is read only if it is mapped.
    for _ in range(5):
        _, _, kept, _, why = placement("fill", PYTHONMALLOC=allocator)
        assert (kept, why) in [
            (False, "a block is not where a pymalloc pool header says"),
            (False, "a block's pool header would lie outside writable memory"),
        ]


#: Stands for a warm-up file that hooks the allocators (never failing).
HOOKS = "<a warm-up that hooks the allocators>"
HOOKING_WARMUP = "import _testcapi\n_testcapi.set_nomemory(2**31 - 1, 0)\n"

#: What a server logs when it takes each speed-up that depends on the
#: allocator, and what it logs when it does not, before the reason.
TAKEN = {
    "pools": (b"filled the allocator's half-used pools (", b"leaving the allocator's pools as they are: "),
    "code": (b"code objects of a run's path into", b"leaving the code of a run's path where it is: "),
}
NOT_PYMALLOC = {
    "malloc": "the allocator is malloc, not pymalloc",
    "debug": "the allocator is pymalloc_debug, not pymalloc",
}


@pytest.mark.parametrize(
    ("variables", "server_args", "not_taken"),
    [
        ({}, [], {}),
        ({}, ["--no-fill-pools"], {"pools": "told not to"}),
        ({}, ["--no-pack-code"], {"code": "told not to"}),
        ({"PYTHONMALLOC": "malloc"}, [], dict.fromkeys(TAKEN, NOT_PYMALLOC["malloc"])),
        ({"PYTHONMALLOC": "debug"}, [], dict.fromkeys(TAKEN, NOT_PYMALLOC["debug"])),
        ({"PYTHONDEVMODE": "1"}, [], dict.fromkeys(TAKEN, NOT_PYMALLOC["debug"])),
        # tracemalloc's hooks lie over pymalloc's pools, and a run that stops
        # them would take the packing's wrapper off with them.
        ({"PYTHONTRACEMALLOC": "1"}, [], {"code": "tracemalloc traces the allocations"}),
        # Anyone's hooks, installed since start-up (here by the warm-up), too.
        ({}, ["--warmup", HOOKS], {"code": "CPython names the allocator nothing it knows now, not pymalloc"}),
    ],
)
def test_servers_take_the_allocator_s_speed_ups_unless_told_not_to_or_on_other_allocators(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    variables: dict[str, str],
    server_args: list[str],
    not_taken: dict[str, str],
) -> None:
    for name in ALLOCATOR_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    if HOOKS in server_args:
        pytest.importorskip("_testcapi", reason="the build has no _testcapi to hook the allocators with")
        (tmp_path / "hooks.py").write_text(HOOKING_WARMUP)
        server_args = [os.fspath(tmp_path / "hooks.py") if arg == HOOKS else arg for arg in server_args]
    srv = start_server(tmp_path, "--preload", "json", *server_args)
    try:
        done = srv.run("-c", "import json; print(json.dumps([1]))")
        assert (done.returncode, done.stdout) == (0, b"[1]\n"), done
    finally:
        assert srv.stop() == 0
    log = srv.log.read_bytes()
    for speed_up, (taken, left) in TAKEN.items():
        reason = not_taken.get(speed_up)
        if reason is None:
            assert taken in log, log
        else:
            assert left + reason.encode() in log, log
            assert taken not in log


@pytest.mark.parametrize(
    ("server_variables", "served", "refused"),
    [
        # Unset or empty, the variable asks for nothing: the run gets the server's.
        ({"PYTHONMALLOC": "malloc"}, ["malloc", ""], ["pymalloc", "default"]),
        ({}, ["default", "pymalloc", ""], ["malloc", "debug"]),
        # -X dev hooks the allocators only where PYTHONMALLOC is unset.
        ({"PYTHONDEVMODE": "1"}, ["debug", "pymalloc_debug", ""], ["default", "pymalloc"]),
    ],
)
def test_runs_asking_for_other_allocators_than_the_server_s_are_refused(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    server_variables: dict[str, str],
    served: list[str],
    refused: list[str],
) -> None:
    for name in ALLOCATOR_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    for name, value in server_variables.items():
        monkeypatch.setenv(name, value)
    srv = start_server(tmp_path)
    try:
        runs = {value: srv.run("-c", ALLOCATOR_NAME, env={"PYTHONMALLOC": value}) for value in served + refused}
    finally:
        assert srv.stop() == 0
    for value in served:
        # The allocators python would start with, where it can name them (a
        # run asking for nothing gets the server's, as python started as the
        # server was).
        asked = {"PYTHONMALLOC": value} if value else {}
        expected = python("-c", ALLOCATOR_NAME, env={**srv.env, **asked})
        assert (runs[value].returncode, runs[value].stdout) == (0, expected.stdout), (runs[value], expected)
    for value in refused:
        done = runs[value]
        assert (done.returncode, done.stdout) == (201, b""), done
        assert f"PYTHONMALLOC={value} cannot be honoured".encode() in done.stderr


@pytest.mark.parametrize(
    ("variables", "name"),
    [
        ({}, "pymalloc"),
        ({"PYTHONMALLOC": "malloc"}, "malloc"),
        ({"PYTHONMALLOC": "debug"}, "pymalloc_debug"),
        ({"PYTHONDEVMODE": "1"}, "pymalloc_debug"),
        # Asked for, and ignored under -E: what CPython runs on wins.
        ({"PYTHONMALLOC": "malloc", "-E": ""}, "pymalloc"),
    ],
)
def test_the_server_s_allocators_are_those_cpython_names(variables: dict[str, str], name: str) -> None:
    clean = {key: value for key, value in os.environ.items() if key not in ALLOCATOR_VARIABLES}
    options = ["-E"] if "-E" in variables else []
    env = {key: value for key, value in variables.items() if key != "-E"}
    code = "from warmfork import _native, pyoptions; print(_native.allocator_name(), pyoptions.SERVER_ALLOCATOR)"
    done = subprocess.run(
        [sys.executable, *options, "-c", code], capture_output=True, check=False, timeout=30, env={**clean, **env}
    )
    assert (done.returncode, done.stdout.split()) == (0, [name.encode(), name.encode()]), done


def test_the_server_s_allocators_are_not_what_its_environment_says_later() -> None:
    # A program calling warmfork.serve may change its environment before it
    # imports warmfork: the allocators it runs on stay those it started with.
    clean = {key: value for key, value in os.environ.items() if key not in ALLOCATOR_VARIABLES}
    code = "import os; os.environ['PYTHONMALLOC'] = 'malloc'; from warmfork import pyoptions; print(pyoptions.SERVER_ALLOCATOR)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, check=False, timeout=30, env=clean)
    assert (done.returncode, done.stdout) == (0, b"pymalloc\n"), done
