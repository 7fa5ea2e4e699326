"""`warmfork ARGS` runs a program the way `python ARGS` does: the same
ways to name it, the same sys.argv, sys.path[0] and __main__, the same
tracebacks and exit statuses, and a clear refusal for the options a warm
interpreter cannot honour. Checked against real python wherever it makes
sense (tests/support/differential.py).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import Server, start_server
from support.differential import assert_same_as_python, shared_server, warmfork
from support.server_process import stop_when_idle

server = shared_server()

SHOW = (
    "import sys, __main__\n"
    "print(ascii(sys.argv), __name__, ascii(sys.path[0]))\n"
    "print(ascii(globals().get('__file__')), __package__, __spec__ and __spec__.name)\n"
    "print(sorted(vars(__main__)), type(__builtins__).__name__)\n"
)


@pytest.fixture
def programs(tmp_path: Path) -> Path:
    """A working directory with a script, a module and a package that show
    how they were run."""
    (tmp_path / "prog.py").write_text(SHOW)
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "prog.py").write_text(SHOW)
    (tmp_path / "mod.py").write_text(SHOW)
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text("")
    (tmp_path / "pkg" / "__main__.py").write_text(SHOW)
    return tmp_path


@pytest.mark.parametrize("script", ["prog.py", "./prog.py", "sub/prog.py", "ABS/sub/prog.py"])
def test_a_script_sees_argv_name_and_path_as_under_python(server, programs: Path, script: str) -> None:
    script = script.replace("ABS", os.fspath(programs))
    out = assert_same_as_python(server, script, "a", "b c", "", "-x", cwd=programs)
    assert out.status == 0
    assert b"__main__" in out.stdout


def test_dash_c_sees_argv_name_and_path_as_under_python(server, programs: Path) -> None:
    out = assert_same_as_python(server, "-c", SHOW, "a", "-c", "--", cwd=programs)
    assert out.stdout.startswith(b"['-c', 'a', '-c', '--'] __main__ ''\n")


@pytest.mark.parametrize("module", ["mod", "pkg"])
def test_dash_m_runs_from_the_working_directory_as_under_python(server, programs: Path, module: str) -> None:
    out = assert_same_as_python(server, "-m", module, "arg", cwd=programs)
    assert out.status == 0
    assert ascii(os.fspath(programs)).encode() in out.stdout


@pytest.mark.parametrize("args", [("-", "a", "b"), ()], ids=["dash", "no_arguments"])
def test_a_program_on_stdin_runs_as_under_python(server, programs: Path, args: tuple[str, ...]) -> None:
    out = assert_same_as_python(server, *args, input=SHOW.encode(), cwd=programs)
    assert out.status == 0
    assert b"__main__" in out.stdout


def test_each_run_starts_with_a_fresh_main_and_fresh_modules(server, tmp_path: Path) -> None:
    plant = (
        "import __main__, sys, json\n"
        "__main__.leftover = 1\n"
        "sys.modules['planted'] = json\n"
        "sys.path.append('/planted')\n"
        "json.planted = True\n"
    )
    check = (
        "import __main__, sys, json\n"
        "print(hasattr(__main__, 'leftover'), 'planted' in sys.modules,"
        " '/planted' in sys.path, hasattr(json, 'planted'))\n"
    )
    assert warmfork(server, "-c", plant, cwd=tmp_path).returncode == 0
    done = warmfork(server, "-c", check, cwd=tmp_path)
    assert (done.returncode, done.stdout) == (0, b"False False False False\n")


@pytest.mark.parametrize(
    "caching",
    [
        # The warm-up itself imported through the relative entry.
        "sys.path.insert(0, 'lib')\nimportlib.util.find_spec('where')\n",
        # Python code the server runs while serving (a fork hook) does, after
        # the server dropped such finders and before every fork: each worker
        # must notice and drop it again.
        "sys.path.append('lib')\nos.register_at_fork(before=lambda: importlib.util.find_spec('where'))\n",
    ],
    ids=["by_the_warm_up", "while_serving"],
)
def test_imports_search_the_clients_directory_even_if_the_server_cached_its_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caching: str
) -> None:
    # The server imported through a relative `sys.path` entry and so left a
    # finder for its own directory in `sys.path_importer_cache`; a program
    # that uses the same entry must import from the client's directory, as
    # under python.
    code = tmp_path / "code"
    code.mkdir()
    (code / "warm_relative.py").write_text(f"import importlib.util, os, sys\n{caching}")
    client_dir = tmp_path / "client"
    for directory, name in ((tmp_path, "server"), (client_dir, "client")):
        (directory / "lib").mkdir(parents=True)
        (directory / "lib" / "where.py").write_text(f"print('{name}')\n")
    monkeypatch.setenv("PYTHONPATH", os.fspath(code))
    srv = start_server(tmp_path, "--preload", "warm_relative")  # its working directory is tmp_path
    try:
        done = warmfork(srv, "-c", "import sys; sys.path.insert(0, 'lib'); import where", cwd=client_dir)
        assert (done.returncode, done.stdout) == (0, b"client\n"), done.stderr
    finally:
        srv.stop()


@pytest.mark.parametrize("warnings", [(), ("-W", "error")], ids=["default", "warnings-are-errors"])
def test_dash_m_of_a_preloaded_submodule_runs_as_under_python(tmp_path: Path, warnings: tuple[str, ...]) -> None:
    # runpy warned, on every run, that 'json.tool' was in sys.modules before
    # it ran, and under -W error the run failed. Under python only a package
    # that imports it itself puts it there (as os puts os.path, and `own`
    # its `cli` here), and then runpy warns, and a later import finds it.
    for name, text in {
        "tool/__init__.py": "",
        "tool/__main__.py": "print('tool ran')\n",
        "own/__init__.py": "from . import cli\n",
        "own/cli.py": "import sys\nif __name__ == '__main__':\n    print('own.cli' in sys.modules)\n",
        "part/__init__.py": "",
        "part/sub.py": "import sys\nfrom part import sub\nprint(__name__, sub is sys.modules['part.sub'])\n",
        "nest/__init__.py": "",
        "nest/inner/__init__.py": "import nest.inner.x\n",
        "nest/inner/x.py": "VALUE = 42\n",
        "nest/inner/__main__.py": "import nest.inner\nprint('main', nest.inner.x.VALUE)\n",
    }.items():
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text(text)
    preload = "json.tool,tool.__main__,own,part.sub,nest.inner"
    srv = start_server(tmp_path, "--preload", preload)  # its working directory is tmp_path
    try:
        for module in ("json.tool", "os.path", "tool", "own.cli", "part.sub", "nest.inner"):
            outcome = assert_same_as_python(srv, *warnings, "-m", module, input=b'{"a": [1]}', cwd=tmp_path)
            if module in ("json.tool", "tool", "part.sub", "nest.inner"):
                assert (outcome.status, outcome.stderr) == (0, b""), outcome
    finally:
        srv.stop()


# -- tracebacks ------------------------------------------------------------------

FAILING = {
    "zero_division_in_dash_c": ("-c", "x = 1\n1 / 0"),
    "error_in_a_function_of_a_script": ("fails.py", "arg"),
    "error_in_a_module": ("-m", "fails"),
    "error_in_an_imported_module": ("-c", "import fails"),
    "syntax_error_in_a_script": ("broken.py",),
    "syntax_error_in_dash_c": ("-c", "x = (1,"),
    "non_utf8_comment_in_a_script": ("latin_comment.py",),
    "exception_with_a_cause": ("-c", "try:\n    {}['k']\nexcept KeyError as e:\n    raise ValueError('v') from e"),
    "missing_script": ("no_such_script.py",),
    "missing_module": ("-m", "no_such_module"),
    "directory_without_main": ("pkgdir",),
}


@pytest.mark.parametrize("name", list(FAILING))
def test_a_failing_program_gives_pythons_traceback_and_status(server, tmp_path: Path, name: str) -> None:
    (tmp_path / "fails.py").write_text("def f(x):\n    return x['missing']\n\nf({})\n")
    (tmp_path / "broken.py").write_text("def f(:\n    pass\n")
    (tmp_path / "latin_comment.py").write_bytes(b"print('runs under compile()')  # caf\xe9\n")
    (tmp_path / "pkgdir").mkdir()
    out = assert_same_as_python(server, *FAILING[name], cwd=tmp_path)
    assert out.status != 0
    assert out.stderr


@pytest.mark.parametrize(
    "hook",
    [
        "sys.excepthook = lambda *exc: 1 / 0",
        "sys.excepthook = None",
        "del sys.excepthook",
        "sys.excepthook = lambda *exc: sys.exit(5)",
        "sys.excepthook = lambda kind, value, tb: print('kept', sys.last_value is value)",
        "sys.excepthook = lambda kind, value, tb: print('kept', getattr(sys, 'last_exc', None) is value)",
        # Python reports both through its own default hook, whatever
        # sys.__excepthook__ is; a run reported neither.
        "sys.excepthook = sys.__excepthook__ = None",
        "del sys.excepthook, sys.__excepthook__",
    ],
    ids=["raises", "none", "missing", "exits", "sees-last-value", "sees-last-exc", "both-none", "both-missing"],
)
def test_an_excepthook_that_fails_exits_or_is_missing_is_handled_as_by_python(
    server, tmp_path: Path, hook: str
) -> None:
    assert_same_as_python(server, "-c", f"import sys\n{hook}\nraise ValueError('boom')", cwd=tmp_path)


@pytest.mark.parametrize(
    ("args", "stdin"),
    [
        # -u: python's prompt then reads its piped input unbuffered, and
        # leaves pdb the lines after its own (see the README's limitations).
        (("-u", "-i", "pm.py"), b"import pdb; pdb.pm()\np x\nq\n"),
        (("-q", "-i"), b"1/0\nimport sys; print(repr(sys.last_exc) if hasattr(sys, 'last_exc') else 'none')\n"),
    ],
    ids=["pdb-pm-after-the-program", "after-a-statement-at-the-prompt"],
)
def test_the_last_exception_is_kept_for_a_post_mortem_as_by_python(
    server, tmp_path: Path, args: tuple[str, ...], stdin: bytes
) -> None:
    # On 3.12 and later `pdb.pm()` reads `sys.last_exc`, which warmfork did
    # not set: "AttributeError: module 'sys' has no attribute 'last_exc'".
    (tmp_path / "pm.py").write_text("def f(x):\n    return 1 / x\n\nf(0)\n")
    out = assert_same_as_python(server, *args, input=stdin, cwd=tmp_path)
    assert b"AttributeError" not in out.stdout + out.stderr


def test_an_uncaught_program_on_stdin_gives_pythons_traceback(server, tmp_path: Path) -> None:
    out = assert_same_as_python(server, "-", input=b"import sys\nprint('before')\nraise RuntimeError('late')\n", cwd=tmp_path)
    assert out.status == 1
    assert out.stderr.endswith(b"RuntimeError: late\n")


@pytest.mark.parametrize("args", [("-",), ("-i", "-")], ids=["program", "prompt"])
def test_a_stdin_open_only_for_writing_reads_as_empty_as_under_python(
    server, tmp_path: Path, args: tuple[str, ...]
) -> None:
    # Regression: fdopen(3) refused the descriptor ('OSError: Invalid
    # argument', status 1), and the prompt's read raised EBADF; python's C
    # stdin reads nothing from it, and the run ends with 0.
    with (tmp_path / "written").open("ab") as stdin:
        out = assert_same_as_python(server, *args, stdin=stdin, cwd=tmp_path)
    assert out.status == 0

def test_an_uncaught_keyboard_interrupt_ends_the_program_by_sigint(server, tmp_path: Path) -> None:
    out = assert_same_as_python(server, "-c", "raise KeyboardInterrupt", cwd=tmp_path)
    assert out.status == -2


# -- SystemExit and exit statuses --------------------------------------------------


def left_error(report: bytes) -> bytes:
    """What python says, from 3.12 on, of the error it met reading or
    printing the code: reported as it finalises (3.13 says where)."""
    if sys.version_info < (3, 12):
        return b""
    return (b"Exception ignored on threading shutdown:\n" if sys.version_info >= (3, 13) else b"") + report


TOO_LARGE = left_error(b"OverflowError: Python int too large to convert to C long\n")


@pytest.mark.parametrize(
    ("statement", "status", "stderr"),
    [
        ("sys.exit(300)", 44, b""),
        ("sys.exit('msg')", 1, b"msg\n"),
        ("sys.exit()", 0, b""),
        ("sys.exit(None)", 0, b""),
        ("sys.exit(True)", 1, b""),
        ("raise SystemExit(-1)", 255, b""),
        ("raise SystemExit(3, 'two args')", 1, b"(3, 'two args')\n"),
        ("sys.exit(2**63)", 255, TOO_LARGE),
        ("sys.exit(-(2**70))", 255, TOO_LARGE),
        ("sys.exit(2**63 - 1)", 255, b""),
        ("sys.stderr = None\nsys.exit('to the C stderr')", 1, b"to the C stderr\n"),
        # The newline comes even when the code's text cannot be had or written.
        (
            "class Unprintable:\n    def __str__(self): raise ValueError\nsys.exit(Unprintable())",
            1,
            b"\n" + left_error(b'Traceback (most recent call last):\n  File "<string>", line 4, in __str__\nValueError: \n'),
        ),
        ("sys.stderr = None\nsys.exit(type('Unprintable', (), {'__str__': lambda self: 1 / 0})())", 1, b"\n"),
        ("sys.stderr = type('No', (), {'write': lambda s, t: 1 / 0, 'flush': lambda s: 0})()\nsys.exit(2j)", 1, b"\n"),
        ("exit(5)", 5, b""),
        ("quit(6)", 6, b""),
    ],
)
def test_system_exit_gives_pythons_status_and_message(
    server, tmp_path: Path, statement: str, status: int, stderr: bytes
) -> None:
    out = assert_same_as_python(server, "-c", f"import sys\nprint('out')\n{statement}", cwd=tmp_path)
    assert (out.status, out.stdout, out.stderr) == (status, b"out\n", stderr)


@pytest.mark.parametrize("code", [0, 1, 2, 42, 127, 128, 200, 201, 202, 203, 204, 255])
def test_the_programs_exit_code_is_the_clients_exit_code(server, tmp_path: Path, code: int) -> None:
    done = warmfork(server, "-c", f"import sys; sys.exit({code})", cwd=tmp_path)
    assert (done.returncode, done.stderr) == (code, b"")


# -- options ---------------------------------------------------------------------

ALTERNATING = "import sys\nfor i in range(3):\n    print('out', i)\n    print('err', i, file=sys.stderr)\n"


@pytest.mark.parametrize("options", [(), ("-u",)], ids=["buffered", "unbuffered"])
def test_dash_u_unbuffers_output_as_under_python(server, tmp_path: Path, options: tuple[str, ...]) -> None:
    out = assert_same_as_python(
        server, *options, "-c", ALTERNATING, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    lines = out.stdout.splitlines()
    assert (lines[0] == b"out 0") == bool(options), lines


@pytest.mark.parametrize(
    "options",
    [("-W", "error"), ("-Werror",), ("-W", "ignore"), ("-W", "always"), ("-W", "error::DeprecationWarning")],
)
def test_dash_w_filters_warnings_as_under_python(server, tmp_path: Path, options: tuple[str, ...]) -> None:
    program = "import sys, warnings\nprint(sys.warnoptions)\nfor _ in range(2):\n    warnings.warn('careful')\n"
    assert_same_as_python(server, *options, "-c", program, cwd=tmp_path)


def test_dash_x_options_reach_sys_xoptions_as_under_python(server, tmp_path: Path) -> None:
    program = "import sys, faulthandler\nprint(sys._xoptions, faulthandler.is_enabled())"
    out = assert_same_as_python(server, "-X", "faulthandler", "-c", program, cwd=tmp_path)
    assert out.stdout == b"{'faulthandler': True} True\n"


@pytest.mark.parametrize("option", ["-V", "--version"])
def test_version_option_prints_pythons_version(server, tmp_path: Path, option: str) -> None:
    assert_same_as_python(server, option, cwd=tmp_path)


@pytest.mark.parametrize("option", ["-O", "-OO", "-S", "-I", "-E"])
@pytest.mark.parametrize("how", ["dash_c", "script"])
def test_an_option_a_warm_interpreter_cannot_honour_is_refused_and_runs_nothing(
    server, tmp_path: Path, option: str, how: str
) -> None:
    marker = tmp_path / "ran"
    program = f"open({os.fspath(marker)!r}, 'w')\nprint('ran')\n"
    (tmp_path / "prog.py").write_text(program)
    args = ("-c", program) if how == "dash_c" else ("prog.py",)
    done = warmfork(server, option, *args, cwd=tmp_path)
    stderr = done.stderr.decode()
    assert done.returncode == 201, stderr
    assert done.stdout == b""
    assert stderr.startswith("warmfork: ") and stderr.count("\n") == 1, stderr
    assert option[:2] in stderr
    assert not marker.exists()


def test_pythonhome_naming_the_servers_installation_is_not_refused(server, tmp_path: Path) -> None:
    # In a virtual environment sys.prefix is the environment; PYTHONHOME
    # names the installation it is based on, sys.base_prefix.
    done = warmfork(server, "-c", "print('ran')", cwd=tmp_path, env={"PYTHONHOME": sys.base_prefix})
    assert (done.returncode, done.stdout, done.stderr) == (0, b"ran\n", b"")
    other = warmfork(server, "-c", "print('ran')", cwd=tmp_path, env={"PYTHONHOME": os.fspath(tmp_path)})
    assert other.returncode == 201 and b"PYTHONHOME=" in other.stderr


# sys.flags shows how python started: for the settings a run takes, the run's
# options and variables, whatever the server was started with.
FLAG_CASES = {
    "none": ((), {}),
    "B": (("-B",), {}),
    "P": (("-P",), {}),
    "q": (("-q",), {}),
    "s": (("-s",), {}),
    "i": (("-i",), {}),
    "int_max_str_digits": (("-X", "int_max_str_digits=1000"), {}),
    "PYTHONINSPECT": ((), {"PYTHONINSPECT": "1"}),
    "PYTHONSAFEPATH": ((), {"PYTHONSAFEPATH": "1"}),
    "PYTHONDONTWRITEBYTECODE": ((), {"PYTHONDONTWRITEBYTECODE": "1"}),
    "PYTHONNOUSERSITE": ((), {"PYTHONNOUSERSITE": "1"}),
    "PYTHONINTMAXSTRDIGITS": ((), {"PYTHONINTMAXSTRDIGITS": "0"}),
}


@pytest.mark.parametrize(("options", "variables"), FLAG_CASES.values(), ids=FLAG_CASES.keys())
def test_sys_flags_show_the_runs_options_as_under_python(
    server, tmp_path: Path, options: tuple[str, ...], variables: dict[str, str]
) -> None:
    out = assert_same_as_python(
        server, *options, "-c", "import sys; print(sys.flags)", cwd=tmp_path, env=variables, input=b""
    )
    assert out.stdout.startswith(b"sys.flags(debug=0, "), out


@pytest.fixture(scope="module")
def bytecode_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server started with flags of its own that a run does not have."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PYTHONDONTWRITEBYTECODE", "1")
        patch.setenv("PYTHONSAFEPATH", "1")
        srv = start_server(tmp_path_factory.mktemp("flags"))
    yield srv
    stop_when_idle(srv)


def test_sys_flags_do_not_show_the_servers_own_settings(bytecode_server, tmp_path: Path) -> None:
    out = assert_same_as_python(bytecode_server, "-c", "import sys; print(sys.flags)", cwd=tmp_path)
    assert b"dont_write_bytecode=0" in out.stdout and b"safe_path=False" in out.stdout, out


def test_a_program_raising_warmforks_unsupported_fails_as_any_exception(server, tmp_path: Path) -> None:
    # Only warmfork's own check of the options, before the program starts,
    # refuses a run: the program's uncaught Unsupported was taken for one
    # (exit 201, no traceback, atexit skipped; WARMFORK_FALLBACK ran it twice).
    program = (
        "import atexit, warmfork\n"
        "atexit.register(print, 'atexit ran')\n"
        "open('runs', 'a').write('run\\n')\n"
        "raise warmfork.Unsupported('mine')\n"
    )
    done = warmfork(server, "-c", program, cwd=tmp_path, env={"WARMFORK_FALLBACK": sys.executable})
    assert (done.returncode, done.stdout) == (1, b"atexit ran\n"), done.stderr
    assert done.stderr.endswith(b"warmfork.errors.Unsupported: mine\n"), done.stderr
    assert b'File "<string>", line 4, in <module>' in done.stderr
    assert (tmp_path / "runs").read_text() == "run\n"


def test_the_source_of_c_and_of_prompt_statements_is_kept_for_tracebacks_as_under_python(
    server, tmp_path: Path
) -> None:
    # From 3.13 python keeps it in linecache (`<string>`, `<stdin>-N`), so
    # tracebacks and warnings show the lines; before, nothing is kept.
    command = "import linecache\nprint(linecache.getlines('<string>'))\n1 / 0"
    out = assert_same_as_python(server, "-c", command, cwd=tmp_path)
    assert out.status == 1
    statements = b"import linecache\nx = 1\nprint(linecache.getlines('<stdin>-1'))\n1 / 0\n"
    assert_same_as_python(server, "-i", "-q", input=statements, cwd=tmp_path)
