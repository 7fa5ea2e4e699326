"""Packing the code of a run's path (server/src/codepack.rs): before it
serves, the server gives the functions of warmfork's own run path copies of
their code made one after another in a mapping of their own, so that the
interpreter's writes into their bytecode copy few pages in each run. When
servers pack and when they do not is in test_pools.py, with the other
speed-up that depends on the allocator."""

from __future__ import annotations

import json
import subprocess
import sys

from support.run_faults import run_faults

#: Packs, then prints how many code objects the run path's functions have,
#: how many were packed, the bytes they take, the distance from the first
#: to the end of the last, and the pages they lay on before and after.
WHERE_CODE_LIES = """\
import json, sys, types
from warmfork import _codepack, pymain

def codes():
    found = []
    def add(code):
        found.append(code)
        for constant in code.co_consts:
            if isinstance(constant, types.CodeType):
                add(constant)
    for function in _codepack._functions([sys.modules[name] for name in _codepack.RUN_PATH]):
        add(function.__code__)
    return found

def pages(found):
    return len({page for code in found
                for page in range(id(code) >> 12, (id(code) + sys.getsizeof(code) - 1 >> 12) + 1)})

def allocators():
    try:
        from _testinternalcapi import pymem_getallocatorsname
    except ImportError:
        return "unnamed"
    return pymem_getallocatorsname()

before = pages(codes())
named = allocators()
packed, size = _codepack.pack()
after = codes()
again = _codepack.pack()
span = max(id(code) + sys.getsizeof(code) for code in after) - min(id(code) for code in after)
print(json.dumps([len(after), packed, size, span, before, pages(after), list(again) == [packed, size],
                  allocators() == named]))
"""


def test_the_code_of_a_run_s_path_lies_on_a_few_pages_of_its_own() -> None:
    done = subprocess.run([sys.executable, "-c", WHERE_CODE_LIES], capture_output=True, check=False, timeout=60)
    assert (done.returncode, done.stderr) == (0, b""), done
    count, packed, size, span, before, after, same_again, allocator_as_before = json.loads(done.stdout)
    # Every code object in the one mapping, one after another; the second
    # packing does nothing and says what the first did; the allocator is
    # back as it was (CPython names it as before).
    assert packed >= count > 100, (count, packed)
    assert span <= size, (span, size)
    assert after <= size // 4096 + 1, (after, size)
    assert before >= 3 * after, (before, after)
    assert same_again
    assert allocator_as_before


#: Packs the code of one function and then drops the copy from it: its
#: block, in the packing's mapping, must never reach pymalloc (which would
#: hand it to the C library's free, and that aborts), so the copy is kept
#: alive. Objects of all sizes are made and freed around it.
DROP_PACKED_CODE = """\
import gc
from warmfork import _native

def victim():
    return 42

copies, packed, size = _native.pack([victim], [])
assert (copies, packed) == ([], 1), (copies, packed)
assert victim() == 42
victim.__code__ = (lambda: 7).__code__
gc.collect()
churn = [bytes(n) for n in range(2000)] + [tuple(range(n % 40)) for n in range(2000)]
del churn
gc.collect()
print(victim(), sum(len(bytes(n)) for n in range(3000)))
"""


def test_a_packed_code_object_that_is_dropped_stays_out_of_the_allocator() -> None:
    done = subprocess.run([sys.executable, "-c", DROP_PACKED_CODE], capture_output=True, check=False, timeout=60)
    assert (done.returncode, done.stdout, done.stderr) == (0, b"7 4498500\n", b""), done


#: Fewer pages a packed run must fault in. Measured (median of three
#: interpreters each way): on 3.13, where every conditional jump writes its
#: inline cache on every execution, 490 against 443; on 3.11, which writes
#: into code only as it warms up, 381 against 372.
FEWER_PAGES = 20 if sys.version_info >= (3, 13) else 3


def test_runs_write_fewer_pages_with_the_code_packed() -> None:
    plain = run_faults("pymain.rehearse()")
    packed = run_faults("_codepack.pack()\npymain.rehearse()")
    assert packed <= plain - FEWER_PAGES, (plain, packed)
