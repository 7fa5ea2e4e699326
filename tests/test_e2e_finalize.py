"""What python does after a program's last line, warmfork does too: what
the program left in ``__main__`` and in the modules it imported is
finalised (files flushed and closed, ``__del__``, ``weakref.finalize``,
suspended generators' ``finally``), while the server's own objects, which a
worker shares, are left alone."""

from __future__ import annotations

import gzip
import os
import signal
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from conftest import CLIENT, start_server
from support.differential import assert_same_as_python, shared_server, warmfork
from support.server_process import stop_when_idle

server = shared_server()


def test_a_file_left_open_in_main_is_flushed_and_closed_as_under_python(server, tmp_path: Path) -> None:
    program = "out = open('out.txt', 'w')\nfor i in range(3000):\n    out.write(f'line {i}\\n')\n"
    expected = "".join(f"line {i}\n" for i in range(3000))
    assert_same_as_python(server, "-c", program, cwd=tmp_path)
    assert (tmp_path / "out.txt").read_text() == expected
    (tmp_path / "out.txt").unlink()
    assert warmfork(server, "-c", program, cwd=tmp_path).returncode == 0
    assert (tmp_path / "out.txt").read_text() == expected


def test_an_asyncio_loop_never_closed_ends_quietly_as_under_python(server, tmp_path: Path) -> None:
    # Its __del__ runs in the last collection, when the modules it uses are
    # cleared: python has cleared sys by then and says nothing; the worker
    # printed an "Exception ignored in: BaseEventLoop.__del__" traceback.
    # (A new loop: get_event_loop() would make one too, with a
    # DeprecationWarning from 3.12 on.)
    (tmp_path / "legacy.py").write_text(
        "import asyncio\n"
        "async def main():\n    print('hello')\n"
        "loop = asyncio.new_event_loop()\n"
        "loop.run_until_complete(main())\n"
    )
    outcome = assert_same_as_python(server, "legacy.py", cwd=tmp_path)
    assert outcome.stderr == b"", outcome


def test_archives_left_open_in_a_module_the_program_imported_are_complete(server, tmp_path: Path) -> None:
    (tmp_path / "archives.py").write_text(
        "import gzip, zipfile\n"
        "z = zipfile.ZipFile('a.zip', 'w')\n"
        "z.writestr('member', 'zipped')\n"
        "g = gzip.open('a.gz', 'wt')\n"
        "g.write('gzipped')\n"
    )
    (tmp_path / "main.py").write_text("import archives\n")
    done = warmfork(server, "main.py", cwd=tmp_path)
    assert (done.returncode, done.stderr) == (0, b"")
    with zipfile.ZipFile(tmp_path / "a.zip") as archive:
        assert archive.read("member") == b"zipped"
    assert gzip.decompress((tmp_path / "a.gz").read_bytes()) == b"gzipped"


FINALIZERS = """\
import sys, tempfile, weakref

class Noisy:
    def __init__(self, name):
        self.name = name
    def __del__(self):
        print('del', self.name)

def suspended():
    try:
        yield 1
    finally:
        print('generator finally')

first, second = Noisy('first'), Noisy('second')
generator = suspended()
next(generator)
weakref.finalize(first, print, 'weakref.finalize callback')
scratch = tempfile.NamedTemporaryFile(dir='.', prefix='scratch-')
sys.modules['made_by_hand'] = type(sys)('made_by_hand')
sys.modules['made_by_hand'].held = Noisy('in a module of its own')
print('end of program')
"""


def test_finalizers_run_at_exit_in_pythons_order(server, tmp_path: Path) -> None:
    out = assert_same_as_python(server, "-c", FINALIZERS, cwd=tmp_path)
    assert out.status == 0
    for line in (b"del first", b"del second", b"generator finally", b"weakref.finalize callback", b"del in a module"):
        assert line in out.stdout
    assert not list(tmp_path.glob("scratch-*"))


@pytest.mark.parametrize(
    "program",
    [
        "f = open('/dev/null')",  # sys:1: ResourceWarning, no tracemalloc hint
        "class A:\n    def __del__(self):\n        import csv\na = A()",  # imports fail, as in python
        "import io, sys\nclass A:\n    def __del__(self):\n        print('to the real stdout')\na = A()\nsys.stdout = io.StringIO()",
        "import sys\ndel sys.stdout",
        "import sys\ndel sys.stderr\nprint('out')",
        # warmfork's own finalisation raises no audit event python does not
        (
            "import sys\n"
            "def hook(event, args):\n"
            "    if event in ('exec', 'compile', 'sys._getframe'):\n"
            "        raise RuntimeError(event)\n"
            "sys.addaudithook(hook)\n"
            "f = open('/dev/null')\n"
            "print('done')"
        ),
        # An error joining the threads is reported as ignored ("Exception
        # ignored on threading shutdown:" on 3.13, "... in: <module
        # 'threading' ...>" before), not as the program's own traceback.
        "import threading\nthreading._shutdown = lambda: 1 / 0",
        "import sys\nsys.modules['threading'] = type(sys)('threading')",
    ],
    ids=[
        "resource-warning", "import-in-del", "stdout-replaced", "no-stdout", "no-stderr", "audit-hook-refuses-exec",
        "threading-shutdown-fails", "threading-without-shutdown",
    ],
)  # fmt: skip
def test_what_finalizers_see_is_as_under_python(server, tmp_path: Path, program: str) -> None:
    ours = assert_same_as_python(server, "-W", "always", "-c", program, cwd=tmp_path)
    assert ours.status == 0


