"""The server's Python side: warm up, then hand the loop to ``_native``."""

from __future__ import annotations

import _tracemalloc
import contextlib
import gc
import importlib
import os
import runpy
import signal
import sys
import time
import traceback
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from . import _codecache, _inherited, _native, _worker, pyoptions
from .errors import ServerError

# LISTEN_FDNAMES of a server handing its socket and lock to a replacement,
# as FD_NAMES and FD_NAMES_SYSTEMD_SOCKET in server/src/handover.rs name
# them: whether the socket file is the old server's (else systemd's).
_HANDOVER_NAMES = {"warmfork:warmfork-lock": True, "systemd:warmfork-lock": False}

#: A fresh server replacing this one after an edit may take this many times
#: as long to warm up as this one took, and at least ``_READY_TIMEOUT_MIN``
#: seconds (caches may be cold after an install), before it is given up on.
_READY_TIMEOUT_FACTOR = 10
_READY_TIMEOUT_MIN = 30.0

#: Seconds runs in progress may go on after the server is told to stop.
DEFAULT_GRACE = 10.0

#: Idle workers kept ready by default: enough for a couple of parallel
#: client loops; each costs little memory (its pages are shared).
DEFAULT_POOL = 4

#: The most idle workers a server keeps: each is a process holding up to
#: 2 MiB of its own and two of the server's descriptors.
MAX_POOL = 1024

#: The longest ``request_timeout`` or ``grace``: a day, far beyond any use,
#: and well within what the server's clock arithmetic holds.
MAX_SECONDS = 86400.0

#: How far a file's change time may lag ``time.time_ns()`` (a kernel tick
#: is at most 10 ms).
_CLOCK_MARGIN_NS = 20_000_000

# The warm-up file's globals: kept alive so what it loaded stays loaded.
_warm_globals: dict[str, object] = {}


class _Stopped(BaseException):
    """Raised by the SIGTERM and SIGHUP handler to leave the serving loop;
    its argument is the signal's name."""


