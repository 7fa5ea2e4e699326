"""Compiled ``-c`` commands and scripts, kept by the server for the workers
it forks.

Compiling is a worker's own cost, paid again in every run: for a one-liner
about as much as the rest of the run's Python, for a script of a few
hundred lines more than all the rest. Shell loops run the same program
again and again, so a worker that had to compile leaves the source in a
slot of memory shared with the server; before its next fork the server
(its loop calls :func:`take_left_sources`) compiles a source left there
the second time and keeps the code, which
every worker forked from then on finds here. (A command seen once may
never come again: a loop that runs `-c "print($i)"` would have the server
compile every run's command for nothing.) The server compiles one source
a fork at most, so a slow one delays one fork, not all.

A script's code is looked up by its name and its whole text, read afresh
by every run, so an edit is seen at once. Only scripts whose text both of
CPython's parsers read alike are kept: UTF-8 throughout, with no null
byte, byte-order mark or coding cookie, and no backslash continuing the
last line (python reads a script with its file parser, which words and
places errors differently from ``compile()`` and rejects bytes that are
not UTF-8 even in a comment). A worker leaves a script only once the file
parser has read it, so a text that crashes the parser never reaches the
server's.

Only the text crosses from a worker to the server, never code: the server
compiles what it reads, so a slot torn by two writers, or written by a
program, is at worst a source that does not compile, and is dropped. A
program whose compiling warns (``SyntaxWarning``) is never kept: python
shows the warning at every run, and a worker that did not compile would
not. A run that finds its code here still raises the ``compile`` audit
event, with python's arguments. The compile flags are the server's own
in every worker (a run that asks for others is refused, see
``pyoptions.startup_conflict``) but for the limit on an integer literal's
digits (``-X int_max_str_digits``), which a run may lower: the server
compiles under the lowest limit there is, so what it keeps compiles
under any.
"""

from __future__ import annotations

import mmap
import os
import re
import sys
import types
import warnings

#: Most programs kept; the oldest goes first.
MAX_KEPT = 256

#: Sources seen remembered (by hash), for their second time.
MAX_SEEN = 1024

#: Slots workers leave sources in, chosen by pid: two workers write the
#: same slot at once only if their pids collide modulo this.
SLOTS = 64

# A slot: the length of what follows the header (4 bytes), its hash (8
# bytes), then a kind byte and the source; for a script, the name's length
# (4 bytes) and its name before the source. Before the slots, a page whose
# first byte a worker sets once it has left a source. A short command
# takes one page of its slot.
_SLOT = 64 * 1024
_HEADER = 12
_PENDING = 0
_FIRST_SLOT = 4096
_COMMAND = b"c"
_SCRIPT = b"s"

#: Longest script kept, in bytes (with its name, it must fit in a slot).
MAX_LENGTH = _SLOT - _HEADER - 5 - 4096

#: Most bytes of source kept, all programs together.
MAX_KEPT_BYTES = 8 << 20

# PEP 263's coding declaration, on one of a script's first two lines.
_COOKIE = re.compile(rb"[ \t\f]*#.*?coding[:=]")
# What both of CPython's parsers take for the end of a line.
_LINE_END = re.compile(rb"\r\n|\r|\n")

_codes: dict[str | tuple[str, bytes], types.CodeType] = {}
_kept_bytes = 0
# Hashes of sources seen once (False) or compiled already (True).
_seen: dict[bytes, bool] = {}
_shared: mmap.mmap | None = None
_server_pid = 0
_enabled = False


def keep_compiled(enabled: bool = True) -> None:
    """Keep (or stop keeping) the programs workers compile: the server's
    side, before its first fork."""
    global _shared, _server_pid, _enabled
    _enabled = enabled
    if _shared is not None or not enabled:
        return
    # Anonymous and shared: every worker forked from here on writes into
    # the server's copy.
    _shared = mmap.mmap(-1, _FIRST_SLOT + SLOTS * _SLOT)
    _server_pid = os.getpid()


def keeping() -> bool:
    """Whether this process (a server, or a worker forked from one) keeps
    compiled programs."""
    return _enabled


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


def script_code(filename: str, source: bytes) -> types.CodeType | None:
    """The code of the script ``filename`` whose text is ``source``, if the
    server keeps it; as python's file parser and compiler make it."""
    code = _codes.get((filename, source)) if _enabled else None
    if code is not None:
        sys.audit("compile", None, filename)
    return code


