"""What the server derived from its own environment and a worker would
otherwise inherit: made the client's.

A fresh python reads some variables once, at start-up or when a module
first needs them, and keeps what it found: the C library and ``time`` read
``TZ``, ``tempfile`` caches the directory ``TMPDIR`` names, ``zoneinfo``
its search path (``PYTHONTZPATH``) and the zones it loaded, ``site`` and
``sysconfig`` the user base (``PYTHONUSERBASE``, ``HOME``), ``warnings``
the filters of ``-W`` and ``PYTHONWARNINGS``. A worker is a copy of the
server, so it holds the server's. Each is redone here only when the
variables it depends on differ between client and server, and only if the
server has it at all: a worker's cost is the memory pages it writes.

Libraries that read their variables when they are loaded (the dynamic
loader's ``LD_LIBRARY_PATH``, OpenBLAS's ``OPENBLAS_NUM_THREADS``) keep the
server's; README's limitations say so.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Callable

# Each cache: the variables it is derived from, and how a worker makes it
# the client's. The server's values are taken when it starts serving.
_TEMPDIR_VARIABLES = (b"TMPDIR", b"TEMP", b"TMP")
_USER_BASE_VARIABLES = (b"PYTHONUSERBASE", b"HOME")

# The caches the server has, each with the variables it depends on (TZ's
# always: the C library read it at start-up), and the server's values of
# those variables.
_caches: tuple[tuple[tuple[bytes, ...], Callable[[], None]], ...] = (((b"TZ",), time.tzset),)
_server_values: dict[bytes, bytes | None] = {b"TZ": os.environb.get(b"TZ")}
# The `warnings` filters the server's own -W and PYTHONWARNINGS made.
_server_warning_filters: tuple[object, ...] = ()


def note_server_state() -> None:
    """Remember, just before the server serves, which of these caches it
    holds and the variables they came from."""
    global _caches, _server_warning_filters
    caches: list[tuple[tuple[bytes, ...], Callable[[], None]]] = [((b"TZ",), time.tzset)]
    if _tempdir_is_from_environment():
        caches.append((_TEMPDIR_VARIABLES, _forget_tempdir))
    if "zoneinfo._tzpath" in sys.modules:
        caches.append(((b"PYTHONTZPATH",), _reset_tzpath))
    site, sysconfig = sys.modules.get("site"), sys.modules.get("sysconfig")
    if getattr(site, "USER_BASE", None) is not None or getattr(sysconfig, "_CONFIG_VARS", None) is not None:
        caches.append((_USER_BASE_VARIABLES, _recompute_user_base))
    _caches = tuple(caches)
    _server_values.update((name, os.environb.get(name)) for variables, _ in _caches for name in variables)
    _server_warning_filters = _filters_of(sys.warnoptions)


def refresh() -> None:
    """Redo, from ``os.environ`` (by now the client's), each cache whose
    variables the client has set otherwise than the server. (The C
    environment already is the client's too, which ``time.tzset`` reads.)

    A redo that fails (a warm-up may have replaced what it uses) leaves the
    server's value: a run python would make must not fail here."""
    data = os.environ._data  # type: ignore[attr-defined]  # CPython's os._Environ store, bytes to bytes on POSIX
    for variables, redo in _caches:
        for name in variables:
            if data.get(name) != _server_values[name]:
                with contextlib.suppress(Exception):
                    redo()
                break


def restart_clocks() -> None:
    """What loaded modules noted of the process when they were imported,
    which a fresh python notes when its program starts: where it started
    (``multiprocessing``'s spawn and forkserver children look for the
    program's modules there), when (``logging``'s ``relativeCreated``), and
    the main thread's native id (``threading``'s fork handler keeps the
    server's). Only for the modules the server loaded; run in the client's
    working directory."""
    process = sys.modules.get("multiprocessing.process")
    if process is not None:
        try:
            process.ORIGINAL_DIR = os.path.abspath(os.getcwd())  # type: ignore[attr-defined]
        except OSError:  # a directory deleted: python's multiprocessing has None then
            process.ORIGINAL_DIR = None  # type: ignore[attr-defined]
    logging = sys.modules.get("logging")
    if logging is not None:
        # Seconds up to 3.12, nanoseconds from 3.13, as logging keeps it.
        start = logging._startTime  # type: ignore[attr-defined]
        logging._startTime = time.time_ns() if isinstance(start, int) else time.time()  # type: ignore[attr-defined]
    threading = sys.modules.get("threading")
    if threading is not None:
        with contextlib.suppress(AttributeError):  # a build without native thread ids
            threading.main_thread()._set_native_id()  # type: ignore[attr-defined]


def drop_server_warning_options() -> None:
    """Take out of ``warnings.filters`` what the server's own ``-W`` options
    and ``PYTHONWARNINGS`` put there, before the run's are applied."""
    if not _server_warning_filters:
        return
    import warnings

    filters = warnings.filters
    for item in _server_warning_filters:
        try:
            filters.remove(item)
        except ValueError:  # the warm-up took it out itself
            continue
    # An option equal to one of the filters python starts with (say
    # `ignore::DeprecationWarning`) moved that filter to the front rather
    # than adding one: it goes back to its place among the defaults.
    stock = _stock_filters()
    for index, default in enumerate(stock):
        if default in _server_warning_filters and default not in filters:
            later = [filters.index(after) for after in stock[index + 1 :] if after in filters]
            filters.insert(later[0] if later else len(filters), default)
    warnings._filters_mutated()  # type: ignore[attr-defined]


def _stock_filters() -> tuple[tuple[object, ...], ...]:
    """The filters CPython 3.11's ``_warnings`` starts with, in order (none
    in a debug build, which shows every warning)."""
    if hasattr(sys, "gettotalrefcount"):
        return ()
    return (
        ("default", None, DeprecationWarning, "__main__", 0),
        ("ignore", None, DeprecationWarning, None, 0),
        ("ignore", None, PendingDeprecationWarning, None, 0),
        ("ignore", None, ImportWarning, None, 0),
        ("ignore", None, ResourceWarning, None, 0),
    )


def _filters_of(options: list[str]) -> tuple[object, ...]:
    """The filters ``warnings`` makes of ``options``, as at start-up, made
    without keeping them (the option errors it reports were reported when
    the server started)."""
    warnings = sys.modules.get("warnings")
    if not options or warnings is None:
        return ()
    filters = warnings.filters
    kept, filters[:] = filters[:], []
    try:
        for option in options:
            try:
                warnings._setoption(option)  # type: ignore[attr-defined]
            except warnings._OptionError:  # type: ignore[attr-defined]
                continue
        return tuple(filters)
    finally:
        filters[:] = kept
        warnings._filters_mutated()  # type: ignore[attr-defined]


def _tempdir_is_from_environment() -> bool:
    """Whether ``tempfile`` holds a directory it chose itself from the
    server's environment, not one the warm-up set on purpose."""
    tempfile = sys.modules.get("tempfile")
    chosen = getattr(tempfile, "tempdir", None)
    if not isinstance(chosen, str):
        return False
    candidates = tempfile._candidate_tempdir_list()  # type: ignore[union-attr]
    return chosen in {os.path.abspath(candidate) for candidate in candidates}


def _forget_tempdir() -> None:
    """``tempfile.gettempdir()`` chooses again, from the client's ``TMPDIR``."""
    sys.modules["tempfile"].tempdir = None


def _reset_tzpath() -> None:
    """``zoneinfo.TZPATH`` from the client's ``PYTHONTZPATH``, and no zone
    found on the server's path. Relative entries are dropped as zoneinfo
    drops them, but without its warning, which python gives only to a
    program that imports zoneinfo, under the program's filters."""
    tzpath = sys.modules["zoneinfo._tzpath"]
    value = os.environ.get("PYTHONTZPATH")
    if value is None:
        tzpath.reset_tzpath()
    else:
        tzpath.reset_tzpath(to=tuple(entry for entry in value.split(os.pathsep) if os.path.isabs(entry)))
    zoneinfo = sys.modules.get("zoneinfo")
    if zoneinfo is not None:
        zoneinfo.ZoneInfo.clear_cache()


def _recompute_user_base() -> None:
    """``site.getuserbase()`` and ``sysconfig``'s ``userbase`` from the
    client's ``PYTHONUSERBASE`` and ``HOME``. (``sys.path`` keeps the
    server's user site directory, if it has one; README says so.)"""
    site, sysconfig = sys.modules.get("site"), sys.modules.get("sysconfig")
    if site is not None and site.USER_BASE is not None:  # as site.main sets them
        site.USER_BASE = site.USER_SITE = None
        site.getusersitepackages()
    config = getattr(sysconfig, "_CONFIG_VARS", None)
    if config is not None and "userbase" in config:
        config["userbase"] = sysconfig._getuserbase()  # type: ignore[union-attr]
