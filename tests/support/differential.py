"""Running the same command line under warmfork and under plain python, in
the same controlled environment, and comparing what a user would see.

The only difference allowed is the program's name in messages: python names
itself by its path, warmfork by the client's.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pytest
from conftest import CLIENT, Server, start_server

from support.server_process import stop_when_idle

# The environment both runs get. Variables that change how python starts
# (PYTHONUNBUFFERED, PYTHONPATH, ...) come only from the test; LANG keeps
# python from coercing the C locale, which would add LC_CTYPE to environ.
BASE_ENV: dict[str, str] = {
    **{k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "LC_"))},
    "LANG": "C.UTF-8",
}

if TYPE_CHECKING:  # only in annotations, which are never evaluated
    Env = Mapping[str, str | bytes]


def shared_server(*server_args: str) -> Callable[..., Iterator[Server]]:
    """A module-scoped ``server`` fixture: one server for every test of a
    module that needs no server of its own."""

    @pytest.fixture(scope="module")
    def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
        srv = start_server(tmp_path_factory.mktemp("server"), *server_args)
        yield srv
        stop_when_idle(srv)

    return server


def env_for(server: Server | None, env: Env | None = None) -> dict[str | bytes, str | bytes]:
    full: dict[str | bytes, str | bytes] = {**BASE_ENV, **(env or {})}
    if server is not None:
        full["WARMFORK_SOCKET"] = os.fspath(server.socket)
    return full


def _run(
    command: list[str | bytes | os.PathLike[str]], env: Env, kwargs: dict[str, object]
) -> subprocess.CompletedProcess[bytes]:
    if not {"stdout", "stderr"} & kwargs.keys():
        kwargs["capture_output"] = True
    if not {"stdin", "input"} & kwargs.keys():
        kwargs["stdin"] = subprocess.DEVNULL  # not whatever pytest was given
    return subprocess.run(command, env=env, timeout=30, check=False, **kwargs)  # type: ignore[call-overload, no-any-return]


def warmfork(
    server: Server, *args: str | bytes, env: Env | None = None, **kwargs: object
) -> subprocess.CompletedProcess[bytes]:
    """Run the client with ``args`` in the controlled environment."""
    return _run([CLIENT, *args], env_for(server, env), kwargs)


def reference(*args: str | bytes, env: Env | None = None, **kwargs: object) -> subprocess.CompletedProcess[bytes]:
    """Run plain python with ``args`` in the same environment (what conftest's
    ``python`` does, with the environment and streams under the test's control)."""
    return _run([sys.executable, *args], env_for(None, env), kwargs)


_PROGRAM_NAMES = [os.fsencode(p) for p in (CLIENT, sys.executable)]


def normalise(output: bytes | None) -> bytes:
    """``output`` with the program's own name replaced by ``PROG`` and object
    addresses by ``0xADDR``."""
    output = output or b""
    for name in _PROGRAM_NAMES:
        output = output.replace(name, b"PROG")
    # Object addresses (in reprs) differ between any two processes.
    output = re.sub(rb"\b0x[0-9a-f]{6,}\b", b"0xADDR", output)
    return re.sub(rb"(?m)^(warmfork|python3?(\.\d+)?): ", b"PROG: ", output)


@dataclass(frozen=True)
class Outcome:
    """What a user sees of a run: status, stdout, stderr (normalised)."""

    status: int
    stdout: bytes
    stderr: bytes

    @classmethod
    def of(cls, done: subprocess.CompletedProcess[bytes]) -> Outcome:
        return cls(done.returncode, normalise(done.stdout), normalise(done.stderr))


def both(server: Server, *args: str | bytes, env: Env | None = None, **kwargs: object) -> tuple[Outcome, Outcome]:
    """The outcome of ``args`` under warmfork and under python."""
    return (
        Outcome.of(warmfork(server, *args, env=env, **kwargs)),
        Outcome.of(reference(*args, env=env, **kwargs)),
    )


def assert_same_as_python(server: Server, *args: str | bytes, env: Env | None = None, **kwargs: object) -> Outcome:
    """Run ``args`` both ways, assert the outcomes are equal, return it."""
    ours, theirs = both(server, *args, env=env, **kwargs)
    assert ours == theirs
    return ours
