"""warmfork: run Python programs in an interpreter that has already started.

A long-lived server (:func:`serve`, or the ``warmfork-server`` command)
imports the slow things once; the static ``warmfork`` client hands it a
command line, environment, working directory and standard streams; a worker
forked from the warm interpreter runs the program on the client's own
terminal and files, and the client exits with the program's status.
"""

from __future__ import annotations

from .errors import ServerError, Unsupported, WarmforkError
from .server import serve

__all__ = ["ServerError", "Unsupported", "WarmforkError", "serve"]
__version__ = "0.1.0"
