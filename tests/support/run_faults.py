"""The pages a ``-c pass`` run faults in, counted in workers forked from a
fresh interpreter made ready as the server makes itself before it serves.

A page count, not a time: it does not vary with the machine's load, but
with where each interpreter's heap put its objects, by up to ten pages:
hence the median over several interpreters."""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile

#: Runs ``SETUP``, freezes the heap as the server does, forks three workers
#: that each run ``-c pass`` on /dev/null, and prints the fewest pages one
#: faulted in from the request on.
_PROGRAM = """
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


def run_faults(setup: str, interpreters: int = 3) -> float:
    """The median over ``interpreters`` fresh interpreters, each made ready
    by the Python statements ``setup``, of the fewest pages a ``-c pass``
    run forked from it faulted in."""

    def fewest() -> int:
        program = _PROGRAM.format(setup=setup)
        # Neither the working directory on `sys.path` (-P) nor its contents
        # may weigh on the count: an empty one.
        with tempfile.TemporaryDirectory() as empty:
            done = subprocess.run(
                [sys.executable, "-P", "-c", program], capture_output=True, check=True, timeout=60, cwd=empty
            )
        return int(done.stdout)

    return statistics.median(fewest() for _ in range(interpreters))
