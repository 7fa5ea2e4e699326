"""The Python half of a worker: from a forked copy of the warm server to an
exit status.

A worker is forked ahead of time and calls :func:`prepare` while it waits in
the pool. When it is handed a request, the Rust half (``server/src/worker.rs``)
installs the client's descriptors as 0, 1 and 2 and changes into the client's
working directory; then :func:`run` makes the interpreter look like a fresh
``python`` started by the client (umask, environment, ``sys.argv``, standard
streams), runs the handler, and does the finalisation a user can see
(non-daemon threads, ``atexit``, flushing the streams). What it returns is
reported to the client before the process ends with ``_exit``, so the
interpreter's slow heap teardown never happens.
"""

from __future__ import annotations

import _signal
import _thread
import ast
import atexit
import builtins
import contextlib
import gc
import os
import signal
import sys
import types
import weakref
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from . import _inherited, _native, _stdio, _unraisable
from .errors import Unsupported

if TYPE_CHECKING:
    from ._native import ModuleNames

_PACKAGE_DIR = os.path.dirname(__file__) + os.sep

# Signals whose disposition a fresh CPython leaves at the default; the server
# or its warm-up may have changed them. SIGINT, SIGPIPE and SIGXFSZ are set
# below as CPython sets them. Plain numbers and the C module `_signal`, not
# `signal`'s enum wrappers: every object a worker touches is a memory page
# the kernel copies for it (see `prepare`).
_DEFAULT_SIGNALS = tuple(
    int(getattr(signal, name))
    for name in (
        "SIGTERM", "SIGHUP", "SIGQUIT", "SIGUSR1", "SIGUSR2", "SIGALRM",
        "SIGCHLD", "SIGWINCH", "SIGCONT", "SIGTSTP", "SIGTTIN", "SIGTTOU",
    )
)  # fmt: skip
_SIGINT, _SIGPIPE, _SIGXFSZ = int(signal.SIGINT), int(signal.SIGPIPE), int(signal.SIGXFSZ)
_UNCATCHABLE = (int(signal.SIGKILL), int(signal.SIGSTOP))


# How many import finders the server had cached when it last dropped those
# of relative `sys.path` entries (see `forget_relative_finders`).
_finders_kept = -1


def forget_relative_finders() -> None:
    """Drop the import finders cached for relative ``sys.path`` entries: they
    were made for the server's working directory, and a run's is the
    client's.

    The server does this once, just before it serves, rather than every
    worker: going through the cache writes to (and so copies) a memory page
    per entry. A worker does it again only if the cache has grown since,
    which Python code the server runs while serving (fork hooks, signal
    handlers) could have done.
    """
    global _finders_kept
    for key in [key for key in sys.path_importer_cache if not os.path.isabs(key)]:
        del sys.path_importer_cache[key]
    _finders_kept = len(sys.path_importer_cache)


# What `sys.modules` held when the server started serving (see
# `note_server_modules`): a worker finalises only what its program loaded.
_server_modules: ModuleNames | None = None
_server_main: object = None


#: The submodules that their package's initialisation imported during the
#: server's warm-up (see :func:`noting_warm_up_imports`).
imported_by_their_package: set[str] = set()


class _WarmUpImports:
    """A meta path finder that finds nothing: it notes in
    :data:`imported_by_their_package` each submodule looked for while its
    package initialises."""

    @staticmethod
    def find_spec(name: str, path: object = None, target: object = None) -> None:
        package, _, _ = name.rpartition(".")
        spec = getattr(sys.modules.get(package), "__spec__", None)
        if package and getattr(spec, "_initializing", False):
            imported_by_their_package.add(name)


@contextlib.contextmanager
def noting_warm_up_imports() -> Iterator[None]:
    """Note what the warm-up's packages import themselves
    (:class:`_WarmUpImports`): ``-m`` of such a submodule finds it imported,
    as python would, and of any other, not (see
    ``pymain._forget_warm_module``)."""
    sys.meta_path.insert(0, _WarmUpImports)  # type: ignore[arg-type]
    try:
        yield
    finally:
        with contextlib.suppress(ValueError):  # a warm-up that replaced the list
            sys.meta_path.remove(_WarmUpImports)  # type: ignore[arg-type]


def note_server_modules() -> None:
    """Remember which modules are the server's, just before it serves."""
    global _server_modules, _server_main
    from ._native import ModuleNames

    _server_modules = ModuleNames(sys.modules)
    _server_main = sys.modules.get("__main__")


