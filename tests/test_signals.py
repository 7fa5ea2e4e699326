"""Signals sent to the client reach the program as they would reach python:
forwarded while it runs, delivered even when they arrive before the worker
is known, kept ignored when the client had them ignored (nohup), and a
client that dies, even by SIGKILL, takes its worker with it."""

from __future__ import annotations

import contextlib
import os
import resource
import select
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import CLIENT, Server, start_server
from support.differential import Outcome, env_for, shared_server
from support.server_process import settled_fd_count, stop_when_idle, wait_until

server = shared_server()

# One line: the traceback names the same line whether the signal comes
# during the print or during the sleep.
WAITS_FOR_NOTHING = "import time\nprint('ready', flush=True); time.sleep(30)\nprint('not interrupted')\n"


def waits_for(name: str) -> str:
    """A program that handles signal ``name``, says it is ready, and ends
    normally once the signal has come (or after 20 s without it)."""
    return (
        "import signal, time\n"
        "got = []\n"
        f"signal.signal(signal.{name}, lambda number, frame: got.append(number))\n"
        "print('ready', flush=True)\n"
        "deadline = time.monotonic() + 20\n"
        "while not got and time.monotonic() < deadline:\n    time.sleep(0.01)\n"
        "print('got', *[signal.Signals(n).name for n in got])\n"
    )


def no_core_dumps() -> None:
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def ignore_sighup() -> None:
    """What `nohup` does before it execs its command."""
    signal.signal(signal.SIGHUP, signal.SIG_IGN)


def start(
    server: Server | None, *args: str, cwd: Path, preexec_fn: Callable[[], None] = no_core_dumps, **kwargs: object
) -> subprocess.Popen[bytes]:
    """Start the client (or python, for ``server=None``) with ``args``."""
    program = sys.executable if server is None else CLIENT
    return subprocess.Popen(  # type: ignore[call-overload, no-any-return]
        [program, *args],
        env=kwargs.pop("env", env_for(server)),
        cwd=cwd,
        stdin=kwargs.pop("stdin", subprocess.DEVNULL),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        preexec_fn=preexec_fn,  # noqa: PLW1509 - dispositions and limits must be set before exec
        **kwargs,
    )


def read_first_line(process: subprocess.Popen[bytes], timeout: float = 20.0) -> bytes:
    """The first line ``process`` writes to stdout, read without blocking
    past ``timeout`` (the rest stays for ``communicate``)."""
    assert process.stdout is not None
    line = b""
    deadline = time.monotonic() + timeout
    while not line.endswith(b"\n"):
        ready, _, _ = select.select([process.stdout], [], [], max(0.0, deadline - time.monotonic()))
        assert ready, f"no complete line within {timeout}s, only {line!r}"
        chunk = os.read(process.stdout.fileno(), 1)
        if not chunk:
            _, err = process.communicate(timeout=10)
            raise AssertionError(f"exited with {process.returncode} before its first line: {err!r}")
        line += chunk
    return line


def finish(process: subprocess.Popen[bytes], first_line: bytes = b"") -> Outcome:
    out, err = process.communicate(timeout=30)
    return Outcome.of(subprocess.CompletedProcess(process.args, process.returncode, first_line + out, err))


def signalled_when_ready(server: Server | None, program: str, signum: int, cwd: Path, **kwargs: object) -> Outcome:
    """Run ``program``, send ``signum`` to the client (or python) once the
    program has printed its first line, and return how the run ended."""
    process = start(server, "-c", program, cwd=cwd, **kwargs)
    try:
        first = read_first_line(process)
        process.send_signal(signum)
        return finish(process, first)
    finally:
        process.kill()
        process.wait()


def both_signalled_when_ready(server: Server, program: str, signum: int, cwd: Path, **kwargs: object) -> Outcome:
    ours = signalled_when_ready(server, program, signum, cwd, **kwargs)
    theirs = signalled_when_ready(None, program, signum, cwd, **kwargs)
    assert ours == theirs
    return ours


