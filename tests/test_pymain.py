"""``warmfork ARGS`` must behave like ``python ARGS``: each case runs under
the real interpreter and under the handler harness (a stand-in worker, see
tests/support/handler_harness.py) and compares stdout, stderr and the exit
status. Only the program name differs between the two (python names itself
by its path, the harness by ``warmfork``), so it is normalised away.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import marshal
import os
import re
import subprocess
import sys
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

HARNESS = Path(__file__).resolve().parent / "support" / "handler_harness.py"
REFUSED = 201

Arg = str | bytes


@dataclasses.dataclass(frozen=True)
class Outcome:
    stdout: str
    stderr: str
    status: int


def run(
    argv: Sequence[Arg], cwd: Path, stdin: bytes | None, env: dict[str, str] | None, *, merge: bool = False
) -> Outcome:
    """Run ``argv`` in ``cwd`` with no PYTHON* variables but those in ``env``
    (and stderr into stdout when ``merge``)."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    environ["HOME"] = str(cwd)  # the prompt's history file lands here, not in the real home
    environ.update(env or {})
    done = subprocess.run(
        list(argv),
        cwd=cwd,
        env=environ,
        input=stdin,
        stdin=subprocess.DEVNULL if stdin is None else None,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT if merge else subprocess.PIPE,
        timeout=60,
        check=False,
    )

    def text(data: bytes) -> str:
        data = data.replace(os.fsencode(sys.executable), b"<python>")
        return data.decode("utf-8", "surrogateescape")

    return Outcome(text(done.stdout), text(done.stderr or b""), done.returncode)


def python(*args: Arg, cwd: Path, stdin: bytes | None = None, env: dict[str, str] | None = None) -> Outcome:
    return run([sys.executable, *args], cwd, stdin, env)


def warmfork(
    *args: Arg,
    cwd: Path,
    stdin: bytes | None = None,
    env: dict[str, str] | None = None,
    server_options: Sequence[str] = ("-E",),
) -> Outcome:
    """``warmfork ARGS`` through the harness, whose interpreter by default
    starts with -E, like a server started apart from the client's PYTHON*
    variables: then only the handler can honour them, as it must."""
    return run([sys.executable, *server_options, str(HARNESS), *args], cwd, stdin, env)


def as_python(outcome: Outcome) -> Outcome:
    """Where python prints its own name (argv[0]), warmfork prints the client's."""
    stderr = re.sub(r"^(usage: )?warmfork\b", r"\1<python>", outcome.stderr, flags=re.MULTILINE)
    stdout = re.sub(r"^usage: warmfork\b", "usage: <python>", outcome.stdout, flags=re.MULTILINE)
    return dataclasses.replace(outcome, stdout=stdout, stderr=stderr)


def same(*args: Arg, cwd: Path, stdin: bytes | None = None, env: dict[str, str] | None = None) -> Outcome:
    """Run ``args`` both ways, insist on the same outcome, and return it."""
    expected = python(*args, cwd=cwd, stdin=stdin, env=env)
    actual = as_python(warmfork(*args, cwd=cwd, stdin=stdin, env=env))
    assert actual == expected
    return actual


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


SHOW_MAIN = """\
import sys
print("name", __name__, "file", __file__, "cached", __cached__, "spec", __spec__ and __spec__.name)
print("argv", sys.argv, "path0", repr(sys.path[0]))
print("globals", sorted(globals()))
print("loader", type(__loader__).__name__, __loader__.name if hasattr(__loader__, "name") else __loader__)
"""

LATIN1_SCRIPT = b"x = 1\ny = '\xe9'\n"  # not UTF-8, and no coding cookie


# --- what runs, and how it sees itself -------------------------------------


def test_script_sees_its_args_name_file_and_directory(tmp_path: Path) -> None:
    write(tmp_path / "app" / "show.py", SHOW_MAIN)
    out = same("app/show.py", "one", "two words", cwd=tmp_path)
    assert "argv ['app/show.py', 'one', 'two words']" in out.stdout
    assert f"path0 '{tmp_path}/app'" in out.stdout
    assert f"file {tmp_path}/app/show.py" in out.stdout


def test_script_given_as_dot_relative_path_keeps_the_dot_in_file(tmp_path: Path) -> None:
    write(tmp_path / "show.py", SHOW_MAIN)
    assert f"file {tmp_path}/./show.py" in same("./show.py", cwd=tmp_path).stdout


def test_symlinked_script_puts_the_real_directory_first_on_sys_path(tmp_path: Path) -> None:
    write(tmp_path / "real" / "show.py", SHOW_MAIN)
    (tmp_path / "link.py").symlink_to(tmp_path / "real" / "show.py")
    assert f"path0 '{tmp_path}/real'" in same("link.py", cwd=tmp_path).stdout


def test_dev_stdin_as_the_script_puts_the_directory_its_link_names_first_on_sys_path(tmp_path: Path) -> None:
    # python reads the link once (/proc/self/fd/0) before realpath, which
    # cannot resolve a pipe.
    out = same("/dev/stdin", cwd=tmp_path, stdin=SHOW_MAIN.encode())
    assert "path0 '/proc/self/fd'" in out.stdout


def test_dash_c_gets_its_args_and_an_empty_path0(tmp_path: Path) -> None:
    out = same("-c", "import sys; print(sys.argv, repr(sys.path[0]), sorted(globals()))", "-x", "y", cwd=tmp_path)
    assert out.stdout.startswith("['-c', '-x', 'y'] ''")