def prepare() -> None:
    """Everything a worker can do before it has a request: give signals the
    dispositions a fresh CPython has, let go of the server's signal wake-up
    pipe, if the server cached import finders since it last dropped those
    of relative ``sys.path`` entries, drop them, and give multiprocessing a
    key of its own.

    A worker's cost is dominated by the memory pages it writes, each one
    copied from the server on first write (about 3 µs each on the
    benchmark machine), so this touches as few objects as it can. The pages
    a run writes are copied after this, while the worker is still idle,
    from a list learned from an earlier run (``server/src/prefault.rs``).
    """
    for signum in _DEFAULT_SIGNALS:
        if _signal.getsignal(signum) != _signal.SIG_DFL:
            _signal.signal(signum, _signal.SIG_DFL)
    _signal.signal(_SIGINT, _signal.default_int_handler)
    _signal.signal(_SIGPIPE, _signal.SIG_IGN)
    _signal.signal(_SIGXFSZ, _signal.SIG_IGN)
    wakeup = _signal.set_wakeup_fd(-1)
    if wakeup != -1:
        os.close(wakeup)
    if len(sys.path_importer_cache) != _finders_kept:
        forget_relative_finders()
    # A fresh python's multiprocessing draws a secret key for its process
    # when imported; its fork handlers leave it alone, so that children share it.
    process = sys.modules.get("multiprocessing.process")
    if process is not None:
        with contextlib.suppress(Exception):  # a warm-up that broke it keeps its key
            process.current_process().authkey = os.urandom(32)


def run(
    handler: Callable[[], object],
    argv: list[bytes],
    env: list[bytes],
    umask: int,
    ignored_signals: int = 0,
    client_pid: int = 0,
) -> int | str:
    """Set the interpreter up for one client's run and run ``handler``.

    ``ignored_signals`` has bit N-1 set for each signal N the client ignores
    (as under ``nohup``); the program starts with those ignored too.

    Returns the exit code (0..255), the negated number of the signal the
    process must die of (a ``KeyboardInterrupt`` nobody caught ends python
    by SIGINT), or a message when the handler raised
    :class:`~warmfork.errors.Unsupported`.
    """
    try:
        _stdio.client_pid = client_pid
        _set_up(argv, env, umask)
    except _stdio.StreamError as exc:
        if handler not in options_first:
            with contextlib.suppress(OSError):  # stderr itself may be what failed (a directory)
                os.write(2, exc.report().encode())
            return 1
        _stdio.install_stand_ins()
    _ignore(ignored_signals)
    try:
        return run_handler(handler)
    except Unsupported as refusal:
        return str(refusal)


#: Handlers that read their options before they need the standard streams,
#: and then build them again: a run whose streams cannot be built starts with
#: stand-ins (see `_stdio.install_stand_ins`), and the handler reports the
#: error, if it still stands, in its turn. `pymain.main` is one: python answers
#: ``-V`` and ``-h``, and reports a usage error, before it builds its streams,
#: and under ``-E`` never reads the ``PYTHONIOENCODING`` that may have failed.
options_first: set[Callable[[], object]] = set()


# Whether an `Unsupported` raised now refuses the run (see `program_started`).
_refusable = True


def program_started() -> None:
    """Say that the program runs from here on: an
    :class:`~warmfork.errors.Unsupported` it raises (a program may import
    warmfork too) is its own uncaught exception, reported as any other, not
    a refusal of a run that has begun."""
    global _refusable
    _refusable = False


def run_handler(handler: Callable[[], object]) -> int:
    """Call ``handler`` and finish as CPython's ``Py_RunMain`` does.

    An uncaught exception goes through ``sys.excepthook`` and gives 1;
    ``SystemExit`` gives its code; then non-daemon threads are joined,
    ``atexit`` callbacks run and the standard streams are flushed (a failed
    flush gives 120). :class:`~warmfork.errors.Unsupported` propagates
    untouched so the caller can refuse the run, unless the handler has said
    the program started (:func:`program_started`).
    """
    left: list[BaseException] = []  # what `exit_code` leaves for `_finalize`, which takes it
    try:
        handler()
        code = 0
    except SystemExit as exit_:
        code = exit_code(exit_, left)
    except InterruptedAtTheEnd:
        code = -signal.SIGINT
    except BaseException as exc:
        if isinstance(exc, Unsupported) and _refusable:
            raise
        # CPython dies by SIGINT for that very type, not a subclass.
        code = -signal.SIGINT if type(exc) is KeyboardInterrupt else 1
        if code < 0 and _refusable and handler in options_first:
            # Interrupted while the handler read its options, before the
            # program: python, whose handler for SIGINT is not installed
            # that early, dies by it without a word.
            return _finalize(code, left)
        try:
            _excepthook(exc)
        except SystemExit as exit_:  # the hook ended the program itself
            code = exit_code(exit_, left)
    code = _finalize(code, left)
    return code


