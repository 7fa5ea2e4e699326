"""Compiled ``-c`` commands, kept by the server for the workers it forks.

Compiling a command is a worker's own cost, paid again in every run: for a
one-liner about as much as the rest of the run's Python. Scripts run in a
shell loop repeat the same one-liner, so a worker that had to compile its
command leaves the command's text in a slot of memory shared with the
server; before its next fork the server compiles a command left there the
second time and keeps the code, which every worker forked from then on
finds here. (A command seen once may never come again: a loop that runs
`-c "print($i)"` would have the server compile every run's command for
nothing.) The server compiles one command a fork at most, so a slow one
delays one fork, not all.

Only the text crosses from a worker to the server, never code: the server
compiles what it reads, so a slot torn by two writers, or written by a
program, is at worst a command that does not compile, and is dropped. A
command whose compiling warns (``SyntaxWarning``) is never kept: python
shows the warning at every run, and a worker that did not compile would
not. A command found here still raises the ``compile`` audit event. The
compile flags are the server's own in every worker (a run that asks for
others is refused, see ``pyoptions.startup_conflict``) but for the limit
on an integer literal's digits (``-X int_max_str_digits``), which a run
may lower: the server compiles under the lowest limit there is, so what
it keeps compiles under any.
"""

from __future__ import annotations

import mmap
import os
import sys
import types
import warnings

#: Most commands kept; the oldest goes first.
MAX_COMMANDS = 256

#: Commands seen remembered (by hash), for their second time.
MAX_SEEN = 1024

#: Slots workers leave commands in, chosen by pid: two workers write the
#: same slot at once only if their pids collide modulo this.
SLOTS = 64

# A slot is a page: the command's length (4 bytes), its hash (8 bytes),
# its text. Before the slots, a page whose first byte a worker sets once
# it has left a command.
_SLOT = 4096
_HEADER = 12
_PENDING = 0
_FIRST_SLOT = _SLOT

#: Longest command kept, in bytes of UTF-8.
MAX_LENGTH = _SLOT - _HEADER

_codes: dict[str, types.CodeType] = {}
# Hashes of commands seen once (False) or compiled already (True).
_seen: dict[bytes, bool] = {}
_shared: mmap.mmap | None = None
_server_pid = 0
_enabled = False


def keep_commands(enabled: bool = True) -> None:
    """Keep (or stop keeping) the commands workers compile: the server's
    side, before its first fork."""
    global _shared, _server_pid, _enabled
    _enabled = enabled
    if _shared is not None or not enabled:
        return
    # Anonymous and shared: every worker forked from here on writes into
    # the server's copy.
    _shared = mmap.mmap(-1, _FIRST_SLOT + SLOTS * _SLOT)
    _server_pid = os.getpid()
    os.register_at_fork(before=_take_left_commands)


def compile_command(command: str) -> types.CodeType:
    """The code of ``command``, as ``compile(command, "<string>", "exec",
    dont_inherit=True)`` makes it: kept by the server, or compiled now (and
    then left for the server to keep)."""
    code = _codes.get(command) if _enabled else None
    if code is not None:
        # The event compiling raises, with the same arguments (CPython
        # passes the source as UTF-8 bytes), so an audit hook of the
        # server's (sitecustomize's, say) sees it, and may refuse it.
        sys.audit("compile", command.encode(), "<string>")
        return code
    code = compile(command, "<string>", "exec", dont_inherit=True)
    _leave(command)
    return code


def _leave(command: str) -> None:
    """Write ``command`` into this worker's slot for the server to compile."""
    if _shared is None or not _enabled or os.getpid() == _server_pid:
        return
    try:
        text = command.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates: python refuses to run it anyway
        return
    if len(text) > MAX_LENGTH:
        return
    at = _FIRST_SLOT + os.getpid() % SLOTS * _SLOT
    _shared[at + _HEADER : at + _HEADER + len(text)] = text
    _shared[at : at + _HEADER] = len(text).to_bytes(4, "little") + _digest(text)
    _shared[_PENDING] = 1


def _take_left_commands() -> None:
    """Compile and keep a command workers left (before each of the
    server's forks, so that the new worker has it)."""
    shared = _shared
    if shared is None or not _enabled or shared[_PENDING] == 0 or os.getpid() != _server_pid:
        return
    shared[_PENDING] = 0
    for slot in range(SLOTS):
        at = _FIRST_SLOT + slot * _SLOT
        length = int.from_bytes(shared[at : at + 4], "little")
        if length == 0:
            continue
        text = shared[at + _HEADER : at + _HEADER + min(length, MAX_LENGTH)]
        digest = shared[at + 4 : at + _HEADER]
        shared[at : at + 4] = bytes(4)
        if digest != _digest(text):
            continue
        compiled = _seen.get(digest)
        if compiled is None:
            if len(_seen) >= MAX_SEEN:
                del _seen[next(iter(_seen))]
            _seen[digest] = False
        elif not compiled:
            _seen[digest] = True
            _keep(text)
            # The rest wait for the next fork.
            shared[_PENDING] = 1
            return


def _keep(text: bytes) -> None:
    """Compile the command ``text`` and keep its code, unless it does not
    compile, or warns."""
    limit = sys.get_int_max_str_digits()
    try:
        command = text.decode("utf-8")
        if command in _codes:
            return
        sys.set_int_max_str_digits(sys.int_info.str_digits_check_threshold)
        with warnings.catch_warnings(record=True) as warned:
            warnings.simplefilter("always")
            code = compile(command, "<string>", "exec", dont_inherit=True)
    except Exception:  # noqa: BLE001 - not kept, whatever failed: the worker compiles it
        return
    finally:
        sys.set_int_max_str_digits(limit)
    if warned:
        return
    if len(_codes) >= MAX_COMMANDS:
        del _codes[next(iter(_codes))]
    _codes[command] = code


def _digest(text: bytes) -> bytes:
    # The server's hash: its workers share its hash seed.
    return (hash(text) & 0xFFFF_FFFF_FFFF_FFFF).to_bytes(8, "little")