def test_bundled_short_options_before_c(tmp_path: Path) -> None:
    same("-uBc", "import sys; print(sys.argv, sys.dont_write_bytecode)", "a", cwd=tmp_path)


def test_dash_m_runs_a_stdlib_module_reading_stdin(tmp_path: Path) -> None:
    out = same("-m", "json.tool", "--sort-keys", cwd=tmp_path, stdin=b'{"b": 1, "a": [2]}')
    assert out.stdout.startswith('{\n    "a"')


def test_dash_m_runs_a_local_package_main_with_cwd_as_path0(tmp_path: Path) -> None:
    write(tmp_path / "pkg" / "__init__.py", "")
    write(tmp_path / "pkg" / "__main__.py", SHOW_MAIN)
    out = same("-m", "pkg", "arg", cwd=tmp_path)
    assert f"argv ['{tmp_path}/pkg/__main__.py', 'arg'] path0 '{tmp_path}'" in out.stdout


def test_directory_and_zip_with_main_run_like_python(tmp_path: Path) -> None:
    write(tmp_path / "app" / "__main__.py", SHOW_MAIN)
    with zipfile.ZipFile(tmp_path / "app.zip", "w") as archive:
        archive.write(tmp_path / "app" / "__main__.py", "__main__.py")
    assert f"path0 '{tmp_path}/app'" in same("app", "x", cwd=tmp_path).stdout
    assert f"path0 '{tmp_path}/app.zip'" in same("app.zip", cwd=tmp_path).stdout


