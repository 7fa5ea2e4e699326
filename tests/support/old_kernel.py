"""Running a process as on an older kernel: a seccomp filter makes system
calls, or some of their flags, fail as they do on kernels that predate them.
x86_64 only; everything else, and every other architecture's calls, is
allowed. The filter holds for the process and everything it starts.

As a program: ``python old_kernel.py FEATURE[,FEATURE...] COMMAND ARGS...``
runs COMMAND without the named features (see :data:`FEATURES`).
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
import struct
import sys
from collections.abc import Callable

_AUDIT_ARCH_X86_64 = 0xC000003E
_PR_SET_NO_NEW_PRIVS = 38
_PR_SET_SECCOMP = 22
_SECCOMP_MODE_FILTER = 2
_SECCOMP_RET_ALLOW = 0x7FFF0000
_SECCOMP_RET_ERRNO = 0x00050000
_BPF_LD_W_ABS = 0x20
_BPF_JEQ_K = 0x15
_BPF_JSET_K = 0x45
_BPF_RET_K = 0x06
#: Offsets in ``struct seccomp_data``.
_NR, _ARCH, _ARGS = 0, 4, 16


def _insn(code: int, jump_true: int, jump_false: int, operand: int) -> bytes:
    return struct.pack("=HBBI", code, jump_true, jump_false, operand)


def _fail(number: int, error: int) -> bytes:
    """System call ``number`` fails with ``error``."""
    return b"".join(
        [
            _insn(_BPF_LD_W_ABS, 0, 0, _NR),
            _insn(_BPF_JEQ_K, 0, 1, number),
            _insn(_BPF_RET_K, 0, 0, _SECCOMP_RET_ERRNO | error),
        ]
    )


def _fail_flag(number: int, argument: int, flag: int, error: int) -> bytes:
    """System call ``number`` fails with ``error`` when ``flag`` is set in
    (the low 32 bits of) its argument ``argument``."""
    return b"".join(
        [
            _insn(_BPF_LD_W_ABS, 0, 0, _NR),
            _insn(_BPF_JEQ_K, 0, 3, number),
            _insn(_BPF_LD_W_ABS, 0, 0, _ARGS + 8 * argument),
            _insn(_BPF_JSET_K, 0, 1, flag),
            _insn(_BPF_RET_K, 0, 0, _SECCOMP_RET_ERRNO | error),
        ]
    )


#: What kernels before a version lack, by name.
FEATURES = {
    # close_range (x86_64 number 436): Linux 5.9.
    "close_range": _fail(436, errno.ENOSYS),
    # pidfd_send_signal (424) with PIDFD_SIGNAL_PROCESS_GROUP: Linux 6.9.
    "pidfd_group_signal": _fail_flag(424, 3, 1 << 2, errno.EINVAL),
}


def supported() -> bool:
    return platform.machine() == "x86_64"


def without(*features: str) -> Callable[[], None]:
    """A ``preexec_fn`` that takes the named :data:`FEATURES` away."""
    program = b"".join(
        [
            _insn(_BPF_LD_W_ABS, 0, 0, _ARCH),
            _insn(_BPF_JEQ_K, 1, 0, _AUDIT_ARCH_X86_64),
            _insn(_BPF_RET_K, 0, 0, _SECCOMP_RET_ALLOW),
            *(FEATURES[name] for name in features),
            _insn(_BPF_RET_K, 0, 0, _SECCOMP_RET_ALLOW),
        ]
    )

    def apply() -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        filters = ctypes.create_string_buffer(program, len(program))
        fprog = struct.pack("HP", len(program) // 8, ctypes.addressof(filters))
        fprog_buffer = ctypes.create_string_buffer(fprog, len(fprog))
        if libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "PR_SET_NO_NEW_PRIVS")
        if libc.prctl(_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER, fprog_buffer, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "PR_SET_SECCOMP")

    return apply


if __name__ == "__main__":
    without(*sys.argv[1].split(","))()
    os.execvp(sys.argv[2], sys.argv[2:])