class InterruptedAtTheEnd(BaseException):
    """Raised by the prompt when its input ended after a statement that
    ended in a ``KeyboardInterrupt``, which it printed: python then ends by
    SIGINT (CPython's ``unhandled_keyboard_interrupt``), and so does the run."""


# From 3.12 on, CPython's `_Py_HandleSystemExit` leaves the error it met
# reading or printing the code set (3.11 cleared it): `Py_FinalizeEx` then
# reports it (see `_finalize`).
_LEAVES_EXIT_ERROR = sys.version_info >= (3, 12)


def exit_code(exit_: SystemExit, left: list[BaseException]) -> int:
    """The status CPython exits with for ``exit_``; prints a non-integer
    code. The error CPython leaves set working it out goes in ``left``."""
    value = exit_.code
    if value is None:
        return 0
    if isinstance(value, int):
        # CPython reads a C long: beyond one, -1 (so 255).
        exact = int.__index__(value)
        if -(2**63) <= exact < 2**63:
            return exact & 0xFF
        if _LEAVES_EXIT_ERROR:
            left.append(OverflowError("Python int too large to convert to C long"))
        return 0xFF
    stderr = getattr(sys, "stderr", None)
    try:
        if stderr is not None:
            stderr.write(str(value))
        else:  # CPython falls back to the C stderr
            os.write(2, str(value).encode(errors="backslashreplace"))
    except BaseException as exc:  # noqa: BLE001 - as in CPython, a failed print still exits 1
        if _LEAVES_EXIT_ERROR:
            exc.__traceback__ = _program_frames(exc.__traceback__)
            if exc.__context__ is exit_:  # C handles no exception meanwhile
                exc.__context__ = None
            left.append(exc)
    _stdio.write_stderr("\n")  # apart, as CPython writes it: to C's stderr if that failed
    return 1


# What CPython's os.fork and thread starts raise once it finalises (see
# server/src/shutdown.rs): from its start on 3.12, once the atexit callbacks
# have run from 3.13 on.
_REFUSES_EARLY = sys.version_info[:2] == (3, 12)
_REFUSES_LATE = sys.version_info >= (3, 13)


def _finalize(code: int, left: list[BaseException]) -> int:
    if _REFUSES_EARLY:
        _native.refuse_at_shutdown(RuntimeError)
    # As Py_FinalizeEx: join the non-daemon threads, if the program imported
    # `threading` at all (the server does not, so that workers are spared its
    # after-fork hook). An error `exit_code` left is reported in its place
    # when `threading` was not imported; else 3.12 loses it in the call (3.13
    # fails the call with a SystemError that names its first line, not
    # emulated: the error is reported as if not imported).
    threading = sys.modules.get("threading")
    if left and (threading is None or _REFUSES_LATE):
        message = "Exception ignored on threading shutdown" if _REFUSES_LATE else None
        _unraisable.write_unraisable(left[0], None, message)
    left.clear()  # freed now, as python frees it
    try:
        if threading is not None:
            threading._shutdown()  # type: ignore[attr-defined]
    except BaseException as exc:  # noqa: BLE001 - e.g. KeyboardInterrupt while joining
        # As Py_FinalizeEx reports it: as ignored, not as the program's.
        exc.__traceback__ = _program_frames(exc.__traceback__)
        if _REFUSES_LATE:
            _unraisable.write_unraisable(exc, None, "Exception ignored on threading shutdown")
        else:
            _unraisable.write_unraisable(exc, threading)
    atexit._run_exitfuncs()
    if _REFUSES_LATE:
        _native.refuse_at_shutdown(PythonFinalizationError)  # noqa: F821 - a builtin from 3.13 on
    # As Py_RunMain: a failed final flush overrides the exit status, but not
    # a death by SIGINT.
    if not _flush_std_files() and code >= 0:
        code = 120
    _signals_off()
    _finalize_modules_without_step_frames()
    # What finalisers printed. CPython flushes it as it frees the streams,
    # after the modules, and says nothing of a failure then.
    _flush_std_files(quietly=True)
    return code


