"""PEP 517 backend: maturin, after building the static client.

The wheel carries three things: the extension, the Python package and the
static ``warmfork`` client. maturin builds the first two; the client is a
separate no_std binary with its own profile and target, so it is built here
first, by ``scripts/build-client``, and placed in maturin's data directory,
whose ``scripts/`` files are installed into the environment's ``bin/``.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
from pathlib import Path

from maturin import *  # re-export every other hook unchanged
from maturin import build_editable as _maturin_build_editable
from maturin import build_wheel as _maturin_build_wheel

_SERVER = Path(__file__).resolve().parent.parent
_REPO = _SERVER.parent
_SCRIPTS = _SERVER / "wheel-data" / "scripts"

# maturin checks that its data directory exists in every hook, metadata
# included, so it is made as soon as the backend is loaded.
_SCRIPTS.mkdir(parents=True, exist_ok=True)


def _build_client() -> None:
    target = os.environ.get("WARMFORK_CLIENT_TARGET", f"{platform.machine()}-unknown-linux-musl")
    built = subprocess.run(
        [str(_REPO / "scripts" / "build-client"), "--target", target],
        check=True,
        stdout=subprocess.PIPE,
        text=True,
    ).stdout.split()[-1]
    shutil.copy2(built, _SCRIPTS / "warmfork")


def build_wheel(
    wheel_directory: str,
    config_settings: dict[str, object] | None = None,
    metadata_directory: str | None = None,
) -> str:
    """Build the client, then the wheel."""
    _build_client()
    return _maturin_build_wheel(wheel_directory, config_settings, metadata_directory)


def build_editable(
    wheel_directory: str,
    config_settings: dict[str, object] | None = None,
    metadata_directory: str | None = None,
) -> str:
    """Build the client, then the editable wheel."""
    _build_client()
    return _maturin_build_editable(wheel_directory, config_settings, metadata_directory)
