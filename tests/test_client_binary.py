"""The client binary itself: static, small, and cheap to run.

People copy the one static client onto many hosts and containers and measure
every run with hyperfine; these tests pin what that relies on. The ELF is
read here directly rather than through `file`, whose wording varies.
"""

from __future__ import annotations

import os
import re
import shutil
import struct
import subprocess
from pathlib import Path

from conftest import CLIENT, Server
from support.differential import shared_server

PT_INTERP = 3
SHT_SYMTAB = 2
MAX_CLIENT_SIZE = 64 * 1024
MAX_SYSCALLS_PER_RUN = 25


server = shared_server()


def elf_headers(path: Path) -> tuple[list[int], list[int]]:
    """The types of the program headers and of the section headers of a
    64-bit little-endian ELF file."""
    data = path.read_bytes()
    assert data[:4] == b"\x7fELF", "not an ELF file"
    assert data[4] == 2 and data[5] == 1, "expected a 64-bit little-endian ELF"
    (phoff, shoff) = struct.unpack_from("<QQ", data, 0x20)
    (phentsize, phnum, shentsize, shnum) = struct.unpack_from("<HHHH", data, 0x36)
    program = [struct.unpack_from("<I", data, phoff + i * phentsize)[0] for i in range(phnum)]
    sections = [struct.unpack_from("<I", data, shoff + i * shentsize + 4)[0] for i in range(shnum)]
    return program, sections


def strace() -> str:
    path = shutil.which("strace")
    assert path is not None, "strace is needed to check the client's system calls; install it"
    return path


def traced_run(server: Server, tmp_path: Path, *trace_args: str) -> list[str]:
    """Run `warmfork -c pass` under strace; the trace's lines."""
    out = tmp_path / "trace"
    done = subprocess.run(
        [strace(), "-f", "-o", os.fspath(out), *trace_args, CLIENT, "-c", "pass"],
        env=server.env,
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode()
    return out.read_text().splitlines()


def syscall_name(line: str) -> str | None:
    """The system call a trace line records, None for signal and exit lines
    and for the second half of a call that strace split."""
    body = re.sub(r"^\d+\s+", "", line)
    if body.startswith(("+++", "---", "<...")):
        return None
    match = re.match(r"(\w+)\(", body)
    return match.group(1) if match else None


def test_client_is_statically_linked() -> None:
    program, _ = elf_headers(CLIENT)
    assert program, "no program headers"
    assert PT_INTERP not in program, "the client asks for a dynamic loader (PT_INTERP)"


def test_client_is_stripped_and_at_most_64_kib() -> None:
    _, sections = elf_headers(CLIENT)
    assert SHT_SYMTAB not in sections, "the installed client carries a symbol table"
    assert CLIENT.stat().st_size <= MAX_CLIENT_SIZE


def test_client_makes_no_brk_and_no_anonymous_mmap(server: Server, tmp_path: Path) -> None:
    lines = traced_run(server, tmp_path, "-e", "trace=brk,mmap,exit_group")
    calls = [(syscall_name(line), line) for line in lines]
    assert ("exit_group" in {name for name, _ in calls}), "strace recorded nothing"
    assert not [line for name, line in calls if name == "brk"]
    assert not [line for name, line in calls if name == "mmap" and "MAP_ANON" in line]


def test_client_makes_at_most_25_system_calls_per_run(server: Server, tmp_path: Path) -> None:
    calls = [name for line in traced_run(server, tmp_path) if (name := syscall_name(line))]
    assert calls[0] == "execve" and calls[-1] == "exit_group", calls
    assert len(calls) <= MAX_SYSCALLS_PER_RUN, calls
