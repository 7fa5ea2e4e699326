"""At a real terminal (a tmux window running bash) warmfork must not be told
apart from python by pressing keys: Ctrl-C, Ctrl-Z and `fg`, the interactive
prompt, the window's size and its changes, and reading a password."""

from __future__ import annotations

import os
import re
import signal
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import CLIENT
from support import old_kernel
from support.differential import env_for, shared_server
from support.terminal import (
    DEAF_COUNTER,
    PROMPT_MARK,
    Terminal,
    assert_ctrl_z_leaves_it_counting,
    at_shell_prompt,
    client_terminal,
    count_lines_starting,
    has_line,
    ticks,
)

server = shared_server()

REPL_PROMPT = ">>>"


# Both ways: on the user's terminal itself, and on a pseudo-terminal of the
# program's own that the client relays (test_pty.py).
MODES = pytest.mark.parametrize("mode", ["", "WARMFORK_PTY=1 "], ids=["plain", "pty"])


# The kernel signals a process group through a pidfd from Linux 6.9; before,
# the client names the group by number. `before` prefixes the command with a
# run under a seccomp filter that refuses the newer way.
OLD_KERNEL = Path(old_kernel.__file__)
KERNELS = pytest.mark.parametrize(
    "before",
    [
        "",
        pytest.param(
            f"{sys.executable} {OLD_KERNEL} pidfd_group_signal ",
            marks=pytest.mark.skipif(not old_kernel.supported(), reason="the seccomp filter is for x86_64"),
        ),
    ],
    ids=["this-kernel", "before-6.9"],
)


@pytest.fixture
def terminal(server, tmp_path: Path) -> Iterator[Terminal]:
    """A tmux window with bash in ``tmp_path``, where `warmfork` is the
    client and reaches this module's server."""
    term = client_terminal(env_for(server), CLIENT.parent, tmp_path)
    yield term
    term.close()


def at_repl_prompt(screen: str) -> bool:
    return screen.endswith(REPL_PROMPT)


COUNTER = "import time\nfor i in range(100000):\n    print('tick', i, flush=True)\n    time.sleep(0.2)\n"


@MODES
def test_ctrl_c_during_a_run_prints_keyboard_interrupt_and_the_shell_sees_130(terminal: Terminal, mode: str) -> None:
    # "run" + "ning": the word appears on the screen only once the program prints it.
    terminal.type(mode + """warmfork -c 'import time; print("run" + "ning", flush=True); time.sleep(30)'""")
    terminal.wait_for(lambda screen: has_line(screen, "running"), what="the program to start")
    terminal.keys("C-c")
    screen = terminal.wait_for(
        lambda screen: at_shell_prompt(screen) and has_line(screen, "KeyboardInterrupt"), what="the traceback"
    )
    assert "Traceback (most recent call last):" in screen
    assert terminal.last_status() == 130


def test_ctrl_c_stops_a_shell_loop_at_once(terminal: Terminal) -> None:
    terminal.type(
        """for i in 1 2 3; do warmfork -c 'import time; print("go" + "ing", flush=True); time.sleep(5)' || break; done"""
    )
    terminal.wait_for(lambda screen: has_line(screen, "going"), what="the first run")
    prompts = terminal.prompts()
    pressed = time.monotonic()
    terminal.keys("C-c")
    screen = terminal.wait_for(
        lambda screen: count_lines_starting(screen, PROMPT_MARK) > prompts and at_shell_prompt(screen),
        what="the prompt after the loop",
    )
    elapsed = time.monotonic() - pressed
    assert elapsed < 3, f"the loop took {elapsed:.1f}s to stop after Ctrl-C"
    assert screen.splitlines().count("going") == 1, "the loop went on to the next run"
    assert terminal.last_status() == 130


def test_ctrl_z_stops_the_program_and_fg_continues_it(terminal: Terminal, tmp_path: Path) -> None:
    (tmp_path / "counter.py").write_text(COUNTER)
    terminal.type("warmfork counter.py")
    terminal.wait_for(lambda screen: len(ticks(screen)) >= 3, what="the counter to count")
    terminal.keys("C-z")
    stopped = terminal.wait_for(
        lambda screen: "Stopped" in screen and at_shell_prompt(screen), what="the shell to report the job stopped"
    )
    time.sleep(1.0)  # five ticks' worth: a worker still running would print
    assert terminal.screen() == stopped, "output went on after Ctrl-Z"
    # Stopped by SIGTSTP, as python is: by SIGSTOP bash said "Stopped
    # (signal)" and $? was 147.
    assert "Stopped (signal)" not in stopped
    assert terminal.last_status() == 128 + signal.SIGTSTP
    last = max(ticks(stopped))
    terminal.type("fg")
    terminal.wait_for(lambda screen: max(ticks(screen)) >= last + 3, what="the counter to go on after fg")
    terminal.keys("C-c")
    terminal.wait_for(
        lambda screen: at_shell_prompt(screen) and has_line(screen, "KeyboardInterrupt"), what="the end of the run"
    )
    assert terminal.last_status() == 130


