"""The program runs in the client's process context, not the server's
(environment, arguments, working directory, umask, a pid and random state of
its own), and the client ends as the program ended: same exit code, or
killed by the same signal; many clients run at once."""

from __future__ import annotations

import os
import platform
import resource
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import CLIENT, start_server
from support.differential import (
    Outcome,
    assert_same_as_python,
    env_for,
    reference,
    shared_server,
    warmfork,
)
from support.server_process import stop_when_idle

# Preloading makes `random` part of the warm state each worker inherits.
server = shared_server("--preload", "random")


def test_the_environment_is_the_clients_including_non_utf8_values(server, tmp_path: Path) -> None:
    env = {"WF_PLAIN": "value", "WF_LATIN1": b"caf\xe9", "WF_EMPTY": "", "WF_EQUALS": "a=b=c"}
    program = (
        "import os\n"
        "print(ascii(sorted(k for k in os.environ if k != 'WARMFORK_SOCKET')))\n"
        "print(ascii(os.environ['WF_LATIN1']), os.environb[b'WF_LATIN1'])\n"
        "print(ascii(os.environ['WF_EMPTY']), os.environ['WF_EQUALS'], flush=True)\n"
        "import subprocess; subprocess.run(['/bin/sh', '-c', 'printf %s \"$WF_PLAIN\"'])\n"
    )
    out = assert_same_as_python(server, "-c", program, env=env, cwd=tmp_path)
    assert b"'caf\\udce9' b'caf\\xe9'" in out.stdout
    assert out.stdout.endswith(b"value")


