"""Load and faults (issue 6), in one invocation: does a warmfork server survive
a long day's work and every way a run can go wrong?

Run through ``scripts/stress``. Everything happens under a fresh temporary
directory (mode 0700), against servers of its own, each stopped by its pid on
every way out (normal end, failure, Ctrl-C, SIGTERM, SIGHUP).

* Load: 10,000 sequential runs, then bursts of 64 concurrent clients, each
  run's output and status checked. Then: no zombie children of the server,
  and its open descriptors and memory (VmRSS, Private_Dirty) the same at the
  end as after the first hundred runs, give or take a little noise.
* Faults: the pytest suite ``tests/test_faults.py`` (workers that segfault,
  abort, are SIGKILLed, ``os._exit(7)`` or close their stdout; a client and
  the server SIGKILLed mid-run; the socket file deleted; the server held to
  32 descriptors), whose tests record what they expected and what happened.
  Afterwards no process of the suite may still be running.

It prints a markdown report and writes it to ``results/stress.md``; the exit
status is non-zero if anything failed.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, os.fspath(REPO / "tests"))

# The servers and the checks on what they leave behind are the test suite's,
# so the script and the tests cannot disagree about them.
from conftest import CLIENT, Server, start_server
from support.server_process import settled_fd_count
from test_faults import children_of, zombie_children

#: Memory the server may gain between the first hundred runs and the end
#: without being called a leak: allocator noise, not growth per run (10,000
#: runs leaking 64 bytes each would already exceed the Private_Dirty slack).
RSS_SLACK_KIB = 1024
DIRTY_SLACK_KIB = 512
CLIENT_TIMEOUT = 60.0
FAULT_SUITE_TIMEOUT = 180.0
PR_SET_CHILD_SUBREAPER = 36


def log(message: str) -> None:
    print(f"stress: {message}", file=sys.stderr, flush=True)


class Interrupted(BaseException):
    """SIGTERM or SIGHUP: unwind, so every ``finally`` stops what it started."""


def interrupt(signum: int, _frame: FrameType | None) -> None:
    raise Interrupted(signum)


# -- figures -------------------------------------------------------------------


@dataclass
class Footprint:
    """What the server holds: open descriptors, memory (KiB), children."""

    fds: int
    rss_kib: int
    private_dirty_kib: int
    children: int
    zombies: list[int]

    @classmethod
    def of(cls, pid: int) -> Footprint:
        fds = settled_fd_count(pid)  # waits for the pool to refill and the reaping to end
        return cls(
            fds=fds,
            rss_kib=proc_field(f"/proc/{pid}/status", "VmRSS:"),
            private_dirty_kib=proc_field(f"/proc/{pid}/smaps_rollup", "Private_Dirty:"),
            children=len(children_of(pid)),
            zombies=zombie_children(pid),
        )


def proc_field(path: str, name: str) -> int:
    """The kB figure of line ``name`` in a /proc file."""
    for line in Path(path).read_text().splitlines():
        if line.startswith(name):
            return int(line.split()[1])
    raise RuntimeError(f"no {name} in {path}")


@dataclass
class Phase:
    """One part of the load: how many runs, how many at once, what failed,
    and the server's footprint when it began and when it ended."""

    name: str
    concurrency: int
    runs: int = 0
    seconds: float = 0.0
    failures: list[str] = field(default_factory=list)
    before: Footprint | None = None
    after: Footprint | None = None

    def check(self, n: int, status: int | str, out: bytes, err: bytes) -> None:
        """Run ``n`` printed ``n`` and exited 0, or it is a failure."""
        self.runs += 1
        if (status, out, err) != (0, f"{n}\n".encode(), b""):
            self.failures.append(f"run {n}: status {status}, stdout {out[:80]!r}, stderr {err[:200]!r}")


@dataclass
class Load:
    """What the load suite found."""

    phases: list[Phase]
    log: Path
    #: The server's exit status if it died during the load.
    died: int | None = None


