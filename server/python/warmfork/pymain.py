"""The python-compatible handler: ``warmfork ARGS`` runs like ``python ARGS``.

A worker calls :func:`main` with ``sys.argv``, the environment, working
directory and standard streams already the client's. What is left is what
CPython's ``Py_RunMain`` does between reading its command line and
finalising (Modules/main.c): settle the options, put the program's own
entry at the front of ``sys.path``, give it a fresh ``__main__`` module, run
it, and drop into the interactive prompt when asked to.

Everything the warm interpreter cannot honour is refused with
:class:`~warmfork.errors.Unsupported` before the program starts, never
skipped (see :func:`warmfork.pyoptions.startup_conflict`). The program's own
exceptions, ``SystemExit`` included, propagate to the caller
(:mod:`warmfork._worker`), which reports them as CPython would; only where
CPython itself prints and carries on (``-i``, ``PYTHONINSPECT``, the prompt)
are they printed here, the same way.
"""

from __future__ import annotations

import _imp
import _locale
import _tracemalloc
import builtins
import contextlib
import faulthandler
import fcntl
import functools
import gc
import importlib.machinery
import importlib.util
import marshal
import os
import runpy
import site
import stat
import sys
import traceback
import types
import warnings
from collections.abc import Callable

from . import _codecache, _inherited, _prompt, _stdio, _worker, pyoptions
from ._native import run_source_file, set_flags, set_sys_path_0
from .errors import Unsupported

_USAGE = "usage: {} [option] ... [-c cmd | -m mod | file | -] [arg] ...\n"
_COPYRIGHT = 'Type "help", "copyright", "credits" or "license" for more information.'
_MAGIC = importlib.util.MAGIC_NUMBER


def main() -> None:
    """Run the program ``sys.argv`` names, as ``python`` would."""
    argv = list(sys.argv)
    config = _read_config(argv)
    if config is None:
        return
    conflict = pyoptions.startup_conflict(config)
    if conflict is not None:
        raise Unsupported(conflict)
    sys.orig_argv = argv
    sys.argv = config.argv
    _apply_runtime_options(config)
    _worker.program_started()
    _run(config)


_worker.options_first.add(main)


def rehearse(times: int = 20) -> None:
    """Go through the steps of a run that change nothing, ``times`` times,
    in the server before it forks its workers.

    In a worker, a step the server never took writes to objects all over
    the heap: the type attribute cache learns the lookups (dropping a
    reference to each name it evicts) and the bytecode counts its calls and
    specialises itself. Each write copies a 4 KiB page from the server.
    Taken here first, those writes happen once, in the server; this spares
    every worker about a tenth of the pages a ``-c pass`` run copies.

    Nothing here depends on the server's own environment (which it may
    ignore, under ``-E``), and a step that fails only makes runs slower.
    """
    with contextlib.suppress(Exception):
        for _ in range(times):
            _python_variables()
            pyoptions.check_preconfig(["python", "-c", "pass"], {})
            config = pyoptions.parse_command_line(["python", "-c", "pass"])
            pyoptions.read_environment(config, {})
            pyoptions.startup_conflict(config)
            _stdio.rehearse()
            _codecache.compile_command("pass")
            _codecache.script_code("<rehearsal>", b"pass\n")
            _codecache.keepable_script(b"pass\n")
            _worker.rehearse_finalization()


def _read_config(argv: list[str]) -> pyoptions.Config | None:
    """The configuration, or None when ``--help`` or ``--version`` was answered."""
    program = argv[0] if argv and argv[0] else "warmfork"
    environ = _python_variables()
    try:
        pyoptions.check_preconfig(argv, environ)
        config = pyoptions.parse_command_line(argv)
        if config.help is not None:
            _print_help(program, config.help)
            return None
        if config.print_version:
            print(f"Python {sys.version if config.print_version > 1 else sys.version.split()[0]}")
            return None
        pyoptions.read_environment(config, environ)
    except pyoptions.UsageError as error:
        _write_stderr(f"{error}\n{_USAGE.format(program)}Try `python -h' for more information.\n")
        raise SystemExit(2) from None
    except pyoptions.FatalError as error:
        _write_stderr(error.report())
        raise SystemExit(1) from None
    config.program = program
    return config


