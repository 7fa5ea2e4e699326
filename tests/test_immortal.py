"""Immortal warm objects (server/src/immortal.rs): from CPython 3.12 on, the
server makes every object it holds immortal before it serves, so that runs
stop copying its pages to count references; ``--no-immortal`` and older
interpreters leave the counts alone. Each test runs on the interpreters it is
about: scripts/test runs the suite on .venv and on .venv-latest (3.12 or
later) where the machine has one."""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

import pytest
from conftest import Server, start_server
from support.differential import assert_same_as_python
from warmfork import _native

IMMORTAL_OBJECTS = sys.version_info >= (3, 12)
needs_immortal_objects = pytest.mark.skipif(not IMMORTAL_OBJECTS, reason="CPython has immortal objects from 3.12 on")
before_immortal_objects = pytest.mark.skipif(IMMORTAL_OBJECTS, reason="about interpreters before 3.12")

#: Modules the servers preload: enough warm code for a run to touch.
PRELOAD = "json,asyncio,email.message,decimal,argparse,resource"

#: Whether a warm function's count is the immortal one, as a run sees it.
IS_IMMORTAL = "import sys, json; print(sys.getrefcount(json.dumps) == sys.getrefcount(None))"

#: The pages a run has written by the time its program runs: those an idle
#: worker copied ahead of it (prefaulting), the set-up's and the program's.
PAGES_SO_FAR = "import resource; print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt)"


#: A module the servers preload from the test's directory: objects only it
#: holds (made before the server's first freeze), and objects with
#: finalizers, which must stay mortal.
WARM_MODULE = """\
ONLY_HERE = {"key": ["held by this module alone"]}
"""

#: Warm objects with finalizers, which must stay mortal. A run must drop
#: them all: python finalizes what is left at exit, a worker does not.
FINALIZABLE_MODULE = """\
class Noisy:
    def __del__(self):
        print("finalized", flush=True)

NOISY = Noisy()

def numbers():
    try:
        yield 1
    finally:
        print("generator closed", flush=True)

GENERATOR = numbers()
next(GENERATOR)
LOG = open("warm.log", "w")
"""


def run_stdout(server: Server, *args: str) -> bytes:
    done = server.run(*args)
    assert (done.returncode, done.stderr) == (0, b""), done
    return done.stdout


def start_warm_server(tmp_path: Path, *server_args: str, name: str = "s") -> Server:
    """A server preloading PRELOAD, WARM_MODULE (as ``warm``) and
    FINALIZABLE_MODULE (as ``finalizable``), which runs started in
    ``tmp_path`` import as python does."""
    (tmp_path / "warm.py").write_text(WARM_MODULE)
    (tmp_path / "finalizable.py").write_text(FINALIZABLE_MODULE)
    return start_server(tmp_path, "--preload", f"{PRELOAD},warm,finalizable", *server_args, name=name)


def stop_cleanly(server: Server) -> None:
    """Stop ``server``; it must exit 0 without a fatal error: after the heap
    is made immortal the interpreter still finalizes."""
    status = server.stop()
    log = server.log.read_bytes()
    assert (status, b"Fatal Python error" in log) == (0, False), log


@needs_immortal_objects
def test_immortalize_makes_everything_reachable_immortal() -> None:
    # Not interned, so not immortal already: made at run time.
    text = str(len(sys.argv)) + " warm"
    holder = [(text, 12345678901234567890), {"key": object()}]
    changed = _native.immortalize([holder])
    immortal = sys.getrefcount(None)
    reached = [holder, holder[0], text, holder[0][1], holder[1], holder[1]["key"]]
    assert [sys.getrefcount(item) for item in reached] == [immortal] * len(reached)
    assert changed >= len(reached)
    # Already immortal: nothing more to change.
    assert _native.immortalize(holder) == 0


