"""The interactive prompt of ``python -i`` and of ``python`` on a terminal:
CPython's ``PyRun_InteractiveLoop``, and the ``PyErr_Print`` it and the
rest of the inspect path (``-i`` after a failure, ``PYTHONSTARTUP``,
``sys.__interactivehook__``) report errors with.

A statement is read a line at a time, with ``sys.ps1`` and ``sys.ps2``, and
ends where python's interactive tokenizer ends it; then it runs in
``__main__``, and what it raises is printed, and the prompt goes on.
"""

from __future__ import annotations

import ast
import codeop
import contextlib
import functools
import io
import linecache
import os
import sys
import tokenize
import types
from collections.abc import Callable, Iterator
from typing import TextIO

from . import _stdio, _worker

_COMPOUND_STATEMENTS = (
    ast.If, ast.For, ast.AsyncFor, ast.While, ast.Try, getattr(ast, "TryStar", ast.Try), ast.With,
    ast.AsyncWith, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Match,
)  # fmt: skip


def call_printing_errors(function: Callable[[], object], *, preface: str = "") -> BaseException | None:
    """Call ``function``; print what it raises (bar ``SystemExit``, which
    exits) after ``preface``, as CPython's ``PyErr_Print`` would, and
    return it."""
    try:
        function()
    except SystemExit:
        raise
    except BaseException as exc:  # noqa: BLE001 - printed, as CPython prints it
        _write_stderr(preface)
        print_exception(exc)
        return exc
    return None


def interact(namespace: dict[str, object]) -> None:
    """``PyRun_InteractiveLoop``: read a statement, run it, print what it
    raised. When the last statement run ended in a ``KeyboardInterrupt``,
    python ends by SIGINT once the input ends: so does the run
    (:class:`~warmfork._worker.InterruptedAtTheEnd`)."""
    for name, prompt in (("ps1", ">>> "), ("ps2", "... ")):
        if not hasattr(sys, name):
            setattr(sys, name, prompt)
    compiler = codeop.CommandCompiler()
    global _stdin
    _stdin = _Stdin()
    interrupted = False
    while True:
        try:
            statement = _read_statement(compiler)
        except KeyboardInterrupt:
            _write_stderr("\nKeyboardInterrupt\n")
            continue
        except (SyntaxError, ValueError, OverflowError) as exc:
            print_exception(exc.with_traceback(None))  # the compiler's frames are no one's business
            continue
        if statement is None:
            if interrupted:
                raise _worker.InterruptedAtTheEnd
            return
        code = _numbered(*statement) if sys.version_info >= (3, 13) else statement[0]
        raised = call_printing_errors(functools.partial(exec, code, namespace))
        interrupted = type(raised) is KeyboardInterrupt  # not a subclass, as in CPython
        flush_standard_streams()


# How many statements the prompt has compiled (see `_numbered`).
_statements = 0


def _numbered(code: types.CodeType, source: str) -> types.CodeType:
    """From 3.13 on, python compiles each statement of the prompt as file
    ``<stdin>-N``, N counting from 0, and keeps its lines in ``linecache``
    under that name, for tracebacks (which say ``<stdin>``) and warnings to
    show. (An error only compiling finds, such as ``return`` outside a
    function, is said of ``<stdin>-N`` there too, and counts; not here.)"""
    global _statements
    filename = f"<stdin>-{_statements}"
    _statements += 1
    code = _renamed(code, filename)
    keep_source(code, source, "<stdin>")
    return code


def keep_source(code: types.CodeType, source: str, name: str) -> None:
    """Keep ``source``, the text ``code`` was compiled from, in ``linecache``,
    as python 3.13 does for ``-c`` and the prompt's statements. 3.13.0 keys
    the lines by the code's file name; later versions (which have
    ``linecache._interactive_cache``) by the code object itself, and take
    the code."""
    key = code if hasattr(linecache, "_interactive_cache") else code.co_filename
    linecache._register_code(key, source, name)  # type: ignore[attr-defined]


def _renamed(code: types.CodeType, filename: str) -> types.CodeType:
    consts = tuple(_renamed(const, filename) if isinstance(const, types.CodeType) else const for const in code.co_consts)
    return code.replace(co_filename=filename, co_consts=consts)


