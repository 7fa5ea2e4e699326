"""The warm heap on huge pages (server/src/arenas.rs, server/src/hugepages.rs):
the server keeps pymalloc's arenas side by side and moves the fully used
2 MiB stretches of its heap onto huge pages before serving, so that a fork
copies one page-table entry per 2 MiB of Python objects, not 512;
``--no-huge-pages`` leaves the heap as it is. Runs allocate and free arenas
of their own in the same ranges, which must not change what they compute."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from conftest import Server, python, start_server

THP_MODE = Path("/sys/kernel/mm/transparent_hugepage/enabled")


def _thp_mode() -> str | None:
    try:
        found = re.search(r"\[(\w+)\]", THP_MODE.read_text())
    except OSError:
        return None
    return found.group(1) if found else None


needs_huge_pages = pytest.mark.skipif(
    _thp_mode() in (None, "never"), reason="the kernel has no transparent huge pages for this process"
)

#: A module the servers preload: about 100 MiB of Python objects, 800 000
#: tuples, strings and integers, in some 100 arenas.
HEAP_MODULE = "OBJECTS = [(i, str(i) * 3) for i in range(800_000)]\n"

#: Makes and drops objects in several rounds, so that the worker takes
#: arenas, frees them and takes their slots again; prints what it computed.
CHURN = """\
total = 0
for round in range(3):
    strings = [str(i) * (round + 1) for i in range(400_000)]
    total += sum(map(len, strings))
    del strings
print(total)
"""


def _rollup(pid: int) -> dict[str, int]:
    """The server's memory totals, in KiB."""
    fields = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        name, _, value = line.partition(":")
        fields[name] = int(value.split()[0])
    return fields


def _start(tmp_path: Path, *args: str, name: str) -> Server:
    (tmp_path / "heap.py").write_text(HEAP_MODULE)
    return start_server(tmp_path, "--preload", "heap", "--pool", "0", *args, name=name)


@needs_huge_pages
def test_a_heap_of_python_objects_goes_onto_huge_pages(tmp_path: Path) -> None:
    server = _start(tmp_path, name="huge")
    try:
        # Once a run has been served, the server is warm.
        done = server.run("-c", "from heap import OBJECTS; print(len(OBJECTS), OBJECTS[-1][1][:6])")
        memory = _rollup(server.process.pid)
    finally:
        server.stop()
    assert (done.returncode, done.stdout, done.stderr) == (0, b"800000 799999\n", b"")
    log = server.log.read_text()
    moved = re.search(r"moved (\d+) MiB of the warm heap onto huge pages", log)
    assert moved and int(moved.group(1)) >= 64, log
    # Without the arenas side by side, a third of such a heap was found in
    # whole 2 MiB stretches; with them, nearly all of it.
    assert memory["AnonHugePages"] >= 0.75 * memory["Anonymous"], memory


@needs_huge_pages
def test_no_huge_pages_leaves_the_heap_on_small_pages(tmp_path: Path) -> None:
    server = _start(tmp_path, "--no-huge-pages", name="small")
    try:
        done = server.run("-c", "from heap import OBJECTS; print(len(OBJECTS))")
        memory = _rollup(server.process.pid)
    finally:
        server.stop()
    assert (done.returncode, done.stdout) == (0, b"800000\n")
    assert "leaving the warm heap on small pages: told not to" in server.log.read_text()
    if _thp_mode() == "madvise":  # otherwise the kernel picks huge pages itself
        assert memory["AnonHugePages"] == 0, memory


def test_runs_that_take_and_free_arenas_compute_what_python_does(tmp_path: Path) -> None:
    server = _start(tmp_path, name="churn")
    try:
        runs = [server.run("-c", CHURN) for _ in range(3)]
    finally:
        server.stop()
    expected = python("-c", CHURN)
    assert expected.returncode == 0
    for done in runs:
        assert (done.returncode, done.stdout, done.stderr) == (0, expected.stdout, b"")