@MODES
def test_bg_lets_a_stopped_run_go_on_in_the_background(terminal: Terminal, tmp_path: Path, mode: str) -> None:
    (tmp_path / "counter.py").write_text(COUNTER)
    terminal.type(mode + "warmfork counter.py")
    terminal.wait_for(lambda screen: len(ticks(screen)) >= 2, what="the counter to count")
    terminal.keys("C-z")
    stopped = terminal.wait_for(lambda screen: "Stopped" in screen and at_shell_prompt(screen), what="Stopped")
    last = max(ticks(stopped))
    terminal.type("bg")
    terminal.wait_for(lambda screen: max(ticks(screen)) >= last + 3, what="the counter to go on after bg")
    # One line: the job's ticks would land after a prompt in between.
    terminal.type('kill -INT %1; wait %1; echo "status=$?"')
    screen = terminal.wait_for(lambda screen: re.search(r"^status=\d+$", screen, re.MULTILINE), what="the job's end")
    assert has_line(screen, "status=130"), screen


@pytest.mark.parametrize(
    "read", ["input()", "sys.stdin.read()", "sys.stdin.buffer.read()", "input() < /dev/tty"]
)
def test_a_background_run_that_reads_the_terminal_stops_like_python(terminal: Terminal, read: str) -> None:
    # python in the background gets SIGTTIN on its read and the job stops,
    # instead of taking the input meant for the shell (`read()` to the end
    # took every line typed after it, `fg` included; /dev/tty is the same
    # terminal under another device number).
    read, _, redirect = read.partition(" < ")
    assert_stops_in_the_background(
        terminal, f"""warmfork -c 'import sys; print("got", repr({read}))' {"< " + redirect if redirect else ""} &"""
    )


@pytest.mark.parametrize("command", ["warmfork -q &", "warmfork -qi | cat &"], ids=["readline", "block-reads"])
def test_a_prompt_in_the_background_stops_like_python(terminal: Terminal, tmp_path: Path, command: str) -> None:
    # The prompt reads past sys.stdin: through the run's input() on a
    # terminal, else descriptor 0 itself. With the server's input() and a
    # bare read it took the shell's next lines as Python (found by a review).
    # Its ">>> ", written before the read stops it, could land after the
    # shell's prompt and hide it: the prompt here is empty.
    (tmp_path / "quiet.py").write_text("import sys\nsys.ps1 = ''\n")
    assert_stops_in_the_background(terminal, f"PYTHONSTARTUP={tmp_path / 'quiet.py'} {command}")


def assert_stops_in_the_background(terminal: Terminal, command: str) -> None:
    """Start ``command``, a run in the background that reads the terminal:
    the job stops, and what is typed next reaches the shell."""
    terminal.run(command)
    deadline = time.monotonic() + 10
    while True:
        try:
            jobs = terminal.run("jobs", timeout=5)
        except AssertionError as lost:
            raise AssertionError(
                "the shell lost the `jobs` typed to it: the background run read the terminal"
            ) from lost
        if "Stopped" in jobs.rsplit(f"{PROMPT_MARK} jobs", 1)[-1]:
            break
        assert time.monotonic() < deadline, f"the background run never stopped for its terminal read:\n{jobs}"
        time.sleep(0.2)
    terminal.type("echo typed-for-the-shell")
    screen = terminal.wait_for(lambda screen: has_line(screen, "typed-for-the-shell"), what="the shell's echo")
    assert "got 'echo" not in screen


def test_ctrl_z_does_nothing_to_a_program_that_ignores_sigtstp(terminal: Terminal, tmp_path: Path) -> None:
    (tmp_path / "deaf.py").write_text(DEAF_COUNTER)
    assert_ctrl_z_leaves_it_counting(terminal, f"warmfork {tmp_path / 'deaf.py'}")


def test_a_background_run_reads_another_terminal_as_python_does(terminal: Terminal) -> None:
    # Job control is about the job's own terminal: a background read of
    # another one goes ahead (it stopped the job, as if it read its own).
    master, slave = os.openpty()
    try:
        terminal.run(f"""warmfork -c 'import sys; print("got", repr(sys.stdin.readline()))' < {os.ttyname(slave)} &""")
        time.sleep(0.5)
        os.write(master, b"line\n")
        terminal.wait_for(lambda screen: "got 'line\\n'" in screen, what="the line read from the other terminal")
    finally:
        os.close(master)
        os.close(slave)