@pytest.mark.parametrize(
    "contents",
    [
        lambda code: code,
        lambda code: code[:2],  # the magic number cut short
        lambda code: b"\0" * 16 + code[16:],  # another magic number
        lambda code: code[:10],  # the header cut short
        lambda code: code[:16],  # no code object
        lambda code: code[:16] + b"\xff junk",  # not marshal data
        lambda code: code[:16] + marshal.dumps(42),  # not a code object
        lambda code: code[: len(code) // 2],  # a code object cut short
    ],
    ids=["valid", "short-magic", "bad-magic", "short-header", "header-only", "junk", "not-code", "cut-code"],
)
def test_compiled_script_runs_or_fails_like_python(tmp_path: Path, contents: Callable[[bytes], bytes]) -> None:
    compiled = importlib.util.MAGIC_NUMBER + bytes(12) + marshal.dumps(compile("print('compiled')", "x.py", "exec"))
    (tmp_path / "x.pyc").write_bytes(contents(compiled))
    same("x.pyc", cwd=tmp_path)


def test_dash_reads_the_program_from_stdin(tmp_path: Path) -> None:
    out = same("-", "a1", cwd=tmp_path, stdin=b"import sys\nprint(sys.argv, repr(sys.path[0]), __file__)\n")
    assert out.stdout == "['-', 'a1'] '' <stdin>\n"


def test_piped_stdin_without_args_is_the_program(tmp_path: Path) -> None:
    out = same(cwd=tmp_path, stdin=SHOW_MAIN.encode())
    assert "argv [''] path0 ''" in out.stdout


def test_non_utf8_arguments_arrive_surrogate_escaped(tmp_path: Path) -> None:
    code = "import os, sys; print(ascii(sys.argv), [os.fsencode(a) for a in sys.argv[1:]])"
    out = same("-c", code, b"\xff\xferaw", "caf\u00e9", cwd=tmp_path)
    assert "'\\udcff\\udcferaw'" in out.stdout


def test_each_run_has_a_fresh_main_module(tmp_path: Path) -> None:
    # The harness's own __main__ must not leak into the program's.
    same("-c", "import sys; print(sorted(vars(sys.modules['__main__'])))", cwd=tmp_path)


# --- exit status ------------------------------------------------------------


@pytest.mark.parametrize(
    "code",
    [
        "import sys; sys.exit(300)",
        "import sys; sys.exit('bye now')",
        "import sys; sys.exit(None)",
        "raise SystemExit(True)",
    ],
)
def test_exit_status_follows_system_exit(tmp_path: Path, code: str) -> None:
    same("-c", code, cwd=tmp_path)


def test_sys_exit_300_gives_44(tmp_path: Path) -> None:
    assert warmfork("-c", "raise SystemExit(300)", cwd=tmp_path).status == 44


def test_uncaught_keyboard_interrupt_ends_the_run_by_sigint(tmp_path: Path) -> None:
    statuses = {run_it("-c", "raise KeyboardInterrupt", cwd=tmp_path).status for run_it in (python, warmfork)}
    assert statuses == {-2}


@pytest.mark.parametrize(
    "args",
    [
        ("boom.py",),
        ("-c", "def f():\n    1/0\nf()"),
        ("-c", "x = = 1"),
        ("-m", "boom"),
        ("latin.py",),
        ("-c", "raise KeyboardInterrupt"),
    ],
)
def test_uncaught_exception_is_reported_like_python(tmp_path: Path, args: tuple[str, ...]) -> None:
    write(tmp_path / "boom.py", "def inner():\n    raise ValueError('deep')\n\ninner()\n")
    (tmp_path / "latin.py").write_bytes(LATIN1_SCRIPT)
    out = same(*args, cwd=tmp_path)
    assert out.status in (1, -2)


# --- options that change how the program runs -------------------------------


@pytest.mark.parametrize("options", [(), ("-E",)])
def test_pythonioencoding_counts_unless_the_environment_is_ignored(tmp_path: Path, options: tuple[str, ...]) -> None:
    # The harness's interpreter ignores the environment (-E), like a server
    # started apart from its clients: a run that reads it must still honour
    # PYTHONIOENCODING, and one under -E must not.
    code = "import sys; print(*[f'{s.encoding}/{s.errors}' for s in (sys.stdin, sys.stdout, sys.stderr)])"
    out = same(*options, "-c", code, cwd=tmp_path, env={"PYTHONIOENCODING": "latin-1:replace"})
    expected = "utf-8/surrogateescape" if options else "iso8859-1/replace"
    assert out.stdout == f"{expected} {expected} {out.stdout.split()[-1]}\n"
    assert out.stdout.split()[-1].endswith("/backslashreplace")



def test_dash_u_makes_stdout_unbuffered(tmp_path: Path) -> None:
    code = "import sys; sys.stdout.write('a'); sys.stderr.write('b'); sys.stdout.write('c')"
    cases = [
        (("-u", "-c", code), None, "abc"),
        (("-c", code), {"PYTHONUNBUFFERED": "1"}, "abc"),
        (("-c", code), None, "acb"),
    ]
    for args, env, expected in cases:
        for prefix in ([], ["-E", str(HARNESS)]):
            merged = run([sys.executable, *prefix, *args], tmp_path, None, env, merge=True)
            assert merged.stdout == expected, (prefix, args, env)


def test_w_error_turns_warnings_into_exceptions(tmp_path: Path) -> None:
    code = "import warnings\ntry:\n    warnings.warn('careful')\nexcept UserWarning as e:\n    print('raised', e)"
    assert same("-W", "error", "-c", code, cwd=tmp_path).stdout == "raised careful\n"


def test_w_bundled_and_env_warnings_build_warnoptions_like_python(tmp_path: Path) -> None:
    code = "import sys, warnings; print(sys.warnoptions); warnings.warn('old', DeprecationWarning)"
    out = same("-Wd", "-W", "bogus", "-W", "ignore", "-c", code, cwd=tmp_path, env={"PYTHONWARNINGS": "ignore,,always"})
    assert "Invalid -W option ignored: invalid action: 'bogus'" in out.stderr


def test_x_options_are_recorded_and_faulthandler_enabled(tmp_path: Path) -> None:
    code = "import sys, faulthandler, tracemalloc; print(sys._xoptions, faulthandler.is_enabled(), tracemalloc.is_tracing())"
    out = same("-X", "faulthandler", "-X", "tracemalloc=5", "-X", "custom=1", "-c", code, cwd=tmp_path)
    assert out.stdout.endswith("True True\n")


@pytest.mark.parametrize(("options", "env"), [(("-X", "tracemalloc"), {}), ((), {"PYTHONTRACEMALLOC": "1"})])
def test_tracemalloc_traces_the_programs_objects(tmp_path: Path, options: tuple[str, ...], env: dict[str, str]) -> None:
    code = (
        "import tracemalloc\n"
        "objects = {str(i): i for i in range(3)}, (1, 2, object()), 1.5 * len(__name__)\n"
        "print([str(tracemalloc.get_object_traceback(o)) for o in objects])"
    )
    assert same(*options, "-c", code, cwd=tmp_path, env=env).stdout == "['<string>:2', '<string>:2', '<string>:2']\n"


def test_faulthandler_from_the_environment(tmp_path: Path) -> None:
    code = "import faulthandler; print(faulthandler.is_enabled())"
    assert same("-c", code, cwd=tmp_path, env={"PYTHONFAULTHANDLER": "1"}).stdout == "True\n"


def test_x_int_max_str_digits_limits_conversions(tmp_path: Path) -> None:
    code = "try:\n    int('1' * 1001)\nexcept ValueError as e:\n    print(e)"
    assert "1001 digits" in same("-X", "int_max_str_digits=1000", "-c", code, cwd=tmp_path).stdout


def test_invalid_start_up_values_fail_like_python(tmp_path: Path) -> None:
    assert same("-X", "int_max_str_digits=5", "-c", "pass", cwd=tmp_path).status == 1
    assert same("-X", "utf8=maybe", "-c", "pass", cwd=tmp_path).status == 1
    assert same("-c", "pass", cwd=tmp_path, env={"PYTHONTRACEMALLOC": "x"}).status == 1


@pytest.mark.parametrize(
    ("args", "env"),
    [
        (("-c", "pass"), {"PYTHONMALLOC": "bogus"}),
        (("-V",), {"PYTHONMALLOC": "bogus"}),
        (("-h",), {"PYTHONUTF8": "x"}),
        (("-X", "utf8=9", "-V"), {}),
        (("-E", "-c", "print('ran')"), {"PYTHONMALLOC": "bogus", "PYTHONUTF8": "x"}),
        (("-Z",), {"PYTHONMALLOC": "bogus"}),
        (("-X", "utf8=2", "-Z"), {}),
        (("-c",), {"PYTHONUTF8": "2"}),
        (("-Z", "-X", "utf8=2"), {}),
        (("-h", "-X", "utf8=2"), {}),
        (("-X", "utf8=", "-c", "pass"), {}),
        (("--Xutf8=2", "-c", "pass"), {}),
        (("--E", "-c", "pass"), {"PYTHONUTF8": "x"}),
    ],
    ids=[
        "malloc",
        "malloc-before-version",
        "utf8-before-help",
        "utf8-option-before-version",
        "hidden-by-E",
        "malloc-before-unknown-option",
        "utf8-option-before-unknown-option",
        "utf8-before-missing-argument",
        "utf8-option-after-unknown-option",
        "utf8-option-after-help",
        "utf8-option-empty",
        "utf8-option-in-an-unknown-long-option",
        "E-in-an-unknown-long-option",
    ],
)
def test_what_pre_initialisation_rejects_fails_first_like_python(
    tmp_path: Path, args: tuple[str, ...], env: dict[str, str]
) -> None:
    # CPython checks the UTF-8 mode and the allocator before the rest of the
    # command line, reading every -X up to -c or -m, past options it does
    # not know: a bad value beats -V, -h (status 1, not 0) and a usage error
    # (not 2). An unknown allocator was refused (201) as though python could
    # have run it; a -X after the unknown option or -h went unread, and an
    # empty `-X utf8=` was taken for `-X utf8`. Past an unknown long option
    # CPython reads its letters as short options (`--E` is -E, then a usage
    # error).
    expected = {"-E": 0, "--E": 2}.get(args[0], 1)
    assert same(*args, cwd=tmp_path, env=env).status == expected


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        (("-X", "utf8=1", "-X", "utf8=0"), "1 {'utf8': '0'}"),
        (("-X", "utf8=0", "-X", "utf8"), "0 {'utf8': True}"),
        (("-X", "int_max_str_digits=1000", "-X", "int_max_str_digits=2000"), "1000 {'int_max_str_digits': '2000'}"),
        (("-X", "int_max_str_digits="), "0 {'int_max_str_digits': ''}"),
        (("-X", "tracemalloc="), "False {'tracemalloc': ''}"),
    ],
    ids=["utf8", "utf8-bare", "int-max-str-digits", "int-max-str-digits-empty", "tracemalloc-empty"],
)
def test_the_first_of_repeated_x_options_counts_and_empty_numbers_are_0_as_in_python(
    tmp_path: Path, options: tuple[str, ...], expected: str
) -> None:
    # CPython's start-up reads the first -X of a name, where sys._xoptions
    # shows the last; and its strtol() takes an empty number for 0. Runs
    # read the last, and refused `int_max_str_digits=` and `tracemalloc=`.
    name = options[-1].partition("=")[0]
    shown = {
        "utf8": "sys.flags.utf8_mode",
        "int_max_str_digits": "sys.flags.int_max_str_digits",
        "tracemalloc": "__import__('tracemalloc').is_tracing()",
    }[name]
    out = same(*options, "-c", f"import sys; print({shown}, sys._xoptions)", cwd=tmp_path)
    assert (out.status, out.stdout) == (0, expected + "\n")


