"""The program writes through the client's own descriptors: nothing is lost
at exit whatever the buffering, `>>` appends, `2>&1` interleaves as under
python, children and raw writes share the streams, and a descriptor the
client had closed is closed for the program too."""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import Server, start_server
from support.differential import assert_same_as_python, reference, shared_server, warmfork
from support.server_process import stop_when_idle

server = shared_server()


def test_non_daemon_threads_and_atexit_finish_before_the_client_exits(server, tmp_path: Path) -> None:
    program = (
        "import atexit, threading, time\n"
        "def late():\n    time.sleep(0.3)\n    print('thread done')\n"
        "atexit.register(lambda: print('atexit'))\n"
        "threading.Thread(target=late).start()\n"
        "print('main done')\n"
    )
    out_file = tmp_path / "out"
    with out_file.open("wb") as out:
        done = warmfork(server, "-c", program, cwd=tmp_path, stdout=out, stderr=subprocess.PIPE)
    # Read as soon as the client has exited: all of it must be there already.
    assert (done.returncode, out_file.read_bytes()) == (0, b"main done\nthread done\natexit\n")
    assert_same_as_python(server, "-c", program, cwd=tmp_path)


def test_threads_and_thread_pools_behave_as_under_python(server, tmp_path: Path) -> None:
    program = (
        "import threading\n"
        "print(threading.main_thread().is_alive(), threading.current_thread() is threading.main_thread())\n"
        "from concurrent.futures import ThreadPoolExecutor\n"
        "with ThreadPoolExecutor(2) as pool:\n    print(sorted(pool.map(abs, [-2, -1])))\n"
    )
    out = assert_same_as_python(server, "-c", program, cwd=tmp_path)
    assert out.stdout == b"True True\n[1, 2]\n"


BIG_OUTPUT = "import sys\nfor i in range(50000):\n    print(i, 'x' * 20)\n"


@pytest.mark.parametrize("ending", ["", "sys.exit(3)", "raise ValueError('end')"], ids=["normal", "exit", "exception"])
def test_block_buffered_output_to_a_pipe_is_not_lost_at_exit(server, tmp_path: Path, ending: str) -> None:
    out = assert_same_as_python(server, "-c", BIG_OUTPUT + ending, cwd=tmp_path)
    assert out.stdout.count(b"\n") == 50000


def test_block_buffered_output_to_a_file_is_complete_when_the_client_exits(server, tmp_path: Path) -> None:
    out_file = tmp_path / "out"
    with out_file.open("wb") as out:
        done = warmfork(server, "-c", BIG_OUTPUT + "sys.exit(3)", cwd=tmp_path, stdout=out)
    assert done.returncode == 3
    assert out_file.read_bytes().count(b"\n") == 50000


def test_output_appends_to_a_file_opened_for_append(server, tmp_path: Path) -> None:
    target = tmp_path / "log"
    target.write_bytes(b"existing\n")
    with target.open("ab") as out:
        out.seek(0)  # an O_APPEND descriptor writes at the end wherever its offset is
        done = warmfork(server, "-c", "import os; print('new', flush=True); os.write(1, b'raw\\n')", stdout=out)
    assert done.returncode == 0
    assert target.read_bytes() == b"existing\nnew\nraw\n"


def test_runs_sharing_one_descriptor_continue_each_others_output(server, tmp_path: Path) -> None:
    target = tmp_path / "out"
    with target.open("wb") as out:  # `{ warmfork ...; warmfork ...; } > out`
        for word in ("one", "two", "three"):
            assert warmfork(server, "-c", f"print({word!r})", stdout=out).returncode == 0
    assert target.read_bytes() == b"one\ntwo\nthree\n"


