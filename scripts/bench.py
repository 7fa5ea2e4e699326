"""Measure warmfork against the latency budget of issue 4, in one invocation.

Run through ``scripts/bench``, which builds and installs warmfork, makes the
numpy environment (with matplotlib, for the chart) and calls this file with
that environment's python. Every figure is measured side by side on this
machine: a static no-op binary's exec as the baseline, plain python, warmfork
against a numpy server (back to back, and with runs apart) and against a
numpy server holding 1 GiB more (and one started with ``--no-huge-pages``),
against numpy servers with a speed-up turned off (``VARIANTS``: what each
gains), two parallel client loops, the client's system calls and an idle
pool worker's memory. It prints a markdown table and writes it, the raw
hyperfine JSON and a latency chart into ``results/``.

It reports; it does not assert: a missed target is a FAIL row and exit 0. A
measurement that could not be made is an ERROR row and a non-zero exit.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

# The cheapest program the kernel can exec: no libc, no loader, one system
# call. Its exec time is the floor every warmfork run is compared with.
NOOP_C = r"""
void _start(void) {
#if defined(__x86_64__)
    __asm__ volatile("mov $231, %eax\n\txor %edi, %edi\n\tsyscall"); /* exit_group(0) */
#elif defined(__aarch64__)
    __asm__ volatile("mov x8, #94\n\tmov x0, #0\n\tsvc #0"); /* exit_group(0) */
#else
#error "add exit_group(0) for this architecture"
#endif
    __builtin_unreachable();
}
"""

# `parallel-loop P N CMD [ARG...]`: P loops at once, each running CMD N times
# in a row. Written in C so the loop's own cost (posix_spawn + waitpid) stays
# far below a run's; exits 1 if any run did not exit 0.
PARALLEL_LOOP_C = r"""
#include <spawn.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>
extern char **environ;
int main(int argc, char **argv) {
    if (argc < 4) return 2;
    int loops = atoi(argv[1]), runs = atoi(argv[2]), failed = 0, status;
    for (int i = 0; i < loops; i++) {
        if (fork() != 0) continue;
        for (int j = 0; j < runs; j++) {
            pid_t pid;
            if (posix_spawn(&pid, argv[3], NULL, NULL, argv + 3, environ) != 0) _exit(1);
            if (waitpid(pid, &status, 0) < 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0) _exit(1);
        }
        _exit(0);
    }
    while (wait(&status) > 0) failed |= !WIFEXITED(status) || WEXITSTATUS(status) != 0;
    return failed;
}
"""

# 1 GiB that every page of is resident in the server: a per-request cost that
# grows with the server's heap shows up against the numpy-only server. Half
# of it is one block of bytes, half Python objects (3.3 million tuples of an
# int and a string), which live in pymalloc's arenas: what a server warmed
# up with data holds.
GIB_WARMUP = """\
data = bytearray(1 << 29)
data[::4096] = b"\\x01" * (len(data) // 4096)
objects = [(i, str(i)) for i in range(3_300_000)]
"""

#: The flag the server holding 1 GiB is started with a second time.
SMALL_PAGES = "--no-huge-pages"

IMPORT_NUMPY = "import numpy\n"

# (runs, warmup) per kind of command: enough samples for a stable median,
# few enough that the whole bench, set-up included, stays under 5 minutes on
# 2 cores even while warmfork is still 100 times slower than its targets.
BASELINE_RUNS = (2000, 50)
FAST_RUNS = (500, 20)
# The numpy server and the one holding 1 GiB more are timed in alternating
# rounds (FAST_RUNS split evenly, a few warm-up runs each round), so that the
# host's load drifting during the bench weighs on both alike: their ratio is
# a target.
SIDE_BY_SIDE_ROUNDS = 5
SLOW_RUNS = (20, 2)
APART_RUNS = (200, 5)
APART_SECONDS = 0.02
APART = f"warmfork -c pass (numpy), runs {APART_SECONDS * 1000:.0f} ms apart"
GIB_SMALL_PAGES = f"warmfork -c pass (numpy + 1 GiB, {SMALL_PAGES})"


@dataclass(frozen=True)
class Variant:
    """A numpy server started with one of warmfork's speed-ups turned off
    by ``flag``, measured side by side with the others: what it gains."""

    name: str
    flag: str
    #: Whether the speed-up exists on the interpreter the bench runs.
    applies: bool = True

    @property
    def note(self) -> str:
        return f"numpy server with {self.flag}"

    @property
    def latency(self) -> str:
        return f"warmfork -c pass ({self.note})"

    @property
    def key(self) -> str:
        return f"{self.name} throughput"


VARIANTS = (
    # Immortal warm objects exist on CPython 3.12 and 3.13 (immortal.rs).
    Variant("mortal", "--no-immortal", (3, 12) <= sys.version_info < (3, 14)),
    Variant("unfilled", "--no-fill-pools"),
    Variant("unpacked", "--no-pack-code"),
)
THROUGHPUT_LOOPS, THROUGHPUT_RUNS_PER_LOOP = 2, 500
THROUGHPUT_REPEATS = (5, 1)
STRACE_REPEATS = 5
SERVER_START_TIMEOUT = 120.0
STEP_TIMEOUT = 180.0
MIB = 1024 * 1024


class BenchError(Exception):
    """A measurement could not be made."""


def log(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


def run(argv: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    """Runs ``argv`` to completion; raises BenchError with its output if it fails."""
    try:
        done = subprocess.run(argv, check=False, capture_output=True, text=True, timeout=STEP_TIMEOUT, **kwargs)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise BenchError(f"{shlex.join(argv)}: {exc}") from None
    if done.returncode != 0:
        output = (done.stdout + done.stderr).strip()[-2000:]
        raise BenchError(f"{shlex.join(argv)} exited with {done.returncode}: {output}")
    return done


# --- servers -------------------------------------------------------------


@dataclass
class Server:
    name: str
    socket: Path
    process: subprocess.Popen[bytes]
    log_path: Path
    pid: int = 0

    def wait_ready(self) -> None:
        """Waits for "serving on PATH (pid N)"; raises if the server exits first."""
        deadline = time.monotonic() + SERVER_START_TIMEOUT
        while time.monotonic() < deadline:
            text = self.log_path.read_text(errors="replace")
            found = re.search(r"serving on .* \(pid (\d+)\)", text)
            if found:
                self.pid = int(found.group(1))
                return
            if self.process.poll() is not None:
                raise BenchError(f"the {self.name} server exited with {self.process.returncode}: {text.strip()}")
            time.sleep(0.05)
        raise BenchError(f"the {self.name} server was not ready after {SERVER_START_TIMEOUT:.0f} s")

    def env(self) -> dict[str, str]:
        return {**os.environ, "WARMFORK_SOCKET": str(self.socket)}

    def stop(self) -> str | None:
        """SIGTERMs the server; returns what went wrong, if anything."""
        if self.process.poll() is not None:
            tail = self.log_path.read_text(errors="replace").strip()[-1000:]
            return f"the {self.name} server died during the bench (status {self.process.returncode}): {tail}"
        os.kill(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait()
            return f"the {self.name} server ignored SIGTERM for 10 s and was killed"
        return None


@contextlib.contextmanager
def servers(
    specs: list[tuple[str, list[str]]], bin_dir: Path, tmp: Path, logs: Path, pool: list[str]
) -> Iterator[list[Server]]:
    """Starts one server per (name, extra args) at once, waits until all are
    warm, and SIGTERMs each on the way out, whatever the way out is."""
    started: list[Server] = []
    try:
        for name, extra in specs:
            socket, log_path = tmp / f"{name}.sock", logs / f"server-{name}.log"
            argv = [str(bin_dir / "warmfork-server"), "--socket", str(socket), "--preload", "numpy", *pool, *extra]
            log(f"starting the {name} server: {shlex.join(argv)}")
            with open(log_path, "wb") as log_file:
                # Its own session: a Ctrl-C on the terminal reaches the bench,
                # which then stops the servers itself.
                process = subprocess.Popen(
                    argv, stdin=subprocess.DEVNULL, stdout=log_file, stderr=log_file, start_new_session=True
                )
            started.append(Server(name, socket, process, log_path))
        for server in started:
            server.wait_ready()
        yield started
    finally:
        problems = [problem for server in started if (problem := server.stop())]
        if problems and sys.exc_info()[0] is None:
            raise BenchError("; ".join(problems))


# --- measurements --------------------------------------------------------


class Bench:
    def __init__(self, bin_dir: Path, tmp: Path, results: Path) -> None:
        self.bin, self.tmp, self.results = bin_dir, tmp, results
        self.commands: list[str] = []

    def hyperfine(
        self,
        name: str,
        commands: list[tuple[str, list[str]]],
        runs: tuple[int, int],
        env: dict[str, str] | None = None,
        options: Sequence[str] = (),
    ) -> dict[str, dict]:
        """Times ``commands`` with ``hyperfine -N`` and ``options``; returns hyperfine's result per label."""
        out = self.results / f"{name}.json"
        argv = ["hyperfine", "-N", "--style", "none", "--runs", str(runs[0]), "--warmup", str(runs[1]), *options]
        argv += ["--export-json", str(out)]
        for label, command in commands:
            argv += ["-n", label, shlex.join(command)]
        self.commands.append(shlex.join(argv))
        run(argv, env=env)
        results = {result["command"]: result for result in json.loads(out.read_text())["results"]}
        for label, result in results.items():
            log(f"{label}: median {result['median'] * 1000:.3g} ms")
        return results

    def compile(self, name: str, source: str, flags: list[str]) -> Path:
        c_file, binary = self.tmp / f"{name}.c", self.tmp / name
        c_file.write_text(source)
        run(["gcc", "-O2", "-static", *flags, "-o", str(binary), str(c_file)])
        return binary

    def client_syscalls(self, server: Server) -> dict:
        """Counts the client's system calls for one ``warmfork -c pass``
        (strace follows the client only; the server is another process tree)."""
        client = [str(self.bin / "warmfork"), "-c", "pass"]
        totals: list[int] = []
        calls: dict[str, int] = {}
        for i in range(STRACE_REPEATS):
            out = self.tmp / f"strace-c-{i}.txt"
            run(["strace", "-f", "-c", "-o", str(out), *client], env=server.env())
            calls = parse_strace_summary(out.read_text())
            totals.append(calls.pop("total"))
        out = self.tmp / "strace-brk-mmap.txt"
        run(["strace", "-f", "-e", "trace=brk,mmap", "-o", str(out), *client], env=server.env())
        lines = out.read_text().splitlines()
        brk = sum(1 for line in lines if re.search(r"\bbrk\(", line))
        anon_mmap = sum(1 for line in lines if re.search(r"\bmmap\(", line) and "MAP_ANONYMOUS" in line)
        raw = [(self.tmp / name).read_text() for name in ("strace-c-0.txt", "strace-brk-mmap.txt")]
        (self.results / "strace.txt").write_text("".join(raw))
        self.commands.append(shlex.join(["strace", "-f", "-c", *client]))
        self.commands.append(shlex.join(["strace", "-f", "-e", "trace=brk,mmap", *client]))
        log(f"client syscalls: {totals}, brk {brk}, anonymous mmap {anon_mmap}")
        return {"totals": totals, "calls": calls, "brk": brk, "anon_mmap": anon_mmap}

    def idle_worker_memory(self, server: Server) -> list[int]:
        """Private_Dirty (bytes) of each idle child of ``server``; waits a
        little for a pool that refills after the previous measurements."""
        deadline = time.monotonic() + 5
        while True:
            children = child_pids(server.pid)
            if children or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        if not children:
            raise BenchError(f"the {server.name} server (pid {server.pid}) has --pool but no idle workers")
        sizes = [private_dirty(pid) for pid in children]
        log(f"idle workers {children}: Private_Dirty {[size // 1024 for size in sizes]} KiB")
        return sizes


def parse_strace_summary(text: str) -> dict[str, int]:
    """``{syscall: calls}`` from ``strace -c`` output, with the "total" row."""
    calls: dict[str, int] = {}
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 5 and fields[3].isdigit():
            calls[fields[-1]] = int(fields[3])
    if "total" not in calls:
        raise BenchError(f"no total in strace's summary: {text.strip()}")
    return calls


def cpu_seconds(pid: int) -> float:
    """CPU time of process ``pid`` and of the children it has reaped."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    # After the command name: state is field 3, utime..cstime are fields 14-17.
    return sum(int(ticks) for ticks in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def page_faults(pid: int) -> tuple[int, int]:
    """Minor page faults of process ``pid`` and of the children it has reaped
    (for a worker, every page it copied from the server, prefaulted or not,
    and every page it mapped in)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    # minflt and cminflt are fields 10 and 11.
    return int(fields[7]), int(fields[8])


def child_pids(pid: int) -> list[int]:
    children: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        children += [int(child) for child in (task / "children").read_text().split()]
    return children


def private_dirty(pid: int) -> int:
    rollup = Path(f"/proc/{pid}/smaps_rollup").read_text()
    found = re.search(r"^Private_Dirty:\s+(\d+) kB", rollup, re.MULTILINE)
    if not found:
        raise BenchError(f"no Private_Dirty in /proc/{pid}/smaps_rollup")
    return int(found.group(1)) * 1024


# --- the report ----------------------------------------------------------


def merged(rounds: list[dict[str, dict]]) -> dict[str, dict]:
    """hyperfine's results of several rounds as one result per label: every
    sample, and the statistics recomputed over them all."""
    times: dict[str, list[float]] = {}
    for results in rounds:
        for label, result in results.items():
            times.setdefault(label, []).extend(result["times"])
    return {
        label: {
            "command": label,
            "times": samples,
            "median": statistics.median(samples),
            "mean": statistics.fmean(samples),
            "stddev": statistics.stdev(samples),
            "min": min(samples),
            "max": max(samples),
        }
        for label, samples in times.items()
    }


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.3g} ms"