def _python_variables() -> dict[str, str]:
    """The ``PYTHON*`` variables of ``os.environ``. Only these are decoded:
    iterating ``os.environ`` itself decodes every name and value, which on
    a run's critical path costs more than the rest of the option reading."""
    data = os.environ._data  # type: ignore[attr-defined]  # CPython's os._Environ store, bytes to bytes on POSIX
    return {os.fsdecode(name): os.fsdecode(value) for name, value in data.items() if name.startswith(b"PYTHON")}


def _print_help(program: str, option: str) -> None:
    """Let this very interpreter print its help, under the client's program name.

    The text belongs to the interpreter build, so asking it beats keeping a
    copy that could drift; help is rare enough for the extra process.
    """
    if not sys.executable:
        raise Unsupported(f"{option}: this server does not know its python executable to ask for the help text")
    import subprocess  # only here: it imports `threading` (see `_worker._finalize`)

    _prompt.flush_standard_streams()
    subprocess.run([program, option], executable=sys.executable, check=False)


def _apply_runtime_options(config: pyoptions.Config) -> None:
    """Make the settings a running interpreter can still take, in CPython's
    start-up order: streams, then fault handler and tracemalloc, then warnings."""
    if config.utf8_mode is not None:  # -X utf8, which only the options say
        _stdio.set_utf8_mode(config.utf8_mode)
    if _stdio.installed_with != (config.unbuffered, config.use_environment, _stdio.utf8_mode):
        try:
            _stdio.install(unbuffered=config.unbuffered, use_environment=config.use_environment)
        except _stdio.StreamError as error:
            with contextlib.suppress(OSError):  # stderr itself may be what failed (a directory)
                os.write(2, error.report().encode())
            raise SystemExit(1) from None
    sys.dont_write_bytecode = config.dont_write_bytecode
    sys.pycache_prefix = config.pycache_prefix
    _imp.check_hash_based_pycs = config.check_hash_based_pycs
    limit = config.int_max_str_digits
    sys.set_int_max_str_digits(sys.int_info.default_max_str_digits if limit is None else limit)
    sys._xoptions.clear()
    sys._xoptions.update(config.xoptions)
    if sys.version_info >= (3, 12) and config.perf_profiling != 2:  # perf_jit: the server's, or refused
        _set_perf_trampoline(config.perf_profiling == 1)
    if config.faulthandler and sys.stderr is not None:
        faulthandler.enable()
    elif faulthandler.is_enabled():
        faulthandler.disable()
    if _tracemalloc.is_tracing():
        _tracemalloc.stop()
    if config.tracemalloc:
        import tracemalloc

        # The interpreter keeps freed objects for reuse (dicts, tuples,
        # floats...), which the server allocated before any tracing: the
        # program's objects would come from them untraced.
        gc.collect()  # a full collection empties those free lists
        tracemalloc.start(config.tracemalloc)
    sys.warnoptions[:] = config.warnoptions
    _inherited.drop_server_warning_options()
    warnings._processoptions(config.warnoptions)  # type: ignore[attr-defined]  # what importing warnings does
    _show_flags(config)


def _set_perf_trampoline(wanted: bool) -> None:
    """``-X perf``: the trampoline that lets ``perf`` name Python functions,
    switched on in this worker (it writes its own ``/tmp/perf-PID.map``), or
    off when the server's is on and the run did not ask for it. A build
    without one ignores the option, as python does."""
    if wanted != sys.is_stack_trampoline_active():
        if wanted:
            with contextlib.suppress(ValueError):  # "perf trampoline not available"
                sys.activate_stack_trampoline("perf")
        else:
            sys.deactivate_stack_trampoline()


