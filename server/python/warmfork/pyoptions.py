"""CPython 3.11's command line and ``PYTHON*`` variables, read as CPython reads them.

:mod:`warmfork.pymain` must know everything ``python ARGS`` would have been
asked to do before it runs a line of the program, because some requests
(``-O``, ``-S``, ``-X dev``, ``PYTHONHASHSEED`` ...) are settled while an
interpreter starts, and the warm interpreter started long ago: those have to
be refused, never ignored. This module is that reading. It mirrors CPython's
own code so that quirks match: :class:`_GetOpt` is ``_PyOS_GetOpt``
(Python/getopt.c), :func:`parse_command_line` is ``config_parse_cmdline`` and
:func:`read_environment` is ``config_read_env_vars`` and friends
(Python/initconfig.c, Python/preconfig.c). :func:`startup_conflict` then
compares what was asked with the interpreter that is actually running.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import site
import sys
from collections.abc import Callable, Mapping
from typing import NamedTuple

_SHORT_OPTIONS = "bBc:dEhiIJm:OPqRsStuvVW:xX:?"
# Long options and whether they take an argument; the help variants are
# answered by the real interpreter (see pymain), so only their names matter.
_LONG_OPTIONS = {
    "check-hash-based-pycs": True,
    "help-all": False,
    "help-env": False,
    "help-xoptions": False,
}
_HASH_BASED_PYCS_MODES = ("default", "always", "never")
# Compiled here, in the server, so that no worker pays for it.
_C_INT = re.compile(r"\s*([+-]?[0-9]+)")  # what strtol() accepts, whitespace first


class UsageError(Exception):
    """A malformed command line: python prints this, its usage line, and exits 2."""


class FatalError(Exception):
    """A value python rejects while starting ("Fatal Python error"), exit status 1."""

    def __init__(self, message: str, *, state: str = "preinitialized", cause: str | None = None) -> None:
        super().__init__(message)
        self.state = state
        self.cause = cause

    def report(self) -> str:
        """The text CPython writes to stderr for this error, byte for byte
        (``cause`` is the exception behind it, as Python prints its last line)."""
        cause = "" if self.cause is None else f"{self.cause}\n"
        return f"Fatal Python error: {self}\nPython runtime state: {self.state}\n{cause}\n"


@dataclasses.dataclass
class Config:
    """What a fresh ``python`` would have been configured with (a small ``PyConfig``)."""

    program: str
    argv: list[str] = dataclasses.field(default_factory=lambda: [""])
    run_command: str | None = None
    run_module: str | None = None
    run_filename: str | None = None
    help: str | None = None  # the option that asked for help: "-h", "--help-env" ...
    print_version: int = 0
    # Flags a fresh interpreter fixes at start-up (compared with the server's).
    bytes_warning: int = 0
    parser_debug: int = 0
    verbose: int = 0
    optimize: int = 0
    no_site: bool = False
    ignore_environment: bool = False
    isolated: bool = False
    no_user_site: bool = False
    dev_mode: bool = False
    utf8_mode: int | None = None  # None: whatever the locale implies
    warn_default_encoding: bool = False
    no_debug_ranges: bool = False
    import_time: bool = False
    frozen_modules: bool | None = None  # None: the build's default
    cpu_count: int | None = None  # 3.13's -X cpu_count: None not asked, -1 "default"
    perf_profiling: int = 0  # 1: -X perf (3.12), 2: -X perf_jit (3.13)
    random_hash: bool = False  # -R: ignore PYTHONHASHSEED
    hash_seed: int | None = None
    startup_variables: dict[str, str] = dataclasses.field(default_factory=dict)  # PYTHONHOME ...
    # Settings a running interpreter can still take.
    inspect: bool = False
    interactive: bool = False
    quiet: bool = False
    safe_path: bool = False
    dont_write_bytecode: bool = False
    unbuffered: bool = False
    skip_first_line: bool = False
    faulthandler: bool = False
    tracemalloc: int = 0
    int_max_str_digits: int | None = None  # None: the default limit
    pycache_prefix: str | None = None
    check_hash_based_pycs: str = "default"
    # The -X options, True for one without "=": `sys._xoptions` shows the
    # last of each name, and CPython's start-up reads the first.
    xoptions: dict[str, str | bool] = dataclasses.field(default_factory=dict)
    first_xoptions: dict[str, str | bool] = dataclasses.field(default_factory=dict)
    cmdline_warnoptions: list[str] = dataclasses.field(default_factory=list)
    env_warnoptions: list[str] = dataclasses.field(default_factory=list)
    pythonpath: list[str] = dataclasses.field(default_factory=list)
    startup_file: str | None = None
    coerce_c_locale_warn: bool = False  # PYTHONCOERCECLOCALE=warn

    @property
    def runs_code(self) -> bool:
        """True when ``-c``, ``-m`` or a file names the program (not stdin)."""
        return any(x is not None for x in (self.run_command, self.run_module, self.run_filename))

    @property
    def use_environment(self) -> bool:
        return not (self.ignore_environment or self.isolated)

    @property
    def warnoptions(self) -> list[str]:
        """``sys.warnoptions``: lowest priority first, duplicates dropped, as
        ``config_init_warnoptions`` builds it."""
        options = ["default"] if self.dev_mode else []
        options += self.env_warnoptions + self.cmdline_warnoptions
        if self.bytes_warning:
            options.append("error::BytesWarning" if self.bytes_warning > 1 else "default::BytesWarning")
        return list(dict.fromkeys(options))


class _GetOpt:
    """``_PyOS_GetOpt``: one option per call, bundles (``-uc CODE``) included."""

    def __init__(self, argv: list[str], *, lenient: bool = False) -> None:
        self.argv = argv
        self.index = 1  # first argument not consumed yet
        self._bundle = ""  # rest of a bundle of short options
        self._lenient = lenient

    def _refuse(self, message: str) -> tuple[str, None]:
        """An option python rejects: a usage error, or, when ``lenient`` (as
        CPython's pre-initialisation reads the command line, for -E, -I and
        -X alone), an option ``"_"`` to skip, as ``_PyOS_GetOpt`` returns."""
        if self._lenient:
            return "_", None
        raise UsageError(message)

    def next(self) -> tuple[str, str | None] | None:
        """The next option and its argument, or None where the options end."""
        if not self._bundle:
            if self.index >= len(self.argv):
                return None
            arg = self.argv[self.index]
            if not arg.startswith("-") or arg == "-":
                return None
            self.index += 1
            if arg == "--":
                return None
            if arg in ("--help", "--version"):
                return ("h" if arg == "--help" else "V"), None
            self._bundle = arg[1:]
        option, self._bundle = self._bundle[0], self._bundle[1:]
        if option == "-":
            return self._long_option()
        if option == "J":
            return self._refuse("-J is reserved for Jython")
        position = _SHORT_OPTIONS.find(option)
        if position < 0 or option == ":":
            return self._refuse(f"Unknown option: -{option}")
        if _SHORT_OPTIONS[position + 1 : position + 2] != ":":
            return option, None
        if self._bundle:
            value, self._bundle = self._bundle, ""
            return option, value
        if self.index >= len(self.argv):
            return self._refuse(f"Argument expected for the -{option} option")
        self.index += 1
        return option, self.argv[self.index - 1]

    def _long_option(self) -> tuple[str, str | None] | None:
        name, self._bundle = self._bundle, ""
        if not name:
            # CPython complains (from C, so to descriptor 2 whatever
            # `sys.stderr` is) and then treats it as the end of the options.
            if not self._lenient:
                with contextlib.suppress(OSError):
                    os.write(2, b"expected long option\n")
            return None
        if name not in _LONG_OPTIONS:
            # Skipped leniently, as `_PyOS_GetOpt` skips it: past the "--"
            # alone, the rest read as short options (`--Xutf8=1` is -X).
            self._bundle = name
            return self._refuse(f"unknown option {self.argv[self.index - 1]}")
        if not _LONG_OPTIONS[name]:
            return "--" + name, None
        if self.index >= len(self.argv):
            return self._refuse(f"Argument expected for the {self.argv[self.index - 1]} options")
        self.index += 1
        return "--" + name, self.argv[self.index - 1]


# Options that only count or set a flag: option -> (Config field, value or None to count).
_FLAG_OPTIONS: dict[str, tuple[str, bool | None]] = {
    "b": ("bytes_warning", None),
    "d": ("parser_debug", None),
    "O": ("optimize", None),
    "v": ("verbose", None),
    "V": ("print_version", None),
    "E": ("ignore_environment", True),
    "I": ("isolated", True),
    "P": ("safe_path", True),
    "B": ("dont_write_bytecode", True),
    "s": ("no_user_site", True),
    "S": ("no_site", True),
    "u": ("unbuffered", True),
    "x": ("skip_first_line", True),
    "q": ("quiet", True),
    "R": ("random_hash", True),
}


def parse_command_line(argv: list[str]) -> Config:
    """Read ``argv`` (``argv[0]`` is the program name) as ``python`` reads its own.

    Stops at the first ``-h``/``--help*`` as CPython does (``help`` is set);
    raises :class:`UsageError` for what CPython rejects with exit status 2.
    """
    config = Config(program=argv[0] if argv else "")
    getopt = _GetOpt(argv)
    while (found := getopt.next()) is not None:
        option, value = found
        if option == "c":
            config.run_command = f"{value}\n"  # CPython appends the newline too
            break
        if option == "m":
            config.run_module = value
            break
        if option in ("h", "?", "--help-all", "--help-env", "--help-xoptions"):
            config.help = option if option.startswith("--") else "-h"
            return config
        if option in _FLAG_OPTIONS:
            field, setting = _FLAG_OPTIONS[option]
            setattr(config, field, setting if setting is not None else getattr(config, field) + 1)
        elif option == "i":
            config.inspect = config.interactive = True
        elif option == "W":
            config.cmdline_warnoptions.append(str(value))
        elif option == "X":
            name, setting = _xoption(str(value))
            config.xoptions[name] = setting
            config.first_xoptions.setdefault(name, setting)
        elif option == "--check-hash-based-pycs":
            if value not in _HASH_BASED_PYCS_MODES:
                raise UsageError("--check-hash-based-pycs must be one of 'default', 'always', or 'never'")
            config.check_hash_based_pycs = value
        # -t is accepted and ignored, as by CPython.
    operands = argv[getopt.index :]
    if config.run_command is not None or config.run_module is not None:
        config.argv = ["-c" if config.run_command is not None else "-m", *operands]
    else:
        if operands and operands[0] != "-":
            config.run_filename = operands[0]
        config.argv = operands or [""]
    return config


def _xoption(text: str) -> tuple[str, str | bool]:
    """A ``-X`` option's name and value: True for one without ``=``."""
    name, sep, setting = text.partition("=")
    return name, setting if sep else True