@pytest.mark.parametrize(
    ("options", "env"),
    [
        (("-X", "cpu_count=abc"), {}),
        (("-X", "cpu_count"), {}),
        (("-X", "cpu_count=default"), {}),
        ((), {"PYTHON_CPU_COUNT": "0"}),
        (("-X", "gil=0"), {}),
        (("-X", "gil=7"), {}),
        (("-X", "gil=1"), {}),
        ((), {"PYTHON_GIL": "0"}),
        ((), {"PYTHON_FROZEN_MODULES": "sometimes"}),
        (("-X", "frozen_modules=on"), {"PYTHON_FROZEN_MODULES": "sometimes"}),
    ],
    ids=lambda value: " ".join(value) if isinstance(value, tuple) else ",".join(f"{k}={v}" for k, v in value.items()),
)
def test_start_up_values_added_in_3_13_fail_like_python(
    tmp_path: Path, options: tuple[str, ...], env: dict[str, str]
) -> None:
    # Before 3.13 python takes these for names it does not know, and so do runs.
    same(*options, "-c", "print('ran')", cwd=tmp_path, env=env)


PERF_TRAMPOLINE = """\
import os, sys
active = getattr(sys, "is_stack_trampoline_active", lambda: None)()
print(active)
if active:
    os.unlink(f"/tmp/perf-{os.getpid()}.map")
"""


@pytest.mark.parametrize(("options", "env"), [(("-X", "perf"), {}), ((), {"PYTHONPERFSUPPORT": "1"}), ((), {})])
def test_perf_trampoline_is_switched_on_as_asked(tmp_path: Path, options: tuple[str, ...], env: dict[str, str]) -> None:
    out = same(*options, "-c", PERF_TRAMPOLINE, cwd=tmp_path, env=env)
    assert out.stdout == ("None\n" if sys.version_info < (3, 12) else f"{bool(options or env)}\n")


def test_dash_b_writes_no_bytecode(tmp_path: Path) -> None:
    write(tmp_path / "helper.py", "VALUE = 1\n")
    code = "import sys, helper; print(sys.dont_write_bytecode)"
    assert same("-B", "-c", code, cwd=tmp_path).stdout == "True\n"
    assert not (tmp_path / "__pycache__").exists()
    same("-c", code, cwd=tmp_path, env={"PYTHONDONTWRITEBYTECODE": "1"})
    assert not (tmp_path / "__pycache__").exists()


def test_check_hash_based_pycs_is_honoured(tmp_path: Path) -> None:
    code = "import _imp; print(_imp.check_hash_based_pycs)"
    assert same("--check-hash-based-pycs", "always", "-c", code, cwd=tmp_path).stdout == "always\n"


def test_dash_x_skips_the_first_line_and_keeps_line_numbers(tmp_path: Path) -> None:
    write(tmp_path / "odd.py", "this is no python\nimport sys\nprint(sys._getframe().f_lineno)\n")
    assert same("-x", "odd.py", cwd=tmp_path).stdout == "3\n"