def test_ctrl_c_gives_keyboard_interrupt_and_death_by_sigint_like_python(server, tmp_path: Path) -> None:
    ours = signalled_when_ready(server, WAITS_FOR_NOTHING, signal.SIGINT, tmp_path)
    theirs = signalled_when_ready(None, WAITS_FOR_NOTHING, signal.SIGINT, tmp_path)
    # The interrupt lands in `time.sleep` or, when it comes as `print`
    # returns, in `print`: on the same line, but where python shows the
    # line (3.13 does for -c) its carets differ, in either process.
    assert without_source_lines(ours) == without_source_lines(theirs)
    assert (ours.status, ours.stdout) == (-signal.SIGINT, b"ready\n")
    assert ours.stderr.startswith(b"Traceback (most recent call last):\n")
    assert ours.stderr.endswith(b"\nKeyboardInterrupt\n")


def without_source_lines(outcome: Outcome) -> Outcome:
    """``outcome`` with the source lines and carets of its tracebacks left out."""
    lines = outcome.stderr.splitlines(keepends=True)
    stderr = b"".join(line for line in lines if not line.startswith(b"    "))
    return Outcome(outcome.status, outcome.stdout, stderr)


@pytest.mark.parametrize(
    "signum",
    [signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2, signal.SIGALRM,
     signal.SIGPWR, signal.SIGVTALRM, signal.SIGPROF, signal.SIGRTMIN, signal.SIGRTMAX],
    ids=lambda s: signal.Signals(s).name,
)  # fmt: skip
def test_a_forwarded_signal_the_program_leaves_alone_ends_it_like_python(server, tmp_path: Path, signum: int) -> None:
    out = both_signalled_when_ready(server, WAITS_FOR_NOTHING, signum, tmp_path)
    assert (out.status, out.stdout, out.stderr) == (-signum, b"ready\n", b"")


@pytest.mark.parametrize(
    "signum",
    [signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2,
     signal.SIGWINCH, signal.SIGALRM, signal.SIGCONT, signal.SIGPWR, signal.SIGIO, signal.SIGXCPU,
     signal.SIGRTMAX],
    ids=lambda s: signal.Signals(s).name,
)  # fmt: skip
def test_a_signal_the_program_handles_reaches_its_handler_and_it_keeps_running(
    server, tmp_path: Path, signum: int
) -> None:
    name = signal.Signals(signum).name
    out = both_signalled_when_ready(server, waits_for(name), signum, tmp_path)
    assert (out.status, out.stdout, out.stderr) == (0, f"ready\ngot {name}\n".encode(), b"")


@pytest.mark.parametrize("limit", [6, 7])
def test_a_client_under_a_low_descriptor_limit_runs_and_forwards_signals(server, tmp_path: Path, limit: int) -> None:
    # The client kept /proc/self/status and its working directory open: under
    # `ulimit -n 6` it could not make its socket (204, where python runs),
    # and under 7 the kernel dropped the worker's pidfd from STARTED, so a
    # signal never reached the program.
    def few_descriptors() -> None:
        no_core_dumps()
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))

    out = both_signalled_when_ready(server, waits_for("SIGTERM"), signal.SIGTERM, tmp_path, preexec_fn=few_descriptors)
    assert (out.status, out.stdout, out.stderr) == (0, b"ready\ngot SIGTERM\n", b"")


def test_a_program_that_catches_keyboard_interrupt_carries_on(server, tmp_path: Path) -> None:
    program = (
        "import time\n"
        "try:\n    print('ready', flush=True)\n    time.sleep(20)\nexcept KeyboardInterrupt:\n    print('caught')\n"
        "print('finished')\n"
    )
    out = both_signalled_when_ready(server, program, signal.SIGINT, tmp_path)
    assert (out.status, out.stdout, out.stderr) == (0, b"ready\ncaught\nfinished\n", b"")


def test_a_signal_sent_right_after_the_client_starts_is_not_lost(server, tmp_path: Path) -> None:
    program = "import time\ntime.sleep(5)\nprint('not killed')\n"
    outcomes = []
    for side in (server, None):
        process = start(side, "-c", program, cwd=tmp_path)
        process.send_signal(signal.SIGUSR1)
        outcomes.append(finish(process))
    assert outcomes[0] == outcomes[1] == Outcome(-signal.SIGUSR1, b"", b"")