def serve(
    handler: Callable[[], object] | None = None,
    *,
    socket: str | os.PathLike[str] | None = None,
    preload: Iterable[str] = (),
    warmup: str | os.PathLike[str] | None = None,
    request_timeout: float = 10.0,
    pool: int = DEFAULT_POOL,
    grace: float = DEFAULT_GRACE,
    log_level: str = "info",
    on_ready: Callable[[], object] | None = None,
    reload: bool = True,
    immortal: bool = False,
    fill_pools: bool = True,
    pack_code: bool = True,
    huge_pages: bool = True,
    code_cache: bool = True,
) -> None:
    """Serve warmfork clients until SIGTERM (returns) or Ctrl-C (raises
    ``KeyboardInterrupt``).

    ``handler`` is called in a fresh worker for each run, with ``sys.argv``,
    ``os.environ``, the working directory, umask and standard streams set
    from the client; ``sys.argv[0]`` is the client's ``argv[0]``. ``None``
    selects the python-compatible handler (``warmfork script.py`` behaves
    like ``python script.py``). ``preload`` names modules to import and
    ``warmup`` a Python file to run before serving. ``pool`` workers are
    kept forked in advance, ready to run. When told to stop, runs in
    progress get ``grace`` seconds to finish. ``log_level`` is ``error``,
    ``warning``, ``info`` (one line per run) or ``debug``. ``on_ready`` is called
    once the server is warm, just before it starts serving. With ``reload``,
    an edit of any loaded module or of the warm-up file makes the server
    hand its socket to a fresh copy of itself (same command line) before the
    next run, and return once its own runs have finished; if the fresh copy
    fails to warm up (say the edit broke a module), this server says why in
    its log and serves on, and tries again at the next change. With
    ``immortal`` (CPython 3.12 and 3.13), every object the server holds when
    it starts serving, but for those with a finalizer, is made immortal, so
    that runs do not copy its pages to count references to it (a quarter
    less CPU a run); such an object is never freed, in runs and in the
    caller after ``serve`` returns, and ``sys.getrefcount`` says so.
    ``warmfork-server`` passes it unless told ``--no-immortal``. With
    ``fill_pools``, the free blocks of pymalloc's half-used pools are taken
    (and kept, after ``serve`` returns too) just before serving, so that
    runs put their new objects on fresh pages rather than copy the
    server's. With ``pack_code``, the functions a run goes through in
    warmfork's own modules get copies of their code packed onto a few pages
    of their own before warm-up ends, so that the interpreter's writes into
    their bytecode copy few pages in each run. With ``huge_pages``,
    pymalloc's arenas made from the start of ``serve`` on are kept side by
    side, and the fully used 2 MiB stretches of the warm heap are moved
    onto huge pages before serving, so that forking a big heap stays cheap.
    With ``code_cache`` (and the python-compatible handler), the server
    compiles the ``-c`` commands and scripts its workers ran twice and
    keeps their code, so that later runs of the same program skip
    compiling it.
    ``socket`` defaults to
    the path both sides derive from ``WARMFORK_SOCKET``,
    ``XDG_RUNTIME_DIR`` or ``/tmp/warmfork-UID``.
    """
    # Checked before the socket is bound, so a bad value never leaves a
    # server that says it serves and then exits.
    _check_arguments(handler, socket, warmup, request_timeout, pool, grace, on_ready)
    preload = _module_names(preload)
    _check_main_thread()
    try:
        _native.set_log_level(log_level)
    except ValueError as exc:
        raise ServerError(str(exc)) from None
    _open_standard_descriptors()
    # First, so that a warm-up started under a low `ulimit -n` (by a client
    # that had one, say) has room for its imports.
    _native.raise_descriptor_limit()
    started = time.monotonic()
    # For the files' change times, which the kernel takes from a clock that
    # lags this one by up to a tick: without the margin, an edit made just
    # after this point could look older. A server replacing another starts
    # at least 0.25 s after the edit that started it, so the margin never
    # makes it replace itself for that one.
    started_at = time.time_ns() - _CLOCK_MARGIN_NS
    activated = _activation_fds()
    ready_fd = _ready_fd()
    inherited = _inherited_fds(activated[:2] if activated else ())
    try:
        if activated is None:
            path = Path(socket) if socket is not None else _native.socket_path()
            listener = _native.Listener(path)
        elif activated[1] is not None and activated[2]:
            # A server replacing itself: the same command line names the path.
            path = Path(socket) if socket is not None else _native.socket_path()
            listener = _native.Listener.inherit(activated[0], activated[1], path)
        elif activated[1] is not None:
            # Replacing a server systemd started: the socket's own address
            # is its path (whatever the command line says), and it stays
            # systemd's.
            listener = _native.Listener.inherit(activated[0], activated[1], owns_file=False)
            path = listener.path or Path("?")
        else:
            listener = _native.Listener.inherit(activated[0])
            path = listener.path or Path("?")
    except OSError as exc:
        raise ServerError(str(exc)) from None
    # From here on SIGTERM stops the server cleanly, warm-up included, and
    # so does SIGHUP (the terminal of a server started there closing), unless
    # the server was started to ignore it (`nohup`).
    previous = {signum: signal.signal(signum, _stop) for signum in _STOP_SIGNALS if not _ignored(signum)}
    # A server started with SIGCHLD ignored (by a parent that ignores it,
    # which exec keeps) would have its workers reaped by the kernel, never
    # learn how they ended, and spin on their pidfds: the default it needs.
    if _ignored(signal.SIGCHLD):
        previous[signal.SIGCHLD] = signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    # Python's signal handler writes to this pipe, so a signal wakes the
    # serving loop whenever it arrives, not only while it waits in poll.
    wakeup_read, wakeup_write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    previous_wakeup = signal.set_wakeup_fd(wakeup_write, warn_on_full_buffer=False)
    try:
        _prepare(handler, preload, warmup, pack_code=pack_code, huge_pages=huge_pages)
        _log(f"serving on {path} (pid {os.getpid()})")
        _warn_of_another_socket(path)
        if on_ready is not None:
            on_ready()
            _check_single_thread("on_ready")
        _worker.forget_relative_finders()
        _worker.note_server_modules()
        _inherited.note_server_state()
        watched = _watched_files(warmup) if reload else []
        changed = _changed_since(watched, started_at)
        still_inherited = [fd for fd, identity in inherited.items() if _identity(fd) == identity]
        # Before the objects are made immortal, so that what it calls before
        # every fork does not count references to its own.
        _codecache.keep_compiled(handler is None and bool(code_cache))
        # What was made since the warm-up's freeze (by `on_ready`, the module
        # list) is frozen too: a worker collects garbage at exit, and every
        # object the collector looks at is a page the worker copies.
        if immortal:
            _immortalize()
        gc.freeze()
        unfillable = _pools_unfillable() if fill_pools else "told not to"
        if unfillable:
            _log(f"leaving the allocator's pools as they are: {unfillable}")
        report_on, ready_fd = ready_fd, None  # _native.serve owns it from here
        _native.serve(
            listener,
            handler or _default_handler(),
            prepare=_worker.prepare,
            run=_worker.run,
            pool=pool,
            request_timeout=request_timeout,
            grace=grace,
            wakeup_fd=wakeup_read,
            watch=watched,
            changed=changed,
            restart=_restart_command(),
            ready_timeout=max(_READY_TIMEOUT_MIN, _READY_TIMEOUT_FACTOR * (time.monotonic() - started)),
            ready_fd=report_on,
            inherited_fds=still_inherited,
            fill_pools=unfillable is None,
            huge_pages=bool(huge_pages),
            before_fork=_codecache.take_left_sources if _codecache.keeping() else None,
        )
    except _Stopped as stop:
        _log(f"stopped by {stop.args[0]}")
    finally:
        _codecache.keep_compiled(False)
        signal.set_wakeup_fd(previous_wakeup)
        for signum, disposition in previous.items():
            signal.signal(signum, disposition)
        os.close(wakeup_read)
        os.close(wakeup_write)
        if ready_fd is not None:
            # Never reported ready: the server that started this one serves on.
            os.close(ready_fd)
        listener.close()


