"""A real terminal for the tests: a private tmux server running an
interactive bash, driven with ``send-keys`` and read with ``capture-pane``.

Each :class:`Terminal` has a tmux server of its own (``tmux -L NAME`` with a
name no other test uses) so tests never see each other's windows, and
:meth:`Terminal.close` kills exactly that server.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import subprocess
import time
from collections.abc import Callable, Mapping
from pathlib import Path

PROMPT = "wf$ "
PROMPT_MARK = PROMPT.rstrip()  # as captured: trailing blanks are dropped
SESSION = "wf"


class Terminal:
    """One tmux window of ``width`` x ``height`` running ``bash`` in ``cwd``."""

    def __init__(self, cwd: Path, env: Mapping[str, str], width: int = 100, height: int = 30) -> None:
        tmux = shutil.which("tmux")
        assert tmux, "tmux is not installed: the terminal tests need it (apt-get install tmux)"
        self.tmux = tmux
        self.name = f"warmfork-test-{os.getpid()}-{secrets.token_hex(4)}"
        shell_env = {**env, "PS1": PROMPT, "HISTFILE": "/dev/null", "TERM": "screen", "HOME": os.fspath(cwd)}
        shell_env.pop("TMUX", None)  # a tmux inside the tests' own tmux would attach to it
        # -f /dev/null: none of the user's tmux configuration; the session's
        # environment is the tmux server's, which is the one given here. The
        # shell is given as argv, not a string: the /bin/sh that would run a
        # string (dash) resets PS1.
        self._tmux(
            "-f", "/dev/null", "new-session", "-d", "-s", SESSION, "-x", str(width), "-y", str(height),
            "-c", os.fspath(cwd), "bash", "--norc", "--noprofile",
            env=shell_env,
        )  # fmt: skip
        try:
            self._tmux("set-option", "-g", "status", "off")
            self._tmux("set-option", "-g", "history-limit", "10000")
            self.wait_for(lambda screen: screen.startswith(PROMPT_MARK), what="the shell's first prompt")
        except BaseException:
            self.close()
            raise

    def _tmux(self, *args: str, env: Mapping[str, str] | None = None) -> str:
        done = subprocess.run(
            [self.tmux, "-L", self.name, *args], env=env, capture_output=True, text=True, timeout=10, check=False
        )
        assert done.returncode == 0, f"tmux {' '.join(args)} failed: {done.stderr}"
        return done.stdout

    def close(self) -> None:
        """Kill this terminal's tmux server (and with it the shell and its jobs)."""
        subprocess.run([self.tmux, "-L", self.name, "kill-server"], capture_output=True, timeout=10, check=False)

    def type(self, text: str, *, enter: bool = True) -> None:
        """Type ``text`` literally, then Enter unless told not to."""
        self._tmux("send-keys", "-t", SESSION, "-l", text)
        if enter:
            self.keys("Enter")

    def keys(self, *names: str) -> None:
        """Press keys by tmux name: ``C-c``, ``C-z``, ``C-d``, ``Enter``."""
        self._tmux("send-keys", "-t", SESSION, *names)

    def screen(self) -> str:
        """Everything the window shows, its scroll-back included, with
        wrapped lines joined and trailing blank lines dropped."""
        captured = self._tmux("capture-pane", "-p", "-J", "-S", "-", "-t", SESSION)
        return "\n".join(line.rstrip() for line in captured.splitlines()).rstrip("\n")

    def size(self) -> tuple[int, int]:
        """The pane's (columns, lines) as tmux sees it."""
        columns, lines = self._tmux("display-message", "-p", "-t", SESSION, "#{pane_width} #{pane_height}").split()
        return int(columns), int(lines)

    def shell_pid(self) -> int:
        """The pid of the shell in the window (``exec`` keeps it)."""
        return int(self._tmux("display-message", "-p", "-t", SESSION, "#{pane_pid}"))

    def pane_tty(self) -> str:
        """The path of the window's terminal device, to look at its modes."""
        return self._tmux("display-message", "-p", "-t", SESSION, "#{pane_tty}").strip()

    def resize(self, width: int, height: int) -> None:
        self._tmux("resize-window", "-t", SESSION, "-x", str(width), "-y", str(height))

    def wait_for(self, condition: Callable[[str], object], *, what: str, timeout: float = 20.0) -> str:
        """Poll the screen until ``condition(screen)`` holds; return that screen."""
        deadline = time.monotonic() + timeout
        while True:
            screen = self.screen()
            if condition(screen):
                return screen
            if time.monotonic() > deadline:
                raise AssertionError(f"waited {timeout}s for {what}; the terminal shows:\n{screen}")
            time.sleep(0.05)

    def wait_for_text(self, text: str, *, timeout: float = 20.0) -> str:
        return self.wait_for(lambda screen: text in screen, what=repr(text), timeout=timeout)

    def prompts(self) -> int:
        """How many shell prompts the window has shown."""
        return count_lines_starting(self.screen(), PROMPT_MARK)

    def run(self, command: str, *, timeout: float = 20.0) -> str:
        """Type a shell command and wait for the prompt after it."""
        before = self.prompts()
        self.type(command)
        return self.wait_for(
            lambda screen: count_lines_starting(screen, PROMPT_MARK) > before and screen.endswith(PROMPT_MARK),
            what=f"the prompt after {command!r}",
            timeout=timeout,
        )

    def last_status(self) -> int:
        """``$?`` of the last command the shell ran."""
        screen = self.run('echo "status=$?"')
        return int(re.findall(r"^status=(\d+)$", screen, re.MULTILINE)[-1])


def count_lines_starting(screen: str, prefix: str) -> int:
    return sum(line.startswith(prefix) for line in screen.splitlines())


def client_terminal(server_env: Mapping[str, str], client_dir: Path, cwd: Path) -> Terminal:
    """A 100x30 window with bash in ``cwd``, where `warmfork` is the client
    in ``client_dir`` and reaches the server ``server_env`` names."""
    env = {**server_env, "PATH": f"{client_dir}{os.pathsep}{os.environ['PATH']}"}
    return Terminal(cwd, {str(k): str(v) for k, v in env.items()}, width=100, height=30)


def at_shell_prompt(screen: str) -> bool:
    return screen.endswith(PROMPT_MARK)


def has_line(screen: str, line: str) -> bool:
    return line in screen.splitlines()


def ticks(screen: str) -> list[int]:
    """The numbers of the ``tick N`` lines a counting program printed."""
    return [int(n) for n in re.findall(r"^tick (\d+)$", screen, re.MULTILINE)]


#: Counts, ignoring SIGTSTP: Ctrl-Z must not stop it.
DEAF_COUNTER = (
    "import signal, time\nsignal.signal(signal.SIGTSTP, signal.SIG_IGN)\n"
    "for i in range(100000):\n    print('tick', i, flush=True)\n    time.sleep(0.2)\n"
)


def assert_ctrl_z_leaves_it_counting(terminal: Terminal, command: str) -> None:
    """Run ``command`` (a counter that ignores SIGTSTP), type Ctrl-Z, and
    check it counts on, never stopped, until Ctrl-C ends it."""
    terminal.type(command)
    terminal.wait_for(lambda screen: len(ticks(screen)) >= 2, what="the counter to count")
    terminal.keys("C-z")
    last = max(ticks(terminal.screen()))
    terminal.wait_for(lambda screen: max(ticks(screen)) >= last + 5, what="the counter to go on after Ctrl-Z")
    assert "Stopped" not in terminal.screen()
    terminal.keys("C-c")
    terminal.wait_for(lambda screen: at_shell_prompt(screen) and "KeyboardInterrupt" in screen, what="the end")