def test_non_utf8_script_without_cookie_is_rejected_like_python(tmp_path: Path) -> None:
    (tmp_path / "latin.py").write_bytes(LATIN1_SCRIPT)
    # Under -i the handler reports the error itself, not the worker.
    out = same("-i", "latin.py", cwd=tmp_path, stdin=b"")
    assert "Non-UTF-8 code starting with '\\xe9' in file" in out.stderr


# Sources python's file parser rejects, each with its own message and place;
# compile() of the same bytes (the string parser) words them differently, or
# runs the file.
UNPARSABLE_SOURCES = {
    "null_byte": b"x = 1\x00\n",
    "null_byte_on_a_later_line": b"print(1)\nprint(2)\nx = 'a\x00b'\n",
    "null_byte_after_a_syntax_error": b"def f(:\n  x\x00\n",
    "null_byte_in_a_latin1_file": b"# coding: latin-1\nx = '\xe9\x00'\n",
    "non_utf8_in_a_comment": b"print(1)  # \xff\n",
    "coding_cookie_after_code": b"x = 1\n# coding: latin-1\nprint('\xe9')\n",
    "unknown_coding_cookie": b"# coding: bogus\nprint(1)\n",
    "coding_cookie_of_a_codec_that_is_not_ascii_based": b"# coding: utf-16\nprint(1)\n",
    "byte_order_mark_and_another_coding_cookie": b"\xef\xbb\xbf# coding: latin-1\nprint(1)\n",
}


@pytest.mark.parametrize("source", list(UNPARSABLE_SOURCES))
@pytest.mark.parametrize("how", ["script", "stdin", "pythonstartup"])
def test_a_source_python_cannot_parse_fails_with_pythons_message(tmp_path: Path, source: str, how: str) -> None:
    bad = tmp_path / "bad.py"
    bad.write_bytes(UNPARSABLE_SOURCES[source])
    if how == "script":
        out = same("bad.py", cwd=tmp_path)
    elif how == "stdin":
        out = same("-", cwd=tmp_path, stdin=bad.read_bytes())
    else:  # printed, and the prompt comes anyway
        out = same("-q", "-i", cwd=tmp_path, stdin=b"", env={"PYTHONSTARTUP": str(bad)})
    assert out.stdout == ""
    assert "SyntaxError: " in out.stderr


def test_the_programs_file_is_closed_before_it_runs(tmp_path: Path) -> None:
    program = "print(open(__file__ if __file__ != '<stdin>' else '/dev/null').fileno())\n"
    assert same(write(tmp_path / "first_open.py", program).name, cwd=tmp_path).stdout == "3\n"
    assert same("-", cwd=tmp_path, stdin=program.encode()).stdout == "3\n"


def test_pythonpath_entries_follow_path0(tmp_path: Path) -> None:
    write(tmp_path / "lib" / "extra.py", "WHERE = 'lib'\n")
    code = "import sys, extra; print(sys.path[:3], extra.WHERE)"
    out = same("-c", code, cwd=tmp_path, env={"PYTHONPATH": "lib:/nonexistent"})
    assert out.stdout.startswith(f"['', '{tmp_path}/lib', '/nonexistent']")


@pytest.mark.parametrize("how", ["-c", "script"])
def test_pythonpath_entries_are_on_sys_path_once(tmp_path: Path, how: str) -> None:
    code = "import sys; print(sys.path[:5])"
    run = ("-c", code) if how == "-c" else (write(tmp_path / "lib" / "show.py", code).relative_to(tmp_path),)
    env = {"PYTHONPATH": ":lib::lib/:/nonexistent:/nonexistent:lib"}
    assert same(*run, cwd=tmp_path, env=env).stdout.count("/nonexistent") == 1


@pytest.mark.parametrize(
    "customization",
    [
        "import sys\nprint('sitecustomize sees', sys.argv)\n",
        "raise ValueError('broken customization')\n",
        "raise ImportError('of itself', name='sitecustomize')\n",
    ],
    ids=["runs", "fails", "hides"],
)
@pytest.mark.parametrize("how", ["-c", "script"])
def test_a_sitecustomize_on_the_runs_pythonpath_runs_first_as_under_python(
    tmp_path: Path, customization: str, how: str
) -> None:
    # Coverage's subprocess measurement and similar hooks live there; the
    # worker ran only the server's own (python imports the first on
    # sys.path at start-up, the PYTHONPATH entries first). One beside the
    # script is not on sys.path yet then, and runs under neither.
    write(tmp_path / "hooks" / "sitecustomize.py", customization)
    write(tmp_path / "app" / "sitecustomize.py", "print('the one beside the script')\n")
    run = ("-c", "print('program')") if how == "-c" else (write(tmp_path / "app" / "main.py", "print('program')\n").name,)
    out = same(*run, cwd=tmp_path / "app", env={"PYTHONPATH": os.fspath(tmp_path / "hooks")})
    assert out.stdout.endswith("program\n")
    assert "beside the script" not in out.stdout