def check_preconfig(argv: list[str], environ: Mapping[str, str]) -> None:
    """Raise :class:`FatalError` for what CPython's pre-initialisation
    rejects: an invalid UTF-8 mode and an unknown ``PYTHONMALLOC``. It reads
    only -E, -I and -X, up to ``-c`` or ``-m`` and past any option it does
    not know, before the rest of the command line: so before a usage error,
    ``-h`` or ``-V``."""
    getopt = _GetOpt(argv, lenient=True)
    use_environment = True
    utf8: str | bool | None = None
    while (found := getopt.next()) is not None and found[0] not in ("c", "m"):
        option, value = found
        if option in ("E", "I"):
            use_environment = False
        elif option == "X" and utf8 is None:
            name, setting = _xoption(str(value))
            if name == "utf8":
                utf8 = setting
    env = environ.get if use_environment else {}.get
    _utf8_mode(utf8, env("PYTHONUTF8") or None)
    malloc = env("PYTHONMALLOC")
    if malloc and malloc not in _ALLOCATOR_NAMES:
        raise FatalError("preconfig_init_allocator: PYTHONMALLOC: unknown allocator", state="preinitializing")


# What `PYTHONMALLOC` may name (`_PyMem_GetAllocatorName`), as standard
# builds have it: pymalloc, and mimalloc from 3.13 on. (Asking `sysconfig`
# whether this build has them would import `threading` on 3.13, whose
# after-fork hook every worker would then run. On a build without one, a
# run asking for it is refused as not the server's allocator, where python
# says it does not know it.)
_ALLOCATOR_NAMES = frozenset(
    {"default", "debug", "malloc", "malloc_debug", "pymalloc", "pymalloc_debug"}
    | ({"mimalloc", "mimalloc_debug"} if sys.version_info >= (3, 13) else set())
)