def _flush_std_files(*, quietly: bool = False) -> bool:
    """CPython's ``flush_std_files``: flush ``sys.stdout``, then
    ``sys.stderr``, each unless it is None, missing or closed (a ``closed``
    that cannot be read counts as open). Returns False if either flush
    raised, whatever it raised. Unless ``quietly``, stdout's failure is
    reported through ``sys.unraisablehook`` ("Exception ignored in: ...",
    from 3.13 on "Exception ignored on flushing sys.stdout:"); stderr's
    never is."""
    flushed = True
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name, None)
        if stream is None or _is_closed(stream):
            continue
        failure = _flush(stream)
        if failure is not None:
            flushed = False
            if name == "stdout" and not quietly:
                failure.__traceback__ = _program_frames(failure.__traceback__)
                # Here, with no exception being handled, as in C.
                if sys.version_info >= (3, 13):  # python says what failed, not in what
                    _unraisable.write_unraisable(failure, None, "Exception ignored on flushing sys.stdout")
                else:
                    _unraisable.write_unraisable(failure, stream)
    return flushed


def _flush(stream: object) -> BaseException | None:
    """What ``stream.flush()`` raised, if anything."""
    try:
        stream.flush()  # type: ignore[attr-defined]
    except BaseException as exc:  # noqa: BLE001 - KeyboardInterrupt too: this is the program's object failing
        return exc
    return None


def _is_closed(stream: object) -> bool:
    try:
        return bool(stream.closed)  # type: ignore[attr-defined]
    except BaseException:  # noqa: BLE001 - as CPython's file_is_closed, which clears any error
        return False


def rehearse_finalization() -> None:
    """The steps of a worker's finalisation that change nothing of the
    server's, on a module of their own: see :func:`warmfork.pymain.rehearse`."""
    module = types.ModuleType("warmfork rehearsal")
    module._private, module.public = object(), object()  # type: ignore[attr-defined]
    alive = [weakref.ref(module)]
    _drop([])
    for ref in reversed(alive):
        _clear_globals(ref())
    _thread._count()
    for signum in range(1, signal.NSIG):
        callable(_signal.getsignal(signum))


def _signals_off() -> None:
    """As CPython's ``_PySignal_Fini`` before it finalises: a signal with a
    Python handler (SIGINT's raises KeyboardInterrupt) takes its default
    action from here on, so Ctrl-C during a slow finaliser ends the process
    by SIGINT rather than as an exception in warmfork's code."""
    for signum in range(1, signal.NSIG):
        if callable(_signal.getsignal(signum)):
            _signal.signal(signum, _signal.SIG_DFL)


def _finalize_modules_without_step_frames() -> None:
    """:func:`_finalize_modules`, where what the objects it frees report
    through the default unraisable hook ("Exception ignored in: ...") shows
    no frame of its steps. An error raised in C, with no traceback of its
    own (the last flush of a file on a full disk, a ``ResourceWarning``
    under ``-W error``), gets one from CPython that names the frame running:
    in python none, here the step's (see :func:`_without_frame`). A hook of
    the program's is left as it is, and sees the frame."""
    if getattr(sys, "unraisablehook", None) is not _unraisable.default_hook:
        _finalize_modules()
        return
    sys.unraisablehook = _report_without_step_frame
    try:
        _finalize_modules()
    finally:
        if getattr(sys, "unraisablehook", None) is _report_without_step_frame:
            sys.unraisablehook = _unraisable.default_hook


def _report_without_step_frame(args: Any) -> None:  # sys.UnraisableHookArgs, which has no name
    traceback = args.exc_traceback
    if traceback is not None and traceback.tb_next is None and traceback.tb_frame.f_code in _STEP_CODES:
        if args.exc_value is not None:
            args.exc_value.__traceback__ = None
        args = _unraisable.HookArgs((args.exc_type, args.exc_value, None, args.err_msg, args.object))
    _unraisable.default_hook(args)