# What sys.flags.int_max_str_digits shows without a limit: -1 in 3.11, the
# default limit itself from 3.12.
_DEFAULT_DIGITS_FLAG = -1 if sys.version_info < (3, 12) else sys.int_info.default_max_str_digits


def _show_flags(config: pyoptions.Config) -> None:
    """Make ``sys.flags`` show the settings this run took, as python's shows
    the options it started with (the others are the server's, which
    :func:`pyoptions.startup_conflict` made sure are the run's too)."""
    limit = config.int_max_str_digits
    wanted = {
        "inspect": int(config.inspect),
        "interactive": int(config.interactive),
        "dont_write_bytecode": int(config.dont_write_bytecode),
        "no_user_site": int(config.no_user_site),
        "quiet": int(config.quiet),
        "safe_path": config.safe_path,
        "int_max_str_digits": _DEFAULT_DIGITS_FLAG if limit is None else limit,
    }
    changes = {name: value for name, value in wanted.items() if getattr(sys.flags, name) != value}
    if changes:
        set_flags(changes)


def _run(config: pyoptions.Config) -> None:
    """``pymain_run_python``: set up ``sys.path`` and ``__main__``, run, inspect."""
    namespace = _fresh_main_module()
    filename = importer_path = None
    if config.run_filename is not None:
        filename = _abspath(config.run_filename)
        if _is_import_path_entry(filename):
            importer_path = filename
    stdin_is_interactive = os.isatty(0) or config.interactive
    if os.isatty(0) and not config.isolated and (config.inspect or not config.runs_code):
        _import_readline()  # before the program's directory can shadow it
    _set_sys_path(config, importer_path)
    _warn_of_a_legacy_locale(config)
    if not config.quiet and not config.runs_code and stdin_is_interactive:
        _write_stderr(f"Python {sys.version} on {sys.platform}\n" + ("" if config.no_site else f"{_COPYRIGHT}\n"))

    program: Callable[[], int | None]
    if config.run_command is not None:
        program = functools.partial(_run_command, config.run_command, namespace)
    elif config.run_module is not None:
        program = functools.partial(_run_module, config.run_module, set_argv0=True)
    elif importer_path is not None:
        program = functools.partial(_run_module, "__main__", set_argv0=False)
    elif filename is not None:
        program = functools.partial(_run_script, config, filename, namespace)
    elif stdin_is_interactive:
        _run_startup_file(config, namespace)
        _run_interactive_hook()
        _prompt.interact(namespace)
        return
    else:
        program = functools.partial(_run_stdin, config, namespace)
    _run_then_inspect(config, program, namespace)


_LEGACY_LOCALE_WARNING = (
    "Python runtime initialized with LC_CTYPE=C (a locale with default ASCII encoding), which may "
    "cause Unicode compatibility problems. Using C.UTF-8, C.utf8, or UTF-8 (if available) as "
    "alternative Unicode-compatible locales is recommended.\n"
)


def _warn_of_a_legacy_locale(config: pyoptions.Config) -> None:
    """What python says at the end of its start-up under
    ``PYTHONCOERCECLOCALE=warn`` when ``LC_CTYPE`` is still the C locale
    (``LC_ALL=C``, which it does not coerce)."""
    if config.coerce_c_locale_warn and _locale.setlocale(_locale.LC_CTYPE) == "C":
        _write_stderr(_LEGACY_LOCALE_WARNING)


