"""Exceptions that cross from warmfork into Python code."""

from __future__ import annotations


class WarmforkError(Exception):
    """Base class of warmfork's own errors."""


class Unsupported(WarmforkError):
    """Raised by a handler for a request a warm interpreter cannot honour.

    The worker answers the client with an ``UNSUPPORTED`` error carrying the
    message instead of running anything, so the client can say why (and, where
    configured, fall back to plain python).
    """


class ServerError(WarmforkError):
    """The server could not start or keep serving (socket, fork, threads)."""