@before_immortal_objects
def test_immortalize_changes_nothing_before_3_12() -> None:
    holder = [object()]
    before = sys.getrefcount(holder[0])
    changed = _native.immortalize([holder])
    after = sys.getrefcount(holder[0])
    assert (changed, after) == (0, before)


@needs_immortal_objects
def test_runs_see_warm_objects_as_immortal(tmp_path: Path) -> None:
    srv = start_warm_server(tmp_path)
    try:
        assert run_stdout(srv, "-c", IS_IMMORTAL) == b"True\n"
        # Made by the preload, before the warm-up's objects were frozen.
        only_here = "import sys, warm; print(sys.getrefcount(warm.ONLY_HERE['key']) == sys.getrefcount(None))"
        assert run_stdout(srv, "-c", only_here) == b"True\n"
        assert b"warm objects immortal" in srv.log.read_bytes()
    finally:
        stop_cleanly(srv)


def assert_counted(tmp_path: Path, *server_args: str) -> None:
    """Runs of a server started with ``server_args`` see warm objects counted."""
    srv = start_warm_server(tmp_path, *server_args)
    try:
        assert run_stdout(srv, "-c", IS_IMMORTAL) == b"False\n"
        assert b"warm objects immortal" not in srv.log.read_bytes()
    finally:
        stop_cleanly(srv)


def test_no_immortal_leaves_warm_objects_counted(tmp_path: Path) -> None:
    assert_counted(tmp_path, "--no-immortal")


@before_immortal_objects
def test_warm_objects_stay_counted_before_3_12(tmp_path: Path) -> None:
    assert_counted(tmp_path)


@needs_immortal_objects
def test_runs_write_far_fewer_pages_with_immortal_warm_objects(tmp_path: Path) -> None:
    # Two servers of the same build and preload, side by side: the median
    # pages written by a run's start, over runs enough for the idle workers
    # to learn what to copy ahead. With counts left alone a run writes a page
    # for nearly every warm object it uses; measured: 670 against 394 pages
    # a run on a numpy server, so a fifth fewer is a wide margin.
    servers = {
        "immortal": start_warm_server(tmp_path, name="immortal"),
        "mortal": start_warm_server(tmp_path, "--no-immortal", name="mortal"),
    }
    try:
        pages = {
            kind: statistics.median(int(run_stdout(srv, "-c", PAGES_SO_FAR)) for _ in range(30))
            for kind, srv in servers.items()
        }
    finally:
        for srv in servers.values():
            stop_cleanly(srv)
    assert pages["immortal"] < 0.8 * pages["mortal"], pages


@needs_immortal_objects
@pytest.mark.parametrize(
    "program",
    [
        # Dropping warm objects and collecting: nothing is freed, nothing breaks.
        "import gc, json\ndel json.dumps\nprint(gc.collect() >= 0, hasattr(json, 'dumps'))",
        # The frozen warm heap back under the collector's eye, objects and all.
        (
            "import gc, json, warm\ngc.unfreeze()\nx = [json.loads('[1, 2]') for _ in range(1000)]\n"
            "del warm.ONLY_HERE\nprint(gc.collect() >= 0, sum(map(sum, x)))"
        ),
        # Warm classes and their subclasses, made and dropped by the run.
        "import decimal\nclass D(decimal.Decimal): pass\nprint(sum(D(i) for i in range(100)))",
        # Warm objects with finalizers stay mortal: dropped, they are
        # finalized at once, as under python; a warm file the run replaces
        # is flushed and closed.
        (
            "import os, finalizable as f\ndel f.NOISY\nprint('after')\ndel f.GENERATOR\nprint('after')\n"
            "f.LOG.write('from the run')\nf.LOG = open(os.devnull, 'w')\nprint(open('warm.log').read())"
        ),
    ],
)
def test_programs_using_immortal_warm_objects_run_as_under_python(tmp_path: Path, program: str) -> None:
    srv = start_warm_server(tmp_path)
    try:
        assert_same_as_python(srv, "-c", program, cwd=tmp_path)
    finally:
        stop_cleanly(srv)