def _check_arguments(
    handler: object,
    socket: object,
    warmup: object,
    request_timeout: object,
    pool: object,
    grace: object,
    on_ready: object,
) -> None:
    """Refuse, with a :class:`ServerError` that names it, an argument of
    :func:`serve` that is of the wrong kind or out of range."""
    for name, function in (("handler", handler), ("on_ready", on_ready)):
        if function is not None and not callable(function):
            raise ServerError(f"{name} must be callable or None, not {function!r}")
    for name, path in (("socket", socket), ("warmup", warmup)):
        if path is not None and not isinstance(path, (str, os.PathLike)):
            raise ServerError(f"{name} must be a path or None, not {path!r}")
    if isinstance(pool, bool) or not isinstance(pool, int) or not 0 <= pool <= MAX_POOL:
        raise ServerError(f"the pool size must be a whole number from 0 to {MAX_POOL}, not {pool!r}")
    for name, value in (("request_timeout", request_timeout), ("grace", grace)):
        number = not isinstance(value, bool) and isinstance(value, (int, float))
        if not number or not 0 <= value <= MAX_SECONDS:  # type: ignore[operator]  # False for NaN too
            raise ServerError(f"{name} must be 0 to {MAX_SECONDS:g} seconds, not {value!r}")
    if request_timeout == 0:  # no client could ever send its request in time
        raise ServerError(f"request_timeout must be more than 0 and at most {MAX_SECONDS:g} seconds, not 0")


def _module_names(preload: object) -> list[str]:
    """``preload`` as a list, if it is a collection of module names."""
    names = None
    if not isinstance(preload, (str, bytes)):
        with contextlib.suppress(TypeError):
            names = list(preload)  # type: ignore[call-overload]
    if names is None or not all(isinstance(name, str) for name in names):
        raise ServerError(f"preload must be a list of module names, not {preload!r}")
    return names


def _check_main_thread() -> None:
    """The server handles signals, which Python delivers to the main thread
    alone: refuse to start elsewhere rather than fail once the socket is bound."""
    try:
        previous = signal.set_wakeup_fd(-1)
    except ValueError:
        raise ServerError("serve() must be called from the main thread, which signals reach") from None
    if previous != -1:
        signal.set_wakeup_fd(previous)


def _open_standard_descriptors() -> None:
    """Put ``/dev/null`` on each of descriptors 0, 1 and 2 that is closed, as
    daemons do: the server's next file (its lock file) would otherwise take
    the number and get its log lines."""
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            opened = os.open(os.devnull, os.O_RDWR)  # the lowest free number: fd
            if opened != fd:
                os.close(opened)