# A warm-up that makes one step of a run's set-up wait, once the run's
# environment names it, after saying so in the file the environment names.
SLOW_SET_UP = """
import os, time
from warmfork import _stdio, pyoptions

def slowed(module, name):
    step = getattr(module, name)
    def slow(*args, **kwargs):
        if os.environ.get("SLOW_STEP") == name:
            with open(os.environ["SLOW_STEP_READY"], "w"):
                pass
            time.sleep(30)
        return step(*args, **kwargs)
    setattr(module, name, slow)

slowed(_stdio, "set_up")
slowed(pyoptions, "parse_command_line")
"""


@pytest.mark.parametrize("step", ["set_up", "parse_command_line"])
def test_ctrl_c_before_the_program_starts_ends_the_run_by_sigint_without_a_word(tmp_path: Path, step: str) -> None:
    # As python, whose handler for SIGINT is not installed that early, dies.
    # A Ctrl-C while the worker set up the streams or the environment ended
    # the run with 201 and a traceback of warmfork's own code; one while the
    # options were read printed a traceback.
    warmup = tmp_path / "slow.py"
    warmup.write_text(SLOW_SET_UP)
    own = start_server(tmp_path, "--warmup", os.fspath(warmup), name="slow")
    try:
        ready = tmp_path / "ready"
        env = env_for(own, {"SLOW_STEP": step, "SLOW_STEP_READY": os.fspath(ready)})
        process = start(own, "-c", "print('ran')", cwd=tmp_path, env=env)
        assert wait_until(ready.exists, timeout=20), finish(process)
        process.send_signal(signal.SIGINT)
        assert finish(process) == Outcome(-signal.SIGINT, b"", b"")
        # The server serves the next run as before.
        assert finish(start(own, "-c", "print('ran')", cwd=tmp_path)) == Outcome(0, b"ran\n", b"")
    finally:
        stop_when_idle(own)