def test_ctrl_c_during_a_terminal_read_shows_the_programs_frames_only(terminal: Terminal) -> None:
    # The traceback ended in warmfork's own reader of the terminal.
    terminal.type("warmfork -c 'import sys; sys.stdin.readline()'")
    time.sleep(1.0)  # the read has begun
    terminal.keys("C-c")
    screen = terminal.wait_for(at_shell_prompt_after("KeyboardInterrupt"), what="the program's end")
    traceback = screen.split("readline()'")[-1]
    assert 'File "<string>", line 1, in <module>' in traceback and "warmfork" not in traceback, screen
    assert has_line(terminal.run("echo status=$?"), "status=130")


@pytest.mark.parametrize(
    ("read", "then"),
    [("sys.stdin.readline()", ""), ('input("name: ")', ""), ('input("name: ")', " | cat")],
    ids=["stdin", "input", "input-through-stdin"],  # stdout a pipe: input() reads sys.stdin
)
def test_a_read_stopped_by_ctrl_z_and_sent_to_the_background_stops_again(
    terminal: Terminal, read: str, then: str
) -> None:
    # python's read, continued by `bg`, stops at once for terminal input; the
    # worker's read used to go on in the background and take the shell's keys.
    terminal.type(f"""warmfork -c 'import sys; print("got", repr({read}))'{then}""")
    time.sleep(1.0)  # the read has begun
    terminal.keys("C-z")
    terminal.wait_for(lambda screen: "Stopped" in screen and at_shell_prompt(screen), what="Stopped")
    terminal.run("bg")
    screen = terminal.run("echo typed-for-the-shell")
    assert has_line(screen, "typed-for-the-shell"), "the background read took the shell's line"
    terminal.type("fg")
    time.sleep(0.5)
    terminal.type("for-the-program")
    screen = terminal.wait_for(at_shell_prompt_after("got "), what="the program's line")
    assert "got 'for-the-program" in screen
    assert "got 'echo" not in screen


def at_shell_prompt_after(text: str) -> Callable[[str], bool]:
    return lambda screen: text in screen and at_shell_prompt(screen)


@KERNELS
def test_ctrl_c_reaches_the_programs_child_as_under_python(terminal: Terminal, before: str) -> None:
    # The terminal signals its whole foreground group: python's `sleep` child
    # dies of SIGINT at once (os.system returns its status, 2), where it used
    # to sleep on while only the worker got the signal.
    terminal.type(
        before + """warmfork -c 'import os, time; start = time.time(); print("st" + "arted", flush=True); """
        """status = os.system("sleep 20"); print("status", status, "after", round(time.time() - start))'"""
    )
    terminal.wait_for(lambda screen: has_line(screen, "started"), what="the program to start")
    time.sleep(0.5)
    terminal.keys("C-c")
    screen = terminal.wait_for(at_shell_prompt_after("status "), what="the program's end")
    assert re.search(r"status 2 after [0-2]$", screen, re.MULTILINE), screen


@KERNELS
def test_ctrl_z_stops_the_programs_child_too(terminal: Terminal, tmp_path: Path, before: str) -> None:
    (tmp_path / "counter.py").write_text(COUNTER)
    terminal.type(before + """warmfork -c 'import subprocess, sys; subprocess.run([sys.executable, "counter.py"])'""")
    terminal.wait_for(lambda screen: len(ticks(screen)) >= 3, what="the child to count")
    terminal.keys("C-z")
    stopped = terminal.wait_for(lambda screen: "Stopped" in screen and at_shell_prompt(screen), what="Stopped")
    time.sleep(1.0)  # five ticks' worth: a child still running would print
    assert terminal.screen() == stopped, "the program's child went on after Ctrl-Z"
    terminal.type("fg")
    last = max(ticks(stopped))
    terminal.wait_for(lambda screen: max(ticks(screen)) >= last + 2, what="the child to go on after fg")
    terminal.keys("C-c")
    terminal.wait_for(at_shell_prompt, what="the end of the run")


def test_input_interrupted_shows_no_frame_of_warmfork(terminal: Terminal) -> None:
    terminal.type("""warmfork -c 'input("na" + "me: ")'""")
    terminal.wait_for(lambda screen: "name:" in screen, what="the prompt")
    terminal.keys("C-c")
    screen = terminal.wait_for(at_shell_prompt_after("KeyboardInterrupt"), what="the traceback")
    traceback = screen[screen.index("Traceback") :]
    assert traceback.count('  File "') == 1, traceback
    assert 'File "<string>", line 1, in <module>' in traceback