@dataclass
class Check:
    """One line of the report: what was expected, what happened."""

    name: str
    expected: str
    actual: str
    passed: bool

    @property
    def result(self) -> str:
        return "PASS" if self.passed else "FAIL"


# -- load ----------------------------------------------------------------------


def program(n: int) -> list[str | os.PathLike[str]]:
    return [CLIENT, "-c", f"print({n})"]


def sequential(server: Server, runs: int, phase: Phase) -> None:
    """``runs`` runs one after the other. The phase's footprint is taken after
    its first hundred runs: the baseline of the whole load."""
    started = time.monotonic()
    paused = 0.0
    for n in range(runs):
        try:
            done = subprocess.run(program(n), env=server.env, capture_output=True, timeout=CLIENT_TIMEOUT, check=False)
            phase.check(n, done.returncode, done.stdout, done.stderr)
        except subprocess.TimeoutExpired:
            phase.check(n, "hung", b"", b"")
        if n + 1 == min(100, runs):
            measuring = time.monotonic()
            phase.before = Footprint.of(server.process.pid)
            paused += time.monotonic() - measuring
        if (n + 1) % 2000 == 0:
            log(f"{n + 1} sequential runs, {len(phase.failures)} failed")
    phase.seconds = time.monotonic() - started - paused


def bursts(server: Server, count: int, concurrency: int, first: int, phase: Phase) -> None:
    """``count`` bursts of ``concurrency`` clients started at once."""
    started = time.monotonic()
    for burst in range(count):
        numbers = range(first + burst * concurrency, first + (burst + 1) * concurrency)
        clients = []
        try:
            for n in numbers:
                clients.append(
                    subprocess.Popen(program(n), env=server.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
                )
            for n, client in zip(numbers, clients):
                try:
                    out, err = client.communicate(timeout=CLIENT_TIMEOUT)
                    phase.check(n, client.returncode, out, err)
                except subprocess.TimeoutExpired:
                    client.kill()
                    client.communicate()
                    phase.check(n, "hung", b"", b"")
        finally:
            for client in clients:
                if client.poll() is None:
                    client.kill()
                    client.wait()
    phase.seconds = time.monotonic() - started
    log(f"{phase.runs} runs in {count} bursts of {concurrency}, {len(phase.failures)} failed")


def load(tmp: Path, runs: int, burst_count: int, concurrency: int) -> Load:
    """The load suite against one private server."""
    server = start_server(tmp, name="load")
    serial, parallel = Phase("sequential", 1), Phase("bursts", concurrency)
    result = Load([serial, parallel], server.log)
    try:
        log(f"load: server pid {server.process.pid} on {server.socket}")
        sequential(server, runs, serial)
        if server.process.poll() is None:
            serial.after = parallel.before = Footprint.of(server.process.pid)
        bursts(server, burst_count, concurrency, runs, parallel)
        if server.process.poll() is None:
            parallel.after = Footprint.of(server.process.pid)
        result.died = server.process.poll()
    finally:
        server.stop()
    return result


def load_checks(result: Load) -> list[Check]:
    phases = result.phases
    runs = sum(p.runs for p in phases)
    failures = [f for p in phases for f in p.failures]
    checks = [
        Check(
            "every run printed its number and exited 0",
            f"{runs} of {runs}",
            f"{runs - len(failures)} of {runs}" + (f"; first: {failures[0]}" if failures else ""),
            not failures,
        )
    ]
    before, after = phases[0].before, phases[-1].after
    if result.died is not None or before is None or after is None:
        return [*checks, Check("server alive at the end", "running", f"exited with {result.died}", False)]
    checks += [
        Check("zombie children of the server", "none", ", ".join(map(str, after.zombies)) or "none", not after.zombies),
        Check("open descriptors", f"{before.fds} (as after 100 runs)", str(after.fds), after.fds == before.fds),
        Check(
            "VmRSS",
            f"{before.rss_kib} KiB + at most {RSS_SLACK_KIB} KiB",
            f"{after.rss_kib} KiB ({after.rss_kib - before.rss_kib:+d})",
            after.rss_kib - before.rss_kib <= RSS_SLACK_KIB,
        ),
        Check(
            "Private_Dirty",
            f"{before.private_dirty_kib} KiB + at most {DIRTY_SLACK_KIB} KiB",
            f"{after.private_dirty_kib} KiB ({after.private_dirty_kib - before.private_dirty_kib:+d})",
            after.private_dirty_kib - before.private_dirty_kib <= DIRTY_SLACK_KIB,
        ),
        Check(
            "children of the server (the idle pool)",
            f"{before.children}",
            str(after.children),
            after.children == before.children,
        ),
    ]
    return checks


# -- faults --------------------------------------------------------------------


def fault_suite(tmp: Path, results: Path) -> tuple[list[Check], float]:
    """Runs tests/test_faults.py and reads back what each test recorded."""
    report = tmp / "faults.xml"
    command = [
        sys.executable, "-m", "pytest", "tests/test_faults.py", "-q", "-p", "no:cacheprovider",
        f"--basetemp={tmp / 'faults'}", f"--junitxml={report}", "-o", "junit_family=xunit2",
    ]  # fmt: skip
    started = time.monotonic()
    with (results / "stress-faults.log").open("wb") as output:
        # A session of its own: Ctrl-C reaches pytest once, from here, and
        # not a second time in the middle of its teardown.
        suite = subprocess.Popen(
            command, cwd=REPO, stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            suite.wait(timeout=FAULT_SUITE_TIMEOUT)
        finally:
            if suite.poll() is None:
                # pytest tears its fixtures (the servers) down on SIGINT.
                suite.send_signal(signal.SIGINT)
                try:
                    suite.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    suite.kill()
                    suite.wait()
    seconds = time.monotonic() - started
    if not report.exists():
        return [Check("fault suite", "runs", f"pytest exited {suite.returncode} without a report", False)], seconds
    checks = [check_of(case) for case in ET.parse(report).iter("testcase")]
    if suite.returncode not in (0, 1) or not checks:
        checks.append(Check("fault suite", "pytest runs every test", f"pytest exited {suite.returncode}", False))
    return checks, seconds


def check_of(case: ET.Element) -> Check:
    """A test case of the JUnit report as a line of the fault table."""
    notes = {p.get("name"): p.get("value", "") for p in case.iter("property")}
    problem = next((case.find(tag) for tag in ("failure", "error", "skipped") if case.find(tag) is not None), None)
    actual = notes.get("actual", "")
    if problem is not None:
        why = (problem.get("message") or "").splitlines()[0][:300]
        actual = f"{actual} — {problem.tag}: {why}" if actual else f"{problem.tag}: {why}"
    name = case.get("name", "?").removeprefix("test_")
    return Check(name, notes.get("expected", "(not recorded)"), actual, problem is None)


def adopt_orphans() -> None:
    """Become the subreaper of everything started from here, so a worker
    orphaned by a killed server is ours to find (and reap) afterwards."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        log(f"cannot become a subreaper (errno {ctypes.get_errno()}); orphans will not be checked")


def command_line(pid: int) -> str:
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()[:160]
    return "?"


def leftovers() -> Check:
    """Processes of the fault suite still running: orphans adopted by this
    process. They are killed by pid and reaped, and reported."""
    alive = {pid: command_line(pid) for pid, state in children_of(os.getpid()).items() if state != "Z"}
    for pid in alive:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    for pid in children_of(os.getpid()):
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)
    return Check(
        "nothing of the fault suite left running",
        "no process",
        "; ".join(f"pid {pid}: {command}" for pid, command in alive.items()) or "no process",
        not alive,
    )


# -- report --------------------------------------------------------------------


def table(header: list[str], rows: list[list[str]]) -> str:
    def line(cells: list[str]) -> str:
        return "| " + " | ".join(cell.replace("|", "\\|").replace("\n", " ") for cell in cells) + " |"

    return "\n".join([line(header), line(["---"] * len(header)), *map(line, rows)])


def check_table(what: str, checks: list[Check]) -> str:
    return table([what, "expected", "actual", "result"], [[c.name, c.expected, c.actual, c.result] for c in checks])


def figures(phase: Phase) -> list[str]:
    """A row of the load table: the footprint columns read "before → after"."""

    def pair(attribute: str, unit: str = "") -> str:
        return " → ".join(f"{getattr(fp, attribute)}{unit}" if fp else "—" for fp in (phase.before, phase.after))

    return [
        phase.name,
        str(phase.runs),
        str(phase.concurrency),
        str(len(phase.failures)),
        pair("fds"),
        pair("rss_kib", " KiB"),
        pair("private_dirty_kib", " KiB"),
        f"{phase.seconds:.1f} s ({phase.runs / phase.seconds:.0f} runs/s)" if phase.seconds else "—",
    ]


def report(phases: list[Phase], load_rows: list[Check], faults: list[Check], timings: dict[str, float]) -> str:
    commit = subprocess.run(
        ["git", "describe", "--always", "--dirty"], cwd=REPO, capture_output=True, text=True, check=False
    ).stdout.strip()
    every = [*load_rows, *faults]
    failed = [c for c in every if not c.passed]
    return "\n\n".join(
        [
            "# warmfork stress",
            (
                f"Commit {commit or '?'}, {os.cpu_count()} CPUs, {time.strftime('%Y-%m-%d %H:%M')}; "
                f"load {timings['load']:.0f} s, faults {timings['faults']:.0f} s, total {timings['total']:.0f} s. "
                "Descriptors and memory are the server's, settled (pool refilled, workers reaped): "
                "the sequential phase starts after its first hundred runs, the baseline of the checks."
            ),
            "## Load",
            table(
                ["phase", "runs", "concurrency", "failures", "fds", "VmRSS", "Private_Dirty", "duration"],
                [figures(phase) for phase in phases],
            ),
            check_table("check", load_rows),
            "## Faults",
            check_table("fault", faults),
            f"**{len(every) - len(failed)} of {len(every)} checks passed**"
            + ("" if not failed else ": failed " + ", ".join(c.name for c in failed)),
        ]
    )


@contextlib.contextmanager
def private_directory() -> Iterator[Path]:
    """A fresh 0700 directory, removed on the way out."""
    path = Path(tempfile.mkdtemp(prefix="warmfork-stress-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=10_000, help="sequential runs (default 10000)")
    parser.add_argument("--bursts", type=int, default=20, help="bursts of concurrent clients (default 20)")
    parser.add_argument("--concurrency", type=int, default=64, help="clients per burst (default 64)")
    parser.add_argument("--results", type=Path, default=REPO / "results", help="where to write (default: results/)")
    args = parser.parse_args(argv)
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, interrupt)
    args.results.mkdir(parents=True, exist_ok=True)
    adopt_orphans()
    started = time.monotonic()
    with private_directory() as tmp:
        loaded = load(tmp, args.runs, args.bursts, args.concurrency)
        load_seconds = time.monotonic() - started
        shutil.copy(loaded.log, args.results / "stress-server.log")
        load_rows = load_checks(loaded)
        log("fault suite: tests/test_faults.py")
        try:
            faults, fault_seconds = fault_suite(tmp, args.results)
        finally:
            left = leftovers()  # whatever happened: nothing may stay running
        faults.append(left)
    timings = {"load": load_seconds, "faults": fault_seconds, "total": time.monotonic() - started}
    text = report(loaded.phases, load_rows, faults, timings)
    print(text)
    (args.results / "stress.md").write_text(text + "\n")
    log(f"done in {timings['total']:.0f} s; report in {args.results / 'stress.md'}")
    return 0 if all(c.passed for c in [*load_rows, *faults]) else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (Interrupted, KeyboardInterrupt) as stop:
        signum = stop.args[0] if isinstance(stop, Interrupted) else signal.SIGINT
        log(f"interrupted by {signal.Signals(signum).name}; everything started here is stopped")
        sys.exit(128 + signum)