def _prepare(
    handler: Callable[[], object] | None,
    preload: Iterable[str],
    warmup: str | os.PathLike[str] | None,
    *,
    pack_code: bool = True,
    huge_pages: bool = True,
) -> None:
    """Warm up, then make the interpreter ready to be forked."""
    if huge_pages:
        # Before the warm-up, which makes most of the arenas.
        _native.place_arenas()
    with _staying_in_the_working_directory(), _worker.noting_warm_up_imports():
        _warm_up(preload, warmup)
    if handler is None:
        _default_handler()
        _forget_script_dir()
    # Once the run path's modules are loaded, and before the rehearsal,
    # which specialises the copies' bytecode.
    _pack_code(pack_code)
    if handler is None:
        from .pymain import rehearse

        rehearse()
    # Whether runs can have a UTF-8 mode of their own, found out once here
    # rather than in every worker.
    pyoptions.utf8_mode_per_run()
    _check_single_thread()
    # Anything still buffered in the server's streams would otherwise be
    # flushed by a worker, into a client's output.
    for stream in (sys.stdout, sys.stderr):
        if stream is not None:
            stream.flush()
    # Objects made during warm-up are never freed in workers; keeping the
    # collector off them keeps their pages shared.
    gc.collect()
    gc.freeze()
    moved, millis = _native.prepare_heap(bool(huge_pages))
    if moved:
        _log(f"moved {moved >> 20} MiB of the warm heap onto huge pages in {millis} ms, to keep forks fast")
    elif not huge_pages:
        _log("leaving the warm heap on small pages: told not to")


def _immortalize() -> None:
    """Make every object the server holds immortal (see ``immortal.rs``)."""
    # gc.get_objects() leaves out what gc.freeze() put aside: the warm-up's.
    gc.unfreeze()
    begun = time.monotonic()
    changed = _native.immortalize(gc.get_objects())
    if changed:
        _log(f"made {changed} warm objects immortal in {(time.monotonic() - begun) * 1000:.0f} ms")


def _pack_code(wanted: bool) -> None:
    """Pack the code of a run's path (see ``codepack.rs``), saying in the
    log what was done, or why not. Packed code stays packed: a second
    ``serve`` in the process says what the first packing did."""
    from . import _codepack

    if _codepack.packed():  # by an earlier `serve` in this process
        unpackable = None
    else:
        unpackable = _code_unpackable() if wanted else "told not to"
    if unpackable is None:
        try:
            packed = _codepack.pack()
        except Exception as exc:  # noqa: BLE001 - no memory for the mapping, say: runs copy more pages, no more
            unpackable = str(exc)
        else:
            wrapped = "; other objects took blocks too, so the allocator's free and realloc stay wrapped"
            _log(
                f"packed the {packed.code_objects} code objects of a run's path into {packed.size >> 10} KiB, "
                f"so that runs write few pages of code{wrapped if packed.wrapped else ''}"
            )
            return
    _log(f"leaving the code of a run's path where it is: {unpackable}")


def _code_unpackable() -> str | None:
    """Why the code of a run's path cannot be packed (see ``codepack.rs``),
    or None. The allocator must be the one the pools' filling knows, with no
    hooks on it: tracemalloc's, which a run's ``-X tracemalloc`` handling
    takes off, or anyone else's, would take the packing's off with them."""
    if _tracemalloc.is_tracing():
        return "tracemalloc traces the allocations"
    if reason := _pools_unfillable():
        return reason
    # Hooks installed since start-up (a profiler's) would lie under the
    # wrapper, and their owner may take them off with it.
    if (current := _native.allocator_name()) != "pymalloc":
        return f"CPython names the allocator {current or 'nothing it knows'} now, not pymalloc"
    return None


def _pools_unfillable() -> str | None:
    """Why the allocator's half-used pools cannot be filled before serving
    (see ``pools.rs``), or None: only pymalloc's pools, without debug hooks,
    are known, so not under ``PYTHONMALLOC=malloc``, ``mimalloc`` or
    ``debug``, ``-X dev``, a debug or free-threaded build."""
    if sys.implementation.name != "cpython":
        return f"{sys.implementation.name} is not CPython"
    if pyoptions.SERVER_ALLOCATOR != "pymalloc":
        return f"the allocator is {pyoptions.SERVER_ALLOCATOR}, not pymalloc"
    if sys.getallocatedblocks() == 0:  # a build without pymalloc
        return "pymalloc counts no blocks"
    return None


def _default_handler() -> Callable[[], object]:
    """The python-compatible handler (imported here, in the server, so that
    workers find it loaded)."""
    from .pymain import main

    return main


