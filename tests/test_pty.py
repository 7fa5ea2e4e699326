"""`WARMFORK_PTY=1`: the program gets a pseudo-terminal of its own as its
controlling terminal, and the client relays between it and the user's
terminal (a tmux window here). Programs that need a controlling terminal
work (`/dev/tty`, getpass, curses), keys and resizes reach them, and the
user's terminal modes are back as they were after every way a run ends,
SIGKILL of the client included.

The checks of the terminal's modes that must not rely on the shell run
under dash, which, unlike bash, leaves the terminal as a killed job left it.
"""

from __future__ import annotations

import os
import re
import signal
import sys
import termios
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import CLIENT, Server, start_server
from support.differential import env_for, shared_server
from support.raw_client import (
    ALL_FDS,
    BAD_REQUEST,
    CONTROLLING_TTY,
    ERROR,
    EXIT,
    STARTED,
    RawClient,
    Reply,
    run_frame,
)
from support.terminal import (
    DEAF_COUNTER,
    PROMPT,
    PROMPT_MARK,
    Terminal,
    assert_ctrl_z_leaves_it_counting,
    at_shell_prompt,
    client_terminal,
    has_line,
    ticks,
)

server = shared_server()

PTY = "WARMFORK_PTY=1 "

# Talks to the user through /dev/tty, and says what its standard streams are.
TTY_PROGRAM = (
    "import os, sys, time\n"
    "print('stdin', os.isatty(0), 'stdout', sys.stdout.isatty(), flush=True)\n"
    "time.sleep(0.2)\n"
    "tty = os.open('/dev/tty', os.O_RDWR)\n"
    "os.write(tty, b'name?\\n')\n"
    "name = os.read(tty, 100).decode().strip()\n"
    "os.write(tty, ('hello ' + name + '\\n').encode())\n"
)

COUNTER = "import time\nfor i in range(100000):\n    print('tick', i, flush=True)\n    time.sleep(0.2)\n"

READY_THEN_SLEEP = "import time\nprint('rea' + 'dy', flush=True)\ntime.sleep(60)\n"


@pytest.fixture
def terminal(server: Server, tmp_path: Path) -> Iterator[Terminal]:
    """A tmux window with bash in ``tmp_path``, where `warmfork` is the
    client and reaches this module's server."""
    term = client_terminal(env_for(server), CLIENT.parent, tmp_path)
    yield term
    term.close()


def use_dash(terminal: Terminal) -> None:
    """Replace the window's bash with dash, keeping the prompt."""
    terminal.run(f"exec env PS1='{PROMPT}' sh")


def modes(terminal: Terminal, tmp_path: Path, name: str) -> str:
    """The terminal's modes as a command started by the shell sees them."""
    terminal.run(f"stty -g > {name}.modes")
    return (tmp_path / f"{name}.modes").read_text()