def _read_statement(compiler: codeop.CommandCompiler) -> tuple[types.CodeType, str] | None:
    """One complete statement from stdin, with its text, or None at end of input.

    As in CPython's interactive tokenizer: newlines are translated, a
    compound statement ends only at an empty line (one of spaces or a
    comment does not end it), an empty line ends any statement not inside
    brackets or a string, a backslash at the end of a line continues it, a
    line cut short by end of input asks for more, end of input prints a
    newline, and a statement pending at end of input still runs.
    """
    lines: list[str] = []
    while True:
        line = _read_line(_prompt_string("ps2" if lines else "ps1"))
        _check_decodable(line)
        if not line:
            _write_stderr("\n")
            if not lines:
                return None
            source = "".join(lines)
            return compiler.compiler(source, "<stdin>", "single", incomplete_input=False), source
        lines.append(line.replace("\r\n", "\n").replace("\r", "\n"))
        if not lines[-1].endswith("\n"):
            continue
        source = "".join(lines)
        if lines[-1] == "\n" and len(lines) > 1:
            if _continues_a_block(lines):
                continue
            code = _end_at_empty_line(compiler, source)
        else:
            code = _compile_or_read_on(compiler, source)
        if code is not None and not (lines[-1] != "\n" and _is_compound(source)):
            return code, source


def _continues_a_block(lines: list[str]) -> bool:
    """Whether the empty line last in ``lines`` continues an indented line
    that ended with a backslash inside a compound statement: python's
    tokenizer then takes it as the rest of that line, not as the empty line
    that ends the block. (Outside a block, or after a backslash at the start
    of a line, such an empty line ends the statement, the first with an
    error.)"""
    continued = lines[-2]
    if not continued.endswith("\\\n") or not continued[:1].isspace():
        return False
    try:
        return _is_compound("".join(lines[:-2]))
    except SyntaxError:
        return False


def _compile_or_read_on(compiler: codeop.CommandCompiler, source: str) -> types.CodeType | None:
    """codeop's verdict: the statement, or None where more input may complete
    it; that includes a compound statement not yet ended by an empty line
    and a line ended by a backslash, which codeop calls an error."""
    try:
        return _maybe_compile(compiler.compiler, source)
    except SyntaxError as error:
        if source.endswith("\\\n") and error.msg == "unexpected EOF while parsing":
            return None
        if str(error.msg).endswith("was never closed"):
            raise _error_inside_brackets(compiler, source) or error from None
        raise


def _maybe_compile(compile_: codeop.Compile, source: str) -> types.CodeType | None:
    """``codeop._maybe_compile`` for the prompt, but for how it keeps the
    compiler's warnings out of its trials (see
    :func:`_compiler_warnings_ignored`): through ``catch_warnings()`` a
    warning python shows once per place came again after each statement."""
    if all(not line.strip() or line.strip()[0] == "#" for line in source.split("\n")):
        source = "pass"
    with _compiler_warnings_ignored():
        try:
            compile_(source, "<stdin>", "single")
        except SyntaxError:
            try:
                compile_(source + "\n", "<stdin>", "single")
            except SyntaxError as error:
                if _is_incomplete(error):
                    return None
            else:
                return None
        else:
            # The interactive grammar ends a compound statement with an
            # empty line: read on, and compile it (say its warnings) then.
            if _is_compound(source):
                return None
    return compile_(source, "<stdin>", "single", incomplete_input=False)


# From 3.13 on the compiler raises its own subclass for input that more may
# complete; before, a SyntaxError that says so.
_IncompleteInputError = getattr(codeop, "_IncompleteInputError", None)


def _is_incomplete(error: SyntaxError) -> bool:
    if _IncompleteInputError is not None:
        return isinstance(error, _IncompleteInputError)
    return "incomplete input" in str(error)


@contextlib.contextmanager
def _compiler_warnings_ignored() -> Iterator[None]:
    """codeop's ``simplefilter("ignore", (SyntaxWarning, DeprecationWarning))``
    for the trial compiles, put in front of ``warnings.filters`` in place,
    without telling ``warnings``: ``catch_warnings()`` and ``simplefilter()``
    mark the filters as changed, which makes every module's registry forget
    what it has shown. (No code of the program runs meanwhile.)"""
    filters = getattr(sys.modules.get("warnings"), "filters", None)
    if not isinstance(filters, list):
        yield
        return
    ignored = [("ignore", None, SyntaxWarning, None, 0), ("ignore", None, DeprecationWarning, None, 0)]
    filters[:0] = ignored
    try:
        yield
    finally:
        for entry in ignored:
            with contextlib.suppress(ValueError):
                filters.remove(entry)