def read_environment(config: Config, environ: Mapping[str, str]) -> None:
    """Complete ``config`` from ``-X`` options and the ``PYTHON*`` variables.

    Follows CPython: an empty variable counts as unset, ``-E``/``-I`` hide them
    all, numeric flags take the larger of option and variable. Raises
    :class:`FatalError` for values CPython refuses to start with.
    """
    if config.isolated:
        config.safe_path = config.no_user_site = True

    # One pass over the environment instead of a lookup (and an encoding of
    # the name) per variable: this runs on every run's critical path. An
    # empty variable is left out, as unset; `env` is then the dict's own
    # `get`, a C call rather than a Python one per variable.
    python_vars = {k: v for k, v in environ.items() if v and k.startswith("PYTHON")} if config.use_environment else {}
    env: Callable[[str], str | None] = python_vars.get

    config.parser_debug = max(config.parser_debug, env_flag(env("PYTHONDEBUG")))
    config.verbose = max(config.verbose, env_flag(env("PYTHONVERBOSE")))
    config.optimize = max(config.optimize, env_flag(env("PYTHONOPTIMIZE")))
    config.inspect = config.inspect or env_flag(env("PYTHONINSPECT")) > 0
    config.dont_write_bytecode = config.dont_write_bytecode or env_flag(env("PYTHONDONTWRITEBYTECODE")) > 0
    config.no_user_site = config.no_user_site or env_flag(env("PYTHONNOUSERSITE")) > 0
    config.unbuffered = config.unbuffered or env_flag(env("PYTHONUNBUFFERED")) > 0
    config.safe_path = config.safe_path or env("PYTHONSAFEPATH") is not None
    config.env_warnoptions = [w for w in (env("PYTHONWARNINGS") or "").split(",") if w]
    pythonpath = env("PYTHONPATH")
    config.pythonpath = pythonpath.split(os.pathsep) if pythonpath else []
    config.startup_file = env("PYTHONSTARTUP")
    config.startup_variables = {
        name: value
        for name in ("PYTHONMALLOC", "PYTHONMALLOCSTATS", "PYTHONHOME", "PYTHONPLATLIBDIR")
        if (value := env(name)) is not None
    }

    xoptions = config.first_xoptions
    config.dev_mode = "dev" in xoptions or env("PYTHONDEVMODE") is not None
    config.faulthandler = "faulthandler" in xoptions or env("PYTHONFAULTHANDLER") is not None or config.dev_mode
    config.warn_default_encoding = "warn_default_encoding" in xoptions or env("PYTHONWARNDEFAULTENCODING") is not None
    config.no_debug_ranges = "no_debug_ranges" in xoptions or env("PYTHONNODEBUGRANGES") is not None
    config.import_time = "importtime" in xoptions or env("PYTHONPROFILEIMPORTTIME") is not None
    config.utf8_mode = _utf8_mode(xoptions.get("utf8"), env("PYTHONUTF8"))
    config.coerce_c_locale_warn = env("PYTHONCOERCECLOCALE") == "warn"
    config.frozen_modules = _frozen_modules(xoptions.get("frozen_modules"), env("PYTHON_FROZEN_MODULES"))
    config.perf_profiling = _perf_profiling(xoptions, env)
    if sys.version_info >= (3, 13):
        config.cpu_count = _cpu_count(xoptions.get("cpu_count"), env("PYTHON_CPU_COUNT"))
        _check_gil(xoptions.get("gil"), env("PYTHON_GIL"))
    config.tracemalloc = _tracemalloc_frames(xoptions.get("tracemalloc"), env("PYTHONTRACEMALLOC"))
    config.int_max_str_digits = _int_max_str_digits(xoptions.get("int_max_str_digits"), env("PYTHONINTMAXSTRDIGITS"))
    prefix = xoptions.get("pycache_prefix", env("PYTHONPYCACHEPREFIX"))
    config.pycache_prefix = prefix if isinstance(prefix, str) and prefix else None
    config.hash_seed = None if config.random_hash else _hash_seed(env("PYTHONHASHSEED"))


