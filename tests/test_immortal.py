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


def run_stdout(server: Server, *args: str) -> bytes:
    done = server.run(*args)
    assert (done.returncode, done.stderr) == (0, b""), done
    return done.stdout


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
    srv = start_server(tmp_path, "--preload", PRELOAD)
    try:
        assert run_stdout(srv, "-c", IS_IMMORTAL) == b"True\n"
        assert b"warm objects immortal" in srv.log.read_bytes()
    finally:
        srv.stop()


def assert_counted(tmp_path: Path, *server_args: str) -> None:
    """Runs of a server started with ``server_args`` see warm objects counted."""
    srv = start_server(tmp_path, "--preload", PRELOAD, *server_args)
    try:
        assert run_stdout(srv, "-c", IS_IMMORTAL) == b"False\n"
        assert b"warm objects immortal" not in srv.log.read_bytes()
    finally:
        srv.stop()


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
        "immortal": start_server(tmp_path, "--preload", PRELOAD, name="immortal"),
        "mortal": start_server(tmp_path, "--preload", PRELOAD, "--no-immortal", name="mortal"),
    }
    try:
        pages = {
            kind: statistics.median(int(run_stdout(srv, "-c", PAGES_SO_FAR)) for _ in range(30))
            for kind, srv in servers.items()
        }
    finally:
        for srv in servers.values():
            srv.stop()
    assert pages["immortal"] < 0.8 * pages["mortal"], pages


@needs_immortal_objects
@pytest.mark.parametrize(
    "program",
    [
        # Dropping warm objects and collecting: nothing is freed, nothing breaks.
        "import gc, json\ndel json.dumps\nprint(gc.collect() >= 0, hasattr(json, 'dumps'))",
        # The frozen warm heap back under the collector's eye, objects and all.
        (
            "import gc, json\ngc.unfreeze()\nx = [json.loads('[1, 2]') for _ in range(1000)]\n"
            "print(gc.collect() >= 0, sum(map(sum, x)))"
        ),
        # Warm classes and their subclasses, made and dropped by the run.
        "import decimal\nclass D(decimal.Decimal): pass\nprint(sum(D(i) for i in range(100)))",
    ],
)
def test_programs_using_immortal_warm_objects_run_as_under_python(tmp_path: Path, program: str) -> None:
    srv = start_server(tmp_path, "--preload", PRELOAD)
    try:
        assert_same_as_python(srv, "-c", program, cwd=tmp_path)
    finally:
        srv.stop()
