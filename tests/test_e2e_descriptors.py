"""The program's descriptors are the client's, as python's would be.

A program started by the client under python has the client's descriptors
(0, 1, 2 and whatever else the client was started with: a shell's
``<(...)``, an ``exec 7<file``) and nothing of warmfork's: its first
``open()`` gets the lowest number the client left free. Under warmfork it
also keeps what the server's warm-up opened (warm state), but none of the
server's own descriptors, nor those the server process inherited.

The worker keeps its connection to the client, and a prefault learner its
pagemap, until the status is sent: at 1000 and up (under the default
descriptor limit), ``FD_CLOEXEC``, out of the program's way. The listings
compared here stop below that.
"""

from __future__ import annotations

import ast
import os
import resource
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import CLIENT, Server, start_server
from support.differential import assert_same_as_python, env_for, reference, shared_server, warmfork
from support.server_process import stop_when_idle

server = shared_server()

# Where the worker's own descriptors start (see server/src/descriptors.rs).
HIGH_FD = 1000

# Prints the program's descriptors below HIGH_FD and whether each is
# inheritable; `None` is the listing's own, closed by the time it is looked at.
LIST_FDS = f"""
import os
def inheritable(fd):
    try:
        return os.get_inheritable(fd)
    except OSError:
        return None
print([(fd, inheritable(fd)) for fd in sorted(map(int, os.listdir('/proc/self/fd'))) if fd < {HIGH_FD}])
"""


def listed(output: bytes) -> list[tuple[int, bool | None]]:
    return ast.literal_eval(output.decode())


def test_a_client_with_only_stdio_gives_the_program_only_stdio(server: Server) -> None:
    outcome = assert_same_as_python(server, "-c", LIST_FDS)
    # The listing's own descriptor is the first free number: 3.
    assert listed(outcome.stdout) == [(0, True), (1, True), (2, True), (3, None)]