def _c_int(text: str) -> int | None:
    """``_Py_str_to_int``: a C ``int`` in base 10, or None. ``strtol()``
    converts nothing of an empty string, and so stops at its end: 0."""
    if not text:
        return 0
    match = _C_INT.fullmatch(text)
    value = int(match.group(1)) if match else None
    return value if value is not None and -(2**31) <= value < 2**31 else None


def env_flag(value: str | None) -> int:
    """``_Py_get_env_flag``: unset is 0, a number is itself, anything else is 1."""
    if value is None:
        return 0
    number = _c_int(value)
    return number if number is not None and number >= 0 else 1


def _utf8_mode(option: str | bool | None, variable: str | None) -> int | None:
    if option is not None:
        if option in (True, "1", "0"):
            return 0 if option == "0" else 1
        raise FatalError("preconfig_init_utf8_mode: invalid -X utf8 option value", state="preinitializing")
    if variable is not None:
        if variable in ("1", "0"):
            return int(variable)
        raise FatalError(
            "preconfig_init_utf8_mode: invalid PYTHONUTF8 environment variable value", state="preinitializing"
        )
    return None


def _frozen_modules(option: str | bool | None, variable: str | None) -> bool | None:
    if variable is not None and sys.version_info >= (3, 13):  # read first, and so failing first
        if variable not in ("on", "off"):
            raise FatalError('bad value for PYTHON_FROZEN_MODULES (expected "on" or "off")')
        if option is None:
            option = variable
    if option is None:
        return None
    if option in (True, "", "on", "off"):
        return option != "off"
    raise FatalError('bad value for option -X frozen_modules (expected "on" or "off")')