def _activation_fds() -> tuple[int, int | None, bool] | None:
    """The listening socket passed to this process, if any, the lock that
    goes with it, and whether the socket file is warmfork's: descriptor 3
    when ``LISTEN_PID`` is this process and ``LISTEN_FDS`` is at least 1
    (systemd socket activation, whose file is systemd's), and descriptor 4
    too when a server replacing itself hands over its lock as well
    (``LISTEN_FDNAMES`` one of :data:`_HANDOVER_NAMES`). The variables are
    removed so that nothing started later takes them for its own."""
    pid = os.environ.pop("LISTEN_PID", None)
    count = os.environ.pop("LISTEN_FDS", None)
    names = os.environ.pop("LISTEN_FDNAMES", None)
    if pid != str(os.getpid()) or not count or not count.isdigit() or int(count) < 1:
        return None
    if count == "2" and names in _HANDOVER_NAMES:
        return (3, 4, _HANDOVER_NAMES[names])
    return (3, None, False)


def _ready_fd() -> int | None:
    """The descriptor on which a server started to replace another reports
    that it is ready (``WARMFORK_READY_FD``; see server/src/handover.rs). The
    variable is removed and the descriptor kept from anything this process
    starts, so that only this server can report."""
    value = os.environ.pop("WARMFORK_READY_FD", None)
    if value is None or not value.isdigit():
        return None
    fd = int(value)
    try:
        os.set_inheritable(fd, False)
    except OSError:
        return None
    return fd


def _inherited_fds(activated: Iterable[int | None]) -> dict[int, tuple[int, int]]:
    """The descriptors beyond 0, 1 and 2 this process was started with,
    other than the ones handed to it to serve on, each with the identity
    of its file: workers close them, since a program started by the client
    would not have them (it has the client's). Called before the warm-up,
    whose descriptors (a log file, a database connection) stay the
    program's.

    A descriptor that came through ``exec`` is inheritable: python opens
    its own with ``O_CLOEXEC``, so those it or the code that called
    :func:`serve` opened (warm state too) are not counted."""
    skip = set(activated)
    try:
        names = os.listdir("/proc/self/fd")
    except OSError:
        return {}
    found = {}
    for name in names:
        fd = int(name)
        if fd < 3 or fd in skip:
            continue
        identity = _identity(fd)
        # None: the listing's own descriptor, closed by now.
        if identity is not None and os.get_inheritable(fd):
            found[fd] = identity
    return found


def _identity(fd: int) -> tuple[int, int] | None:
    """The device and inode of descriptor ``fd``'s file, ``None`` if it is
    closed: a number closed and reused since is not the same descriptor."""
    try:
        st = os.fstat(fd)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


def _watched_files(warmup: str | os.PathLike[str] | None) -> list[str]:
    """The files of every module loaded so far, and the warm-up file: when
    one changes, the server replaces itself so no run sees stale code.

    Each file is watched where its content is (its real path, so that an
    edit through any link is seen), and so is every symbolic link on the
    way to it: a deploy that points ``current`` at another release changes
    no file, only a link."""
    named = [os.fspath(warmup)] if warmup is not None else []
    for module in list(sys.modules.values()):
        file = getattr(module, "__file__", None)
        if isinstance(file, str) and os.path.isfile(file):
            named.append(file)
    files: set[str] = set()
    is_link: dict[str, bool] = {}
    for file in named:
        files.add(os.path.realpath(file))
        files.update(_links_on_the_way(os.path.abspath(file), is_link))
    return sorted(files)


def _links_on_the_way(path: str, is_link: dict[str, bool]) -> list[str]:
    """The symbolic links among ``path`` and the directories above it;
    ``is_link`` caches what each directory is."""
    links = []
    while path not in ("/", ""):
        if path not in is_link:
            is_link[path] = os.path.islink(path)
        if is_link[path]:
            links.append(path)
        path = os.path.dirname(path)
    return links


def _changed_since(files: list[str], since_ns: int) -> str | None:
    """The first of ``files`` changed (or gone) since ``since_ns``: an edit
    made while this server warmed up, which the code it loaded may predate.
    The inode's change time, not only the modification time: a file moved
    into place (`mv`, `cp -p`, an archive) keeps an old modification time,
    but its change time is that of the move."""
    for file in files:
        try:
            st = os.lstat(file)
            if max(st.st_mtime_ns, st.st_ctime_ns) > since_ns:
                return file
        except OSError:
            return file
    return None


def _restart_command() -> list[str]:
    """This server's own command line, to start a replacement with (without
    ``--daemon``: the replacement is already detached)."""
    return [sys.executable, *(arg for arg in sys.orig_argv[1:] if arg != "--daemon")]


