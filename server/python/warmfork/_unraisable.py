"""CPython's ``PyErr_WriteUnraisable``, for the worker's flush of
``sys.stdout`` at exit.

Python calls it from C once the program is over, with no Python frame
running, on the main thread. The C function called from warmfork's code
would give an error that has no traceback of its own (the
``BrokenPipeError`` of a stdout nobody reads) one that names a line of
warmfork's, and run on another thread it would hide a SIGINT from the
program's hook, end a child the hook forks with that thread, and make
``threading.current_thread()`` another thread. So this module does what the
C function does, step by step, where the worker's finalisation runs.
"""

from __future__ import annotations

import sys


class _RaisesWhenFreed:
    def __del__(self) -> None:
        raise RuntimeError


def _hook_args_type() -> type:
    """``UnraisableHookArgs``, which ``sys`` does not name: the type of what
    the hook is given for a ``__del__`` that raises."""
    given: list[object] = []
    hook = sys.unraisablehook
    sys.unraisablehook = given.append
    try:
        _RaisesWhenFreed()
    finally:
        sys.unraisablehook = hook
    return type(given[0])


HookArgs = _hook_args_type()
# The default hook, as C calls it, even where the program deleted or
# replaced sys.__unraisablehook__.
default_hook = sys.__unraisablehook__


def write_unraisable(error: BaseException, obj: object, message: str | None = None) -> None:
    """Report ``error`` in ``obj`` as ``PyErr_WriteUnraisable(obj)`` does:
    audited, through ``sys.unraisablehook`` (by default "Exception ignored
    in: ..." on stderr, or ``message`` and a colon where given, as
    ``PyErr_FormatUnraisable``); where the hook is missing or None, or the
    audit or the hook fails, through the default hook, which reports that
    failure instead. Call it with no exception being handled, as C does: an
    error the hook raises then has no context."""
    args = HookArgs((type(error), error, error.__traceback__, message, obj))
    try:
        hook = sys.unraisablehook
    except AttributeError:
        hook = None
    else:
        try:
            sys.audit("sys.unraisablehook", hook, args)
        except BaseException as failure:  # noqa: BLE001 - whatever an audit hook raises, as in C
            args = _failure_args(failure, "Exception ignored in audit hook", None)
            hook = None
    if hook is not None:
        try:
            hook(args)
        except BaseException as failure:  # noqa: BLE001 - whatever the program's hook raises, as in C
            args = _failure_args(failure, "Exception ignored in sys.unraisablehook", hook)
        else:
            return
    try:
        default_hook(args)
    except BaseException:  # noqa: BLE001, S110 - C ignores the default hook's failure
        pass


def _failure_args(failure: BaseException, message: str, obj: object) -> object:
    """The default hook's arguments for a failure of the audit or of the
    hook, traced from the frame that raised it: C has no frame of its own
    there, where this module has one."""
    traceback = failure.__traceback__
    failure.__traceback__ = traceback.tb_next if traceback is not None else None
    # What SIGINT's handler raises, C holds as the type alone before 3.12,
    # which the default hook prints without the ': ' of an empty message. A
    # KeyboardInterrupt without arguments is taken to be that one (Ctrl-C
    # during a slow hook), not one the hook raised itself. From 3.12 on C
    # holds the exception itself.
    bare = sys.version_info < (3, 12) and type(failure) is KeyboardInterrupt and not failure.args
    value = None if bare else failure
    return HookArgs((type(failure), value, failure.__traceback__, message, obj))
