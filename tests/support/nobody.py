"""Python code run as another user, ``nobody``."""

from __future__ import annotations

import os
import sys

# The interpreter starts as root and becomes `nobody` after the program's
# first line, its imports: started as `nobody` (setpriv), an interpreter
# built with a shared libpython under /root, which only root may enter,
# cannot load it (pyenv's python 3.12; 3.11's loaded the system's
# libpython3.11 instead), nor can it import from a standard library there.
_BECOME_NOBODY = (
    "import grp as _grp, os as _os, pwd as _pwd\n"
    "_os.setgroups([]); _os.setgid(_grp.getgrnam('nogroup').gr_gid); _os.setuid(_pwd.getpwnam('nobody').pw_uid)\n"
)


def python(program: str, *args: str | os.PathLike[str]) -> list[str | os.PathLike[str]]:
    """The command that runs ``program`` as ``python -c`` would, as ``nobody``
    from its second line on."""
    imports, rest = program.split("\n", 1)
    return [sys.executable, "-c", f"{imports}\n{_BECOME_NOBODY}{rest}", *args]