def _finalize_modules() -> None:
    """As ``Py_FinalizeEx`` once the exit functions have run, for
    ``__main__`` and the modules the program imported: collect garbage,
    put the standard streams back and make imports fail, drop those modules
    from ``sys.modules`` and collect again, then clear the globals of those
    still alive, most recently imported first. So what the program left in
    them is finalised as under python: files flushed and closed, ``__del__``
    methods, ``weakref.finalize`` callbacks, suspended generators'
    ``finally``.

    The server's own modules stay as they are: finalising them would write
    to (and so copy) the whole warm heap, the teardown a worker exists to
    skip. While threads are still running (daemon threads) only garbage is
    collected: python stops them before it touches modules, and here they
    would run on and fail on globals turned to None.
    """
    if gc.isenabled():
        _collect()
    if _thread._count():
        return
    _delete_special()
    alive = _drop_modules()
    _collect()
    for module in reversed(alive):
        _clear_globals(module())
    # CPython collects once more only after it has cleared `sys` itself:
    # what finalisers print or raise then (an asyncio loop never closed,
    # whose __del__ meets modules already cleared) goes nowhere.
    _collect_without_streams()


def _delete_special() -> None:
    """CPython's ``finalize_modules_delete_special``: the import system and
    the rest of the list set to None (an import from a finaliser then fails,
    as in python), ``sys.stdout`` and its siblings back to the originals."""
    builtins._ = None  # type: ignore[attr-defined]
    for name in _SYS_DELETES:
        setattr(sys, name, None)
    _restore_streams()


# `sys.last_exc` is new in 3.12; `pdb.pm()` reads it from then on.
_HAS_LAST_EXC = sys.version_info >= (3, 12)

_SYS_DELETES = (
    "path", "argv", "ps1", "ps2", *(("last_exc",) if _HAS_LAST_EXC else ()),
    "last_type", "last_value", "last_traceback",
    "path_hooks", "path_importer_cache", "meta_path", "__interactivehook__",
)  # fmt: skip


def _drop_modules() -> list[weakref.ref[types.ModuleType]]:
    """Set ``__main__`` and the modules the program imported to None in
    ``sys.modules`` and let go of them (those nothing else holds are freed
    now); weak references to the modules among them, in import order."""
    mine = _server_modules.added_to(sys.modules) if _server_modules is not None else []
    main = sys.modules.get("__main__")
    if main is not _server_main:
        mine.insert(0, ("__main__", main))
    del main
    alive = [weakref.ref(module) for _, module in mine if isinstance(module, types.ModuleType)]
    _drop(mine)
    return alive


# CPython finalises with no Python code running, so `warnings` reports what
# is raised then (an unclosed file's ResourceWarning) as `sys:1: ...`
# (`<sys>:0: ...` from 3.13 on). Each step that may free the program's
# objects is a function compiled as that line of a file of that name, with
# globals named "sys", so that the same is said here; no other frame of
# warmfork's holds those objects meanwhile. A function, not `exec`: an audit
# hook of the program's sees no event at exit that python does not raise.
def _without_frame(parameters: str, body: str) -> Callable[..., None]:
    source = f"def finalization({parameters}):\n" + "".join(f" {line}\n" for line in body.splitlines())
    tree = ast.parse(source)
    line = 1 if sys.version_info < (3, 13) else 0
    for node in ast.walk(tree):
        if isinstance(node, (ast.stmt, ast.expr, ast.arg)):
            node.lineno = node.end_lineno = line
    module = compile(tree, "sys" if sys.version_info < (3, 13) else "<sys>", "exec")
    code = next(const for const in module.co_consts if isinstance(const, types.CodeType))
    namespace = {"__name__": "sys", "__builtins__": builtins, "gc": gc, "sys": sys}
    function = types.FunctionType(code.replace(co_name="<module>"), namespace)
    function.__module__ = __name__  # packed with the rest of the run path (see `_codepack`)
    return function


_collect = _without_frame("", "gc.collect()")
_restore_streams = _without_frame(
    "", "for name in ('stdin', 'stdout', 'stderr'): setattr(sys, name, getattr(sys, f'__{name}__', None))"
)
_collect_without_streams = _without_frame(
    "",
    "streams = [getattr(sys, name, None) for name in ('stdout', 'stderr')]\n"
    "sys.stdout = sys.stderr = None\n"
    "gc.collect()\n"
    "sys.stdout, sys.stderr = streams",
)
_drop = _without_frame("items", "[sys.modules.__setitem__(name, None) for name, _ in items], items.clear()")
_set_to_none = _without_frame("names, namespace", "for name in names: namespace[name] = None")
_STEP_CODES = frozenset(
    step.__code__ for step in (_collect, _restore_streams, _collect_without_streams, _drop, _set_to_none)
)