def _run_then_inspect(
    config: pyoptions.Config, program: Callable[[], int | None], namespace: dict[str, object]
) -> None:
    """Run ``program``, then ``pymain_repl``.

    Under ``-i``/``PYTHONINSPECT`` CPython prints an uncaught exception, even
    ``SystemExit``, and carries on: into the prompt when stdin is interactive,
    else to exit status 1. A program may also set ``PYTHONINSPECT`` itself to
    get the prompt after a failure. A status ``program`` returns (a script
    that cannot be opened) is no exception: nothing is printed, and the
    prompt, if it comes, decides the status.
    """

    def prompt_follows() -> bool:
        late = config.use_environment and bool(os.environ.get("PYTHONINSPECT"))
        return (config.inspect or late) and config.runs_code and (os.isatty(0) or config.interactive)

    failure: BaseException | None = None
    status = None
    try:
        status = program()
    except BaseException as exc:
        if not config.inspect and (isinstance(exc, SystemExit) or not prompt_follows()):
            raise
        failure = exc
    prompt = prompt_follows()
    if failure is not None:
        if type(failure) is KeyboardInterrupt and not prompt:
            raise failure  # the caller makes it a death by SIGINT
        _prompt.print_exception(failure)
    if prompt:
        _run_interactive_hook()
        _prompt.interact(namespace)
    elif failure is not None:
        raise SystemExit(1)
    elif status:
        raise SystemExit(status)


def _fresh_main_module() -> dict[str, object]:
    """A new ``__main__`` as CPython's ``add_main_module`` makes it, in place of the server's."""
    module = types.ModuleType("__main__")
    module.__loader__ = importlib.machinery.BuiltinImporter  # type: ignore[assignment]
    namespace = module.__dict__
    namespace["__annotations__"] = {}
    namespace["__builtins__"] = builtins
    sys.modules["__main__"] = module
    return namespace


def _abspath(path: str) -> str:
    """``_Py_abspath``: the working directory joined on, without normalising
    (``__file__`` of ``python ./x.py`` is ``/cwd/./x.py``). Where the working
    directory has no name (it was deleted), the path stays as given, as
    python keeps it."""
    if os.path.isabs(path):
        return path
    try:
        cwd = os.getcwd()
    except OSError:
        return path
    return cwd if path in ("", ".") else f"{cwd}{os.sep}{path}"


def _is_import_path_entry(path: str) -> bool:
    """``PyImport_GetImporter``: can ``path`` (a directory, a zip file) go on sys.path?"""
    try:
        return sys.path_importer_cache[path] is not None
    except KeyError:
        pass
    sys.path_importer_cache[path] = None
    for hook in sys.path_hooks:
        try:
            sys.path_importer_cache[path] = hook(path)
            return True
        except ImportError:
            continue
    return False


def _import_readline() -> None:
    try:
        import readline  # noqa: F401 - imported for its effect on input()
    except ImportError:
        pass


def _set_sys_path(config: pyoptions.Config, importer_path: str | None) -> None:
    """``PYTHONPATH`` entries first (a fresh python has them from start-up,
    each once, as ``site`` leaves them), then the program's own entry in
    front, as ``pymain_run_python`` puts it."""
    if config.pythonpath:
        extra = [os.path.abspath(entry) for entry in config.pythonpath]
        if not sys.flags.no_site:
            extra = list(dict.fromkeys(extra))
        sys.path[:] = extra + [entry for entry in sys.path if entry not in extra]
        if not sys.flags.no_site:
            _run_customizations(extra)
    path0 = importer_path
    if path0 is None and not config.safe_path:
        path0 = _program_path0(config)
    if path0 is not None:
        sys.path.insert(0, path0)
    set_sys_path_0(path0)  # where 3.13's import errors look for the program