def _error_inside_brackets(compiler: codeop.CommandCompiler, source: str) -> SyntaxError | None:
    """The error python's parser meets in ``source``, which leaves brackets
    open: it reads a line at a time, so it stops where the error is (``y =
    (``, then ``1 2``: "Perhaps you forgot a comma?", line 2), where
    ``compile()`` of the same text blames the bracket left open. Closing
    the brackets finds the parser's error; None if that error is not in
    ``source`` itself."""
    closers: list[str] = []
    pairs = {"(": ")", "[": "]", "{": "}"}
    with contextlib.suppress(tokenize.TokenError, SyntaxError):
        for token in tokenize.generate_tokens(io.StringIO(source).readline):
            if token.type == tokenize.OP and token.string in pairs:
                closers.append(pairs[token.string])
            elif token.type == tokenize.OP and token.string in ")]}" and closers:
                closers.pop()
    try:
        compiler.compiler(source + "".join(reversed(closers)) + "\n", "<stdin>", "single", incomplete_input=False)
    except SyntaxError as error:
        if error.lineno is not None and error.lineno <= source.count("\n"):
            return error
    return None


def _end_at_empty_line(compiler: codeop.CommandCompiler, source: str) -> types.CodeType | None:
    """The statement an empty line ends, compiled as it stands; None where a
    bracket or a triple-quoted string is still open, as python's tokenizer
    then reads on. Without the empty line the statement was incomplete (or
    a compound one, which compiles), so an error is the empty line's: it is
    placed there, where python's parser meets it."""
    try:
        return compiler.compiler(source, "<stdin>", "single", incomplete_input=False)
    except SyntaxError as error:
        message = str(error.msg)
        if message.endswith("was never closed") or message.startswith("unterminated triple-quoted string"):
            return None
        if _compiles_but_for_warnings(compiler, source):
            raise  # a warning the filters make an error (-W error): python says it where it is
        line = source.count("\n")
        raise type(error)(message, ("<stdin>", line, 1, "", line, 1)) from None


def _compiles_but_for_warnings(compiler: codeop.CommandCompiler, source: str) -> bool:
    with _compiler_warnings_ignored():
        try:
            compiler.compiler(source, "<stdin>", "single", incomplete_input=False)
        except SyntaxError:
            return False
    return True


def _encoding() -> str:
    """What the prompt decodes with: ``sys.stdin``'s encoding, as the program
    has it now, else UTF-8."""
    try:
        encoding = sys.stdin.encoding
    except Exception:  # noqa: BLE001 - None, missing, or the program's object failing
        return "utf-8"
    return encoding if isinstance(encoding, str) and encoding else "utf-8"


def _check_decodable(line: str) -> None:
    """The prompt's tokenizer decodes each line strictly, where ``sys.stdin``
    and ``input`` keep undecodable bytes as surrogates: raise the
    ``SyntaxError`` python raises for them."""
    encoding = _encoding()
    try:
        line.encode(encoding, "surrogateescape").decode(encoding)
    except UnicodeError as error:
        raise SyntaxError(f"(unicode error) {error}", ("<stdin>", 0, 0, "", 0, -1)) from None


def _is_compound(source: str) -> bool:
    """Whether ``source`` is a compound statement (``if``, ``def`` ...), which
    the interactive grammar ends with an empty line; codeop does not insist.
    (Parsed as a module: one of comments alone is no statement.)"""
    with _compiler_warnings_ignored():  # the compiling says them
        body = ast.parse(source).body
    return any(isinstance(node, _COMPOUND_STATEMENTS) for node in body)


def _prompt_string(name: str) -> str:
    """``sys.ps1`` or ``sys.ps2`` as text; as in CPython, a prompt that is
    missing or cannot be made UTF-8 text is empty rather than an error."""
    try:
        prompt = str(getattr(sys, name))
        prompt.encode()
    except Exception:  # noqa: BLE001 - any failure of the program's object
        return ""
    return prompt