def test_the_prompt_evaluates_survives_ctrl_c_and_exits_0_on_ctrl_d(terminal: Terminal) -> None:
    terminal.type("warmfork")
    screen = terminal.wait_for(at_repl_prompt, what="the interactive prompt")
    assert re.search(r"^Python 3\.\d+\.\d+ ", screen, re.MULTILINE), screen
    assert 'Type "help", "copyright", "credits" or "license" for more information.' in screen
    terminal.type("6*7")
    terminal.wait_for(lambda screen: has_line(screen, "42") and at_repl_prompt(screen), what="6*7")
    terminal.type("x = 5")
    terminal.type("1 +", enter=False)
    terminal.keys("C-c")  # discards the half-typed line, keeps the session
    terminal.wait_for(
        lambda screen: has_line(screen, "KeyboardInterrupt") and at_repl_prompt(screen), what="KeyboardInterrupt"
    )
    terminal.type("x * 2")
    terminal.wait_for(lambda screen: has_line(screen, "10") and at_repl_prompt(screen), what="x * 2 after Ctrl-C")
    terminal.keys("C-d")
    terminal.wait_for(at_shell_prompt, what="the shell after Ctrl-D")
    assert terminal.last_status() == 0


ipython_server = shared_server("--preload", "IPython")  # scripts/setup installs IPython for the tests


@MODES
def test_ipython_preloaded_in_the_server_runs_at_the_terminal(
    ipython_server, tmp_path: Path, mode: str
) -> None:
    """The original use of a tool like this: a heavy interactive shell,
    started at once. Prompts, results, Ctrl-C during a cell, exit status."""
    terminal = client_terminal(env_for(ipython_server), CLIENT.parent, tmp_path)
    try:
        terminal.type(mode + "warmfork -m IPython --no-banner --no-confirm-exit")
        terminal.wait_for(lambda screen: screen.endswith("In [1]:"), what="IPython's first prompt")
        terminal.type("6*7")
        terminal.wait_for(lambda screen: has_line(screen, "Out[1]: 42"), what="the result of 6*7")
        terminal.type("import time; print('sle' + 'eping'); time.sleep(30)")
        terminal.wait_for(lambda screen: has_line(screen, "sleeping"), what="the cell to run")
        terminal.keys("C-c")
        screen = terminal.wait_for(lambda screen: screen.endswith("In [3]:"), what="the prompt after Ctrl-C")
        assert "KeyboardInterrupt" in screen
        terminal.type("exit")
        terminal.wait_for(at_shell_prompt, what="the shell after exit")
        assert terminal.last_status() == 0
    finally:
        terminal.close()


def test_dash_i_drops_into_the_prompt_after_the_script(terminal: Terminal, tmp_path: Path) -> None:
    (tmp_path / "script.py").write_text("answer = 41\nprint('script' + ' done')\n")
    terminal.type("warmfork -i script.py")
    terminal.wait_for(lambda screen: has_line(screen, "script done") and at_repl_prompt(screen), what="the prompt")
    terminal.type("answer + 1")
    terminal.wait_for(lambda screen: has_line(screen, "42") and at_repl_prompt(screen), what="answer + 1")
    terminal.keys("C-d")
    terminal.wait_for(at_shell_prompt, what="the shell after Ctrl-D")
    assert terminal.last_status() == 0


@MODES
def test_terminal_size_is_right_at_start_and_after_a_resize(terminal: Terminal, tmp_path: Path, mode: str) -> None:
    (tmp_path / "winch.py").write_text(
        "import os, signal, time\n"
        "got = []\n"
        "signal.signal(signal.SIGWINCH, lambda number, frame: got.append(number))\n"
        "print('before', *os.get_terminal_size(), flush=True)\n"
        "deadline = time.monotonic() + 20\n"
        "while not got and time.monotonic() < deadline:\n    time.sleep(0.01)\n"
        "print('after', *os.get_terminal_size())\n"
    )
    assert terminal.size() == (100, 30)
    terminal.type(mode + "warmfork winch.py")
    terminal.wait_for(lambda screen: re.search(r"^before \d+ \d+$", screen, re.MULTILINE), what="the first size")
    terminal.resize(90, 25)
    screen = terminal.wait_for(at_shell_prompt, what="the end of the run")
    assert has_line(screen, "before 100 30"), screen
    assert has_line(screen, "after 90 25"), screen


@MODES
def test_getpass_reads_the_terminal_without_echo(terminal: Terminal, tmp_path: Path, mode: str) -> None:
    (tmp_path / "secret.py").write_text(
        "import getpass\nsecret = getpass.getpass('Sec' + 'ret: ')\nprint('length', len(secret))\n"
    )
    terminal.type(mode + "warmfork secret.py")
    terminal.wait_for(lambda screen: "Secret:" in screen, what="the password prompt")
    terminal.type("hunter2")
    screen = terminal.wait_for(at_shell_prompt, what="the end of the run")
    assert has_line(screen, "length 7"), screen
    assert "hunter2" not in screen, "the password was echoed"
    assert "GetPassWarning" not in screen
    assert terminal.last_status() == 0