def _run_customizations(entries: list[str]) -> None:
    """``site``'s last steps, for a ``sitecustomize`` (or ``usercustomize``)
    that the run's own ``PYTHONPATH`` entries hold: python imports the first
    one on ``sys.path`` at start-up, where those entries come first (and the
    program's directory is not yet). One found elsewhere is the server's,
    which ran when the server started."""
    for name, execute in (("sitecustomize", site.execsitecustomize), ("usercustomize", site.execusercustomize)):
        if name == "usercustomize" and not site.ENABLE_USER_SITE:
            continue
        spec = importlib.machinery.PathFinder.find_spec(name, entries)
        if spec is None or spec.origin == getattr(sys.modules.get(name), "__file__", None):
            continue
        sys.modules.pop(name, None)
        try:
            execute()  # imports it: `sys.path` has these entries first
        except BaseException as exc:  # noqa: BLE001 - `site` reports an `Exception` itself
            # A `SystemExit` or `KeyboardInterrupt` escapes `site`, whose
            # import then fails python's start-up.
            exc.__traceback__ = exc.__traceback__ and exc.__traceback__.tb_next  # this frame
            _write_stderr(
                "Fatal Python error: init_import_site: Failed to import the site module\n"
                "Python runtime state: initialized\n" + "".join(traceback.format_exception(exc))
            )
            raise SystemExit(1) from None


def _program_path0(config: pyoptions.Config) -> str | None:
    """``_PyPathConfig_ComputeSysPath0``: the working directory for ``-m``
    (None, so nothing, when it has no name), '' for ``-c`` and stdin, else the
    directory of the script with symlinks resolved."""
    if config.run_module is not None:
        try:
            return os.getcwd()
        except OSError:
            return None
    if config.run_command is not None:
        return ""
    path = config.argv[0]
    try:
        if path:  # realpath(3) fails on '', where os.path.realpath gives the cwd
            path = _read_link_once(path)
            path = os.path.realpath(path, strict=True)
    except OSError:
        pass
    directory, sep, _ = path.rpartition(os.sep)
    return (directory or os.sep) if sep else ""


def _read_link_once(path: str) -> str:
    """What CPython makes of the script's path before ``realpath``: where it is
    a symlink, its target, read once. That counts where ``realpath`` fails:
    ``/dev/stdin`` gives ``/proc/self/fd/0``, a pipe realpath cannot resolve."""
    try:
        link = os.readlink(path)
    except OSError:
        return path
    if link.startswith(os.sep):
        return link
    if os.sep not in link:
        return path  # a link within the script's own directory
    directory, sep, _ = path.rpartition(os.sep)
    return f"{directory}{sep}{link}"


def _run_command(command: str, namespace: dict[str, object]) -> None:
    sys.audit("cpython.run_command", command)
    try:
        command.encode("utf-8")
    except UnicodeEncodeError:
        _write_stderr("Unable to decode the command from the command line:\n")
        raise
    code = _codecache.compile_command(command)
    if sys.version_info >= (3, 13):
        # python keeps the command's lines, for tracebacks and warnings to
        # show (`command` ends in the newline CPython adds).
        _prompt.keep_source(code, command, "<string>")
    exec(code, namespace)  # noqa: S102 - running it is the point


def _run_module(name: str, *, set_argv0: bool) -> None:
    """``runpy._run_module_as_main``, as CPython calls it, so errors and
    tracebacks (with their ``<frozen runpy>`` lines) come out identical."""
    sys.audit("cpython.run_module", name)
    _forget_warm_module(name)
    runpy._run_module_as_main(name, set_argv0)  # type: ignore[attr-defined]


def _forget_warm_module(name: str) -> None:
    """Take the module ``-m`` runs out of ``sys.modules`` (and off its
    package) where the server imported it (``--preload json.tool``), as
    python has not: ``runpy`` warns of a submodule it finds there after
    importing the package, which every run of a preloaded one did (and
    failed under ``-W error``). It stays where python has it too: imported
    by its package as the warm-up imported that, or another module under
    its name (``os`` puts ``posixpath`` there as ``os.path``); then
    ``runpy`` warns, as in python. Packages stay: ``runpy`` runs their
    ``__main__``, which is checked in turn."""
    for each in (name, f"{name}.__main__"):
        module = sys.modules.get(each)
        if (
            "." not in each
            or getattr(module, "__name__", None) != each
            or hasattr(module, "__path__")
            or each in _worker.imported_by_their_package
        ):
            continue
        del sys.modules[each]
        package, _, child = each.rpartition(".")
        if getattr(sys.modules.get(package), child, None) is module:
            with contextlib.suppress(AttributeError, TypeError):
                delattr(sys.modules[package], child)