def _read_line(prompt: str) -> str:
    """A line with its newline, '' at end of input, read as CPython's prompt
    reads: from descriptor 0, whatever the program made of ``sys.stdin``,
    ``sys.stdout`` (closed, replaced, None) or the builtin ``input``. Where
    the streams python started with are terminals, with readline editing
    (the run's own ``input`` on those streams); otherwise CPython writes
    the prompt to descriptor 2 and reads with C's ``fgets``, through a
    buffer of its own (see :class:`_Stdin`)."""
    stdin, stdout = _usable(sys.__stdin__), _usable(sys.__stdout__)
    if stdin is not None and stdout is not None and stdin.isatty() and stdout.isatty():
        try:
            with _standard_streams(stdin, stdout):
                return _stdio.run_input(prompt) + "\n"
        except EOFError:
            return ""
    with contextlib.suppress(OSError):
        os.write(2, prompt.encode())
    return _stdin.readline()


def _usable(stream: TextIO | None) -> TextIO | None:
    """``stream`` unless it is None or closed."""
    try:
        return None if stream is None or stream.closed else stream
    except Exception:  # noqa: BLE001 - a program's object may fail anyhow
        return None


@contextlib.contextmanager
def _standard_streams(stdin: TextIO, stdout: TextIO) -> Iterator[None]:
    """``sys.stdin`` and ``sys.stdout`` as given while ``input`` reads (it
    edits with readline only on the streams of descriptors 0 and 1), then
    as the program had them. The usual case, unchanged streams, costs
    nothing."""
    if sys.stdin is stdin and sys.stdout is stdout:
        yield
        return
    saved = sys.stdin, sys.stdout
    sys.stdin, sys.stdout = stdin, stdout
    try:
        yield
    finally:
        sys.stdin, sys.stdout = saved


class _Stdin:
    """C's ``stdin`` as ``fgets`` reads it: a buffer of its own, filled a
    block at a time (``st_blksize``, as glibc does) from descriptor 0, apart
    from ``sys.stdin``'s. So, as under python, a statement that reads
    ``sys.stdin`` gets what comes after the block the prompt took, and one
    that closes it leaves the prompt reading on. Lines are decoded as
    python's prompt decodes them (see :func:`_encoding`); a failed read is
    the end of input, as
    ``fgets`` returns the same for both, and a line loses what follows a
    null byte, its newline included, and goes on with the next line, as
    ``strlen`` measures what ``fgets`` read."""

    def __init__(self) -> None:
        self._buffer = b""
        self._block = 0

    def readline(self) -> str:
        line = self._read_bytes_line()
        while b"\0" in line:
            line = line[: line.index(b"\0")] + self._read_bytes_line()
        return line.decode(_encoding(), "surrogateescape")

    def _read_bytes_line(self) -> bytes:
        while b"\n" not in self._buffer:
            block = self._read_block()
            if not block:
                line, self._buffer = self._buffer, b""
                return line
            self._buffer += block
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line + b"\n"

    def _read_block(self) -> bytes:
        """A block of descriptor 0; from a terminal, with the job control of
        ``sys.stdin``'s reader (see ``_stdio.TerminalReader``), which stops
        the run when its job is in the background."""
        reader = _stdio.terminal_reader
        before = reader.begin_read() if reader is not None else None
        try:
            return os.read(0, self._block_size())
        except OSError:
            return b""
        finally:
            if reader is not None:
                reader.end_read(before)

    def _block_size(self) -> int:
        if not self._block:
            if _stdio.installed_with is not None and _stdio.installed_with[0]:
                self._block = 1  # -u: python makes C's stdin unbuffered too
            else:
                try:
                    self._block = os.fstat(0).st_blksize or 4096
                except OSError:
                    self._block = 4096
        return self._block


# Made anew for each prompt (`interact`); the server's is never read.
_stdin = _Stdin()


def print_exception(exc: BaseException) -> None:
    """``PyErr_Print``: report as an uncaught exception is reported (the same
    cut of warmfork's own frames, the same fallback), and keep it in
    ``sys.last_*`` for ``pdb.pm()``."""
    _worker._excepthook(exc)  # the one place that knows how python reports them
    flush_standard_streams()


def flush_standard_streams() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:
                stream.flush()
        except (OSError, ValueError):
            pass


_write_stderr = _stdio.write_stderr
