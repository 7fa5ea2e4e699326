"""``warmfork-server``: the server's command line."""

from __future__ import annotations

import argparse
import sys

from .errors import WarmforkError
from .server import DEFAULT_POOL, serve

# Exit status after Ctrl-C, as for any program stopped by SIGINT.
_EXIT_INTERRUPTED = 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="warmfork-server",
        description="Serve warmfork clients from a warm Python interpreter. "
        "Runs in the foreground until SIGINT or SIGTERM, then removes its socket.",
    )
    parser.add_argument(
        "--socket",
        metavar="PATH",
        help="socket to listen on (default: $WARMFORK_SOCKET, else "
        "$XDG_RUNTIME_DIR/warmfork/default.sock, else /tmp/warmfork-$UID/default.sock)",
    )
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
        type=int,
        default=DEFAULT_POOL,
        help=f"idle workers to keep forked in advance (default: {DEFAULT_POOL}; 0 forks on demand)",
    )
    parser.add_argument(
        "--request-timeout",
        metavar="SECONDS",
        type=float,
        default=10.0,
        help="how long a client has to send its request (default: 10)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the server; returns the process exit status."""
    args = _parser().parse_args(argv)
    preload = [name for group in args.preload for name in group.split(",") if name]
    try:
        serve(
            socket=args.socket,
            preload=preload,
            warmup=args.warmup,
            request_timeout=args.request_timeout,
            pool=args.pool,
        )
    except WarmforkError as exc:
        print(f"warmfork-server: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return _EXIT_INTERRUPTED
    return 0
