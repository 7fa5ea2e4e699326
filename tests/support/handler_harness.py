"""A stand-in for a warmfork worker, to test a handler without the server.

``python tests/support/handler_harness.py ARGS...`` behaves as a worker
would for a client that ran ``warmfork ARGS...`` here, with this process's
environment, working directory and descriptors: it makes ``sys.argv`` the
client's, installs fresh standard streams, runs :func:`warmfork.pymain.main`
through ``_worker.run_handler`` (the worker's own exit-status logic) and ends
with ``os._exit``, as a worker does. A refused run prints
``warmfork: <reason>`` and exits 201.
"""

from __future__ import annotations

import importlib
import os
import signal
import sys
import types

REFUSED_STATUS = 201
_HERE = os.path.dirname(os.path.realpath(__file__))
_SERVER_PYTHON = os.path.join(os.path.dirname(os.path.dirname(_HERE)), "server", "python")


def _import_package() -> types.ModuleType:
    """``warmfork``, or a bare stand-in for it when ``warmfork/__init__.py``
    cannot be imported (its compiled ``_native`` module not built yet): the
    pure-Python submodules a handler needs do not depend on it."""
    try:
        return importlib.import_module("warmfork")
    except ImportError:
        for name in [name for name in sys.modules if name == "warmfork" or name.startswith("warmfork.")]:
            del sys.modules[name]
        package = types.ModuleType("warmfork")
        package.__path__ = [os.path.join(_SERVER_PYTHON, "warmfork")]
        sys.modules["warmfork"] = package
        return package


def _exit(code: int) -> None:
    if code < 0:
        signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
    os._exit(code)


def main() -> None:
    # Like the server: the harness's own directory is not the program's, and
    # warmfork is found where an installed package would be, after the rest.
    sys.path[:] = [entry for entry in sys.path if os.path.realpath(entry or ".") != _HERE]
    sys.path.append(_SERVER_PYTHON)
    _import_package()
    _stdio = importlib.import_module("warmfork._stdio")
    _worker = importlib.import_module("warmfork._worker")
    errors = importlib.import_module("warmfork.errors")
    pymain = importlib.import_module("warmfork.pymain")

    sys.argv = ["warmfork", *sys.argv[1:]]
    if hasattr(sys.modules["warmfork"], "serve"):  # the whole package, _native included
        _worker.note_server_modules()  # as the server does: at exit, only the program's modules are finalised
    _stdio.set_up()
    try:
        code = _worker.run_handler(pymain.main)
    except errors.Unsupported as refusal:
        print(f"warmfork: {refusal}", file=sys.stderr, flush=True)
        code = REFUSED_STATUS
    _exit(code)


if __name__ == "__main__":
    main()
