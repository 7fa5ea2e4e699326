"""A server that cannot fork: its processes moved into a pids cgroup whose
limit is already reached, so every ``fork`` fails with EAGAIN, as when a
user's RLIMIT_NPROC is reached (which does not apply to root, who runs the
tests)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from support.server_process import children_of

#: cgroup v1's pids hierarchy, or the v2 root if it delegates pids.
_V1 = Path("/sys/fs/cgroup/pids")
_V2 = Path("/sys/fs/cgroup")


def _pids_root() -> Path | None:
    if (_V1 / "cgroup.procs").exists():
        return _V1
    controllers = _V2 / "cgroup.subtree_control"
    if controllers.exists() and "pids" in controllers.read_text().split():
        return _V2
    return None


def supported() -> bool:
    """Whether this process can make a pids cgroup (root, a pids controller)."""
    root = _pids_root()
    return root is not None and os.access(root, os.W_OK)


@contextlib.contextmanager
def pids_cgroup(name: str) -> Iterator[Path]:
    """A fresh pids cgroup, removed afterwards (its processes moved back)."""
    root = _pids_root()
    assert root is not None
    group = root / name
    group.mkdir()
    try:
        yield group
    finally:
        for pid in (group / "cgroup.procs").read_text().split():
            with contextlib.suppress(OSError):  # it may have exited
                (root / "cgroup.procs").write_text(pid)
        group.rmdir()


def confine(group: Path, pid: int) -> None:
    """Move ``pid`` and its children into ``group``, and let no process
    there fork: the limit is one, and they are more."""
    for member in [pid, *children_of(pid)]:
        (group / "cgroup.procs").write_text(str(member))
    (group / "pids.max").write_text("1")


def release(group: Path) -> None:
    """Let the processes in ``group`` fork again."""
    (group / "pids.max").write_text("max")


def cpu_seconds(pid: int) -> float:
    """User and system time ``pid`` has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