@pytest.mark.parametrize("ending", ["import sys\nsys.exit(3)\n", "raise KeyboardInterrupt\n"], ids=["exit", "interrupt"])
def test_a_sitecustomize_that_exits_fails_the_start_up_as_under_python(tmp_path: Path, ending: str) -> None:
    # `site` reports an Exception and goes on; SystemExit and
    # KeyboardInterrupt escape it, and python's start-up fails. The run took
    # the exit for the program's (status 3, or 130 by SIGINT).
    write(tmp_path / "hooks" / "sitecustomize.py", "print('customized')\n" + ending)
    env = {"PYTHONPATH": os.fspath(tmp_path / "hooks")}
    ours = as_python(warmfork("-c", "print('program')", cwd=tmp_path, env=env))
    theirs = python("-c", "print('program')", cwd=tmp_path, env=env)
    for outcome in (ours, theirs):
        lines = outcome.stderr.splitlines()
        assert (outcome.status, outcome.stdout) == (1, "customized\n"), outcome
        assert lines[:3] == [
            "Fatal Python error: init_import_site: Failed to import the site module",
            "Python runtime state: initialized",
            "Traceback (most recent call last):",
        ], outcome
    # Python's traceback starts in its import machinery, ours in `site`.
    assert ours.stderr.splitlines()[-4:] == theirs.stderr.splitlines()[-4:]


@pytest.mark.parametrize(
    "run",
    [("-c", "import random; random.randint"), ("main.py",), ("-m", "main"), ("-P", "main.py"), ("circular.py",)],
    ids=["command", "script", "module", "safe-path", "circular"],
)
def test_a_module_the_programs_directory_shadows_is_named_as_by_python(tmp_path: Path, run: tuple[str, ...]) -> None:
    # 3.13 adds "consider renaming '.../random.py' since it has the same
    # name as the standard library module" to such an AttributeError, by the
    # directory the program started from as the interpreter's configuration
    # holds it, which in a worker was the server's.
    write(tmp_path / "random.py", "x = 1\n")
    write(tmp_path / "main.py", "import random\nrandom.randint\n")
    write(tmp_path / "circular.py", "import partner\n")
    write(tmp_path / "partner.py", "import circular\ncircular.nothing\n")
    out = same(*run, cwd=tmp_path)
    assert out.status == (0 if "-P" in run else 1)  # -P leaves the directory off sys.path


@pytest.mark.parametrize("how", [("-P",), ()])
def test_safe_path_leaves_the_script_directory_out(tmp_path: Path, how: tuple[str, ...]) -> None:
    write(tmp_path / "show.py", "import sys\nprint(sys.path[0])\n")
    out = same(*how, "show.py", cwd=tmp_path, env={} if how else {"PYTHONSAFEPATH": "1"})
    assert out.stdout != f"{tmp_path}\n"


# --- informational options and command-line errors ----------------------------


@pytest.mark.parametrize("args", [("-V",), ("--version",), ("-VV",), ("-h",), ("--help-env",), ("-V", "-c", "pass")])
def test_version_and_help(tmp_path: Path, args: tuple[str, ...]) -> None:
    out = same(*args, cwd=tmp_path)
    assert out.status == 0 and out.stdout


@pytest.mark.parametrize("args", [("-Z",), ("--foo",), ("-J",), ("-c",), ("--check-hash-based-pycs", "sometimes")])
def test_bad_command_lines_are_rejected_like_python(tmp_path: Path, args: tuple[str, ...]) -> None:
    out = same(*args, cwd=tmp_path)
    assert out.status == 2 and "usage: <python> [option]" in out.stderr


def test_missing_script(tmp_path: Path) -> None:
    out = same("missing.py", cwd=tmp_path)
    assert out.stderr == f"<python>: can't open file '{tmp_path}/missing.py': [Errno 2] No such file or directory\n"
    assert out.status == 2


def test_missing_module(tmp_path: Path) -> None:
    out = same("-m", "no_such_module_here", cwd=tmp_path)
    assert out.stderr == "<python>: No module named no_such_module_here\n" and out.status == 1


# --- refusals -----------------------------------------------------------------


FIXED_AT_START_UP = ["-O", "-OO", "-S", "-I", "-E", "-b", "-v", "-d", "-Xdev", "-Ximporttime"]
if sys.version_info >= (3, 13):
    FIXED_AT_START_UP += ["-Xcpu_count=1", "-Xperf_jit"]


@pytest.mark.parametrize("option", FIXED_AT_START_UP)
def test_start_up_options_are_refused_before_anything_runs(tmp_path: Path, option: str) -> None:
    out = warmfork(option, "-c", "print('ran')", cwd=tmp_path, server_options=())
    assert out.status == REFUSED
    assert out.stdout == ""
    assert out.stderr.startswith(f"warmfork: {option[:2]}") and "cannot be honoured" in out.stderr


def test_a_fixed_hash_seed_is_refused(tmp_path: Path) -> None:
    out = warmfork("-c", "print('ran')", cwd=tmp_path, env={"PYTHONHASHSEED": "123"})
    assert (out.status, out.stdout) == (REFUSED, "")
    assert "PYTHONHASHSEED=123" in out.stderr


# --- inspecting: -i and the prompt --------------------------------------------


def test_dash_i_runs_the_command_then_reads_statements_from_stdin(tmp_path: Path) -> None:
    out = same("-i", "-c", "print(1)", cwd=tmp_path, stdin=b" x=5\nx=5\nprint(x)\nx\n1/0\nif x:\n  print(2)\n\n")
    assert out.stdout == "1\n5\n5\n2\n"
    assert "ZeroDivisionError" in out.stderr and "IndentationError" in out.stderr
    assert out.status == 0