def _perf_profiling(xoptions: dict[str, str | bool], env: Callable[[str], str | None]) -> int:
    """``config_init_perf_profiling``: 1 for the perf trampoline (3.12), 2
    for perf's JIT support (3.13), 0 for neither."""
    level = 0
    if sys.version_info >= (3, 12):
        if _c_int(env("PYTHONPERFSUPPORT") or "0") or "perf" in xoptions:
            level = 1
    if sys.version_info >= (3, 13):
        if _c_int(env("PYTHON_PERF_JIT_SUPPORT") or "0") or "perf_jit" in xoptions:
            level = 2
    return level


def _cpu_count(option: str | bool | None, variable: str | None) -> int | None:
    """``config_init_cpu_count`` (3.13): the count ``os.cpu_count()`` is to
    give, -1 for the machine's, None when not asked."""
    count = None
    for value in (variable, option):
        if value is None:
            continue
        if value == "default":
            count = -1
        elif not isinstance(value, str) or (count := _c_int(value)) is None or count < 1:
            raise FatalError(
                "config_init_cpu_count: -X cpu_count=n option: n is missing or an invalid number, "
                "n must be greater than 0"
            )
    return count


def _check_gil(option: str | bool | None, variable: str | None) -> None:
    """``config_read_gil`` (3.13): the GIL can only be asked to stay, on a
    build that has one."""
    value = option if option is not None else variable
    if value is None:
        return
    if value not in ("0", "1"):
        raise FatalError('config_read_gil: PYTHON_GIL / -X gil must be "0" or "1"')
    if value == "0" and "t" not in sys.abiflags:  # not a free-threaded build
        raise FatalError("config_read_gil: Disabling the GIL is not supported by this build")


