"""The pages a ``-c pass`` run faults in, counted in workers forked from a
fresh interpreter made ready as the server makes itself before it serves.

A page count, not a time: it does not vary with the machine's load, but
with where each interpreter's heap put its objects. That is fixed for a
given installation (the same `.pyc` files unmarshal to the same places):
in one, packing the code gained 0-4 pages in every run where others gained
15-25. Hence comparisons over several interpreters, each with its heap
laid out differently (objects allocated before the imports, a different
number in each)."""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile

#: Runs ``SETUP``, freezes the heap as the server does, forks three workers
#: that each run ``-c pass`` on /dev/null, and prints the fewest pages one
#: faulted in from the request on.
_PROGRAM = """
_layout = [object() for _ in range({padding})]
import gc, os, resource, sys
from warmfork import _codepack, _worker, pymain
{setup}
gc.collect()
gc.freeze()
null = os.open(os.devnull, os.O_RDWR)
counts = []
for _ in range(3):
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        for fd in (0, 1, 2):
            os.dup2(null, fd)
        _worker.prepare()
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        _worker.run(pymain.main, [b"warmfork", b"-c", b"pass"], [b"PATH=/usr/bin"], 0o22)
        os.write(write, str(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before).encode())
        os._exit(0)
    os.close(write)
    counts.append(int(os.read(read, 64)))
    os.close(read)
    os.waitpid(pid, 0)
print(min(counts))
"""


#: Interpreters compared, each with its heap laid out differently.
LAYOUTS = 11


def pages_spared(setup: str, better_setup: str, layouts: int = LAYOUTS) -> float:
    """How many fewer pages, on average over ``layouts`` heap layouts, a
    ``-c pass`` run faults in from an interpreter made ready by
    ``better_setup`` than from one made ready by ``setup``. Compared layout
    by layout: where the objects fall moves a count by up to 20 pages, and
    is fixed for a given installation."""
    before = faults_by_layout(setup, layouts)
    after = faults_by_layout(better_setup, layouts)
    return statistics.mean(b - a for b, a in zip(before, after, strict=True))


def faults_by_layout(setup: str, layouts: int) -> list[int]:
    """The fewest pages a ``-c pass`` run faulted in, for each of ``layouts``
    interpreters with their heaps laid out differently (the same ones for
    the same ``layouts``), each made ready by ``setup``."""

    def fewest(padding: int) -> int:
        program = _PROGRAM.format(setup=setup, padding=padding)
        # Neither the working directory on `sys.path` (-P) nor its contents
        # may weigh on the count: an empty one.
        with tempfile.TemporaryDirectory() as empty:
            done = subprocess.run(
                [sys.executable, "-P", "-c", program], capture_output=True, check=True, timeout=60, cwd=empty
            )
        return int(done.stdout)

    return [fewest(padding) for padding in range(0, 1111 * layouts, 1111)]
