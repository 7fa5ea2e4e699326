"""``warmfork-server``: the server's command line.

    warmfork-server [OPTIONS]                      serve in the foreground
    warmfork-server status [--socket P | --name N] is a server running?
    warmfork-server stop [--socket P | --name N]   stop it
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path

from . import _native, control, daemon
from .errors import WarmforkError
from .server import DEFAULT_GRACE, DEFAULT_POOL, MAX_POOL, MAX_SECONDS, serve

# Exit status after Ctrl-C, as for any program stopped by SIGINT.
_EXIT_INTERRUPTED = 130


def _pool_size(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if not 0 <= value <= MAX_POOL:
        raise argparse.ArgumentTypeError(f"must be 0 to {MAX_POOL}, not {value}")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not 0 <= value <= MAX_SECONDS:  # False for NaN too
        raise argparse.ArgumentTypeError(f"must be 0 to {MAX_SECONDS:g} seconds, not {text}")
    return value


def _timeout(text: str) -> float:
    value = _seconds(text)
    if value == 0:  # no client could ever send its request in time
        raise argparse.ArgumentTypeError(f"must be more than 0 and at most {MAX_SECONDS:g} seconds, not {text}")
    return value


def _server_name(text: str) -> str:
    if not text or "/" in text or text in (".", ".."):
        raise argparse.ArgumentTypeError(
            f"{text!r} cannot name a socket file: use the name the client is invoked by, such as sage"
        )
    return text


def _add_socket_options(parser: argparse.ArgumentParser) -> None:
    where = parser.add_mutually_exclusive_group()
    where.add_argument(
        "--socket",
        metavar="PATH",
        help="the socket (default: $WARMFORK_SOCKET, else $XDG_RUNTIME_DIR/warmfork/NAME.sock, "
        "else /tmp/warmfork-$UID/NAME.sock)",
    )
    where.add_argument(
        "--name",
        metavar="NAME",
        type=_server_name,
        help="serve the socket NAME.sock, used by a client invoked as NAME (a symlink to warmfork); "
        "default: default",
    )


def _serve_parser() -> argparse.ArgumentParser:
    # No abbreviations: a fresh server replacing this one after an edit gets
    # the same command line, with --daemon taken out by its exact name.
    parser = argparse.ArgumentParser(
        prog="warmfork-server",
        allow_abbrev=False,
        description="Serve warmfork clients from a warm Python interpreter. "
        "Runs in the foreground until SIGINT, SIGTERM or SIGHUP, then removes its socket. "
        "Also: `warmfork-server status` and `warmfork-server stop`.",
    )
    _add_socket_options(parser)
    parser.add_argument(
        "--preload",
        metavar="MOD[,MOD...]",
        action="append",
        default=[],
        help="modules to import before serving (repeatable)",
    )
    parser.add_argument("--warmup", metavar="FILE", help="a Python file to run before serving")
    parser.add_argument(
        "--pool",
        metavar="N",
        type=_pool_size,
        default=DEFAULT_POOL,
        help=f"idle workers to keep forked in advance (default: {DEFAULT_POOL}; 0 forks on demand)",
    )
    parser.add_argument(
        "--request-timeout",
        metavar="SECONDS",
        type=_timeout,
        default=10.0,
        help="how long a client has to send its request (default: 10)",
    )
    parser.add_argument(
        "--grace",
        metavar="SECONDS",
        type=_seconds,
        default=DEFAULT_GRACE,
        help=f"on SIGTERM, SIGHUP or Ctrl-C, how long runs in progress may finish before they are killed "
        f"(default: {DEFAULT_GRACE:g}; a second signal ends them at once)",
    )
    parser.add_argument(
        "--no-reload",
        dest="reload",
        action="store_false",
        help="do not replace the server when a loaded module or the warm-up file changes",
    )
    parser.add_argument(
        "--no-immortal",
        dest="immortal",
        action="store_false",
        help="leave the warm objects' reference counts as they are (on CPython 3.12 and 3.13 they are made "
        "immortal, so that runs copy fewer pages)",
    )
    parser.add_argument(
        "--no-fill-pools",
        dest="fill_pools",
        action="store_false",
        help="leave the allocator's half-used pools as they are (by default the server takes their free "
        "blocks before serving, so that runs put new objects on pages of their own)",
    )
    parser.add_argument(
        "--no-pack-code",
        dest="pack_code",
        action="store_false",
        help="leave the code of warmfork's own run path where it is (by default the server packs it onto "
        "a few pages of its own, so that runs copy fewer pages for the interpreter's writes into it)",
    )
    parser.add_argument(
        "--no-code-cache",
        dest="code_cache",
        action="store_false",
        help="compile every run's -c command and script in its worker (by default the server keeps the code "
        "of those its workers ran twice, so that the next runs of one skip compiling it)",
    )
    parser.add_argument(
        "--no-huge-pages",
        dest="huge_pages",
        action="store_false",
        help="leave the warm heap on 4 KiB pages (by default the server keeps the interpreter's arenas side by "
        "side and moves the fully used 2 MiB stretches of its heap onto huge pages, so that a fork copies "
        "fewer page-table entries)",
    )
    parser.add_argument(
        "--daemon",
        action="store_true",
        help="run in the background: return once the server is ready (or say why it is not), "
        "logging to SOCKET.log",
    )
    parser.add_argument(
        "--log-level",
        choices=("error", "warning", "info", "debug"),
        default="info",
        help="how much to log on stderr: info logs one line per run (default: info)",
    )
    return parser


def _control_parser(command: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=f"warmfork-server {command}", allow_abbrev=False)
    _add_socket_options(parser)
    if command == "stop":
        parser.add_argument(
            "--timeout",
            metavar="SECONDS",
            type=_seconds,
            default=60.0,
            help="how long to wait for the server to finish before killing it (default: 60)",
        )
    return parser


def _socket(args: argparse.Namespace) -> Path:
    if args.socket:
        return Path(args.socket)
    return _native.socket_path(os.fsencode(args.name) if args.name else None)


def main(argv: list[str] | None = None) -> int:
    """Run the command; returns the process exit status."""
    argv = sys.argv[1:] if argv is None else argv
    try:
        if argv and argv[0] == "status":
            return control.status(_socket(_control_parser("status").parse_args(argv[1:])))
        if argv and argv[0] == "stop":
            args = _control_parser("stop").parse_args(argv[1:])
            return control.stop(_socket(args), args.timeout)
        return _serve(_serve_parser().parse_args(argv))
    except WarmforkError as exc:
        print(f"warmfork-server: {exc}", file=sys.stderr)
        return 1
    except ValueError as exc:  # e.g. a socket path too long for a Unix socket
        print(f"warmfork-server: {exc}", file=sys.stderr)
        return 2


def _serve(args: argparse.Namespace) -> int:
    if args.daemon:
        return daemon.start(_socket(args), lambda on_ready: _run_server(args, on_ready))
    try:
        _run_server(args, None)
    except KeyboardInterrupt:
        return _EXIT_INTERRUPTED
    return 0


def _run_server(args: argparse.Namespace, on_ready: Callable[[], object] | None) -> None:
    serve(
        socket=_socket(args),
        preload=[name for group in args.preload for name in group.split(",") if name],
        warmup=args.warmup,
        request_timeout=args.request_timeout,
        pool=args.pool,
        grace=args.grace,
        log_level=args.log_level,
        on_ready=on_ready,
        reload=args.reload,
        immortal=args.immortal,
        fill_pools=args.fill_pools,
        pack_code=args.pack_code,
        huge_pages=args.huge_pages,
        code_cache=args.code_cache,
    )