def test_stdout_and_stderr_on_one_pipe_interleave_as_under_python(server, tmp_path: Path) -> None:
    program = "import sys\nfor i in range(5):\n    print('out', i, flush=True)\n    print('err', i, file=sys.stderr, flush=True)\n"
    out = assert_same_as_python(server, "-c", program, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert out.stdout.splitlines()[:2] == [b"out 0", b"err 0"]


def test_subprocesses_and_raw_writes_reach_the_clients_stdout(server, tmp_path: Path) -> None:
    program = (
        "import os, subprocess, sys\n"
        "print('print', flush=True)\n"
        "os.write(1, b'os.write\\n')\n"
        "subprocess.run(['/bin/echo', 'child'])\n"
        "os.system('echo system; echo to-stderr >&2')\n"
        "subprocess.run([sys.executable, '-c', 'print(\"grandchild\")'])\n"
        "print('end')\n"
    )
    out = assert_same_as_python(server, "-c", program, cwd=tmp_path)
    assert out.stdout == b"print\nos.write\nchild\nsystem\ngrandchild\nend\n"
    assert out.stderr == b"to-stderr\n"


@pytest.mark.parametrize("fd", [0, 1, 2])
def test_a_descriptor_closed_in_the_client_is_closed_in_the_program(server, tmp_path: Path, fd: int) -> None:
    report = 2 if fd == 1 else 1
    program = (
        f"import os, sys\nstreams = (sys.stdin, sys.stdout, sys.stderr)\n"
        f"try:\n    os.fstat({fd}); state = 'open'\nexcept OSError as e:\n    state = e.strerror\n"
        f"os.write({report}, f'{{[s is None for s in streams]}} {{state}}\\n'.encode())\n"
        "print('printed')\n"
    )
    out = assert_same_as_python(server, "-c", program, cwd=tmp_path, preexec_fn=lambda: os.close(fd))
    assert b"Bad file descriptor" in out.stdout + out.stderr


# What the streams are made with: python picks encoding and error handler
# from the locale (coercing the C locale, PEP 538) and PYTHONIOENCODING.
SHOW_STREAMS = (
    "import locale, os, sys\n"
    "print(os.environ.get('LC_CTYPE'), locale.setlocale(locale.LC_CTYPE))\n"
    "print(*[f'{s.encoding}/{s.errors}' for s in (sys.stdin, sys.stdout, sys.stderr)])\n"
)


@pytest.mark.parametrize("lang", ["C.UTF-8", "C", "", "POSIX", "xx_XX.UTF-8"])
def test_bytes_that_are_not_utf8_pass_through_stdin_and_stdout_as_under_python(
    server, tmp_path: Path, lang: str
) -> None:
    # Every locale here gives python the surrogateescape handler, so a name
    # or an input that is not UTF-8 comes out as it went in.
    program = SHOW_STREAMS + "print(sys.stdin.read(), os.fsdecode(b'caf\\xe9'))\n"
    out = assert_same_as_python(server, "-c", program, cwd=tmp_path, input=b"na\xefve\n", env={"LANG": lang})
    assert out.stdout.endswith(b"na\xefve\n caf\xe9\n"), out.stdout
    assert b"utf-8/surrogateescape utf-8/surrogateescape utf-8/backslashreplace" in out.stdout


@pytest.mark.parametrize(
    "variables",
    [
        {"PYTHONIOENCODING": "latin-1"},
        {"PYTHONIOENCODING": "latin-1:"},
        {"PYTHONIOENCODING": ":replace"},
        {"PYTHONIOENCODING": "UTF8:namereplace"},
        {"LANG": "C", "PYTHONCOERCECLOCALE": "warn"},
        {"LANG": "C", "PYTHONCOERCECLOCALE": "0", "PYTHONUTF8": "0"},
        {"LC_ALL": "C"},
        {"LC_ALL": "C", "PYTHONCOERCECLOCALE": "warn"},
        {"LC_ALL": "POSIX", "PYTHONCOERCECLOCALE": "warn"},
    ],
)
def test_streams_take_encoding_and_error_handler_as_under_python(
    server, tmp_path: Path, variables: dict[str, str]
) -> None:
    # With the C locale left as it is (LC_ALL), PYTHONCOERCECLOCALE=warn
    # has python warn of it once started; a run said nothing.
    out = assert_same_as_python(server, "-c", SHOW_STREAMS, cwd=tmp_path, env=variables)
    assert out.stdout.count(b"/") == 3, out.stdout
    if variables.get("PYTHONCOERCECLOCALE") == "warn":
        assert out.stderr.startswith(b"Python "), out.stderr


# The locale categories besides LC_CTYPE: python leaves them in the C locale,
# unless it coerces the C locale (PEP 538), which sets them all from the
# environment (the server's warm-up may have set them to anything).
SHOW_CATEGORIES = (
    "import locale\n"
    "print(*[locale.setlocale(getattr(locale, c)) for c in ('LC_CTYPE', 'LC_TIME', 'LC_NUMERIC', 'LC_COLLATE')])\n"
)


@pytest.mark.parametrize(
    "variables",
    [
        {"LANG": "C.UTF-8", "LC_CTYPE": "C"},
        {"LANG": "C.UTF-8", "LC_CTYPE": "C", "LC_TIME": "xx_XX.UTF-8"},
        {"LANG": "C.UTF-8"},
        {"LANG": "C"},
        {"LC_ALL": "C"},
        {"LANG": "C.UTF-8", "LC_CTYPE": "C", "PYTHONCOERCECLOCALE": "0"},
    ],
    ids=["coerced", "coerced-with-a-missing-locale", "utf8", "c", "lc-all-c", "not-coerced"],
)
def test_the_other_locale_categories_are_set_as_by_python(server, tmp_path: Path, variables: dict[str, str]) -> None:
    # Coercion set LC_CTYPE alone: LC_TIME stayed C where python's is
    # C.UTF-8 (and a German LANG's day names and decimal comma were lost).
    assert_same_as_python(server, "-c", SHOW_CATEGORIES, cwd=tmp_path, env=variables)


def test_a_run_does_not_inherit_the_locale_a_warm_up_set(tmp_path: Path) -> None:
    warmup = tmp_path / "warmup.py"
    warmup.write_text("import locale\nlocale.setlocale(locale.LC_ALL, 'C.UTF-8')\n")
    srv = start_server(tmp_path, "--warmup", os.fspath(warmup))
    try:
        done = srv.run("-c", SHOW_CATEGORIES, env={"LANG": "C.UTF-8"})
        assert (done.returncode, done.stdout) == (0, b"C.UTF-8 C C C\n"), done.stderr
    finally:
        stop_when_idle(srv)


# UTF-8 mode (PEP 540) decides more than the streams: the default encoding of
# open() and io.text_encoding (read from C) and sys.flags.utf8_mode, which
# locale.getpreferredencoding reads. A run gets the mode python would start
# in, whatever the server's.
SHOW_UTF8_MODE = (
    "import io, locale, sys\n"
    "with open('out.txt', 'w', errors='backslashreplace') as out:\n    out.write('caf\\xe9')\n"
    "print(sys.flags.utf8_mode, io.text_encoding(None), locale.getpreferredencoding(False), out.encoding)\n"
    "print(open('out.txt', 'rb').read(), sys.stdout.encoding, sys.stdout.errors)\n"
)

UTF8_MODE_CASES = {
    "utf8_locale": ({}, ()),
    "LC_ALL_C": ({"LC_ALL": "C"}, ()),
    "LANG_C_coerced": ({"LANG": "C"}, ()),
    "POSIX": ({"LC_ALL": "POSIX"}, ()),
    "unknown_locale": ({"LANG": "xx_XX.UTF-8"}, ()),
    "C_not_coerced": ({"LC_ALL": "C", "PYTHONCOERCECLOCALE": "0"}, ()),
    "C_PYTHONUTF8_0": ({"LC_ALL": "C", "PYTHONUTF8": "0"}, ()),
    "PYTHONUTF8_1": ({"PYTHONUTF8": "1"}, ()),
    "X_utf8": ({}, ("-X", "utf8")),
    "C_X_utf8_0": ({"LC_ALL": "C", "PYTHONCOERCECLOCALE": "0"}, ("-X", "utf8=0")),
    "C_X_utf8_over_variable": ({"LC_ALL": "C", "PYTHONUTF8": "0"}, ("-X", "utf8=1")),
}


@pytest.mark.parametrize(("variables", "options"), UTF8_MODE_CASES.values(), ids=UTF8_MODE_CASES.keys())
def test_a_run_is_in_utf8_mode_as_python_would_be(
    server, tmp_path: Path, variables: dict[str, str], options: tuple[str, ...]
) -> None:
    out = assert_same_as_python(server, *options, "-c", SHOW_UTF8_MODE, cwd=tmp_path, env=variables)
    assert out.stdout.count(b"\n") == 2, out


def test_files_are_utf8_under_lc_all_c_as_in_python(server, tmp_path: Path) -> None:
    # Under LC_ALL=C python is in UTF-8 mode, so text files default to UTF-8;
    # with the server's mode (off, in its UTF-8 locale) they were ASCII.
    out = warmfork(server, "-c", SHOW_UTF8_MODE, cwd=tmp_path, env={"LC_ALL": "C"})
    assert (out.returncode, out.stderr) == (0, b"")
    assert out.stdout == b"1 utf-8 utf-8 utf-8\nb'caf\\xc3\\xa9' utf-8 surrogateescape\n"


@pytest.fixture(scope="module")
def c_locale_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server started in the C locale, so in UTF-8 mode itself."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("LC_ALL", "C")
        srv = start_server(tmp_path_factory.mktemp("c-locale"))
    yield srv
    stop_when_idle(srv)


@pytest.mark.parametrize(
    "variables", [{}, {"LC_ALL": "C"}, {"PYTHONUTF8": "0"}], ids=["utf8_locale", "LC_ALL_C", "PYTHONUTF8_0"]
)
def test_a_server_in_utf8_mode_gives_runs_the_mode_python_would_have(
    c_locale_server, tmp_path: Path, variables: dict[str, str]
) -> None:
    assert_same_as_python(c_locale_server, "-c", SHOW_UTF8_MODE, cwd=tmp_path, env=variables)


def test_without_a_settable_utf8_mode_another_one_is_refused(tmp_path: Path) -> None:
    # An interpreter whose mode warmfork cannot change keeps the old rule:
    # a -X utf8 other than the server's is refused, one equal to it accepted.
    program = (
        "import sys\n"
        "from warmfork import pyoptions\n"
        "def conflict(*options):\n"
        "    config = pyoptions.parse_command_line(['python', *options, '-c', 'pass'])\n"
        "    pyoptions.read_environment(config, {})\n"
        "    return pyoptions.startup_conflict(config)\n"
        "print(pyoptions.utf8_mode_per_run(), conflict('-X', 'utf8'))\n"
        "pyoptions._utf8_per_run = False\n"
        "print(conflict('-X', 'utf8=0'))\n"
        "print(conflict('-X', 'utf8'))\n"
    )
    out = reference("-c", program, cwd=tmp_path)
    lines = out.stdout.decode().splitlines()
    assert (out.returncode, lines[:2]) == (0, ["True None", "None"]), out
    assert "-X utf8 (or PYTHONUTF8) cannot be honoured" in lines[2], out


@pytest.mark.parametrize(
    ("value", "error"),
    [
        (
            "no-such-codec",
            [
                b"Fatal Python error: init_stdio_encoding: failed to get the Python codec name of the stdio encoding",
                b"LookupError: unknown encoding: no-such-codec",
            ],
        ),
        (
            "rot13",
            [
                b"Fatal Python error: init_sys_streams: can't initialize sys standard streams",
                b"LookupError: 'rot-13' is not a text encoding; use codecs.open() to handle arbitrary codecs",
            ],
        ),
    ],
    ids=["unknown", "not-text"],
)
def test_an_unknown_pythonioencoding_stops_the_program_as_under_python(
    server, tmp_path: Path, value: str, error: list[bytes]
) -> None:
    # A codec that is no text encoding failed the worker: 201, and a
    # traceback of warmfork's code.
    marker = tmp_path / "ran"
    program = f"open({os.fspath(marker)!r}, 'w')"
    env = {"PYTHONIOENCODING": value}
    ours = warmfork(server, "-c", program, cwd=tmp_path, env=env)
    theirs = reference("-c", program, cwd=tmp_path, env=env)
    # Then a dump of the one thread, whose id differs in any two runs.
    thread = re.compile(rb"Current thread 0x[0-9a-f]{16} \(most recent call first\):")
    for stderr in (ours.stderr, theirs.stderr):
        *lines, dump, frame = stderr.splitlines()
        assert lines == [error[0], b"Python runtime state: core initialized", error[1], b""]
        assert thread.fullmatch(dump) and frame == b"  <no Python frame>", stderr
    assert (ours.returncode, ours.stdout) == (theirs.returncode, theirs.stdout) == (1, b"")
    assert not marker.exists()


@pytest.mark.parametrize(
    ("args", "env", "stdin_directory"),
    [
        (("-V",), {"PYTHONIOENCODING": "no-such-codec"}, False),
        (("-h",), {"PYTHONIOENCODING": "no-such-codec"}, False),
        (("-Z",), {"PYTHONIOENCODING": "no-such-codec"}, False),
        (("-V",), {}, True),
    ],
    ids=["version", "help", "unknown-option", "version-stdin-directory"],
)
def test_python_reads_its_command_line_before_it_builds_its_streams(
    server, tmp_path: Path, args: tuple[str, ...], env: dict[str, str], stdin_directory: bool
) -> None:
    # So -V and -h are answered, and a usage error reported (status 2), where
    # the streams could not be built: the worker built them first, and
    # failed every such run with status 1.
    stdin = os.open(tmp_path, os.O_RDONLY) if stdin_directory else subprocess.DEVNULL
    try:
        outcome = assert_same_as_python(server, *args, cwd=tmp_path, env=env, stdin=stdin)
    finally:
        if stdin_directory:
            os.close(stdin)
    assert outcome.status == (2 if args == ("-Z",) else 0)


# -- the flush at exit -------------------------------------------------------------
# CPython's flush_std_files: sys.stdout, then sys.stderr, each skipped if None,
# missing or closed (a `closed` that fails counts as open). A stdout that fails
# to flush is reported through sys.unraisablehook ("Exception ignored in: ..."),
# one for stderr silently; either makes the status 120, whatever was raised.

A_STREAM = "import sys\nclass Stream:\n    def write(self, text): pass\n"
# A finaliser that says how many threads the process has left, once a thread
# that has ended is gone from /proc as well (the kernel lists it a moment
# after it can be joined).
COUNT_THREADS_AT_EXIT = (
    "import os, time\n"
    "class Late:\n"
    "    def __del__(self, os=os, time=time):\n"
    "        for _ in range(100):\n"
    "            if len(os.listdir('/proc/self/task')) == 1: break\n"
    "            time.sleep(0.001)\n"
    "        os.write(2, b'threads: %d\\n' % len(os.listdir('/proc/self/task')))\n"
    "late = Late()\n"
)


@pytest.mark.parametrize(
    "program",
    [
        A_STREAM + "    def flush(self): raise OSError('full')\nsys.stdout = Stream()",
        A_STREAM + "    def flush(self): raise KeyboardInterrupt\nsys.stdout = Stream()",
        A_STREAM + "    def flush(self): raise SystemExit(5)\nsys.stdout = Stream()",
        A_STREAM + "    def flush(self): self.deeper()\n    def deeper(self): 1/0\nsys.stdout = Stream()",
        A_STREAM + "    def flush(self): 1/0\n    @property\n    def closed(self): raise KeyboardInterrupt\n"
        "sys.stdout = Stream()",
        A_STREAM + "    def flush(self): 1/0\n    def __repr__(self): raise ValueError\nsys.stdout = Stream()",
        A_STREAM + "    def flush(self): 1/0\nsys.stdout = Stream()\nsys.stderr = None",
        A_STREAM + "    def flush(self): 1/0\nsys.stdout = Stream()\n"
        "sys.unraisablehook = lambda u: print('hook:', u.exc_type, u.object, u.err_msg, file=sys.stderr)",
        A_STREAM + "    def flush(self): 1/0\nsys.stdout = Stream()\nsys.exit(3)",
        A_STREAM + "    def flush(self): 1/0\nsys.stdout = Stream()\nraise KeyboardInterrupt",
        A_STREAM + "    def flush(self): 1/0\nsys.stdout = Stream()\n" + COUNT_THREADS_AT_EXIT,
    ],
    ids=[
        "raises",
        "keyboard-interrupt",
        "system-exit",
        "deep-traceback",
        "closed-raises",
        "repr-raises",
        "no-stderr",
        "unraisablehook",
        "after-sys-exit",
        "after-sigint",
        "then-finalizers-see-no-other-thread",
    ],
)
def test_a_stdout_that_fails_to_flush_at_exit_is_reported_and_gives_120_as_under_python(
    server, tmp_path: Path, program: str
) -> None:
    out = assert_same_as_python(server, "-c", program, cwd=tmp_path)
    assert out.status in (120, -2), out


FAILING_STDOUT = A_STREAM + "    def flush(self): 1/0\nsys.stdout = Stream()\n"


@pytest.mark.parametrize(
    "hook",
    [
        "import os, signal\nos.kill(os.getpid(), signal.SIGINT)\nprint('not reached', file=sys.stderr)",
        "print(threading.current_thread() is threading.main_thread(), file=sys.stderr)",
        "import os\npid = os.fork()\nif pid:\n    print('child status', os.waitpid(pid, 0)[1] >> 8, file=sys.stderr)",
        "sys.exit(3)",
        "raise ValueError('in the hook')",
    ],
    ids=["sigint", "main-thread", "fork", "sys-exit", "raises"],
)
def test_an_unraisablehook_reporting_the_exit_flush_runs_as_under_python(server, tmp_path: Path, hook: str) -> None:
    # Regression: the hook ran on a thread of its own, so a SIGINT it got was
    # raised in warmfork's code after it (status 201), a child it forked
    # ended with 0 when the thread did, and it was not the main thread.
    body = "".join(f"        {line}\n" for line in hook.splitlines())
    program = "import threading\n" + FAILING_STDOUT + "class Hook:\n    def __call__(self, u):\n" + body
    program += "    def __repr__(self): return 'the hook'\nsys.unraisablehook = Hook()\n"
    out = assert_same_as_python(server, "-c", program, cwd=tmp_path)
    assert out.status == 120


@pytest.mark.parametrize(
    "flush",
    ["    def flush(self): raise OSError('full')\n", "    def flush(self): raise KeyboardInterrupt\n", ""],
    ids=["raises", "keyboard-interrupt", "missing"],
)
def test_a_stderr_that_fails_to_flush_at_exit_gives_120_silently_as_under_python(
    server, tmp_path: Path, flush: str
) -> None:
    out = assert_same_as_python(server, "-c", A_STREAM + flush + "sys.stderr = Stream()\nprint('out')", cwd=tmp_path)
    assert (out.status, out.stdout, out.stderr) == (120, b"out\n", b"")


@pytest.mark.parametrize(
    "program",
    [
        "import sys\nsys.stdout = None",
        "import sys\ndel sys.stdout, sys.stderr",
        "import sys\nprint('lost')\nsys.stdout.close()",
        A_STREAM + "    closed = True\n    def flush(self): 1/0\nsys.stdout = sys.stderr = Stream()",
        A_STREAM + "    class closed:\n        def __bool__(self): raise KeyboardInterrupt\n"
        "    closed = closed()\n    def flush(self): print('flushed', file=sys.__stderr__)\nsys.stdout = Stream()",
    ],
    ids=["none", "missing", "closed", "closed-is-true", "closed-bool-raises"],
)
def test_streams_that_are_none_missing_or_closed_are_not_flushed_at_exit_as_under_python(
    server, tmp_path: Path, program: str
) -> None:
    assert_same_as_python(server, "-c", program, cwd=tmp_path)


@pytest.mark.parametrize(
    ("program", "status"),
    [("print('unflushed')", 120), ("print('x' * 100000)", 1)],
    ids=["at-exit", "in-print"],
)
def test_output_to_a_pipe_nobody_reads_fails_as_under_python(server, tmp_path: Path, program: str, status: int) -> None:
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        out = assert_same_as_python(server, "-c", program, cwd=tmp_path, stdout=write_end, stderr=subprocess.PIPE)
    finally:
        os.close(write_end)
    assert out.status == status
    assert b"BrokenPipeError: [Errno 32] Broken pipe\n" in out.stderr


def test_a_failing_excepthook_is_reported_before_buffered_output_as_under_python(server, tmp_path: Path) -> None:
    # CPython flushes the C stdout there, not sys.stdout: what the program
    # printed to a pipe comes out at exit, after the report.
    program = "import sys\nprint('printed')\ndef hook(*exc): raise ValueError('hook')\nsys.excepthook = hook\n1/0"
    out = assert_same_as_python(server, "-c", program, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert out.stdout.startswith(b"Error in sys.excepthook:\n") and out.stdout.endswith(b"printed\n")


# -- when sys.stderr is gone ---------------------------------------------------------
# What CPython prints with PySys_WriteStderr goes to descriptor 2 (C's stderr)
# when sys.stderr is None, missing or fails to write; a traceback it prints
# with PyErr_Display is dropped when sys.stderr is None.

FAILING_HOOK = "def hook(*exc): raise ValueError('hook')\nsys.excepthook = hook\n"
UNWRITABLE = "class Unwritable:\n    def write(self, text): raise OSError('no')\n    def flush(self): pass\n"
SHOWING = "import os\nclass Showing:\n    def write(self, text): os.write(2, text.encode())\n    def flush(self): os.write(2, b'<flush>')\n"


@pytest.mark.parametrize(
    "program",
    [
        "sys.stderr = None\n1/0",
        "sys.stderr = None\n" + FAILING_HOOK + "1/0",
        "sys.stderr = None\ndel sys.excepthook\n1/0",
        "sys.stderr = None\nsys.excepthook = None\n1/0",
        UNWRITABLE + "sys.stderr = Unwritable()\nsys.exit('message')",
        "sys.stderr = None\nclass Late:\n    def __del__(self): 1/0\nlate = Late()\ndel late",
        SHOWING + "sys.stderr = Showing()\nsys.exit('message')",
    ],
    ids=[
        "none-traceback",
        "none-failing-excepthook",
        "none-no-excepthook",
        "none-excepthook-is-none",
        "unwritable-exit-message",
        "none-unraisable",
        "written-without-a-flush",
    ],
)
def test_what_python_prints_without_a_usable_sys_stderr_goes_where_python_sends_it(
    server, tmp_path: Path, program: str
) -> None:
    assert_same_as_python(server, "-c", "import sys\n" + program, cwd=tmp_path)


@pytest.mark.parametrize("stderr", ["None", "io.StringIO()"])
def test_interactive_prompts_go_to_descriptor_2_whatever_sys_stderr_is_as_under_python(
    server, tmp_path: Path, stderr: str
) -> None:
    statements = f"import io, sys\nsys.stderr = {stderr}\nsys.ps1 = 'in: '\n6 * 7\n".encode()
    out = assert_same_as_python(server, "-i", input=statements, cwd=tmp_path)
    assert out.stderr.count(b"in: ") == 2, out.stderr