def test_a_descriptor_the_client_has_is_the_programs_at_its_number(server: Server, tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.write_text("from the client's descriptor\n")
    fd = os.open(data, os.O_RDONLY)
    try:
        program = LIST_FDS + f"print(os.pread({fd}, 100, 0))\nprint(open('/dev/fd/{fd}').read())\n"
        outcome = assert_same_as_python(server, "-c", program, pass_fds=(fd,))
    finally:
        os.close(fd)
    assert (fd, True) in listed(outcome.stdout.splitlines()[0])
    assert b"from the client's descriptor" in outcome.stdout


def bash(server: Server | None, script: str) -> subprocess.CompletedProcess[bytes]:
    """``script`` in bash, ``$W`` being the client (with ``server``) or
    python (without)."""
    program = os.fspath(CLIENT) if server is not None else sys.executable
    return subprocess.run(
        ["bash", "-c", script],
        env={**env_for(server), "W": program},
        capture_output=True,
        stdin=subprocess.DEVNULL,
        timeout=30,
        check=False,
    )


def test_process_substitution_works_as_under_python(server: Server) -> None:
    script = "$W -c 'import sys; print(open(sys.argv[1]).read(), end=\"\")' <(echo data)"
    ours, python = bash(server, script), bash(None, script)
    assert (ours.returncode, ours.stdout, ours.stderr) == (0, b"data\n", b"")
    assert (ours.returncode, ours.stdout) == (python.returncode, python.stdout)


def test_a_script_on_an_inherited_descriptor_runs(server: Server, tmp_path: Path) -> None:
    script_file = tmp_path / "x.py"
    script_file.write_text("print('ran from fd 7')\n")
    script = f"exec 7<{script_file}; $W /dev/fd/7"
    ours, python = bash(server, script), bash(None, script)
    assert (ours.returncode, ours.stdout, ours.stderr) == (0, b"ran from fd 7\n", b"")
    assert (ours.returncode, ours.stdout) == (python.returncode, python.stdout)


def test_a_client_descriptor_on_the_workers_own_number_wins_and_the_status_arrives(
    server: Server, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    data.write_text("mine\n")
    script = f"exec {HIGH_FD}<{data} {HIGH_FD + 1}<{data}; $W -c 'import os; print(os.pread({HIGH_FD}, 9, 0)); raise SystemExit(7)'"
    ours = bash(server, script)
    assert (ours.returncode, ours.stdout, ours.stderr) == (7, b"b'mine\\n'\n", b"")


# Programs that clear or reuse every number, warmfork's own at HIGH_FD and up
# among them: the status still arrives, as under python.
CLOBBERS_THE_WORKERS_DESCRIPTORS = {
    "closerange": "os.closerange(3, 65536)\n",
    "dup2-devnull-over-all": "null = os.open(os.devnull, os.O_RDWR)\nfor fd in range(3, 2048):\n    os.dup2(null, fd)\n",
}


@pytest.mark.parametrize("clobber", list(CLOBBERS_THE_WORKERS_DESCRIPTORS))
@pytest.mark.parametrize("ending", ["raise SystemExit(7)", "1/0", "os.kill(os.getpid(), signal.SIGTERM)", "os._exit(6)"])
def test_a_program_that_closes_or_reuses_every_descriptor_still_ends_with_its_status(
    server: Server, clobber: str, ending: str
) -> None:
    program = "import os, signal\n" + CLOBBERS_THE_WORKERS_DESCRIPTORS[clobber] + "print('cleared', flush=True)\n" + ending + "\n"
    assert_same_as_python(server, "-c", program)


def test_the_workers_status_never_goes_into_a_socket_the_program_put_on_its_number(server: Server) -> None:
    # A program that dup2s a socket of its own over every number at 1000
    # and up (the worker's connection to its client among them) once got
    # the worker's EXIT frame written into that socket, to whoever was at
    # the other end.
    ours_end, peer = socket.socketpair()
    with ours_end, peer:
        program = (
            "import os\n"
            f"for fd in [n for n in map(int, os.listdir('/proc/self/fd')) if n >= {HIGH_FD}]:\n"
            f"    os.dup2({ours_end.fileno()}, fd)\n"
            "raise SystemExit(3)\n"
        )
        done = warmfork(server, "-c", program, pass_fds=(ours_end.fileno(),))
        ours_end.close()
        peer.settimeout(5)
        received = peer.recv(100)
    assert (done.returncode, done.stdout, done.stderr) == (3, b"", b"")
    assert received == b"", f"the program's socket received {received!r}"


def test_more_descriptors_than_a_run_can_pass_is_the_clients_own_failure(server: Server) -> None:
    opens = "for i in $(seq 10 260); do eval \"exec $i</dev/null\"; done"
    ours = bash(server, f"{opens}; $W -c pass")
    assert ours.returncode == 201
    assert b"251 descriptors besides 0, 1 and 2 are open" in ours.stderr
    fallback = bash(server, f"{opens}; WARMFORK_FALLBACK=python3 $W -c 'import os; print(os.path.exists(\"/dev/fd/260\"))'")
    assert (fallback.returncode, fallback.stdout) == (0, b"True\n")


def test_a_server_started_with_few_descriptors_takes_a_client_passing_many(tmp_path: Path) -> None:
    # A request holds the client's descriptors in the server until a worker
    # takes them: the server raises its soft limit to the hard one (the
    # program gets the client's limit, see test_e2e_process.py).
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard < 1024:
        pytest.skip("needs a hard descriptor limit of 1024 or more")
    few = tmp_path / "few.py"
    few.write_text("import resource as r\nr.setrlimit(r.RLIMIT_NOFILE, (100, r.getrlimit(r.RLIMIT_NOFILE)[1]))\n")
    srv = start_server(tmp_path, "--pool", "1", "--warmup", os.fspath(few))
    files = [os.open(os.devnull, os.O_RDONLY) for _ in range(200)]
    try:
        program = f"import os; print(sum(int(fd) < {HIGH_FD} for fd in os.listdir('/dev/fd')))"
        done = srv.run("-c", program, pass_fds=files)
        assert (done.returncode, done.stderr) == (0, b""), done.stderr
        # The client's 203 descriptors, and the listing's own.
        assert done.stdout == b"204\n"
        assert soft_descriptor_limit(srv.process.pid) == min(hard, 65536)
    finally:
        for fd in files:
            os.close(fd)
        stop_when_idle(srv)


def test_a_descriptor_beyond_the_servers_limit_is_refused_naming_the_limit(tmp_path: Path) -> None:
    low = tmp_path / "low.py"
    low.write_text("import resource as r\nr.setrlimit(r.RLIMIT_NOFILE, (64, 64))\n")
    srv = start_server(tmp_path, "--pool", "1", "--warmup", os.fspath(low))
    spare = os.open(os.devnull, os.O_RDONLY)
    high = 100
    os.dup2(spare, high)
    try:
        done = srv.run("-c", "print('ran')", pass_fds=[high])
        assert (done.returncode, done.stdout) == (201, b""), done.stderr
        assert b"cannot install descriptor 100 (the number is beyond the server's limit of open files" in done.stderr
    finally:
        os.close(high)
        os.close(spare)
        stop_when_idle(srv)


def test_a_server_too_short_of_descriptors_for_a_clients_says_it_is_its_own_fault(tmp_path: Path) -> None:
    # Each of the client's 40 descriptors fits under the server's limit of 64,
    # but the worker holds its own besides, and runs out moving them.
    low = tmp_path / "low.py"
    low.write_text("import resource as r\nr.setrlimit(r.RLIMIT_NOFILE, (64, 64))\n")
    srv = start_server(tmp_path, "--pool", "1", "--warmup", os.fspath(low))
    files = [os.open(os.devnull, os.O_RDONLY) for _ in range(40)]
    try:
        done = srv.run("-c", "print('ran')", pass_fds=files)
        assert (done.returncode, done.stdout) == (201, b""), done.stderr
        assert b"this worker is out of descriptors: the server's limit of open files" in done.stderr, done.stderr
        assert srv.run("-c", "print('still serving')").stdout == b"still serving\n"
    finally:
        for fd in files:
            os.close(fd)
        stop_when_idle(srv)


def soft_descriptor_limit(pid: int) -> int:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            return int(line.split()[3])
    raise AssertionError(f"no descriptor limit for {pid}")


def test_a_descriptor_the_server_inherited_is_not_the_programs(tmp_path: Path) -> None:
    leaked = tmp_path / "leaked"
    leaked.write_text("the server's\n")
    fd = os.open(leaked, os.O_RDONLY)
    try:
        srv = start_server(tmp_path, pass_fds=(fd,))
    finally:
        os.close(fd)
    try:
        ours = warmfork(srv, "-c", LIST_FDS)
        python = reference("-c", LIST_FDS)
        assert (ours.returncode, ours.stderr) == (0, b"")
        assert listed(ours.stdout) == listed(python.stdout)
        assert all(number != fd for number, _ in listed(ours.stdout))
    finally:
        stop_when_idle(srv)


def test_a_file_the_warm_up_opened_stays_usable_in_the_program(tmp_path: Path) -> None:
    log = tmp_path / "warm.log"
    warmup = tmp_path / "warm.py"
    warmup.write_text(
        "import sys, types\n"
        "state = types.ModuleType('warm_state')\n"
        f"state.log = open({os.fspath(log)!r}, 'a')\n"
        "sys.modules['warm_state'] = state\n"
    )
    srv = start_server(tmp_path, "--warmup", os.fspath(warmup))
    try:
        program = (
            "import warm_state; print('from the program', file=warm_state.log, flush=True)\n"
            "print(warm_state.log.fileno() > 3, open('/dev/null').fileno())"
        )
        done = warmfork(srv, "-c", program)
        # The server's socket, lock and wake-up pipe took 3 to 6 before the
        # warm-up: in the worker they are closed, and the program's first
        # open gets 3, as under python.
        assert (done.returncode, done.stdout, done.stderr) == (0, b"True 3\n", b"")
        assert log.read_text() == "from the program\n"
    finally:
        stop_when_idle(srv)