def keepable_script(source: bytes) -> bool:
    """Whether a script of text ``source`` may be kept (see above)."""
    if len(source) > MAX_LENGTH or b"\0" in source or source.startswith(b"\xef\xbb\xbf"):
        return False
    if any(_COOKIE.match(line) for line in _LINE_END.split(source, maxsplit=2)[:2]):
        return False
    # A line continued at the very end: CPython 3.11's compile() adds a
    # blank line after a final CRLF, and runs what its file parser refuses.
    if source.rstrip(b"\r\n").endswith(b"\\"):
        return False
    try:
        source.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def leave_script(filename: str, source: bytes) -> None:
    """Leave the script ``filename`` of text ``source`` for the server to
    compile, if it may be kept. (Only a script not found here is checked:
    what is found passed the check in the server.)"""
    if keepable_script(source):
        name = filename.encode("utf-8", "surrogatepass")
        _write(_SCRIPT + len(name).to_bytes(4, "little") + name + source)


def _leave(command: str) -> None:
    """Leave ``command`` for the server to compile."""
    try:
        text = command.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates: python refuses to run it anyway
        return
    _write(_COMMAND + text)


def _write(text: bytes) -> None:
    """Write ``text`` into this worker's slot, for the server."""
    pid = os.getpid()
    if _shared is None or not _enabled or len(text) > _SLOT - _HEADER or pid == _server_pid:
        return
    at = _FIRST_SLOT + pid % SLOTS * _SLOT
    _shared[at + _HEADER : at + _HEADER + len(text)] = text
    _shared[at : at + _HEADER] = len(text).to_bytes(4, "little") + _digest(text)
    _shared[_PENDING] = 1


def take_left_sources() -> None:
    """Compile and keep a source workers left: the server's loop calls this
    before each fork, so that the new worker has it. (Not a fork hook: a
    signal handled in one raises the server's stop where CPython drops
    it.) Raises only what a signal handler raises."""
    shared = _shared
    if shared is None or not _enabled or shared[_PENDING] == 0:
        return
    shared[_PENDING] = 0
    for slot in range(SLOTS):
        at = _FIRST_SLOT + slot * _SLOT
        length = int.from_bytes(shared[at : at + 4], "little")
        if length == 0:
            continue
        text = shared[at + _HEADER : at + _HEADER + min(length, _SLOT - _HEADER)]
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
    """Compile the command or script ``text`` (as a worker wrote it) and
    keep its code, unless it does not compile, or warns."""
    global _kept_bytes
    limit = sys.get_int_max_str_digits()
    try:
        key, source, filename = _parse(text)
        if key in _codes:
            return
        sys.set_int_max_str_digits(sys.int_info.str_digits_check_threshold)
        with warnings.catch_warnings(record=True) as warned:
            warnings.simplefilter("always")
            code = compile(source, filename, "exec", dont_inherit=True)
    except Exception:  # noqa: BLE001 - not kept, whatever failed: the worker compiles it
        return
    finally:
        sys.set_int_max_str_digits(limit)
    if warned:
        return
    _codes[key] = code
    _kept_bytes += len(source)
    while len(_codes) > MAX_KEPT or _kept_bytes > MAX_KEPT_BYTES:
        oldest = next(iter(_codes))
        del _codes[oldest]
        _kept_bytes -= len(oldest if isinstance(oldest, str) else oldest[1])


def _parse(text: bytes) -> tuple[str | tuple[str, bytes], str | bytes, str]:
    """The key, source and file name of what a worker wrote; ValueError if
    it is neither a command nor a script that may be kept."""
    kind, rest = text[:1], text[1:]
    if kind == _COMMAND:
        command = rest.decode("utf-8")
        return command, command, "<string>"
    if kind == _SCRIPT:
        length = int.from_bytes(rest[:4], "little")
        filename = rest[4 : 4 + length].decode("utf-8", "surrogatepass")
        source = rest[4 + length :]
        if keepable_script(source):
            return (filename, source), source, filename
    raise ValueError("not a source to keep")


def _digest(text: bytes) -> bytes:
    # The server's hash: its workers share its hash seed.
    return (hash(text) & 0xFFFF_FFFF_FFFF_FFFF).to_bytes(8, "little")