def _warm_up(preload: Iterable[str], warmup: str | os.PathLike[str] | None) -> None:
    for name in preload:
        try:
            importlib.import_module(name)
        except ImportError as exc:
            raise ServerError(f"cannot preload {name}: {exc}") from exc
        except (Exception, SystemExit) as exc:
            raise ServerError(f"cannot preload {name}: {_failure(exc)}") from exc
    if warmup is not None:
        file = os.fspath(warmup)
        if not os.path.isfile(file):
            why = "it is a directory" if os.path.isdir(file) else "no such file"
            raise ServerError(f"cannot run the warm-up file {file!r}: {why}")
        try:
            _warm_globals.update(runpy.run_path(file, run_name="__warmup__"))
        except (Exception, SystemExit) as exc:
            raise ServerError(f"the warm-up file {file!r} failed: {_failure(exc)}") from exc


def _failure(exc: BaseException) -> str:
    """One line on why the warm-up failed: the exception and where it was
    raised. The whole traceback goes to the log at level debug."""
    _native.log("debug", "".join(traceback.format_exception(exc)).rstrip())
    if isinstance(exc, SystemExit):
        return f"it called sys.exit({exc.code!r}); the warm-up must not exit"
    if isinstance(exc, SyntaxError):
        return f"SyntaxError: {exc.msg} ({exc.filename}, line {exc.lineno})"
    frames = traceback.extract_tb(exc.__traceback__)
    where = f" ({frames[-1].filename}, line {frames[-1].lineno})" if frames else ""
    return f"{traceback.format_exception_only(exc)[-1].strip()}{where}; --log-level debug shows the traceback"


@contextlib.contextmanager
def _staying_in_the_working_directory() -> Iterator[None]:
    """Go back to the server's working directory after the warm-up, should
    it have changed it. Runs do not care (a worker moves into its client's),
    but the server does: it looks up a relative ``--socket`` path again
    while it serves (to notice the socket gone) and to remove it, and a
    fresh server replacing it after an edit starts with the same command
    line, relative paths and all, in this server's working directory."""
    try:
        here = os.open(".", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:  # started in a directory already gone: nothing to keep
        yield
        return
    try:
        yield
    finally:
        # Also when the warm-up fails or is stopped: the socket file is
        # removed by its path on the way out.
        os.fchdir(here)
        os.close(here)


def _forget_script_dir() -> None:
    """Drop the entry python put first on ``sys.path`` for the server itself
    (its script's directory, or its working directory); the handler puts the
    client program's own there instead."""
    if not sys.flags.safe_path and sys.path:
        del sys.path[0]


def _check_single_thread(culprit: str = "the warm-up") -> None:
    """A forked worker has only the thread that forked it; refuse to serve
    if the warm-up (or ``culprit``) left Python threads running, which
    workers would lack."""
    # Threads are only ever started through `threading` once it is imported;
    # importing it here would give every worker its after-fork hook to run.
    threading = sys.modules.get("threading")
    others = [] if threading is None else [t.name for t in threading.enumerate() if t is not threading.current_thread()]
    if others:
        raise ServerError(
            f"{culprit} left {len(others)} thread(s) running ({', '.join(others)}); "
            "a forked worker would not have them. Stop them before serving."
        )
    native = _native_thread_count()
    if native > 1:
        _log(
            f"note: {native - 1} native thread(s) exist (started by C extensions such as OpenBLAS); "
            "workers get only the main thread and rely on those libraries' fork handlers"
        )


def _native_thread_count() -> int:
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return 1


_STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


def _warn_of_another_socket(path: Path) -> None:
    """Say so when ``WARMFORK_SOCKET`` names another socket than the one
    served: the clients of this environment look there, and a client that
    started this server (``WARMFORK_SERVER``) waits there in vain."""
    wanted = os.environ.get("WARMFORK_SOCKET")
    if wanted and os.path.abspath(wanted) != os.path.abspath(path):
        _native.log(
            "warning",
            f"WARMFORK_SOCKET names {wanted}, where clients with this environment look for a server; "
            f"this one serves {path}",
        )


def _ignored(signum: int) -> bool:
    return signal.getsignal(signum) == signal.SIG_IGN


def _stop(signum: int, frame: object) -> None:
    raise _Stopped(signal.Signals(signum).name)


def _log(message: str) -> None:
    _native.log("info", message)
