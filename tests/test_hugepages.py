"""The warm heap on huge pages (server/src/arenas.rs, server/src/hugepages.rs):
the server keeps pymalloc's arenas side by side and moves the fully used
2 MiB stretches of its heap onto huge pages before serving, so that a fork
copies one page-table entry per 2 MiB of Python objects, not 512;
``--no-huge-pages`` leaves the heap as it is. Arenas are mapped and unmapped
one by one, as CPython's own allocator does them, so a warm-up's peak does
not stay in the server's address space, and runs that make and free arenas
of their own compute what python does."""

from __future__ import annotations

import os
import platform
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import Server, python, start_server, wait_for_socket

THP_MODE = Path("/sys/kernel/mm/transparent_hugepage/enabled")


def _thp_mode() -> str | None:
    try:
        found = re.search(r"\[(\w+)\]", THP_MODE.read_text())
    except OSError:
        return None
    return found.group(1) if found else None


def _kernel() -> tuple[int, ...]:
    found = re.match(r"(\d+)\.(\d+)", platform.release())
    return tuple(map(int, found.groups())) if found else (0, 0)


needs_huge_pages = pytest.mark.skipif(
    _thp_mode() in (None, "never") or _kernel() < (6, 1),
    reason="no transparent huge pages here, or no MADV_COLLAPSE (Linux 6.1)",
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


#: A module that makes some 300 MiB of objects and drops them again, then
#: keeps 15 MiB, the last of which lie in arenas of the region.
PEAK_MODULE = """\
held = [(i, str(i) * 5) for i in range(2_000_000)]
del held
kept = [(i, str(i)) for i in range(100_000)]
"""

#: Serves with ``huge_pages`` given as an int.
API_PROGRAM = """\
import sys, warmfork
warmfork.serve(socket=sys.argv[1], pool=0, huge_pages=0)
print("returned")
"""


def _status(pid: int) -> dict[str, int]:
    """The server's memory figures from /proc/PID/status, in KiB."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if value.strip().endswith("kB"):
            fields[name] = int(value.split()[0])
    return fields


def _in_arena_slot(pid: int, address: int) -> bool:
    """Whether ``address`` lies in one of the server's mappings kept off huge
    pages, as the arenas' slots are (and mappings of pymalloc's own are
    not)."""
    within = False
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        if found := re.match(r"([0-9a-f]+)-([0-9a-f]+) ", line):
            within = int(found.group(1), 16) <= address < int(found.group(2), 16)
        elif within and line.startswith("VmFlags:"):
            return "nh" in line.split()
    return False


def _huge_mappings_flags(pid: int) -> list[list[str]]:
    """The VmFlags of each of the server's mappings that hold huge pages."""
    flagged, huge = [], 0
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        if line.startswith("AnonHugePages:"):
            huge = int(line.split()[1])
        elif line.startswith("VmFlags:"):
            if huge:
                flagged.append(line.split()[1:])
            huge = 0
    return flagged


def _moved(log: str) -> int:
    """The MiB the server's log says it moved onto huge pages: before it
    says it serves, and after filling the pools, what that made resident."""
    return sum(int(mib) for mib in re.findall(r"moved (\d+) MiB (?:more )?of the warm heap onto huge pages", log))


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
        where = server.run("-c", "from heap import OBJECTS; print(id(OBJECTS[-1]))")
        placed = _in_arena_slot(server.process.pid, int(where.stdout))
        huge = _huge_mappings_flags(server.process.pid)
    finally:
        server.stop()
    assert (done.returncode, done.stdout, done.stderr) == (0, b"800000 799999\n", b"")
    # Moved, then off huge pages again, as arenas are mapped: the kernel
    # keeps the huge pages, and gives a worker's new arena small ones.
    assert huge and all("nh" in flags for flags in huge), huge
    log = server.log.read_text()
    assert _moved(log) >= 64, log
    # Without the arenas side by side, a third of such a heap was found in
    # whole 2 MiB stretches; with them, nearly all of it.
    assert memory["AnonHugePages"] >= 0.75 * memory["Anonymous"], memory
    assert placed, "the warm-up's objects are in the arenas' slots"


@needs_huge_pages
def test_a_few_mib_of_arenas_go_onto_huge_pages_too(tmp_path: Path) -> None:
    # Fewer than the 8 MiB below which other mappings are not looked at.
    (tmp_path / "heap.py").write_text("OBJECTS = [(i, str(i)) for i in range(40_000)]\n")
    server = start_server(tmp_path, "--preload", "heap", "--pool", "0", name="few")
    try:
        done = server.run("-c", "pass")
    finally:
        server.stop()
    assert done.returncode == 0
    log = server.log.read_text()
    assert _moved(log) >= 2, log


def test_no_huge_pages_leaves_the_heap_on_small_pages(tmp_path: Path) -> None:
    server = _start(tmp_path, "--no-huge-pages", name="small")
    try:
        done = server.run("-c", "from heap import OBJECTS; print(len(OBJECTS))")
        memory = _rollup(server.process.pid)
        where = server.run("-c", "from heap import OBJECTS; print(id(OBJECTS[-1]))")
        placed = _in_arena_slot(server.process.pid, int(where.stdout))
    finally:
        server.stop()
    assert (done.returncode, done.stdout) == (0, b"800000\n")
    assert "leaving the warm heap on small pages: told not to" in server.log.read_text()
    assert not placed, "the arenas stay where CPython puts them"
    if _thp_mode() == "madvise":  # otherwise the kernel picks huge pages itself
        assert memory["AnonHugePages"] == 0, memory


def test_serve_takes_any_truth_value_for_huge_pages(tmp_path: Path) -> None:
    socket = tmp_path / "api.sock"
    process = subprocess.Popen(
        [sys.executable, "-c", API_PROGRAM, str(socket)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
    )
    server = Server(socket=socket, process=process, log=tmp_path / "unused", env={**os.environ, "WARMFORK_SOCKET": str(socket)})
    try:
        wait_for_socket(socket, process, 60)
        done = server.run("-c", "print('ran')")
    finally:
        server.stop()
    stdout, stderr = process.communicate()
    assert (done.returncode, done.stdout) == (0, b"ran\n"), stderr
    assert (process.returncode, stdout) == (0, "returned\n"), stderr
    assert "leaving the warm heap on small pages: told not to" in stderr


def test_a_warm_up_s_peak_does_not_stay_in_the_address_space(tmp_path: Path) -> None:
    (tmp_path / "peak.py").write_text(PEAK_MODULE)
    server = start_server(tmp_path, "--preload", "peak", "--pool", "0", name="peak")
    try:
        done = server.run("-c", "import peak; print(id(peak.kept[-1]))")
        status = _status(server.process.pid)
        placed = _in_arena_slot(server.process.pid, int(done.stdout))
    finally:
        server.stop()
    assert done.returncode == 0
    assert placed
    # The arenas of the 300 MiB dropped are unmapped, not kept reserved: a
    # worker, which takes its client's `ulimit -v`, would count them.
    assert status["VmSize"] < status["VmPeak"] - 200 * 1024, status


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