def test_the_servers_environment_does_not_leak_into_the_program(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WF_SERVER_ONLY", "server secret")
    own = start_server(tmp_path)
    try:
        done = warmfork(own, "-c", "import os; print(sorted(os.environ))", env={"WF_CLIENT_ONLY": "1"}, cwd=tmp_path)
    finally:
        stop_when_idle(own)
    assert b"'WF_CLIENT_ONLY'" in done.stdout
    assert b"WF_SERVER_ONLY" not in done.stdout


def test_os_environ_keeps_the_clients_order(server, tmp_path: Path) -> None:
    program = "import os; print([k for k in os.environ if k in ('ZED', 'ALPHA', 'MID')])"
    env = ["env", "-i", "ZED=1", "ALPHA=2", "MID=3", f"WARMFORK_SOCKET={server.socket}"]
    ours, theirs = (
        subprocess.run([*env, program_, "-c", program], capture_output=True, cwd=tmp_path, timeout=30, check=False)
        for program_ in (CLIENT, sys.executable)
    )
    assert (ours.returncode, ours.stdout) == (theirs.returncode, theirs.stdout) == (0, b"['ZED', 'ALPHA', 'MID']\n")


# Starts argv[1:] with an environment that names WF_TWICE twice, which no
# mapping can express: a raw execve.
EXEC_WITH_TWICE = """
import ctypes, os, sys
def array(items):
    return (ctypes.c_char_p * (len(items) + 1))(*items, None)
argv = [os.fsencode(arg) for arg in sys.argv[1:]]
env = [b"WF_TWICE=first", b"WF_TWICE=second", b"WARMFORK_SOCKET=" + os.environb[b"WARMFORK_SOCKET"]]
ctypes.CDLL(None).execve(argv[0], array(argv), array(env))
"""


def test_of_a_name_the_environment_holds_twice_the_first_wins_as_in_python(server, tmp_path: Path) -> None:
    program = (
        "import os; print(os.environ['WF_TWICE'], os.getenv('WF_TWICE'), list(os.environ).count('WF_TWICE'))"
    )
    ours = same_both_ways(
        lambda program_: [sys.executable, "-c", EXEC_WITH_TWICE, program_, "-c", program],
        env={"WARMFORK_SOCKET": os.fspath(server.socket)},
        cwd=tmp_path,
    )
    assert ours.stdout == b"first first 1\n"


def same_both_ways(command: Callable[[str], list[str]], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[bytes]:
    """Run ``command(client)`` and ``command(python)`` (a command line that
    starts the one it is given in its own way), assert that they end alike,
    and return the client's run."""
    ours, theirs = (
        subprocess.run(command(os.fspath(program)), env=env, capture_output=True, cwd=cwd, timeout=30, check=False)
        for program in (CLIENT, sys.executable)
    )
    assert (ours.returncode, ours.stdout, ours.stderr) == (theirs.returncode, theirs.stdout, theirs.stderr)
    return ours


def limited() -> None:
    """In the child about to run: the limits, priority and affinity that
    `ulimit`, `nice` and `taskset` would set."""
    resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_CPU, (100, resource.RLIM_INFINITY))
    os.nice(5)
    os.sched_setaffinity(0, {0})


def test_limits_priority_and_affinity_are_the_clients(server, tmp_path: Path) -> None:
    program = (
        "import os, resource as r\n"
        "print([r.getrlimit(getattr(r, n)) for n in ('RLIMIT_NOFILE', 'RLIMIT_CORE', 'RLIMIT_CPU')])\n"
        "print(os.nice(0), sorted(os.sched_getaffinity(0)))\n"
    )
    out = assert_same_as_python(server, "-c", program, cwd=tmp_path, preexec_fn=limited)
    assert out.stdout == f"[(64, 64), (0, 0), (100, {resource.RLIM_INFINITY})]\n5 [0]\n".encode()


# ioprio_get by architecture; Python has no call of its own for it.
IOPRIO_GET = {"x86_64": 252, "aarch64": 31}.get(platform.machine())


@pytest.mark.skipif(IOPRIO_GET is None or not shutil.which("chrt") or not shutil.which("ionice"), reason="util-linux")
@pytest.mark.parametrize(
    "wrapper",
    [["chrt", "-b", "0"], ["chrt", "-i", "0"], ["ionice", "-c", "3"], ["ionice", "-c", "2", "-n", "7"]],
    ids=["batch", "idle", "io-idle", "io-best-effort-7"],
)
def test_scheduling_policy_and_io_priority_are_the_clients(server, tmp_path: Path, wrapper: list[str]) -> None:
    # The worker had the server's: `chrt -i` or `ionice -c 3` in front of a
    # batch job made no difference to it.
    program = (
        "import ctypes, os\n"
        f"io = ctypes.CDLL(None).syscall({IOPRIO_GET}, 1, 0)\n"
        "print(os.sched_getscheduler(0), io >> 13, io & 0x1fff)\n"
    )
    ours = same_both_ways(lambda program_: [*wrapper, program_, "-c", program], env=env_for(server), cwd=tmp_path)
    assert ours.returncode == 0


def test_a_descriptor_above_the_clients_soft_limit_is_the_programs(server, tmp_path: Path) -> None:
    # `exec 9<file; ulimit -n 8; python` reads 9: a descriptor may lie above
    # the soft limit. The worker took the client's limit first, then could
    # not install 9 (exit 201).
    (tmp_path / "data").write_bytes(b"nine")
    program = "import os, resource as r\nprint(os.read(9, 4), r.getrlimit(r.RLIMIT_NOFILE)[0])\n"

    def low_limit() -> None:
        os.dup2(os.open(tmp_path / "data", os.O_RDONLY), 9)
        resource.setrlimit(resource.RLIMIT_NOFILE, (8, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))

    out = assert_same_as_python(server, "-c", program, cwd=tmp_path, preexec_fn=low_limit, close_fds=False)
    assert out.stdout == b"b'nine' 8\n", out


#: Frees 64 small chunks from C and prints whether glibc's fast bins took
#: some (more than its per-thread cache holds); a worker must give the
#: program the fast bins the server keeps off (server/src/fastbins.rs).
FAST_BINS = """\
import ctypes
class Info(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()]
libc = ctypes.CDLL(None)
libc.mallinfo2.restype = Info
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
before = libc.mallinfo2().fsmblks
for chunk in [libc.malloc(48) for _ in range(64)]:
    libc.free(chunk)
print(libc.mallinfo2().fsmblks > before)
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="fast bins are glibc's")
@pytest.mark.parametrize(
    ("tunables", "fast"),
    [
        (None, True),
        ("glibc.malloc.mxfast=0", False),
        ("glibc.malloc.check=0:glibc.malloc.mxfast=0x60", True),
        ("glibc.malloc.mxfast=1000", True),  # above glibc's largest: ignored
    ],
)
def test_the_program_gets_glibcs_fast_bins_like_python(
    server, tmp_path: Path, tunables: str | None, fast: bool
) -> None:
    env = {"GLIBC_TUNABLES": tunables} if tunables else None
    out = assert_same_as_python(server, "-c", FAST_BINS, env=env, cwd=tmp_path)
    assert out.stdout == f"{fast}\n".encode()


@pytest.mark.parametrize("tz", ["JST-9", "EST+5EDT,M3.2.0/2,M11.1.0/2", "UTC0"])
def test_the_clients_time_zone_is_the_programs(server, tmp_path: Path, tz: str) -> None:
    # POSIX TZ strings: no time zone database needed.
    program = "import time; print(time.tzname, time.timezone, time.strftime('%H:%M %Z', time.localtime(0)))"
    out = assert_same_as_python(server, "-c", program, env={"TZ": tz}, cwd=tmp_path)
    assert out.stdout.split()[-1] == tz[:3].encode()


def test_pythonpath_in_the_clients_environment_is_on_sys_path(server, tmp_path: Path) -> None:
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "wf_helper.py").write_text("NAME = 'found'\n")
    program = "import wf_helper, sys\nprint(wf_helper.NAME, sys.path.index(sys.argv[1]))"
    out = assert_same_as_python(
        server, "-c", program, os.fspath(tmp_path / "lib"), env={"PYTHONPATH": os.fspath(tmp_path / "lib")}, cwd="/"
    )
    assert out.stdout == b"found 1\n"


def test_non_utf8_arguments_arrive_surrogateescaped_like_python(server, tmp_path: Path) -> None:
    (tmp_path / b"caf\xe9.py".decode(errors="surrogateescape")).write_text(
        "import sys\nprint(ascii(sys.argv), ascii(__file__))\n"
    )
    out = assert_same_as_python(server, b"caf\xe9.py", b"\xff\xfe", "plain", "", cwd=tmp_path)
    assert b"'\\udcff\\udcfe'" in out.stdout
    assert_same_as_python(server, "-c", "import sys; print(ascii(sys.argv))", b"caf\xe9", cwd=tmp_path)


def test_the_server_imports_no_threading_that_a_fresh_python_has_not(server, tmp_path: Path) -> None:
    """Regression (speed): the server imported `threading` for itself, so
    every worker ran its after-fork hook, about half a millisecond of CPU,
    for programs that never use threads. The program still sees what a
    fresh python has, and a thread it starts is still joined at exit."""
    program = (
        "import sys\n"
        "print(sorted(name for name in ('threading', 'subprocess') if name in sys.modules))\n"
        "import threading\n"
        "threading.Thread(target=lambda: print('joined')).start()\n"
    )
    out = assert_same_as_python(server, "-c", program, cwd=tmp_path)
    assert out.stdout == b"[]\njoined\n"


def test_the_working_directory_is_the_clients(server, tmp_path: Path) -> None:
    (tmp_path / "data.txt").write_text("relative read")
    program = "import os\nprint(os.getcwd())\nprint(open('data.txt').read())"
    out = assert_same_as_python(server, "-c", program, cwd=tmp_path)
    assert out.stdout == f"{tmp_path}\nrelative read\n".encode()


def in_a_deleted_directory(
    run: Callable[..., subprocess.CompletedProcess[bytes]], parent: Path, name: str
) -> subprocess.CompletedProcess[bytes]:
    """``run(cwd=..., preexec_fn=...)`` started in a directory deleted just before."""
    doomed = parent / name
    doomed.mkdir()
    # Popen enters `cwd` before it calls preexec_fn: the process starts in a deleted directory.
    return run(cwd=doomed, preexec_fn=lambda: os.rmdir(os.getcwd()))


def test_a_program_still_runs_in_a_deleted_working_directory(server, tmp_path: Path) -> None:
    program = (
        "import os\nprint('ran')\n"
        "try:\n    os.getcwd()\nexcept FileNotFoundError:\n    print('cwd is gone')\n"
        "print(os.listdir('.'))\n"
    )
    ours = in_a_deleted_directory(lambda **kw: warmfork(server, "-c", program, **kw), tmp_path, "for-warmfork")
    theirs = in_a_deleted_directory(lambda **kw: reference("-c", program, **kw), tmp_path, "for-python")
    assert ours.returncode == theirs.returncode == 0, ours.stderr
    assert ours.stdout == theirs.stdout == b"ran\ncwd is gone\n[]\n"


@pytest.mark.parametrize(
    "args",
    [("-m", "json.tool"), ("-m", "no_such_module"), ("gone.py",)],
    ids=["module", "missing_module", "relative_script"],
)
def test_in_a_deleted_working_directory_sys_path_and_the_scripts_path_are_pythons(
    server, tmp_path: Path, args: tuple[str, ...]
) -> None:
    # python puts nothing first on sys.path for -m when it cannot name the
    # working directory, and keeps a script's path relative.
    ours = in_a_deleted_directory(lambda **kw: warmfork(server, *args, input=b"{}", **kw), tmp_path, "for-warmfork")
    theirs = in_a_deleted_directory(lambda **kw: reference(*args, input=b"{}", **kw), tmp_path, "for-python")
    assert Outcome.of(ours) == Outcome.of(theirs)
    assert b"FileNotFoundError" not in ours.stderr


@pytest.mark.parametrize("mask", [0o000, 0o027, 0o077])
def test_the_clients_umask_is_honoured(server, tmp_path: Path, mask: int) -> None:
    program = "import os, sys\nopen(sys.argv[1], 'w').close()\nprint(oct(os.umask(0)), oct(os.stat(sys.argv[1]).st_mode & 0o777))"
    ours = warmfork(server, "-c", program, "made-by-warmfork", cwd=tmp_path, preexec_fn=lambda: os.umask(mask))
    assert ours.stdout == f"{oct(mask)} {oct(0o666 & ~mask)}\n".encode(), ours.stderr


def test_the_clients_umask_is_honoured_without_proc(server, tmp_path: Path) -> None:
    # The client reads its umask from /proc/self/status; without /proc (here
    # a tmpfs over it, in a mount namespace of the client's own) it asks the
    # kernel instead.
    program = "import os\nprint(oct(os.umask(0)))"
    hide_proc = 'mount -t tmpfs none /proc && umask "$0" && exec "$@"'
    unshare = shutil.which("unshare")
    assert unshare is not None, "unshare (util-linux) is needed; install it"
    ours = subprocess.run(
        [unshare, "--mount", "sh", "-c", hide_proc, "027", CLIENT, "-c", program],
        env=env_for(server, None),
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert (ours.returncode, ours.stdout) == (0, b"0o27\n"), ours.stderr


def test_random_differs_between_runs(server, tmp_path: Path) -> None:
    program = "import random, tempfile\nprint(random.random(), random.getrandbits(64), next(tempfile._get_candidate_names()))"
    outputs = {warmfork(server, "-c", program, cwd=tmp_path).stdout for _ in range(4)}
    assert len(outputs) == 4


def test_each_run_has_its_own_multiprocessing_authkey(tmp_path: Path) -> None:
    # python makes one when multiprocessing is imported; a worker's import
    # happened in the server, and multiprocessing's children share theirs.
    own = start_server(tmp_path, "--preload", "multiprocessing")
    program = "import multiprocessing; print(bytes(multiprocessing.current_process().authkey).hex())"
    try:
        keys = {warmfork(own, "-c", program, cwd=tmp_path).stdout for _ in range(3)}
    finally:
        stop_when_idle(own)
    assert len(keys) == 3


def test_each_run_gets_its_own_process(server, tmp_path: Path) -> None:
    pids = [int(warmfork(server, "-c", "import os; print(os.getpid())", cwd=tmp_path).stdout) for _ in range(4)]
    assert len(set(pids)) == 4
    assert server.process.pid not in pids


# -- how the program ends ------------------------------------------------------


def no_core_dumps() -> None:
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


@pytest.mark.parametrize("signum", [signal.SIGSEGV, signal.SIGABRT, signal.SIGTERM, signal.SIGKILL, signal.SIGUSR1])
def test_a_program_killed_by_a_signal_kills_the_client_by_the_same_signal(server, tmp_path: Path, signum: int) -> None:
    program = f"import os, signal\nprint('before', flush=True)\nos.kill(os.getpid(), {int(signum)})\nprint('after')\n"
    out = assert_same_as_python(server, "-c", program, cwd=tmp_path, preexec_fn=no_core_dumps)
    assert (out.status, out.stdout) == (-signum, b"before\n")


def test_a_segfault_in_c_code_kills_the_client_by_sigsegv(server, tmp_path: Path) -> None:
    out = assert_same_as_python(server, "-c", "import ctypes; ctypes.string_at(0)", cwd=tmp_path, preexec_fn=no_core_dumps)
    assert out.status == -signal.SIGSEGV


def test_os_exit_gives_its_code_and_drops_buffered_output_like_python(server, tmp_path: Path) -> None:
    out = assert_same_as_python(server, "-c", "import os\nprint('buffered')\nos._exit(7)", cwd=tmp_path)
    assert (out.status, out.stdout) == (7, b"")


@pytest.mark.parametrize("child_ends", ["raise SystemExit(7)", "pass", "raise ValueError('in the child')", "os.kill(os.getpid(), 15)"])
def test_a_child_the_program_forks_ends_on_its_own_and_the_status_is_the_parents(
    server, tmp_path: Path, child_ends: str
) -> None:
    """The child returns through warmfork's own code at the end of the
    program; it must end there as python's child would (its atexit, its
    flush, its status), and leave the client to the parent."""
    program = (
        "import atexit, os, sys, time\n"
        "atexit.register(lambda: print('atexit in', 'parent' if os.getpid() == parent else 'child', flush=True))\n"
        "parent = os.getpid()\n"
        "if os.fork() == 0:\n"
        "    print('child', end='')\n"
        f"    {child_ends}\n"
        "else:\n"
        "    _, status = os.wait()\n"
        "    time.sleep(0.1)\n"
        "    print('parent saw', os.waitstatus_to_exitcode(status))\n"
        "    sys.exit(3)\n"
    )
    out = assert_same_as_python(server, "-c", program, cwd=tmp_path)
    assert out.status == 3 and b"parent saw" in out.stdout


def test_parallel_clients_each_get_their_own_output_and_status(server, tmp_path: Path) -> None:
    program = "import sys, time\ntime.sleep(0.5)\nprint('I am', sys.argv[1])\nsys.exit(int(sys.argv[1]))"
    started = time.monotonic()
    clients = [
        subprocess.Popen(
            [CLIENT, "-c", program, str(n)],
            env=env_for(server),
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for n in range(8)
    ]
    results = [(client.communicate(timeout=30), client.returncode) for client in clients]
    elapsed = time.monotonic() - started
    assert results == [((f"I am {n}\n".encode(), b""), n) for n in range(8)]
    assert elapsed < 3, f"8 runs of 0.5 s took {elapsed:.1f} s: they did not run in parallel"


def test_os_setsid_fails_as_for_python_run_as_a_shells_job(server, tmp_path: Path) -> None:
    # The program already leads a session of its own, with no controlling
    # terminal; python run by an interactive shell leads its job's process
    # group, and setsid() refuses it (EPERM) just the same.
    program = "import os\ntry:\n    os.setsid()\nexcept PermissionError as e:\n    print('refused', e.errno)\n"
    ours = warmfork(server, "-c", program, cwd=tmp_path)
    theirs = reference("-c", program, cwd=tmp_path, preexec_fn=os.setpgrp)
    assert (ours.returncode, ours.stdout, ours.stderr) == (theirs.returncode, theirs.stdout, theirs.stderr)
    assert ours.stdout == b"refused 1\n"