def _clear_globals(module: types.ModuleType | None) -> None:
    """Set a module's globals to None as CPython's ``_PyModule_ClearDict``
    does: first the names with one leading underscore, then all the others
    but ``__builtins__``."""
    namespace = getattr(module, "__dict__", None)
    if not isinstance(namespace, dict):
        return
    names = [name for name in namespace if isinstance(name, str) and name != "__builtins__"]
    private = [name for name in names if _one_underscore(name)]
    public = [name for name in names if not _one_underscore(name)]
    for batch in (private, public):
        _set_to_none(batch, namespace)


def _one_underscore(name: str) -> bool:
    return name[:1] == "_" and name[1:2] != "_"


def _excepthook(exc: BaseException) -> None:
    """Report an uncaught exception as python's ``PyErr_Print`` does: kept
    in ``sys.last_*``, then through ``sys.excepthook``, with a traceback that
    starts at the program (the frames of warmfork's own code, which python
    does not have, are cut). A hook that fails is reported, then the
    exception the default way; a hook that raises ``SystemExit`` ends the
    program (it propagates)."""
    exc.__traceback__ = _program_frames(exc.__traceback__)
    if _HAS_LAST_EXC:
        sys.last_exc = exc
    sys.last_type, sys.last_value, sys.last_traceback = type(exc), exc, exc.__traceback__
    if not hasattr(sys, "excepthook"):
        _stdio.write_stderr("sys.excepthook is missing\n")
        _display(exc)
        return
    try:
        sys.excepthook(type(exc), exc, exc.__traceback__)
    except SystemExit:
        raise
    except BaseException as error:  # noqa: BLE001 - CPython reports both, as here
        error.__traceback__ = _program_frames(error.__traceback__)
        if error.__context__ is exc:  # CPython calls the hook with no exception being handled
            error.__context__ = None
        # CPython's fflush(stdout) before this is C's stdout, not sys.stdout:
        # what the program printed to a pipe stays buffered until exit.
        _stdio.write_stderr("Error in sys.excepthook:\n")
        _display(error)
        _stdio.write_stderr("\nOriginal exception was:\n")
        _display(exc)


def _program_frames(traceback: types.TracebackType | None) -> types.TracebackType | None:
    """``traceback`` without warmfork's own frames at either end: those the
    program runs below, and those of warmfork's code it called into (its
    standard input's reads on a terminal)."""
    while traceback is not None and _is_ours(traceback):
        traceback = traceback.tb_next
    last_of_program = link = traceback
    while link is not None:
        if not _is_ours(link):
            last_of_program = link
        link = link.tb_next
    if last_of_program is not None:
        last_of_program.tb_next = None
    return traceback


def _is_ours(traceback: types.TracebackType) -> bool:
    return traceback.tb_frame.f_code.co_filename.startswith(_PACKAGE_DIR)


def _display(exc: BaseException) -> None:
    """``PyErr_Display``: the default report, whatever ``sys.excepthook``
    and ``sys.__excepthook__`` are now."""
    with contextlib.suppress(Exception):
        _default_excepthook(type(exc), exc, exc.__traceback__)


# The interpreter's own `sys.excepthook`, which a program may replace, even
# as `sys.__excepthook__`.
_default_excepthook = sys.__excepthook__


def _ignore(signals: int) -> None:
    """Ignore each signal whose bit (N-1 for signal N) is set."""
    signum = 0
    while signals:
        signum += 1
        if signals & 1 and signum not in _UNCATCHABLE:
            with contextlib.suppress(ValueError, OSError):  # not a signal this system has
                _signal.signal(signum, _signal.SIG_IGN)
        signals >>= 1


def _set_up(argv: list[bytes], env: list[bytes], umask: int) -> None:
    os.umask(umask)
    _set_environ(env)
    _inherited.refresh()
    _inherited.restart_clocks()
    sys.argv = [os.fsdecode(arg) for arg in argv]
    _stdio.set_up()


def _set_environ(entries: list[bytes]) -> None:
    """Make ``os.environ`` the client's environment.

    The C environment already is: the Rust half points ``environ`` at the
    request's strings. So only the mapping behind ``os.environ`` (and
    ``os.environb``, which shares it) is replaced, without a ``putenv`` per
    variable. As at CPython start-up, an entry without ``=`` is skipped and
    the first of two entries with the same name wins.
    """
    data = os.environ._data  # type: ignore[attr-defined]  # CPython's os._Environ store, bytes to bytes on POSIX
    data.clear()
    for entry in entries:
        name, sep, value = entry.partition(b"=")
        if sep:
            data.setdefault(name, value)