def latency_cells(result: dict) -> tuple[str, str]:
    spread = f"σ {ms(result['stddev'])}; {ms(result['min'])}–{ms(result['max'])}"
    return ms(result["median"]), spread


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def table(m: dict, errors: dict[str, str]) -> list[list[str]]:
    """The report's rows: figure, median, spread, ratio, target, result."""
    rows: list[list[str]] = []

    def row(key: str, figure: str, make: Callable[[], list[str]]) -> None:
        if key in errors:
            rows.append([figure, "—", "—", "—", "—", "ERROR"])
            return
        rows.append([figure, *make()])

    lat = m.get("latency", {})
    for label in ("static no-op exec (baseline)", "python -c pass", "python import_numpy.py"):
        row("latency", label, lambda label=label: [*latency_cells(lat[label]), "—", "—", "—"])

    def trivial() -> list[str]:
        ratio = lat["warmfork -c pass (numpy)"]["median"] / lat["static no-op exec (baseline)"]["median"]
        cells = latency_cells(lat["warmfork -c pass (numpy)"])
        return [*cells, f"{ratio:.2f} × baseline", "≤ 3 × baseline", verdict(ratio <= 3)]

    def gib() -> list[str]:
        ratio = lat["warmfork -c pass (numpy + 1 GiB)"]["median"] / lat["warmfork -c pass (numpy)"]["median"]
        cells = latency_cells(lat["warmfork -c pass (numpy + 1 GiB)"])
        return [*cells, f"{ratio:.2f} × numpy server", "≤ 1.25 × numpy server", verdict(ratio <= 1.25)]

    def small_pages() -> list[str]:
        ratio = lat[GIB_SMALL_PAGES]["median"] / lat["warmfork -c pass (numpy)"]["median"]
        return [*latency_cells(lat[GIB_SMALL_PAGES]), f"{ratio:.2f} × numpy server", "—", "—"]

    def numpy() -> list[str]:
        ratio = lat["python import_numpy.py"]["median"] / lat["warmfork import_numpy.py (numpy)"]["median"]
        cells = latency_cells(lat["warmfork import_numpy.py (numpy)"])
        return [*cells, f"python ÷ warmfork = {ratio:.0f}", "≥ 150", verdict(ratio >= 150)]

    def throughput(key: str) -> list[str]:
        rates = m[key]["rates"]
        median = statistics.median(rates)
        spread = f"{min(rates):.0f}–{max(rates):.0f} runs/s over {len(rates)} rounds"
        return [
            f"{median:.0f} runs/s",
            spread,
            f"{median / 1000:.2f} × target",
            "≥ 1000 runs/s",
            verdict(median >= 1000),
        ]

    def syscalls() -> list[str]:
        s = m["syscalls"]
        median = statistics.median(s["totals"])
        spread = f"{min(s['totals'])}–{max(s['totals'])} over {len(s['totals'])} runs"
        ratio = f"{median / 25:.2f} × target; brk {s['brk']}, anon mmap {s['anon_mmap']}"
        ok = median <= 25 and s["brk"] == 0 and s["anon_mmap"] == 0
        return [f"{median:g}", spread, ratio, "≤ 25, no brk, no anon mmap", verdict(ok)]

    def memory() -> list[str]:
        sizes = m["memory"]
        if sizes is None:
            return ["n/a (no pool)", "—", "—", "≤ 2 MiB", "n/a"]
        median = statistics.median(sizes)
        spread = f"{min(sizes) / MIB:.2f}–{max(sizes) / MIB:.2f} MiB over {len(sizes)} workers"
        return [
            f"{median / MIB:.2f} MiB",
            spread,
            f"{median / (2 * MIB):.2f} × target",
            "≤ 2 MiB",
            verdict(median <= 2 * MIB),
        ]

    def side_by_side(variant: Variant) -> list[str]:
        ratio = lat[variant.latency]["median"] / lat["warmfork -c pass (numpy)"]["median"]
        return [*latency_cells(lat[variant.latency]), f"{ratio:.2f} × the default server's", "—", "—"]

    def cost_rows(key: str, note: str) -> None:
        if key not in m:
            return
        cpu, (server, workers) = m[key]["cpu per run"], m[key]["faults per run"]
        cores = os.cpu_count() or 1
        at_most = f"{cores} cores ÷ CPU per run = {cores / cpu:.0f} runs/s at most"
        rows.append(
            [f"CPU per run, server + worker (during the throughput loops{note})", ms(cpu), "—", at_most, "—", "—"]
        )
        rows.append(
            [
                f"minor page faults per run, server / its workers (during the throughput loops{note})",
                f"{server:.0f} / {workers:.0f}",
                "—",
                "each a 4 KiB page copied or mapped in; counts hardly move with the host's load",
                "—",
                "—",
            ]
        )

    row("latency", "warmfork -c pass, numpy server", trivial)
    row("latency", "warmfork -c pass, numpy + 1 GiB server", gib)
    if GIB_SMALL_PAGES in lat:
        row("latency", f"warmfork -c pass, numpy + 1 GiB server with {SMALL_PAGES}, side by side", small_pages)
    row("latency", "warmfork import_numpy.py, numpy server", numpy)

    def apart() -> list[str]:
        ratio = lat[APART]["median"] / lat["static no-op exec (baseline)"]["median"]
        return [*latency_cells(lat[APART]), f"{ratio:.2f} × baseline", "—", "—"]

    row("latency", f"warmfork -c pass, numpy server, runs {APART_SECONDS * 1000:.0f} ms apart", apart)
    row("throughput", f"throughput, {THROUGHPUT_LOOPS} parallel client loops", lambda: throughput("throughput"))
    cost_rows("throughput", "")
    for variant in VARIANTS:
        if variant.key in m or variant.key in errors:
            row("latency", f"{variant.latency}, side by side", lambda variant=variant: side_by_side(variant))
            row(variant.key, f"throughput, {variant.note}", lambda variant=variant: throughput(variant.key))
            cost_rows(variant.key, f", {variant.note}")
    row("syscalls", "client syscalls, one run (strace -f -c)", syscalls)
    row("memory", "idle pool worker Private_Dirty, numpy server", memory)
    return rows


