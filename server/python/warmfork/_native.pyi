"""Type stubs for the compiled ``warmfork._native`` extension."""

from collections.abc import Callable
from os import PathLike
from pathlib import Path
from types import CodeType, FunctionType

def socket_path(name: bytes | None = None) -> Path:
    """The socket path the shared rule picks from this process's environment."""

def prepare_heap(collapse: bool) -> tuple[int, int]:
    """Keep glibc's fast bins empty and, with ``collapse``, move the fully
    resident 2 MiB stretches of large anonymous mappings and of the arenas
    onto huge pages; (bytes moved, ms)."""

def place_arenas() -> None:
    """Put the arenas pymalloc makes from now on side by side, in a region of
    address space of their own, so that ``serve`` can move them onto huge
    pages. Once in a process."""

def immortalize(objects: list[object]) -> int:
    """Make ``objects`` and everything they refer to immortal (Python 3.12
    and later); how many objects changed, 0 before 3.12."""

def fill_pools() -> tuple[int, int, str | None]:
    """Allocate, and keep, every free block of pymalloc's half-used pools, so
    that new objects go to fresh pools; the blocks and bytes kept, and why it
    stopped early, if it did (a block not where a pymalloc pool would hold
    it, for one)."""

def allocator_name() -> str | None:
    """The memory allocators this interpreter runs on, as ``PYTHONMALLOC``
    names them (``pymalloc``, ``pymalloc_debug``, ``malloc``, ...); None when
    CPython does not say (tracemalloc's hooks, say)."""

def pack(functions: list[FunctionType], codes: list[CodeType]) -> tuple[list[CodeType], int, int, bool]:
    """Give each function a copy of its code, and each code object one
    (returned in order), made one after another in a mapping of their own,
    nested code objects included; the copies are kept alive for good. How
    many copies lie in the mapping, the bytes they take, and whether a
    wrapper stays on the object allocator's free and realloc (something
    else took a block of the mapping). Once in a process (RuntimeError
    after)."""

def private_socket_dir(path: PathLike[str] | str) -> None:
    """Make sure the socket's directory is this user's alone (creating its
    last level); OSError says why not."""

def raise_descriptor_limit() -> None:
    """Raise this process's soft limit on open descriptors to its hard one (at most 65536)."""

def set_log_level(level: str) -> None:
    """Set the server log's level: error, warning, info or debug."""

def log(level: str, message: str) -> None:
    """Write one line to the server log if ``level`` is enabled."""

class Listener:
    """A bound, locked, listening socket."""

    def __init__(self, path: str | PathLike[str]) -> None: ...
    @staticmethod
    def inherit(
        fd: int, lock_fd: int | None = None, path: str | PathLike[str] | None = None, owns_file: bool = True
    ) -> Listener:
        """Take over a listening socket passed by systemd socket activation or a server replacing itself."""
    @property
    def path(self) -> Path | None: ...
    def close(self) -> None:
        """Remove the socket (if still ours) and close it."""

def guard_input(reader: object, original: Callable[..., str]) -> None:
    """Make ``input`` ask ``reader`` (a ``TerminalReader``) to begin and end each call of ``original``."""

def input(*args: object, **kwargs: object) -> str:
    """The builtin ``input``, once the client's job is in its terminal's foreground."""

def run_source_file(fd: int, filename: bytes, namespace: dict[str, object], skip_first_line: bool) -> None:
    """Parse the source file open at ``fd`` with CPython's file parser and run it
    in ``namespace``, as python runs a script; ``fd`` is closed once parsed."""

def utf8_mode_settable() -> bool:
    """Whether this interpreter's UTF-8 mode can be changed by ``set_utf8_mode``."""

def set_utf8_mode(on: bool) -> bool:
    """Put the interpreter in UTF-8 mode or out of it (C code and ``sys.flags``); False if it cannot be."""

def set_flags(changes: dict[str, object]) -> None:
    """Make ``sys.flags`` show ``changes`` (field name to value)."""

def set_sys_path_0(path: str | None) -> bool:
    """Make ``path`` the program's ``sys.path[0]`` as CPython 3.13's import errors see it (``config.sys_path_0``); False where there is no such field or it cannot be found safely."""

def refuse_at_shutdown(error: type[BaseException]) -> None:
    """From now on (Python 3.12 and later), a fork or a new thread raises ``error``, as while python shuts down."""

class ModuleNames:
    """The keys of a ``sys.modules`` at one time, by identity."""

    def __init__(self, modules: dict[str, object]) -> None: ...
    def added_to(self, modules: dict[str, object]) -> list[tuple[str, object]]:
        """The entries of ``modules`` whose keys are not among these, in insertion order; reads the others only."""

def serve(
    listener: Listener,
    handler: Callable[[], object],
    *,
    prepare: Callable[[], None],
    run: Callable[[Callable[[], object], list[bytes], list[bytes], int, int, int], int | str],
    pool: int = 4,
    request_timeout: float = 10.0,
    grace: float = 10.0,
    wakeup_fd: int | None = None,
    watch: list[str] = ...,
    restart: list[str] = ...,
    ready_timeout: float = 60.0,
    ready_fd: int | None = None,
    inherited_fds: list[int] = ...,
    changed: str | None = None,
    fill_pools: bool = False,
    huge_pages: bool = False,
    before_fork: Callable[[], object] | None = None,
) -> None:
    """Serve until a signal handler raises; with ``fill_pools``, first fill
    pymalloc's half-used pools (only where it is the object allocator,
    without debug hooks), then, with ``huge_pages``, move onto huge pages
    the 2 MiB stretches that became fully resident since ``prepare_heap``.
    ``before_fork`` is called before each fork of a worker."""