def children(pid: int) -> list[int]:
    """The pids of ``pid``'s children that are still running."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = (Path("/proc") / entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            found.append(int(entry))
    return found


def the_client(terminal: Terminal) -> tuple[int, int]:
    """The pids of the running client (a child of the window's shell) and of
    its terminal watchdog (the client's only child)."""
    deadline = time.monotonic() + 10
    while True:
        clients = children(terminal.shell_pid())
        if len(clients) == 1 and len(watchdogs := children(clients[0])) == 1:
            return clients[0], watchdogs[0]
        assert time.monotonic() < deadline, f"no client with a watchdog under the shell: {clients}"
        time.sleep(0.05)


def wait_gone(pid: int, timeout: float = 10.0) -> None:
    """Wait until ``pid`` has exited (a zombie counts as exited)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            return
        if state == "Z":
            return
        assert time.monotonic() < deadline, f"process {pid} is still running"
        time.sleep(0.02)


def without_watchdog(terminal: Terminal) -> int:
    """Kills the running client's watchdog, so that what the test then sees
    of the terminal is the client's own doing (a stopped watchdog would not
    do: the kernel continues it when the client's end orphans it). The
    client must not mind. Returns the client's pid."""
    client, watchdog = the_client(terminal)
    assert is_raw(terminal)
    os.kill(watchdog, signal.SIGKILL)
    wait_gone(watchdog)
    return client


def is_raw(terminal: Terminal) -> bool:
    """Whether the window's terminal is in raw mode, seen from outside."""
    tty = terminal.pane_tty()
    fd = os.open(tty, os.O_RDONLY | os.O_NOCTTY)
    try:
        lflag = termios.tcgetattr(fd)[3]
    finally:
        os.close(fd)
    return not lflag & (termios.ICANON | termios.ECHO | termios.ISIG)


# -- programs that need a controlling terminal ---------------------------------


@pytest.mark.parametrize(
    ("command", "stdout_is_a_tty"),
    [
        (PTY + "warmfork tty.py", True),
        ("WARMFORK_PTY=always warmfork tty.py | cat", False),
        ("WARMFORK_PTY=yes warmfork tty.py", True),
    ],
    ids=["tty", "piped", "any_value"],
)
def test_a_program_that_uses_dev_tty_works_in_pty_mode(
    terminal: Terminal, tmp_path: Path, command: str, stdout_is_a_tty: bool
) -> None:
    # Output piped away stays a pipe, as under python, while /dev/tty works.
    (tmp_path / "tty.py").write_text(TTY_PROGRAM)
    terminal.type(command)
    terminal.wait_for(lambda screen: has_line(screen, "name?"), what="the question on /dev/tty")
    terminal.type("world")
    screen = terminal.wait_for(at_shell_prompt, what="the end of the run")
    assert has_line(screen, f"stdin True stdout {stdout_is_a_tty}"), screen
    assert has_line(screen, "hello world"), screen
    assert terminal.last_status() == 0


# A pager as `less` is one: the terminal is raw while it shows what it reads,
# until `q`, and then as it found it.
PAGER = (
    "import os, sys, termios, tty\n"
    "fd = os.open('/dev/tty', os.O_RDWR)\n"
    "found = termios.tcgetattr(fd)\n"
    "tty.setraw(fd)\n"
    "os.write(fd, sys.stdin.buffer.read().replace(b'\\n', b'\\r\\n') + b'(END)')\n"
    "while os.read(fd, 1) != b'q':\n"
    "    pass\n"
    "termios.tcsetattr(fd, termios.TCSAFLUSH, found)\n"
    "os.write(fd, b'\\r\\n')\n"
)


def test_a_run_piped_into_a_pager_leaves_the_terminal_to_it(terminal: Terminal, tmp_path: Path) -> None:
    # With stdout not the terminal, WARMFORK_PTY=1 is the plain mode: the
    # pager has the terminal. The client took it too, made it raw and read
    # its keys, and put back at its end the modes it had found, over the
    # pager's: the pager then put back, on `q`, the raw modes it had found,
    # and the shell was left raw (two runs in three).
    (tmp_path / "pager.py").write_text(PAGER)
    for attempt in range(3):
        # The run lasts until the pager has taken the terminal, as `less`,
        # which starts faster than this pager, takes it during most runs.
        program = f"import time; time.sleep(0.5); print({attempt})"
        terminal.type(f"{PTY}warmfork -c '{program}' | {sys.executable} pager.py")
        terminal.wait_for(lambda screen, n=attempt: screen.count("(END)") == n + 1, what="the page")
        terminal.type("q", enter=False)
        terminal.wait_for(at_shell_prompt, what="the shell's prompt after the pager")
        assert not is_raw(terminal), f"the terminal was left raw after run {attempt}"


@pytest.mark.parametrize("setting", ["", "WARMFORK_PTY=0 ", "WARMFORK_PTY= "], ids=["unset", "zero", "empty"])
def test_without_pty_mode_dev_tty_fails_as_python_says(terminal: Terminal, tmp_path: Path, setting: str) -> None:
    # What pty mode is for: the worker has no controlling terminal.
    (tmp_path / "tty.py").write_text(TTY_PROGRAM)
    terminal.type(setting + "warmfork tty.py")
    screen = terminal.wait_for(at_shell_prompt, what="the end of the run")
    assert "OSError: [Errno 6] No such device or address: '/dev/tty'" in screen, screen
    assert terminal.last_status() == 1


def test_a_curses_program_draws_reads_a_key_and_leaves_the_terminal_sane(
    terminal: Terminal, tmp_path: Path
) -> None:
    (tmp_path / "draw.py").write_text(
        "import curses\n"
        "def main(screen):\n"
        "    screen.addstr(5, 10, 'curses ' + 'drawn')\n"
        "    screen.refresh()\n"
        "    return screen.getkey()\n"
        "print('key', repr(curses.wrapper(main)))\n"
    )
    before = modes(terminal, tmp_path, "before")
    terminal.type(PTY + "warmfork draw.py")
    drawn = terminal.wait_for(lambda screen: "curses drawn" in screen, what="the drawing")
    assert "          curses drawn" in drawn.splitlines(), drawn
    assert is_raw(terminal)
    terminal.type("x", enter=False)
    screen = terminal.wait_for(at_shell_prompt, what="the end of the run")
    assert has_line(screen, "key 'x'"), screen
    assert terminal.last_status() == 0
    assert modes(terminal, tmp_path, "after") == before
    terminal.type("echo sa''ne")
    terminal.wait_for(lambda screen: has_line(screen, "sane"), what="the shell's echo at the start of a line")


# -- keys and signals ------------------------------------------------------------


def test_ctrl_z_stops_the_program_with_the_terminal_restored_and_fg_continues_it(
    terminal: Terminal, tmp_path: Path
) -> None:
    (tmp_path / "counter.py").write_text(COUNTER)
    before = modes(terminal, tmp_path, "before")
    terminal.type(PTY + "warmfork counter.py")
    terminal.wait_for(lambda screen: len(ticks(screen)) >= 3, what="the counter to count")
    terminal.keys("C-z")
    stopped = terminal.wait_for(
        lambda screen: "Stopped" in screen and at_shell_prompt(screen), what="the shell to report the job stopped"
    )
    assert "^Z" in stopped, "the pseudo-terminal's echo of Ctrl-Z did not come before the stop"
    assert modes(terminal, tmp_path, "stopped") == before
    stopped = terminal.screen()
    time.sleep(1.0)  # five ticks' worth: a worker still running would print
    assert terminal.screen() == stopped, "output went on after Ctrl-Z"
    last = max(ticks(stopped))
    terminal.type("fg")
    terminal.wait_for(lambda screen: max(ticks(screen)) >= last + 3, what="the counter to go on after fg")
    assert is_raw(terminal)
    terminal.keys("C-c")
    terminal.wait_for(
        lambda screen: at_shell_prompt(screen) and has_line(screen, "KeyboardInterrupt"), what="the end of the run"
    )
    assert terminal.last_status() == 130
    assert modes(terminal, tmp_path, "after") == before


def test_ctrl_z_does_nothing_to_a_program_that_ignores_sigtstp(terminal: Terminal, tmp_path: Path) -> None:
    (tmp_path / "deaf.py").write_text(DEAF_COUNTER)
    assert_ctrl_z_leaves_it_counting(terminal, PTY + "warmfork deaf.py")


# Counts on a curses screen, and in count.txt, waiting for a key 0.1 s at a
# time; 'q' ends it.
CURSES_COUNTER = (
    "import curses, pathlib\n"
    "def main(screen):\n"
    "    curses.halfdelay(1)\n"
    "    for i in range(100000):\n"
    "        pathlib.Path('count.txt').write_text(str(i))\n"
    "        screen.addstr(0, 0, f'tick {i}')\n"
    "        screen.refresh()\n"
    "        if screen.getch() == ord('q'):\n"
    "            return i\n"
    "print('quit at', curses.wrapper(main))\n"
)


def test_ctrl_z_stops_a_curses_program_every_time(terminal: Terminal, tmp_path: Path) -> None:
    # curses handles SIGTSTP, and ignores it for a moment after its handler,
    # while it redraws. Whether a Ctrl-Z stops the program is decided as the
    # key reaches the pseudo-terminal; the client once looked only after
    # that, found the handler's moment of ignoring about one time in four,
    # and let the key go. (The screen is not redrawn after `fg`: see the
    # README's Limitations. The count is read from the file.)
    (tmp_path / "count.py").write_text(CURSES_COUNTER)
    count = tmp_path / "count.txt"

    def counted() -> int:
        return int(count.read_text() or 0) if count.exists() else 0

    terminal.type(PTY + "warmfork count.py")
    terminal.wait_for(lambda _: counted() >= 3, what="curses to count")
    for attempt in range(6):
        terminal.keys("C-z")
        terminal.wait_for(
            lambda screen: "Stopped" in screen and at_shell_prompt(screen),
            what=f"Ctrl-Z number {attempt + 1} to stop the program",
            timeout=5,
        )
        stopped_at = counted()
        time.sleep(0.5)  # five ticks' worth
        assert counted() == stopped_at, "the program counted on while stopped"
        terminal.type("fg")
        terminal.wait_for(lambda _, last=stopped_at: counted() >= last + 3, what="the counter to go on after fg")
    terminal.type("q", enter=False)
    screen = terminal.wait_for(at_shell_prompt, what="the end of the run")
    assert re.search(r"^quit at \d+$", screen, re.MULTILINE), screen
    assert terminal.last_status() == 0


def test_bg_then_fg_gives_the_program_the_keyboard_again(terminal: Terminal, tmp_path: Path) -> None:
    # After `bg` the program goes on (test_terminal.py) with the terminal the
    # shell's; `fg` makes it raw again and keys reach the program.
    (tmp_path / "counter.py").write_text(COUNTER)
    before = modes(terminal, tmp_path, "before")
    terminal.type(PTY + "warmfork counter.py")
    terminal.wait_for(lambda screen: len(ticks(screen)) >= 2, what="the counter to count")
    terminal.keys("C-z")
    terminal.wait_for(lambda screen: "Stopped" in screen and at_shell_prompt(screen), what="Stopped")
    terminal.type("bg")
    last = max(ticks(terminal.wait_for(at_shell_prompt, what="the prompt after bg")))
    terminal.wait_for(lambda screen: max(ticks(screen)) >= last + 2, what="the counter to go on after bg")
    assert not is_raw(terminal), "the terminal is raw while the shell has it"
    terminal.type("fg")
    terminal.wait_for(lambda screen: has_line(screen, "WARMFORK_PTY=1 warmfork counter.py"), what="fg")
    deadline = time.monotonic() + 10
    while not is_raw(terminal):
        assert time.monotonic() < deadline, "the terminal is not raw after fg"
        time.sleep(0.05)
    terminal.keys("C-c")
    terminal.wait_for(
        lambda screen: at_shell_prompt(screen) and has_line(screen, "KeyboardInterrupt"), what="the end of the run"
    )
    assert terminal.last_status() == 130
    assert modes(terminal, tmp_path, "after") == before


def test_a_run_started_in_the_background_waits_for_fg_and_then_has_the_terminal(
    terminal: Terminal, tmp_path: Path
) -> None:
    # In the background the terminal has the modes of bash's line editor;
    # those must not become the program's, nor be "restored" at the end.
    before = modes(terminal, tmp_path, "before")
    terminal.run(PTY + """warmfork -c 'print("in" + "put", input())' &""")
    deadline = time.monotonic() + 10
    while "Stopped" not in terminal.run("jobs").rsplit(f"{PROMPT_MARK} jobs", 1)[-1]:
        assert time.monotonic() < deadline, "the background run did not stop for the terminal"
        time.sleep(0.1)
    terminal.type("fg")
    time.sleep(0.5)
    terminal.type("abc")
    screen = terminal.wait_for(lambda screen: has_line(screen, "input abc"), what="the program's answer")
    assert has_line(screen, "abc"), "typed input was not echoed"
    terminal.wait_for(at_shell_prompt, what="the end of the run")
    assert modes(terminal, tmp_path, "after") == before


def start_sleeper(terminal: Terminal) -> None:
    """Run sleeper.py of the shell's directory in pty mode until it prints 'ready'."""
    terminal.type(PTY + "warmfork sleeper.py")
    terminal.wait_for(lambda screen: has_line(screen, "ready"), what="the program to start")


# -- the terminal's modes after every way a run ends -----------------------------


def test_modes_are_as_before_after_a_normal_run(terminal: Terminal, tmp_path: Path) -> None:
    # bash adopts whatever modes a job that exits normally leaves behind.
    (tmp_path / "sleeper.py").write_text("import time\nprint('rea' + 'dy', flush=True)\ntime.sleep(0.5)\n")
    before = modes(terminal, tmp_path, "before")
    start_sleeper(terminal)
    without_watchdog(terminal)
    terminal.wait_for(at_shell_prompt, what="the end of the run")
    assert terminal.last_status() == 0
    assert modes(terminal, tmp_path, "after") == before


def test_modes_are_as_before_after_a_run_killed_by_a_signal(terminal: Terminal, tmp_path: Path) -> None:
    use_dash(terminal)
    (tmp_path / "sleeper.py").write_text(READY_THEN_SLEEP)
    before = modes(terminal, tmp_path, "before")
    start_sleeper(terminal)
    client = without_watchdog(terminal)
    os.kill(client, signal.SIGTERM)  # forwarded: the program dies of it, then the client
    terminal.wait_for(at_shell_prompt, what="the end of the run")
    assert terminal.last_status() == 128 + signal.SIGTERM
    assert modes(terminal, tmp_path, "after") == before


def test_modes_are_as_before_after_kill_9_of_the_client(terminal: Terminal, tmp_path: Path) -> None:
    use_dash(terminal)
    (tmp_path / "sleeper.py").write_text(READY_THEN_SLEEP)
    before = modes(terminal, tmp_path, "before")
    start_sleeper(terminal)
    client, watchdog = the_client(terminal)
    assert is_raw(terminal), "the test would pass without a watchdog"
    os.kill(client, signal.SIGKILL)
    wait_gone(watchdog)  # the watchdog has done its work and is gone
    assert not is_raw(terminal)
    terminal.wait_for(lambda screen: screen.rstrip().endswith(PROMPT_MARK), what="the shell's prompt")
    assert modes(terminal, tmp_path, "after") == before


def test_modes_are_as_before_when_the_server_is_lost_mid_run(tmp_path: Path) -> None:
    """The failure path: server and worker die, the client reports the lost
    server (exit 203) and restores the terminal itself."""
    lost = start_server(tmp_path, name="lost")
    terminal = client_terminal(env_for(lost), CLIENT.parent, tmp_path)
    try:
        use_dash(terminal)
        (tmp_path / "pid.py").write_text("import os, time\nprint('worker', os.getpid(), flush=True)\ntime.sleep(60)\n")
        before = modes(terminal, tmp_path, "before")
        terminal.type(PTY + "warmfork pid.py")
        screen = terminal.wait_for(lambda screen: re.search(r"^worker \d+$", screen, re.MULTILINE), what="the worker")
        worker = int(re.findall(r"^worker (\d+)$", screen, re.MULTILINE)[-1])
        without_watchdog(terminal)
        lost.process.kill()
        lost.process.wait()
        os.kill(worker, signal.SIGKILL)
        screen = terminal.wait_for(at_shell_prompt, what="the end of the run")
        assert terminal.last_status() == 203, screen
        assert modes(terminal, tmp_path, "after") == before
    finally:
        terminal.close()
        lost.stop()


def test_the_watchdog_ends_with_the_client_after_a_normal_run(terminal: Terminal, tmp_path: Path) -> None:
    (tmp_path / "sleeper.py").write_text("import time\nprint('rea' + 'dy', flush=True)\ntime.sleep(1)\n")
    start_sleeper(terminal)
    _, watchdog = the_client(terminal)
    terminal.wait_for(at_shell_prompt, what="the end of the run")
    wait_gone(watchdog)


# -- the protocol's CONTROLLING_TTY, with a raw client -------------------------


def run_raw(server: Server, tmp_path: Path, program: str, stdio: list[int], flags: int) -> list[Reply]:
    """Send a RUN of ``warmfork -c PROGRAM`` with ``stdio`` as fds 0, 1, 2;
    the replies."""
    cwd = os.open(tmp_path, os.O_PATH | os.O_DIRECTORY)
    try:
        with RawClient(server.socket) as client:
            client.send(run_frame([b"warmfork", b"-c", program.encode()], [b"LANG=C.UTF-8"], flags=flags), [*stdio, cwd])
            return client.replies()
    finally:
        os.close(cwd)


def test_the_worker_takes_a_fresh_pseudo_terminal_as_its_controlling_terminal(
    server: Server, tmp_path: Path
) -> None:
    master, slave = os.openpty()
    try:
        replies = run_raw(
            server,
            tmp_path,
            "import os, sys\n"
            "os.write(os.open('/dev/tty', os.O_WRONLY), b'via /dev/tty\\n')\n"
            "print(os.tcgetpgrp(0) == os.getpgrp(), type(sys.stdin.buffer.raw).__name__)\n",
            [slave, slave, slave],
            ALL_FDS | CONTROLLING_TTY,
        )
        os.close(slave)
        slave = -1
        output = b""
        while True:
            try:
                chunk = os.read(master, 4096)
            except OSError:  # EIO: the worker has gone
                break
            if not chunk:
                break
            output += chunk
    finally:
        os.close(master)
        if slave >= 0:
            os.close(slave)
    assert [r.kind for r in replies][:2] == [STARTED, EXIT], replies
    assert replies[1].exit == (0, 0)
    # The foreground process group is the worker's; /dev/tty is the
    # pseudo-terminal; standard input is read by the kernel's job control,
    # not emulated.
    assert output == b"via /dev/tty\r\nTrue FileIO\r\n", output


@pytest.mark.parametrize("stdin", ["pipe", "closed"])
def test_controlling_tty_without_a_terminal_on_stdin_is_refused(server: Server, tmp_path: Path, stdin: str) -> None:
    marker = tmp_path / "ran"
    read_end, write_end = os.pipe()
    try:
        fds, flags = ([read_end, write_end, write_end], ALL_FDS) if stdin == "pipe" else ([write_end, write_end], ALL_FDS & ~1)
        replies = run_raw(server, tmp_path, f"open({os.fspath(marker)!r}, 'w')", fds, flags | CONTROLLING_TTY)
    finally:
        os.close(read_end)
        os.close(write_end)
    assert replies[0].kind == ERROR, replies
    assert replies[0].code == BAD_REQUEST
    assert "controlling terminal" in replies[0].message
    assert not marker.exists(), "the program ran"