def _tracemalloc_frames(option: str | bool | None, variable: str | None) -> int:
    frames = 0
    for source, value in (("PYTHONTRACEMALLOC", variable), ("-X tracemalloc=NFRAME", option)):
        if value is None:
            continue
        frames = 1 if value is True else _c_int(str(value))  # type: ignore[assignment]
        if frames is None or frames < 0:
            raise FatalError(f"config_init_tracemalloc: {source}: invalid number of frames")
    return frames


def _int_max_str_digits(option: str | bool | None, variable: str | None) -> int | None:
    limit = None
    for source, value in (("PYTHONINTMAXSTRDIGITS", variable), ("-X int_max_str_digits", option)):
        if value is None:
            continue
        limit = _c_int(value) if isinstance(value, str) else None
        if limit is None or not (limit == 0 or limit >= 640):
            raise FatalError(
                f"config_init_int_max_str_digits: {source}: invalid limit; must be >= 640 or 0 for unlimited."
            )
    return limit


def _hash_seed(variable: str | None) -> int | None:
    if variable is None or variable == "random":
        return None
    if variable.isascii() and variable.isdigit() and int(variable) <= 4294967295:
        return int(variable)
    raise FatalError('config_init_hash_seed: PYTHONHASHSEED must be "random" or an integer in range [0; 4294967295]')


class _FixedSetting(NamedTuple):
    """A setting CPython fixes at start-up: how a user asks for it, the value
    this command asks for (None: not asked, anything goes) and the server's."""

    option: str
    reason: str
    flag: str  # where the server's value shows
    requested: Callable[[Config], int | None]
    server: int  # read once, in the server: fixed for its life
    only_when_asked: bool = False  # a server that has it still serves runs without it


def _code_has_debug_ranges() -> int:
    return int(next(compile("x", "", "eval").co_positions())[2] is not None)


_SERVER_HAS_DEBUG_RANGES = _code_has_debug_ranges()  # fixed for the server's life: asked once


def allocator(variable: str | None) -> str:
    """The memory allocators an interpreter of this build and of this one's
    development mode starts with given ``PYTHONMALLOC=variable`` (None or
    empty: unset), named as ``PYTHONMALLOC`` names them: ``pymalloc``,
    ``pymalloc_debug`` (with debug hooks), ``malloc``, ``mimalloc``, ..."""
    default = "mimalloc" if "t" in sys.abiflags else "pymalloc"  # free-threaded builds
    debug_build = hasattr(sys, "gettotalrefcount")
    if not variable:
        # -X dev adds debug hooks only where the variable is unset.
        return f"{default}_debug" if debug_build or sys.flags.dev_mode else default
    if variable == "default":
        return f"{default}_debug" if debug_build else default
    if variable == "debug":
        return f"{default}_debug"
    return variable


def _server_allocator() -> str:
    """The allocators this interpreter (the server) runs on: as CPython names
    them, else as its environment asked, read here, before any run replaces
    the environment (a program calling ``warmfork.serve`` may have changed
    it after start-up, which only CPython's own answer sees through)."""
    from . import _native

    named = _native.allocator_name()
    return named or allocator(None if sys.flags.ignore_environment else os.environ.get("PYTHONMALLOC"))


SERVER_ALLOCATOR = _server_allocator()


# Whether a run can have a UTF-8 mode of its own (see `utf8_mode_per_run`);
# the server finds out before it forks, so that workers share the answer.
_utf8_per_run: bool | None = None


def utf8_mode_per_run() -> bool:
    """Whether a run can be put in or out of UTF-8 mode, whatever the
    server's: this interpreter lets warmfork change the mode (see
    ``server/src/run_flags.rs``), and its file system encoding, which is
    fixed at start-up, is UTF-8, as python's is in either mode then."""
    global _utf8_per_run
    if _utf8_per_run is None:
        from . import _native

        _utf8_per_run = sys.getfilesystemencoding() == "utf-8" and _native.utf8_mode_settable()
    return _utf8_per_run


def _frozen_modules_in_use() -> int:
    return int(getattr(os.__spec__, "origin", None) == "frozen")