def markdown(rows: list[list[str]]) -> str:
    header = ["figure", "median", "spread", "ratio", "target", "result"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cells) + " |" for cells in rows]
    return "\n".join(lines) + "\n"


def chart(lat: dict[str, dict], path: Path) -> None:
    """Box plot of every latency sample, log scale: python vs warmfork vs baseline."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = list(lat)
    samples = [[t * 1000 for t in lat[label]["times"]] for label in labels]
    fig, ax = plt.subplots(figsize=(9, 0.6 * len(labels) + 1.5))
    version = tuple(int(part) for part in matplotlib.__version__.split(".")[:2])
    # `vert` is deprecated from matplotlib 3.10, which added `orientation`.
    horizontal = {"orientation": "horizontal"} if version >= (3, 10) else {"vert": False}
    ax.boxplot(samples, whis=(1, 99), flierprops={"markersize": 2, "alpha": 0.4}, **horizontal)
    ax.set_yticks(range(1, len(labels) + 1), labels)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlabel("wall time per run, ms (log scale; whiskers 1st–99th percentile)")
    ax.set_title(f"warmfork latency, {os.cpu_count()} cores, hyperfine -N")
    ax.grid(axis="x", which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def machine() -> str:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.machine(),
    )
    rev = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], check=False, capture_output=True, text=True, cwd=REPO
    ).stdout
    load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    return (
        f"{cpu}, {os.cpu_count()} cores, Linux {platform.release()}, Python {platform.python_version()}, "
        f"commit {rev.strip() or '?'}, load average at start {load}"
    )


# --- main ----------------------------------------------------------------


def measure_all(
    bench: Bench,
    numpy_srv: Server,
    gib_srv: Server,
    small_pages_srv: Server | None,
    variants: list[tuple[Variant, Server]],
    pooled: bool,
    m: dict,
    errors: dict,
) -> None:
    def step(key: str, fn: Callable[[], object]) -> None:
        try:
            m[key] = fn()
        except (BenchError, OSError, ValueError, KeyError, ImportError) as exc:
            errors[key] = str(exc)
            log(f"ERROR in {key}: {exc}")

    program = bench.tmp / "import_numpy.py"
    program.write_text(IMPORT_NUMPY)
    py, wf = str(bench.bin / "python"), str(bench.bin / "warmfork")

    def latency() -> dict[str, dict]:
        noop = bench.compile("noop", NOOP_C, ["-nostdlib"])
        lat = bench.hyperfine("baseline", [("static no-op exec (baseline)", [str(noop)])], BASELINE_RUNS)
        lat |= bench.hyperfine(
            "python",
            [("python -c pass", [py, "-c", "pass"]), ("python import_numpy.py", [py, str(program)])],
            SLOW_RUNS,
        )
        numpy_commands = [
            ("warmfork -c pass (numpy)", [wf, "-c", "pass"]),
            ("warmfork import_numpy.py (numpy)", [wf, str(program)]),
        ]
        gib_commands = [("warmfork -c pass (numpy + 1 GiB)", [wf, "-c", "pass"])]
        rounds: list[dict[str, dict]] = []
        per_round = (FAST_RUNS[0] // SIDE_BY_SIDE_ROUNDS, max(2, FAST_RUNS[1] // SIDE_BY_SIDE_ROUNDS))
        for r in range(1, SIDE_BY_SIDE_ROUNDS + 1):
            rounds.append(bench.hyperfine(f"warmfork-numpy-{r}", numpy_commands, per_round, numpy_srv.env()))
            rounds.append(bench.hyperfine(f"warmfork-1gib-{r}", gib_commands, per_round, gib_srv.env()))
            if small_pages_srv is not None:
                commands = [(GIB_SMALL_PAGES, [wf, "-c", "pass"])]
                rounds.append(bench.hyperfine(f"warmfork-1gib-small-{r}", commands, per_round, small_pages_srv.env()))
            for variant, server in variants:
                commands = [(variant.latency, [wf, "-c", "pass"])]
                rounds.append(bench.hyperfine(f"warmfork-{variant.name}-{r}", commands, per_round, server.env()))
        lat |= merged(rounds)
        # Runs apart: what one run waits for when the server and its workers
        # have finished the previous run's work (the loops above are bound by
        # that work, which needs the same two cores).
        lat |= bench.hyperfine(
            "warmfork-apart",
            [(APART, [wf, "-c", "pass"])],
            APART_RUNS,
            numpy_srv.env(),
            ["--prepare", f"sleep {APART_SECONDS}"],
        )
        return lat

    def loops(servers: list[Server]) -> list[dict]:
        """Two client loops against each of ``servers`` in turn, round after
        round (so that the host's load drifting weighs on all alike): for
        each, runs per second in each round and what a run cost the server
        and its workers meanwhile."""
        loop = bench.compile("parallel-loop", PARALLEL_LOOP_C, [])
        runs = THROUGHPUT_LOOPS * THROUGHPUT_RUNS_PER_LOOP
        command = [str(loop), str(THROUGHPUT_LOOPS), str(THROUGHPUT_RUNS_PER_LOOP), wf, "-c", "pass"]
        rounds, warmup = THROUGHPUT_REPEATS
        costs = [{"rates": [], "cpu": 0.0, "faults": [0, 0], "runs": 0} for _ in servers]
        for r in range(1, rounds + 1):
            for server, cost in zip(servers, costs):
                label = f"{THROUGHPUT_LOOPS} loops × {THROUGHPUT_RUNS_PER_LOOP} × warmfork -c pass ({server.name})"
                once = (1, warmup if r == 1 else 0)
                before, faults_before = cpu_seconds(server.pid), page_faults(server.pid)
                result = bench.hyperfine(f"throughput-{server.name}-{r}", [(label, command)], once, server.env())
                # The server's own CPU time plus that of the workers it
                # reaped: what a run costs the machine besides the client
                # (and what bounds a loop's latency once every core is
                # busy). Counts, unlike times, hardly move with the host's
                # load: a change in the pages a run costs shows there when
                # the times are too noisy.
                cost["cpu"] += cpu_seconds(server.pid) - before
                after = page_faults(server.pid)
                cost["faults"] = [total + a - b for total, a, b in zip(cost["faults"], after, faults_before)]
                cost["runs"] += runs * sum(once)
                cost["rates"] += [runs / t for t in result[label]["times"]]
        return [
            {
                "rates": cost["rates"],
                "cpu per run": cost["cpu"] / cost["runs"],
                "faults per run": [faults / cost["runs"] for faults in cost["faults"]],
            }
            for cost in costs
        ]

    def throughput() -> dict:
        numpy_cost, *variant_costs = loops([numpy_srv, *(server for _, server in variants)])
        for (variant, _), cost in zip(variants, variant_costs):
            m[variant.key] = cost
        return numpy_cost

    step("latency", latency)
    step("throughput", throughput)
    for variant, _ in variants:
        if "throughput" in errors:
            errors[variant.key] = errors["throughput"]
    step("syscalls", lambda: bench.client_syscalls(numpy_srv))
    if pooled:
        time.sleep(1)  # let the pool refill after the last run
        step("memory", lambda: bench.idle_worker_memory(numpy_srv))
    else:
        m["memory"] = None
    if "latency" in m:
        step("chart", lambda: chart(m["latency"], bench.results / "latency.png"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bin", required=True, type=Path, help="bin directory of the numpy environment")
    parser.add_argument("--results", type=Path, default=REPO / "results", help="where to write (default: results/)")
    parser.add_argument("--command", default="scripts/bench", help="the command line to record in bench.md")
    args = parser.parse_args(argv)
    missing = [tool for tool in ("hyperfine", "strace", "gcc") if shutil.which(tool) is None]
    if missing:
        print(f"bench: {', '.join(missing)} not found; install with scripts/setup (apt-get)", file=sys.stderr)
        return 2
    # SIGTERM and SIGHUP unwind like Ctrl-C, so the servers are stopped.
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, lambda signum, frame: sys.exit(128 + signum))

    started = time.monotonic()
    args.results.mkdir(parents=True, exist_ok=True)
    about = machine()
    help_text = run([str(args.bin / "warmfork-server"), "--help"]).stdout
    pooled = "--pool" in help_text
    pool = ["--pool", "4"] if pooled else []
    variants = [variant for variant in VARIANTS if variant.applies and variant.flag in help_text]
    small_pages = SMALL_PAGES in help_text
    m: dict = {}
    errors: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="warmfork-bench-") as tmp_name:  # mode 0700
        tmp = Path(tmp_name)
        (tmp / "gib.py").write_text(GIB_WARMUP)
        bench = Bench(args.bin, tmp, args.results)
        try:
            specs = [("numpy", []), ("numpy-1gib", ["--warmup", str(tmp / "gib.py")])]
            if small_pages:
                specs.append(("numpy-1gib-small", ["--warmup", str(tmp / "gib.py"), SMALL_PAGES]))
            specs += [(f"numpy-{variant.name}", [variant.flag]) for variant in variants]
            with servers(specs, args.bin, tmp, args.results, pool) as running:
                numpy_srv, gib_srv, *others = running
                small_pages_srv = others.pop(0) if small_pages else None
                in_pairs = list(zip(variants, others))
                measure_all(bench, numpy_srv, gib_srv, small_pages_srv, in_pairs, pooled, m, errors)
        except BenchError as exc:
            errors["servers"] = str(exc)
            log(f"ERROR: {exc}")
    if "servers" in errors:
        for key in ("latency", "throughput", "syscalls", "memory", *(variant.key for variant in variants)):
            if key not in m:
                errors.setdefault(key, errors["servers"])

    elapsed = time.monotonic() - started
    report = markdown(table(m, errors))
    print(report, end="")
    notes = [f"- {key}: {message}" for key, message in errors.items()]
    (args.results / "bench.md").write_text(
        "# warmfork benchmark\n\n"
        f"Command: `{args.command}` ({elapsed:.0f} s, {time.strftime('%Y-%m-%d %H:%M %Z')})\n\n"
        f"Machine: {about}. Servers {'with `' + ' '.join(pool) + '`' if pooled else 'without a pool (fork per request)'}"
        ", all preloading numpy; the second also runs a warm-up holding 1 GiB of touched data"
        " (half bytes, half Python objects)"
        + (f", and so does the third, with `{SMALL_PAGES}`" if small_pages else "")
        + "".join(f"; one runs with `{variant.flag}`" for variant in variants)
        + ".\n\n"
        + report
        + ("\nErrors:\n\n" + "\n".join(notes) + "\n" if notes else "")
        + "\n![latency distribution](latency.png)\n\n"
        "Raw hyperfine JSON: `baseline.json`, `python.json`, "
        + ", ".join(
            f"`warmfork-{name}-N.json`"
            for name in ["numpy", "1gib", *(["1gib-small"] if small_pages else []), *(v.name for v in variants)]
        )
        + f" (rounds 1 to {SIDE_BY_SIDE_ROUNDS}, alternating), "
        + ", ".join(f"`throughput-{name}-N.json`" for name in ["numpy", *(f"numpy-{v.name}" for v in variants)])
        + " (alternating); strace output: `strace.txt`; server logs: `server-*.log`. Measurement commands (temp paths differ per run):\n\n"
        + "".join(f"    {command}\n" for command in bench.commands)
    )
    log(f"done in {elapsed:.0f} s; the table, the chart and the raw JSON are in {args.results}/")
    return 1 if errors else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        log("interrupted; the servers it started are stopped")
        sys.exit(130)