def blocked_signals(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        line = next(line for line in status if line.startswith("SigBlk:"))
    return int(line.split()[1], 16)


def test_a_signal_that_arrives_before_the_worker_is_known_is_delivered_once_it_is(tmp_path: Path) -> None:
    # A stopped server accepts no connection: the client is sure to get the
    # signal while it still waits for STARTED.
    own = start_server(tmp_path, name="stopped")
    try:
        own.process.send_signal(signal.SIGSTOP)
        try:
            process = start(own, "-c", "import time\ntime.sleep(5)\nprint('not killed')\n", cwd=tmp_path)
            usr1 = 1 << (signal.SIGUSR1 - 1)
            assert wait_until(lambda: blocked_signals(process.pid) & usr1, timeout=10), (
                "the client never blocked SIGUSR1"
            )
            process.send_signal(signal.SIGUSR1)
            time.sleep(0.2)  # the client must wait for the worker, not die or give up
            assert process.poll() is None, finish(process)
        finally:
            own.process.send_signal(signal.SIGCONT)
        assert finish(process) == Outcome(-signal.SIGUSR1, b"", b"")
    finally:
        stop_when_idle(own)


@pytest.mark.parametrize(
    ("signum", "environment"),
    [(signal.SIGINT, 0), (signal.SIGTERM, 0), (signal.SIGTERM, 4)],
    ids=["sigint", "sigterm", "sigterm-sending-400-kb"],
)
def test_a_signal_held_for_a_server_that_does_not_answer_ends_the_client_as_python(
    tmp_path: Path, signum: int, environment: int
) -> None:
    # A wedged server (here a stopped one) never starts the program: the
    # held signal once kept the client alive until a worker came, for ever;
    # python would have ended at once. It ends it after a second now, and
    # the server, once it goes on, does not run the program of a client
    # that has gone.
    own = start_server(tmp_path, name="stopped")
    try:
        own.process.send_signal(signal.SIGSTOP)
        try:
            # 400 kB of environment do not fit in the socket's buffer: the
            # client is still sending its request when the signal comes.
            big = {f"BIG{n}": "x" * 100_000 for n in range(environment)}
            process = start(own, "-c", "open('ran', 'w')", cwd=tmp_path, env={**env_for(own), **big})
            bit_of = 1 << (signum - 1)
            assert wait_until(lambda: blocked_signals(process.pid) & bit_of, timeout=10)
            process.send_signal(signum)
            began = time.monotonic()
            # Resizes keep waking the client: the second is counted from
            # the held signal, not from the latest wake-up.
            while process.poll() is None and time.monotonic() < began + 10:
                time.sleep(0.2)
                process.send_signal(signal.SIGWINCH)
            status = process.wait(timeout=10)
            waited = time.monotonic() - began
        finally:
            own.process.send_signal(signal.SIGCONT)
        # The request still holds the client's stdout: it ends once the
        # server has dropped it.
        assert finish(process) == Outcome(-signum, b"", b"")
        assert (status, 0.5 < waited < 5) == (-signum, True), waited
        if environment:  # a request cut short: the server drops it unread
            settled_fd_count(own.process.pid)
        else:  # a whole request: the server drops it and says so
            assert wait_until(lambda: "went away before its run started" in own.log.read_text(), timeout=10)
        assert not (tmp_path / "ran").exists()
    finally:
        stop_when_idle(own)


def test_a_signal_held_while_the_servers_backlog_is_full_ends_the_client_as_python(tmp_path: Path) -> None:
    # A server that accepts no one (wedged, or replacing itself) with a full
    # backlog: the client's connect blocked, with SIGTERM held, for ever.
    path = tmp_path / "full.sock"
    with socket.socket(socket.AF_UNIX) as listener, socket.socket(socket.AF_UNIX) as first:
        listener.bind(os.fspath(path))
        listener.listen(0)
        first.connect(os.fspath(path))  # the one connection a backlog of 0 takes
        process = subprocess.Popen(
            [CLIENT, "-c", "pass"],
            env={**os.environ, "WARMFORK_SOCKET": os.fspath(path)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        term = 1 << (signal.SIGTERM - 1)
        assert wait_until(lambda: blocked_signals(process.pid) & term, timeout=10)
        time.sleep(0.3)
        assert process.poll() is None, finish(process)  # it waits for room, as for a busy server
        process.send_signal(signal.SIGTERM)
        began = time.monotonic()
        status = process.wait(timeout=10)
        assert (status, time.monotonic() - began < 5) == (-signal.SIGTERM, True)


def ignore_and_block_sighup() -> None:
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGHUP})


def test_a_held_signal_ends_the_client_not_one_its_parent_blocked_and_ignored(tmp_path: Path) -> None:
    # A SIGHUP the parent both blocked and ignored waits in the kernel too;
    # it is not the client's to end by: python would end by the SIGTERM.
    own = start_server(tmp_path, name="stopped")
    try:
        own.process.send_signal(signal.SIGSTOP)
        try:
            process = start(own, "-c", "pass", cwd=tmp_path, preexec_fn=ignore_and_block_sighup)
            term = 1 << (signal.SIGTERM - 1)
            assert wait_until(lambda: blocked_signals(process.pid) & term, timeout=10)
            process.send_signal(signal.SIGHUP)
            process.send_signal(signal.SIGTERM)
            status = process.wait(timeout=10)
        finally:
            own.process.send_signal(signal.SIGCONT)
        assert status == -signal.SIGTERM
        finish(process)
    finally:
        stop_when_idle(own)


def test_without_a_signalfd_the_client_waits_without_spinning(server, tmp_path: Path) -> None:
    # signalfd refused (a seccomp profile): the client's socket is
    # non-blocking, and it once read it in a loop for the whole run.
    strace = shutil.which("strace")
    assert strace is not None, "strace is needed; scripts/setup installs it"
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run(
        [strace, "-f", "-o", os.devnull, "-e", "trace=signalfd4", "-e", "inject=signalfd4:error=ENOSYS"]
        + [os.fspath(CLIENT), "-c", "import time; time.sleep(1); print('slept')"],
        env=env_for(server),
        cwd=tmp_path,
        capture_output=True,
        timeout=30,
        check=False,
    )
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    used = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    assert (done.returncode, done.stdout) == (0, b"slept\n"), done.stderr
    assert used < 0.4, used


def ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def test_death_by_a_signal_the_client_was_started_ignoring_is_a_death_by_signal_as_python(
    server, tmp_path: Path
) -> None:
    # The program puts SIGINT back to its default and raises it: python dies
    # of it; the client, which inherited SIGINT ignored, exited 130 instead.
    program = "import os, signal\nsignal.signal(signal.SIGINT, signal.SIG_DFL)\nos.kill(os.getpid(), signal.SIGINT)\n"
    outcomes = [finish(start(side, "-c", program, cwd=tmp_path, preexec_fn=ignore_sigint)) for side in (server, None)]
    assert outcomes[0] == outcomes[1] == Outcome(-signal.SIGINT, b"", b"")


def test_a_client_that_hangs_up_while_the_server_stops_gets_its_program_a_sighup(tmp_path: Path) -> None:
    # During the grace period the server watched only the workers: a client
    # killed then left its program running to the end of the grace period.
    own = start_server(tmp_path, name="stopping")
    program = (
        "import signal, sys, time\n"
        "signal.signal(signal.SIGHUP, lambda *_: open('hup', 'w').close() or sys.exit(0))\n"
        "print('ready', flush=True)\n"
        "time.sleep(30)\n"
    )
    try:
        client = start(own, "-c", program, cwd=tmp_path)
        read_first_line(client)
        own.process.send_signal(signal.SIGTERM)
        assert wait_until(lambda: "stopping: waiting" in own.log.read_text(), timeout=10)
        client.kill()
        client.wait()
        assert wait_until(lambda: (tmp_path / "hup").exists(), timeout=5), own.log.read_text()
        assert own.process.wait(timeout=10) == 0
    finally:
        own.stop()


def test_sighup_ignored_by_the_client_stays_ignored_in_the_program(server, tmp_path: Path) -> None:
    program = (
        "import os, signal, sys\n"
        "open('pid', 'w').write(str(os.getpid()))\n"
        "print('ignored' if signal.getsignal(signal.SIGHUP) is signal.SIG_IGN else 'default', flush=True)\n"
        "sys.stdin.readline()\n"
        "print('survived')\n"
    )
    outcomes = []
    for side in (server, None):
        process = start(side, "-c", program, cwd=tmp_path, preexec_fn=ignore_sighup, stdin=subprocess.PIPE)
        first = read_first_line(process)
        process.send_signal(signal.SIGHUP)  # `kill -HUP` of the client
        os.kill(int((tmp_path / "pid").read_text()), signal.SIGHUP)  # and of the program itself
        assert process.stdin is not None
        process.stdin.write(b"go\n")
        process.stdin.flush()
        outcomes.append(finish(process, first))
    assert outcomes[0] == outcomes[1] == Outcome(0, b"ignored\nsurvived\n", b"")


def process_is_gone(pid: int) -> bool:
    """True once ``pid`` has exited and been reaped (a zombie still lingers)."""
    return not os.path.exists(f"/proc/{pid}")


@pytest.mark.parametrize(
    ("handles_sighup", "within"), [(False, 3.0), (True, 9.0)], ids=["dies-of-sighup", "survives-sighup"]
)
def test_sigkill_of_the_client_leaves_no_worker_behind(
    server, tmp_path: Path, handles_sighup: bool, within: float
) -> None:
    # The server sends SIGHUP at once and SIGKILL 5 s later to a worker that survived it.
    on_sighup = "signal.signal(signal.SIGHUP, lambda n, f: open('hangup', 'w').write('got SIGHUP'))\n"
    program = (
        "import os, signal, time\n"
        f"{on_sighup if handles_sighup else ''}"
        "open('pid', 'w').write(str(os.getpid()))\n"
        "print('ready', flush=True)\n"
        "time.sleep(60)\n"
    )
    worker = kill_the_client_once_ready(server, program, tmp_path)
    started = time.monotonic()
    gone = wait_until(lambda: process_is_gone(worker), timeout=within + 2)
    elapsed = time.monotonic() - started
    if not gone:
        state = Path(f"/proc/{worker}/stat").read_text().split()[2]
        os.kill(worker, signal.SIGKILL)
        raise AssertionError(f"worker {worker} still there (state {state}) {within + 2}s after the client was killed")
    assert elapsed < within, f"the worker took {elapsed:.1f}s to go"
    if handles_sighup:
        assert (tmp_path / "hangup").read_text() == "got SIGHUP"


def test_sigkill_of_the_client_hangs_up_the_programs_children_too(server, tmp_path: Path) -> None:
    # A terminal's hang-up reaches the whole foreground process group: the
    # program's children in its group get the SIGHUP too, and die of it.
    program = (
        "import subprocess, time\n"
        "child = subprocess.Popen(['sleep', '60'])\n"
        "open('pid', 'w').write(str(child.pid))\n"
        "print('ready', flush=True)\n"
        "time.sleep(60)\n"
    )
    child = kill_the_client_once_ready(server, program, tmp_path)
    if not wait_until(lambda: has_ended(child), 5):
        os.kill(child, signal.SIGKILL)
        raise AssertionError(f"the program's child {child} outlived the client's hang-up")


@pytest.mark.parametrize("stopped", ["group", "child"])
def test_sigkill_of_a_stopped_clients_ends_the_programs_stopped_children_too(
    server, tmp_path: Path, stopped: str
) -> None:
    # Ctrl-Z stops the program's group (or the program stops a child of its
    # own and goes on); `kill -9 %1` then kills the client. The kernel sends
    # a group its shell's end orphaned SIGHUP and, where a member is
    # stopped, SIGCONT; the server sent SIGHUP alone, and the stopped child,
    # which nothing continued, stayed stopped for good.
    program = (
        "import os, signal, subprocess, time\n"
        "child = subprocess.Popen(['sleep', '60'], stdout=subprocess.DEVNULL)\n"
        f"{'os.kill(child.pid, signal.SIGSTOP)' if stopped == 'child' else ''}\n"
        "open('pid', 'w').write(f'{child.pid} {os.getpgid(0)}')\n"
        "print('ready', flush=True)\n"
        "time.sleep(60)\n"
    )
    process = start(server, "-c", program, cwd=tmp_path)
    read_first_line(process)
    child, group = map(int, (tmp_path / "pid").read_text().split())
    if stopped == "group":
        os.killpg(group, signal.SIGSTOP)
    assert wait_until(lambda: Path(f"/proc/{child}/stat").read_text().split()[2] == "T", 5)
    process.kill()
    process.wait()
    if not wait_until(lambda: has_ended(child), 5):
        os.kill(child, signal.SIGKILL)
        raise AssertionError(f"the program's stopped child {child} outlived the client's hang-up")


@pytest.mark.parametrize(
    ("handled", "from_outside", "ending"),
    [
        (signal.SIGUSR1, False, signal.SIGTERM),
        (signal.SIGUSR1, False, signal.SIGHUP),
        (signal.SIGUSR1, False, signal.SIGINT),
        (signal.SIGHUP, True, signal.SIGTERM),
    ],
    ids=["usr1-then-sigterm", "usr1-then-sighup", "usr1-then-sigint", "sighup-from-outside-then-sigterm"],
)
def test_sigterm_sighup_and_sigint_from_the_clients_parent_end_the_programs_children_too(
    server, tmp_path: Path, handled: int, from_outside: bool, ending: int
) -> None:
    # `timeout`, `kill %1` and a shell whose terminal closes send these to
    # the whole job, python's children with it: sent by the client's parent
    # (here the test), they end the program's group. They reached the
    # program alone, and its children were left running. Other signals, and
    # these from outside the job (`kill -HUP PID` to have a program reload),
    # still reach it alone, as python's children live on then.
    name = signal.Signals(handled).name
    program = (
        "import os, signal, subprocess, time\n"
        # Not print: the handler may run while the print of 'ready' returns,
        # and a print within a print raises.
        f"signal.signal(signal.{name}, lambda number, frame: os.write(1, b'{name}\\n'))\n"
        "child = subprocess.Popen(['sleep', '60'], stdout=subprocess.DEVNULL)\n"
        "open('pid', 'w').write(str(child.pid))\n"
        "print('ready', flush=True)\n"
        "time.sleep(60)\n"
    )
    # A session of its own: a `kill` the test starts is neither the client's
    # parent nor of its process group.
    process = start(server, "-c", program, cwd=tmp_path, start_new_session=True)
    try:
        read_first_line(process)
        child = int((tmp_path / "pid").read_text())
        if from_outside:
            subprocess.run(["kill", f"-{handled}", str(process.pid)], check=True)
        else:
            process.send_signal(handled)
        assert read_first_line(process) == f"{name}\n".encode()
        time.sleep(0.2)
        assert not has_ended(child), f"the {name} sent to the client reached the program's child"
        process.send_signal(ending)
        assert finish(process).status == -ending
        if not wait_until(lambda: has_ended(child), 5):
            os.kill(child, signal.SIGKILL)
            raise AssertionError(f"the program's child {child} outlived a {signal.Signals(ending).name} of the job")
    finally:
        process.kill()
        process.wait()


def test_children_a_program_leaves_running_survive_its_end_as_under_python(server, tmp_path: Path) -> None:
    # The client hangs up as soon as it has the status, often before the
    # server has reaped the worker: that is no terminal hang-up.
    program = "import subprocess as s\nprint(s.Popen(['sleep', '60'], stdin=s.DEVNULL, stdout=s.DEVNULL, stderr=s.DEVNULL).pid)\n"
    children = []
    try:
        for _ in range(20):
            done = server.run("-c", program, cwd=tmp_path)
            assert done.returncode == 0, done.stderr
            children.append(int(done.stdout))
        time.sleep(0.5)
        assert [pid for pid in children if has_ended(pid)] == []
    finally:
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def kill_the_client_once_ready(server: Server, program: str, cwd: Path) -> int:
    """Run ``program``, which writes a pid to ``pid`` then a first line, and
    SIGKILL the client once that line is out; the pid written."""
    process = start(server, "-c", program, cwd=cwd)
    read_first_line(process)
    written = int((cwd / "pid").read_text())
    process.kill()
    process.wait()
    return written


def has_ended(pid: int) -> bool:
    """True once ``pid`` has exited, reaped or not."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    except OSError:
        return True


def test_a_pipeline_into_head_ends_as_with_python(server, tmp_path: Path) -> None:
    (tmp_path / "gen.py").write_text("for i in range(200000):\n    print(i)\n")
    outcomes = []
    for program, side in ((CLIENT, server), (sys.executable, None)):
        script = f'set -o pipefail; "{program}" gen.py | head -1; echo "${{PIPESTATUS[*]}} $?"'
        done = subprocess.run(
            ["bash", "-c", script], env=env_for(side), cwd=tmp_path, capture_output=True, timeout=30, check=False
        )
        outcomes.append(Outcome.of(done))
    assert outcomes[0] == outcomes[1]
    assert outcomes[0].stdout.startswith(b"0\n")


def test_a_program_that_dumps_core_leaves_its_core_not_the_clients(server, tmp_path: Path) -> None:
    # The client died of the program's SIGABRT with its own core dump,
    # which replaced the program's `core` file (or stood beside it).
    client = subprocess.Popen(
        ["sh", "-c", 'ulimit -c unlimited; exec "$@"', "sh", CLIENT, "-c", "import os; os.abort()"],
        env=env_for(server),
        cwd=tmp_path,
        stderr=subprocess.DEVNULL,
    )
    _, status = os.waitpid(client.pid, 0)
    client.returncode = 0  # reaped here
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGABRT, status
    assert not os.WCOREDUMP(status), "the client dumped a core of its own"


def test_without_proc_the_signals_the_client_was_started_ignoring_stay_ignored(server, tmp_path: Path) -> None:
    # The client reads them from /proc/self/status; where /proc is not
    # mounted it took none, so `nohup` did not protect the program.
    ignoring = "import os, signal, sys\nsignal.signal(signal.SIGHUP, signal.SIG_IGN)\nos.execv(sys.argv[1], sys.argv[1:])\n"
    program = "import signal; print(signal.getsignal(signal.SIGHUP) == signal.SIG_IGN)"
    script = 'umount -l /proc && exec "$@"'
    done = subprocess.run(
        ["unshare", "-m", "sh", "-c", script, "sh", sys.executable, "-c", ignoring, CLIENT, "-c", program],
        env=env_for(server),
        cwd=tmp_path,
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert (done.returncode, done.stdout) == (0, b"True\n"), done.stderr


def _state(pid: int) -> str:
    return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]


@pytest.mark.parametrize("group", ["orphaned", "held_by_its_job"])
def test_sigtstp_stops_the_run_only_where_the_kernel_would_stop_python(
    server, tmp_path: Path, group: str
) -> None:
    # The kernel drops a SIGTSTP to an orphaned group (under setsid): there
    # the client stopped the run until someone sent SIGCONT. In a group its
    # job still holds (a member's parent is in another group of the same
    # session), it stops, even when the client itself was reparented.
    program = "import time\nprint('ready', flush=True)\ntime.sleep(1.5)\nprint('done')\n"
    launch = {"orphaned": ["setsid", "{}"], "held_by_its_job": ["sh", "-c", '("$0" "$@" &); sleep 4', "{}"]}[group]
    results = [
        _stopped_by_sigtstp(server, tmp_path, launch, interpreter, program)[0] for interpreter in (CLIENT, sys.executable)
    ]
    assert results == ([False, False] if group == "orphaned" else [True, True]), results


def test_sigtstp_in_an_orphaned_group_still_runs_the_programs_handler(server, tmp_path: Path) -> None:
    # The kernel drops only the default stop there: python's handler runs.
    program = (
        "import signal, time\n"
        "signal.signal(signal.SIGTSTP, lambda *_: print('handled', flush=True))\n"
        "print('ready', flush=True)\ntime.sleep(1.5)\nprint('done')\n"
    )
    for interpreter in (CLIENT, sys.executable):
        stopped, out = _stopped_by_sigtstp(server, tmp_path, ["setsid", "{}"], interpreter, program)
        assert (stopped, out) == (False, b"ready\nhandled\ndone\n"), interpreter


def _stopped_by_sigtstp(
    server: Server, tmp_path: Path, launch: list[str], interpreter: object, program: str
) -> tuple[bool, bytes]:
    """Start ``interpreter -c program`` as ``launch`` starts it; whether a
    SIGTSTP sent to it once it runs stops it (it is continued after), and
    what it printed."""
    pid_file, out_file = tmp_path / "pid", tmp_path / "out"
    wrapper = f"import os, sys\nopen({os.fspath(pid_file)!r}, 'w').write(str(os.getpid()))\nos.execv(sys.argv[1], sys.argv[1:])\n"
    command = [part.replace("{}", sys.executable) for part in launch] + ["-c", wrapper, os.fspath(interpreter), "-c", program]
    with out_file.open("wb") as out:
        starter = subprocess.Popen(command, env=env_for(server), cwd=tmp_path, stdout=out, process_group=0)
    try:
        wait_until(lambda: out_file.read_bytes().startswith(b"ready"), timeout=10)
        pid = int(pid_file.read_text())
        os.kill(pid, signal.SIGTSTP)
        time.sleep(0.5)
        stopped = _state(pid) == "T"
        os.kill(pid, signal.SIGCONT)
        wait_until(lambda: b"done" in out_file.read_bytes(), timeout=10)
        return stopped, out_file.read_bytes()
    finally:
        starter.kill()
        starter.wait()