@pytest.mark.parametrize(
    "args",
    [("-W", "error", "-c", "f = open('/dev/null')"), ("-c", "f = open('/dev/full', 'w')\nf.write('x')")],
    ids=["resource-warning-as-error", "last-flush-fails"],
)
def test_an_error_an_object_raises_in_c_as_it_is_freed_at_exit_shows_no_frame(
    server, tmp_path: Path, args: tuple[str, ...]
) -> None:
    # Such an error has no traceback of its own, and CPython gives it one
    # that names the frame running: in python none, in the worker the
    # finalisation step's (`File "<sys>", line 0, in <module>`).
    ours = assert_same_as_python(server, *args, cwd=tmp_path)
    if args[0] == "-W" or sys.version_info >= (3, 13):  # 3.11 says nothing of the failed flush
        assert b"Exception ignored in" in ours.stderr, ours
    assert b"Traceback" not in ours.stderr, ours


def test_the_servers_own_objects_are_never_finalised_in_a_worker(tmp_path: Path) -> None:
    warmup = tmp_path / "warm.py"
    warmup.write_text(
        "class Held:\n"
        "    def __del__(self):\n"
        "        print('a warm-up object was finalised')\n"
        "held = Held()\n"
        "import json\n"
        "json.held = Held()\n"
    )
    srv = start_server(tmp_path, "--warmup", str(warmup))
    try:
        done = warmfork(srv, "-c", "import json; print('ran')", cwd=tmp_path)
        assert (done.returncode, done.stdout, done.stderr) == (0, b"ran\n", b"")
    finally:
        stop_when_idle(srv)


SLOW_FINALIZER = """\
import sys, time
class Slow:
    def __del__(self):
        print('finalising', flush=True)
        time.sleep(10)
        print('not interrupted', flush=True)
held = Slow()
"""


@pytest.mark.parametrize("under", ["warmfork", "python"])
def test_ctrl_c_during_finalisation_ends_the_process_by_sigint(server, tmp_path: Path, under: str) -> None:
    # CPython resets Python signal handlers before it finalises modules: the
    # interrupted finaliser prints nothing more and the process dies by SIGINT.
    command = [CLIENT] if under == "warmfork" else [sys.executable]
    env = {**os.environ, "WARMFORK_SOCKET": os.fspath(server.socket)}
    process = subprocess.Popen(
        [*command, "-c", SLOW_FINALIZER], cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        assert process.stdout is not None
        assert process.stdout.readline() == b"finalising\n"
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=20)
    finally:
        process.kill()
    assert (process.returncode, out, err) == (-signal.SIGINT, b"", b"")


# What a script writes to stdout after its code has run: a traceback, the
# message of sys.exit, a thread's last words, an exit handler's.
AFTER_THE_CODE = {
    "traceback": "print('out')\n1/0\n",
    "exit-message": "import sys\nprint('out')\nsys.exit('bye')\n",
    "exit-handler": "import atexit, sys\natexit.register(lambda: sys.stderr.write('handler\\n'))\nprint('out')\n",
    "thread": (
        "import sys, threading, time\n"
        "def late():\n    time.sleep(0.2)\n    sys.stderr.write('thread\\n')\n"
        "threading.Thread(target=late).start()\nprint('out')\n"
    ),
}


@pytest.mark.parametrize("source", ["script", "stdin"])
@pytest.mark.parametrize("program", list(AFTER_THE_CODE.values()), ids=list(AFTER_THE_CODE))
def test_a_scripts_output_is_flushed_before_what_follows_its_code(
    server, tmp_path: Path, program: str, source: str
) -> None:
    # CPython flushes stderr and stdout once a file's code has run (not a
    # `-c` command's): with both on one pipe, what the script printed
    # comes first. The worker flushed only at the very end.
    (tmp_path / "script.py").write_text(program)
    merged: dict[str, object] = {"cwd": tmp_path, "stdout": subprocess.PIPE, "stderr": subprocess.STDOUT}
    if source == "stdin":
        merged["input"] = program.encode()
    outcome = assert_same_as_python(server, "script.py" if source == "script" else "-", **merged)
    assert outcome.stdout.startswith(b"out\n"), outcome


@pytest.mark.parametrize(
    "args",
    [("-c", "class K(KeyboardInterrupt): pass\nraise K"), ("script.py",), ("-i", "-c", "pass")],
    ids=["command", "script", "prompt"],
)
def test_a_subclass_of_keyboard_interrupt_ends_the_run_with_status_1(server, tmp_path: Path, args) -> None:
    # Only KeyboardInterrupt itself makes python die by SIGINT.
    program = "class K(KeyboardInterrupt): pass\n\nraise K\n"  # the blank line ends the class at the prompt
    (tmp_path / "script.py").write_text(program)
    outcome = assert_same_as_python(server, *args, cwd=tmp_path, input=program.encode())
    assert outcome.status == (0 if args[0] == "-i" else 1), outcome
    assert b"\nK\n" in outcome.stderr or b"__main__.K" in outcome.stderr, outcome