def _server_options() -> Config:
    """The settings this interpreter (the server) started with that CPython
    does not show: read from its own options and environment, here, before
    any run replaces the environment."""
    config = Config("")
    environ = {} if sys.flags.ignore_environment else os.environ
    try:
        config.perf_profiling = _perf_profiling(sys._xoptions, environ.get)
        if sys.version_info >= (3, 13):
            config.cpu_count = _cpu_count(sys._xoptions.get("cpu_count"), environ.get("PYTHON_CPU_COUNT"))
    except FatalError:  # it started, so it did not read these as they read now
        pass
    return config


_SERVER = _server_options()


_FIXED_SETTINGS = (
    _FixedSetting(
        "-O/-OO (or PYTHONOPTIMIZE)", "asserts and docstrings are compiled in or out at the level set at start-up",
        "sys.flags.optimize", lambda c: c.optimize, sys.flags.optimize,
    ),
    _FixedSetting(
        "-S", "the site module ran when the server started",
        "sys.flags.no_site", lambda c: int(c.no_site), sys.flags.no_site,
    ),
    _FixedSetting(
        "-b/-bb", "bytes/str checks are switched on at start-up",
        "sys.flags.bytes_warning", lambda c: c.bytes_warning, sys.flags.bytes_warning,
    ),
    _FixedSetting(
        "-v (or PYTHONVERBOSE)", "import tracing is switched on at start-up",
        "sys.flags.verbose", lambda c: c.verbose, sys.flags.verbose,
    ),
    _FixedSetting(
        "-d (or PYTHONDEBUG)", "parser debugging is switched on at start-up",
        "sys.flags.debug", lambda c: c.parser_debug, sys.flags.debug,
    ),
    _FixedSetting(
        "-X dev (or PYTHONDEVMODE)", "development mode installs memory allocator hooks at start-up",
        "sys.flags.dev_mode", lambda c: int(c.dev_mode), int(sys.flags.dev_mode),
    ),
    _FixedSetting(
        "-X warn_default_encoding (or PYTHONWARNDEFAULTENCODING)", "EncodingWarning is switched on at start-up",
        "sys.flags.warn_default_encoding", lambda c: int(c.warn_default_encoding),
        sys.flags.warn_default_encoding,
    ),
    _FixedSetting(
        "-X no_debug_ranges (or PYTHONNODEBUGRANGES)", "the compiler's column tables are switched off at start-up",
        "column positions in compiled code", lambda c: int(not c.no_debug_ranges), _SERVER_HAS_DEBUG_RANGES,
    ),
    _FixedSetting(
        "-X utf8 (or PYTHONUTF8)", "UTF-8 mode decides the encodings chosen at start-up",
        "sys.flags.utf8_mode", lambda c: None if utf8_mode_per_run() else c.utf8_mode, sys.flags.utf8_mode,
    ),
    _FixedSetting(
        "-X frozen_modules", "the standard library was imported when the server started",
        "frozen standard modules", lambda c: None if c.frozen_modules is None else int(c.frozen_modules),
        _frozen_modules_in_use(),
    ),
    _FixedSetting(
        "-X cpu_count (or PYTHON_CPU_COUNT)", "the count os.cpu_count() gives is set at start-up",
        "cpu_count", lambda c: c.cpu_count, -1 if _SERVER.cpu_count is None else _SERVER.cpu_count,
    ),
    _FixedSetting(
        "-X perf_jit (or PYTHON_PERF_JIT_SUPPORT)", "perf's JIT support can only be switched on at start-up",
        "perf_jit", lambda c: 1 if c.perf_profiling == 2 else None, int(_SERVER.perf_profiling == 2),
    ),
    _FixedSetting(
        "-E", "the server has read its environment, and the standard library consults sys.flags.ignore_environment",
        "sys.flags.ignore_environment", lambda c: int(c.ignore_environment), sys.flags.ignore_environment,
        only_when_asked=True,
    ),
    _FixedSetting(
        "-I", "the server has read its environment and user site directory, and isolation is fixed at start-up",
        "sys.flags.isolated", lambda c: int(c.isolated), sys.flags.isolated,
        only_when_asked=True,
    ),
)  # fmt: skip