@pytest.mark.parametrize(
    ("stdin", "status"),
    [
        (b"raise KeyboardInterrupt\n", -2),
        (b"print(1)\nraise KeyboardInterrupt\n", -2),
        (b"raise KeyboardInterrupt\nprint(1)\n", 0),
        (b"raise KeyboardInterrupt\n)\n", -2),  # an error reading does not count
    ],
    ids=["last", "after-another", "followed", "then-a-syntax-error"],
)
def test_the_prompt_ends_by_sigint_after_a_last_statement_interrupted(
    tmp_path: Path, stdin: bytes, status: int
) -> None:
    assert same("-i", "-c", "pass", cwd=tmp_path, stdin=stdin).status == status


@pytest.mark.parametrize(
    "stdin",
    [
        b"import sys\nsys.stdin.close()\nprint('after')\n",
        b"import sys\nsys.stdin = None\nprint('after')\n",
        b"import io, sys\nsys.stdin = io.StringIO('print(42)\\n')\nprint('after')\n",
        b"import builtins\nbuiltins.input = lambda *args: 'y'\nprint('after')\n",
    ],
    ids=["stdin-closed", "stdin-none", "stdin-replaced", "input-replaced"],
)
def test_the_prompt_reads_on_whatever_the_program_makes_of_stdin_and_input(tmp_path: Path, stdin: bytes) -> None:
    # Python's prompt reads descriptor 0 through C's stdin. The worker's
    # read sys.stdin and called input(): a closed stdin printed "ValueError:
    # I/O operation on closed file" in an endless loop, a replaced one was
    # read, a stubbed input() was the prompt.
    out = same("-i", "-c", "pass", cwd=tmp_path, stdin=stdin)
    assert out.stdout.endswith("after\n") and out.status == 0, out


@pytest.mark.parametrize(
    "stdin",
    [
        b"import warnings\nwarnings.warn('w1')\nwarnings.warn('w1')\n",
        b"def f():\n    import warnings; warnings.warn('w1', DeprecationWarning, stacklevel=1)\n\nf()\nf()\n",
    ],
    ids=["same-line", "same-function"],
)
def test_the_prompt_shows_a_warning_once_per_place(tmp_path: Path, stdin: bytes) -> None:
    # Compiling each statement through codeop changed the warnings filters
    # (warnings.catch_warnings), which makes every registry forget what it
    # has shown: the warning came again after each statement.
    out = same("-i", "-c", "pass", cwd=tmp_path, stdin=stdin)
    assert out.stderr.count("Warning: w1") == 1, out


@pytest.mark.parametrize("action", ["once", "error"])
def test_the_prompt_s_compiler_warnings_follow_the_filters(tmp_path: Path, action: str) -> None:
    # The prompt compiles a statement on trial before it is complete. Its
    # trials went through the filters: under `-W once` they used up the one
    # showing, under `-W error` a block failed at its own line and the rest
    # of it was an IndentationError. (3.13 names the file `<stdin>-N`, the
    # prompt `<stdin>`: compared are the messages and the lines.)
    stdin = b'x = "\\d"\ny = "\\d"\nif 1:\n  z = 1 is 1\n  print("in block")\n\nprint("end")\n'
    args = ("-W", action, "-i", "-c", "pass")

    def said(out: Outcome) -> tuple[list[str], list[str], str]:
        return re.findall(r"(\w+(?:Warning|Error): .*)", out.stderr), re.findall(r"line (\d+)", out.stderr), out.stdout

    expected = said(python(*args, cwd=tmp_path, stdin=stdin))
    assert said(as_python(warmfork(*args, cwd=tmp_path, stdin=stdin))) == expected
    assert len(expected[0]) == (2 if action == "once" else 3), expected


def test_the_prompt_decodes_with_the_encoding_sys_stdin_has_now(tmp_path: Path) -> None:
    stdin = "import io, sys\nsys.stdin = io.TextIOWrapper(io.BytesIO(), encoding='latin-1')\nprint(ascii('é'))\n"
    assert same("-i", "-c", "pass", cwd=tmp_path, stdin=stdin.encode()).stdout == "'\\xc3\\xa9'\n"


def test_the_prompt_reads_ahead_of_sys_stdin_as_c_stdio_does(tmp_path: Path) -> None:
    # The prompt has taken the block the line came in (up to 4 KiB of a
    # pipe), so input() in a statement finds the end of input, as in python.
    out = same("-i", "-c", "pass", cwd=tmp_path, stdin=b"x = input()\nhello\nprint(x)\n")
    assert "EOFError" in out.stderr, out


@pytest.mark.parametrize(
    "stdin",
    [b"y = (\n1 2\n)\nprint('next')\n", b"f(a,\n[1 2],\n)\n", b'x = {\n"a": 1\n"b": 2}\n', b"y = [\n1,\n2 3\n]\n"],
    ids=["comma", "nested", "dict", "third-line"],
)
def test_the_prompt_reports_an_error_inside_open_brackets_where_it_is(tmp_path: Path, stdin: bytes) -> None:
    assert "SyntaxError" in same("-i", "-c", "pass", cwd=tmp_path, stdin=stdin).stderr


def test_dash_i_prints_a_failing_script_and_still_prompts(tmp_path: Path) -> None:
    write(tmp_path / "fail.py", "import sys\nvalue = 42\nsys.exit(3)\n")
    out = same("-i", "fail.py", cwd=tmp_path, stdin=b"print(value, __file__ if '__file__' in dir() else None)\n")
    assert "SystemExit: 3" in out.stderr and out.stdout == "42 None\n" and out.status == 0