def _run_script(config: pyoptions.Config, filename: str, namespace: dict[str, object]) -> int | None:
    """``pymain_run_file``: 2 for a file that cannot be opened, said without an exception."""
    sys.audit("cpython.run_file", filename)
    try:
        fd = os.open(filename, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        _write_stderr(f"{config.program}: can't open file {filename!r}: [Errno {exc.errno}] {exc.strerror}\n")
        return 2
    is_pyc = filename.endswith(".pyc") or (not config.skip_first_line and _starts_with_magic(fd))
    _exec_file(filename, fd, namespace, is_pyc=is_pyc, inspect=config.inspect, skip_first_line=config.skip_first_line)
    return None


def _starts_with_magic(fd: int) -> bool:
    """``maybe_pyc_file``: CPython looks for a .pyc's magic number only at the
    very start of a file it can seek back in (not a pipe)."""
    try:
        return os.pread(fd, 2, 0) == _MAGIC[:2]
    except OSError:
        return False


def _run_stdin(config: pyoptions.Config, namespace: dict[str, object]) -> None:
    sys.audit("cpython.run_stdin")
    _exec_file("<stdin>", _stdin_to_parse(), namespace, is_pyc=False, inspect=config.inspect)


def _stdin_to_parse() -> int:
    """A descriptor of its own for descriptor 0; or, where python's C stdin
    reads as an empty file (there is no descriptor 0, or it is open only for
    writing, which fdopen(3) refuses), one of an empty file."""
    try:
        fd = os.dup(0)
    except OSError:
        return os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
    if fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE == os.O_WRONLY:
        os.close(fd)
        return os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
    return fd


def _exec_file(
    filename: str, fd: int, namespace: dict[str, object], *, is_pyc: bool, inspect: bool, skip_first_line: bool = False
) -> None:
    """``_PyRun_SimpleFileObject`` on the file open at ``fd``, which it closes:
    ``__file__`` and the loader are set while the file runs. ``__file__`` goes
    again afterwards, unless ``SystemExit`` ends the process (which ``-i``
    prevents): then atexit still sees it.

    Source goes through CPython's own file parser, as under python, so that
    coding cookies, byte-order marks, null bytes and bytes that are not UTF-8
    meet the same errors (see ``server/src/source_file.rs``), unless the
    server keeps the code of that very text (see ``_codecache``)."""
    namespace["__file__"] = filename
    namespace["__cached__"] = None
    if filename != "<stdin>":
        loader = importlib.machinery.SourcelessFileLoader if is_pyc else importlib.machinery.SourceFileLoader
        namespace["__loader__"] = loader("__main__", filename)
    try:
        if is_pyc:
            with open(fd, "rb") as file:
                code = _pyc_code(file.read())
            exec(code, namespace)  # noqa: S102 - running it is the point
        else:
            source = _script_text(filename, fd, skip_first_line)
            code = _kept_code(filename, fd, source) if source is not None else None
            if code is not None:
                exec(code, namespace)  # noqa: S102 - running it is the point
            else:
                _parse_and_run(filename, fd, namespace, skip_first_line, source)
    except SystemExit:
        if inspect:
            _forget_file(namespace)
        raise
    except BaseException:
        _forget_file(namespace)
        raise
    finally:
        _flush_io()
    _forget_file(namespace)


def _flush_io() -> None:
    """CPython's ``flush_io``, which a file's run (not ``-c``'s, nor
    ``-m``'s) ends with before the error is printed, the threads are joined
    and ``atexit`` runs: stderr, then stdout, whatever flushing raises
    dropped. So a script's output comes before its traceback, its
    ``sys.exit("message")`` and what its threads and exit handlers write."""
    for name in ("stderr", "stdout"):
        try:
            getattr(sys, name).flush()
        except BaseException:  # noqa: BLE001, S112 - CPython clears whatever it was
            continue


def _script_text(filename: str, fd: int, skip_first_line: bool) -> bytes | None:
    """The text of the script open at ``fd``, if the server keeps compiled
    scripts and could keep this one's code (see ``_codecache``)."""
    if skip_first_line or filename == "<stdin>" or not _codecache.keeping():
        return None
    try:
        status = os.fstat(fd)
        if not stat.S_ISREG(status.st_mode) or status.st_size > _codecache.MAX_LENGTH:
            return None
        # pread leaves the offset where the parser starts; one byte more
        # tells a file that grew meanwhile.
        source = os.pread(fd, status.st_size + 1, 0)
    except OSError:
        return None
    return source if len(source) == status.st_size else None


def _kept_code(filename: str, fd: int, source: bytes) -> types.CodeType | None:
    """The server's code of ``source``, the script open at ``fd``, if it
    keeps it. The file is then closed, as python closes its script once
    parsed, and also when an audit hook refuses the compiling."""
    try:
        code = _codecache.script_code(filename, source)
    except BaseException:
        os.close(fd)
        raise
    if code is not None:
        os.close(fd)
    return code


def _parse_and_run(
    filename: str, fd: int, namespace: dict[str, object], skip_first_line: bool, source: bytes | None
) -> None:
    """Run the script open at ``fd`` through CPython's file parser; then,
    unless it did not parse, leave ``source`` for the server to keep. Only
    then: a text that crashed the parser would crash the server's too."""
    try:
        run_source_file(fd, os.fsencode(filename), namespace, skip_first_line)
    except SyntaxError:
        raise
    except BaseException:
        _leave_script(filename, source)
        raise
    _leave_script(filename, source)


def _leave_script(filename: str, source: bytes | None) -> None:
    if source is not None:
        with contextlib.suppress(Exception):  # the program may have broken what leaving takes
            _codecache.leave_script(filename, source)


def _forget_file(namespace: dict[str, object]) -> None:
    namespace.pop("__file__", None)
    namespace.pop("__cached__", None)


def _pyc_code(data: bytes) -> types.CodeType:
    """``run_pyc_file``: a 16-byte header, then a marshalled code object.
    As there, a header cut short is an ``EOFError`` (a magic number cut
    short is a bad one before 3.13), and whatever is wrong with what follows
    it is a bad code object."""
    if len(data) < 4 and sys.version_info >= (3, 13):
        raise EOFError("EOF read where not expected")
    if data[:4] != _MAGIC:
        raise RuntimeError("Bad magic number in .pyc file")
    if len(data) < 16:
        raise EOFError("EOF read where not expected")
    try:
        code = marshal.loads(data[16:])
    except (EOFError, ValueError, TypeError):
        code = None
    if not isinstance(code, types.CodeType):
        raise RuntimeError("Bad code object in .pyc file")  # noqa: TRY004 - CPython's exception
    return code


def _run_startup_file(config: pyoptions.Config, namespace: dict[str, object]) -> None:
    """``pymain_run_startup``: ``PYTHONSTARTUP`` before the first prompt; its
    errors are printed and the prompt comes anyway (``SystemExit`` still exits)."""
    path = config.startup_file
    if path is None:
        return
    sys.audit("cpython.run_startup", path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        _write_stderr("Could not open PYTHONSTARTUP\n")
        _prompt.print_exception(exc)
        return
    run = functools.partial(_exec_file, path, fd, namespace, is_pyc=path.endswith(".pyc"), inspect=False)
    _prompt.call_printing_errors(run)


def _run_interactive_hook() -> None:
    """``sys.__interactivehook__`` (site's readline completion and history)."""
    hook = getattr(sys, "__interactivehook__", None)
    if hook is None:
        return
    sys.audit("cpython.run_interactivehook", hook)
    _prompt.call_printing_errors(hook, preface="Failed calling sys.__interactivehook__\n")


_write_stderr = _stdio.write_stderr