def startup_conflict(config: Config) -> str | None:
    """Why ``config`` cannot run in this (already started) interpreter, or None.

    A start-up setting is accepted when the server already runs with the value
    a fresh python would get, since the run is then the same; otherwise the
    message names the option, says why it is fixed and what to do instead.
    """
    for setting in _FIXED_SETTINGS:
        wanted, actual = setting.requested(config), setting.server
        if wanted is None or wanted == actual or (setting.only_when_asked and not wanted):
            continue
        return _refusal(
            setting.option, f"{setting.reason} (this server has {setting.flag}={actual}, this command {wanted})"
        )
    for check in (_user_site_conflict, _hash_seed_conflict, _other_startup_conflict):
        if (reason := check(config)) is not None:
            return reason
    return None


def _user_site_conflict(config: Config) -> str | None:
    """-s only matters when it changes sys.path: when the user site directory
    exists and this interpreter would use one at all (not in a virtual environment)."""
    directory = site.getusersitepackages()
    if config.no_user_site == bool(sys.flags.no_user_site):
        return None
    if sys.prefix != sys.base_prefix or not os.path.isdir(directory):
        return None
    where = "left out of" if sys.flags.no_user_site else "put on"
    return _refusal(
        "-s/-I (or PYTHONNOUSERSITE)", f"the user site directory {directory} was {where} sys.path at start-up"
    )


def _hash_seed_conflict(config: Config) -> str | None:
    if config.hash_seed is None:
        return None
    option = f"PYTHONHASHSEED={config.hash_seed}"
    if config.hash_seed == 0 and sys.flags.hash_randomization:
        return _refusal(option, "the hash seed is chosen at start-up and this server hashes with a random one")
    if config.hash_seed != 0:
        return _refusal(option, "the hash seed is chosen at start-up and this server's seed cannot be checked")
    return None


def _other_startup_conflict(config: Config) -> str | None:
    if config.import_time and not sys._xoptions.get("importtime"):
        return _refusal("-X importtime (or PYTHONPROFILEIMPORTTIME)", "the server imported its modules long ago")
    if "showrefcount" in config.xoptions and hasattr(sys, "gettotalrefcount"):  # only debug builds count
        return _refusal("-X showrefcount", "reference counting statistics are switched on at start-up")
    for name, value in config.startup_variables.items():
        if not _variable_matches_server(name, value):
            return _refusal(f"{name}={value}", "it is read only while an interpreter starts")
    return None


def _variable_matches_server(name: str, value: str) -> bool:
    """Whether a start-up-only variable asks for what the server already has."""
    if name == "PYTHONHOME":
        prefix, _, exec_prefix = value.partition(os.pathsep)
        wanted = (os.path.normpath(prefix), os.path.normpath(exec_prefix or prefix))
        # PYTHONHOME names the installation, which a virtual environment's
        # interpreter has as its base prefix.
        return wanted == (os.path.normpath(sys.base_prefix), os.path.normpath(sys.base_exec_prefix))
    if name == "PYTHONPLATLIBDIR":
        return value == sys.platlibdir
    if name == "PYTHONMALLOC":  # a run's dev mode is the server's, or it is refused
        return allocator(value) == SERVER_ALLOCATOR
    return False  # PYTHONMALLOCSTATS: python prints them at exit, a worker does not


def _refusal(option: str, reason: str) -> str:
    return (
        f"{option} cannot be honoured by a warm interpreter: {reason}; "
        "run plain python for it, or start the server with the same setting"
        + _STARTED_BY_A_CLIENT
    )


# A server a client started (WARMFORK_SERVER) has that client's start-up
# settings, which may have been a one-off (`PYTHONOPTIMIZE=1 warmfork ...`).
_STARTED_BY_A_CLIENT = (
    " (a client started this server, with its own environment: `warmfork-server stop`, "
    "and the next run starts one with yours)"
    if os.environ.get("WARMFORK_AUTOSTARTED") == "1"
    else ""
)