def test_dash_i_after_an_exception_in_the_program(tmp_path: Path) -> None:
    out = same("-i", "-c", "def f():\n    raise KeyError('k')\nf()", cwd=tmp_path, stdin=b"import sys\nsys.last_type\n")
    assert "KeyError: 'k'" in out.stderr and "<class 'KeyError'>" in out.stdout


def test_dash_i_reports_a_missing_module_with_runpy_frames(tmp_path: Path) -> None:
    out = same("-i", "-m", "no_such_module_here", cwd=tmp_path, stdin=b"print('still here')\n")
    assert 'File "<frozen runpy>"' in out.stderr and out.stdout == "still here\n"


@pytest.mark.parametrize(
    ("args", "env", "status"),
    [(("-i", "missing.py"), {}, 0), (("missing.py",), {"PYTHONINSPECT": "1"}, 2)],
    ids=["dash_i_prompts", "pythoninspect_without_a_prompt"],
)
def test_a_script_that_cannot_be_opened_is_no_exception_to_inspect(
    tmp_path: Path, args: tuple[str, ...], env: dict[str, str], status: int
) -> None:
    # python says so and returns 2 (no SystemExit to print): the prompt, if
    # it comes, decides the status.
    out = same(*args, cwd=tmp_path, stdin=b"print('prompted')\n", env=env)
    assert "can't open file" in out.stderr and "SystemExit" not in out.stderr
    assert out.status == status


def test_dash_i_alone_prints_the_banner_and_runs_pythonstartup(tmp_path: Path) -> None:
    write(tmp_path / "startup.py", "greeting = 'hello'\n")
    out = same("-i", cwd=tmp_path, stdin=b"greeting\n", env={"PYTHONSTARTUP": str(tmp_path / "startup.py")})
    assert out.stderr.startswith("Python ") and out.stdout == "'hello'\n"


def test_prompt_statements_cut_short_by_end_of_input_still_run(tmp_path: Path) -> None:
    same("-q", "-i", cwd=tmp_path, stdin=b"if 1:\n  print(7)")


@pytest.mark.parametrize(
    "typed",
    [b"# caf\xe9\n", b"'\xff' + \\\n'x'\n", b"1\x00 ignored\n2\n", b"x = 1\x00\n"],
    ids=["not_utf8", "not_utf8_on_a_continued_line", "null_byte", "null_byte_then_a_line"],
)
def test_the_prompt_reads_bytes_that_are_not_utf8_or_null_as_python_does(tmp_path: Path, typed: bytes) -> None:
    # Undecodable bytes are a SyntaxError of their line; a null byte ends
    # its line there and joins the next line to it.
    out = same("-q", "-i", cwd=tmp_path, stdin=typed + b"print('after')\n")
    assert out.status == 0


# What the prompt reads, each ended by print('next'): where a statement ends
# is the interactive tokenizer's call, which codeop alone does not make.
PROMPT_INPUTS = {
    "a_comment": b"# a comment\n",
    "an_indented_comment": b"   # a comment\n",
    "spaces_inside_a_block": b"if 1:\n  print(1)\n   \n  print(2)\n\n",
    "an_empty_line_after_an_if": b"if 1:\n\n  print(1)\n\n",
    "an_empty_line_after_a_decorator": b"@property\n\ndef f(): pass\n\n",
    "a_backslash_continuation": b"x = 1 + \\\n2\nx\n",
    "an_empty_line_after_a_backslash": b"x = 1 + \\\n\n",
    "windows_newlines": b"if 1:\r\n  print(2)\r\n\r\n",
}


@pytest.mark.parametrize("typed", list(PROMPT_INPUTS))
def test_the_prompt_ends_statements_where_python_does(tmp_path: Path, typed: str) -> None:
    out = same("-q", "-i", cwd=tmp_path, stdin=PROMPT_INPUTS[typed] + b"print('next')\n")
    assert out.stdout.endswith("next\n")


@pytest.mark.parametrize(
    "typed",
    [
        b"if 1:\n  print(1)\n  \\\n\nprint(9)\n",
        b"if 1:\n  print(1)\n  \\\n\n\nprint(9)\n",
        b"for i in range(2):\n  print(i)\n\\\n\nprint(9)\n",
    ],
    ids=["then_a_statement", "then_another_empty_line", "unindented_backslash"],
)
def test_an_empty_line_after_a_backslash_in_a_block_continues_it_as_in_python(tmp_path: Path, typed: bytes) -> None:
    # The empty line is the continued line, so it does not end the block:
    # a statement right after it is a SyntaxError, as in python; it was run.
    same("-q", "-i", cwd=tmp_path, stdin=typed)


def test_pythoninspect_without_a_terminal_prints_and_exits_1(tmp_path: Path) -> None:
    out = same("-c", "raise SystemExit(3)", cwd=tmp_path, env={"PYTHONINSPECT": "1"})
    assert out.status == 1 and "SystemExit: 3" in out.stderr


@pytest.mark.parametrize(
    "statement",
    ["del sys.ps1", "sys.ps1 = type('Bad', (), {'__str__': lambda self: 1 / 0})()"],
    ids=["missing", "unprintable"],
)
def test_a_prompt_that_cannot_be_shown_is_empty_and_the_session_goes_on(tmp_path: Path, statement: str) -> None:
    out = same("-i", cwd=tmp_path, stdin=f"import sys\n{statement}\nprint(6 * 7)\n".encode())
    assert (out.status, out.stdout) == (0, "42\n")
