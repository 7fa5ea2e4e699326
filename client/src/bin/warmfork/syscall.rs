//! The few system calls the client needs that rustix keeps out of its public
//! API (they live in its unstable runtime module, meant for runtimes such as
//! origin): ending the process, and masking signals into a signalfd; and
//! those whose rustix wrapper does not fit (see each).

use core::ffi::{CStr, c_char};

use rustix::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use rustix::io::Errno;

#[cfg(target_arch = "x86_64")]
mod nr {
    pub const RT_SIGACTION: usize = 13;
    pub const RT_SIGPROCMASK: usize = 14;
    pub const RT_SIGPENDING: usize = 127;
    pub const CLOCK_GETTIME: usize = 228;
    pub const CLONE: usize = 56;
    pub const EXECVE: usize = 59;
    pub const EXIT_GROUP: usize = 231;
    pub const SIGNALFD4: usize = 289;
    pub const KILL: usize = 62;
    pub const PIDFD_SEND_SIGNAL: usize = 424;
    pub const CLOSE_RANGE: usize = 436;
    pub const GETSOCKOPT: usize = 55;
}

#[cfg(target_arch = "aarch64")]
mod nr {
    pub const SIGNALFD4: usize = 74;
    pub const CLONE: usize = 220;
    pub const EXECVE: usize = 221;
    pub const EXIT_GROUP: usize = 94;
    pub const RT_SIGACTION: usize = 134;
    pub const RT_SIGPROCMASK: usize = 135;
    pub const RT_SIGPENDING: usize = 136;
    pub const CLOCK_GETTIME: usize = 113;
    pub const KILL: usize = 129;
    pub const PIDFD_SEND_SIGNAL: usize = 424;
    pub const CLOSE_RANGE: usize = 436;
    pub const GETSOCKOPT: usize = 209;
}

/// A kernel signal set: bit N-1 stands for signal N. The kernel's `sigset_t`
/// is 64 bits on every architecture the client supports.
pub type SigSet = u64;

/// The bit of signal `number` in a [`SigSet`].
pub const fn bit(number: i32) -> SigSet {
    1 << (number - 1)
}

/// A raw system call with up to five arguments; returns the kernel's result
/// (a negative errno on failure).
///
/// # Safety
///
/// The arguments must be what system call `nr` expects; pointers among them
/// must be valid for what the call reads or writes.
unsafe fn syscall5(nr: usize, a0: usize, a1: usize, a2: usize, a3: usize, a4: usize) -> isize {
    let ret: isize;
    // SAFETY: the caller vouches for the arguments; the asm clobbers only
    // what the kernel's syscall ABI says it clobbers.
    unsafe {
        #[cfg(target_arch = "x86_64")]
        core::arch::asm!(
            "syscall",
            inlateout("rax") nr as isize => ret,
            in("rdi") a0, in("rsi") a1, in("rdx") a2, in("r10") a3, in("r8") a4,
            lateout("rcx") _, lateout("r11") _,
            options(nostack),
        );
        #[cfg(target_arch = "aarch64")]
        core::arch::asm!(
            "svc 0",
            in("x8") nr,
            inlateout("x0") a0 as isize => ret,
            in("x1") a1, in("x2") a2, in("x3") a3, in("x4") a4,
            options(nostack),
        );
    }
    ret
}

/// [`syscall5`] for the calls that take four arguments or fewer.
///
/// # Safety
///
/// As for [`syscall5`].
unsafe fn syscall4(nr: usize, a0: usize, a1: usize, a2: usize, a3: usize) -> isize {
    // SAFETY: the caller vouches for the arguments; a fifth that the call
    // does not read changes nothing.
    unsafe { syscall5(nr, a0, a1, a2, a3, 0) }
}

fn result(ret: isize) -> Result<usize, Errno> {
    if ret < 0 {
        Err(Errno::from_raw_os_error(-ret as i32))
    } else {
        Ok(ret as usize)
    }
}

/// `rt_sigprocmask(how, set, NULL)`.
fn sigprocmask(how: usize, set: SigSet) -> Result<(), Errno> {
    // SAFETY: `set` is a readable 8-byte signal set; no old set is written.
    let ret = unsafe {
        syscall4(
            nr::RT_SIGPROCMASK,
            how,
            &set as *const SigSet as usize,
            0,
            8,
        )
    };
    result(ret).map(drop)
}

/// Blocks the signals in `set`.
pub fn block(set: SigSet) -> Result<(), Errno> {
    sigprocmask(0, set) // SIG_BLOCK
}

/// Unblocks the signals in `set`.
pub fn unblock(set: SigSet) -> Result<(), Errno> {
    sigprocmask(1, set) // SIG_UNBLOCK
}

/// `rt_sigpending`: the blocked signals that have arrived and wait.
pub fn sigpending() -> Result<SigSet, Errno> {
    let mut set: SigSet = 0;
    // SAFETY: `set` is a writable 8-byte signal set.
    let ret = unsafe { syscall4(nr::RT_SIGPENDING, &mut set as *mut SigSet as usize, 8, 0, 0) };
    result(ret).map(|_| set)
}

/// `clock_gettime(CLOCK_MONOTONIC)` in nanoseconds. A system call rather
/// than the vDSO, which a libc-free program would have to find itself: it
/// is read only while a signal waits (see `signals.rs`).
pub fn monotonic_ns() -> u64 {
    const CLOCK_MONOTONIC: usize = 1;
    let mut now = [0i64; 2];
    // SAFETY: `now` is a writable `struct timespec` (two 64-bit fields on
    // the architectures the client supports).
    let ret = unsafe {
        syscall4(
            nr::CLOCK_GETTIME,
            CLOCK_MONOTONIC,
            now.as_mut_ptr() as usize,
            0,
            0,
        )
    };
    if ret < 0 {
        return 0;
    }
    (now[0] as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(now[1] as u64)
}

/// The child-status signal, the same number on every architecture the
/// client supports.
pub const SIGCHLD: i32 = 17;

/// The dispositions `rt_sigaction` takes besides a handler's address.
const SIG_DFL: usize = 0;
const SIG_IGN: usize = 1;

/// `rt_sigaction(signal, SIG_DFL)`: gives `signal` its default action,
/// whatever this process inherited (an ignored SIGINT under `nohup` or a
/// shell's background job).
pub fn default_action(signal: i32) -> Result<(), Errno> {
    set_action(signal, SIG_DFL)
}

/// `rt_sigaction(signal, SIG_IGN)`.
pub fn ignore(signal: i32) -> Result<(), Errno> {
    set_action(signal, SIG_IGN)
}

/// Sets `signal`'s disposition to `handler` (`SIG_DFL` or `SIG_IGN`), with
/// no flags and an empty mask.
fn set_action(signal: i32, handler: usize) -> Result<(), Errno> {
    // The kernel's `struct sigaction` (handler, flags, restorer, mask; 32
    // bytes on the architectures the client supports).
    let action = [handler, 0, 0, 0];
    // SAFETY: `action` is readable for the kernel's sigaction size; no old
    // action is written.
    let ret = unsafe {
        syscall4(
            nr::RT_SIGACTION,
            signal as usize,
            action.as_ptr() as usize,
            0,
            8,
        )
    };
    result(ret).map(drop)
}

/// Whether `signal` is ignored (`SIG_IGN`), asked with `rt_sigaction`:
/// for a client that cannot read `/proc/self/status`.
pub fn is_ignored(signal: i32) -> bool {
    let mut old = [0usize; 4];
    // SAFETY: `old` is writable for the kernel's sigaction size; no new
    // action is set.
    let ret = unsafe {
        syscall4(
            nr::RT_SIGACTION,
            signal as usize,
            0,
            old.as_mut_ptr() as usize,
            8,
        )
    };
    ret >= 0 && old[0] == SIG_IGN
}

/// `signalfd4(-1, set, SFD_CLOEXEC | SFD_NONBLOCK)`: a descriptor that
/// becomes readable when a (blocked) signal of `set` is pending.
pub fn signalfd(set: SigSet) -> Result<OwnedFd, Errno> {
    const SFD_CLOEXEC: usize = 0o2000000;
    const SFD_NONBLOCK: usize = 0o4000;
    // SAFETY: `set` is a readable 8-byte signal set.
    let ret = unsafe {
        syscall4(
            nr::SIGNALFD4,
            -1isize as usize,
            &set as *const SigSet as usize,
            8,
            SFD_CLOEXEC | SFD_NONBLOCK,
        )
    };
    // SAFETY: on success the kernel returned a new descriptor we now own.
    result(ret).map(|fd| unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// `pidfd_send_signal(pidfd, signal, NULL, flags)`: `signal` to the
/// process `pidfd` refers to or, with `to_group`, to every process in its
/// process group (`PIDFD_SIGNAL_PROCESS_GROUP`, Linux 6.9). The pidfd pins
/// that process, so the group cannot be another that reused its number.
/// Raw rather than rustix's, which takes only the signals it names, not
/// the real-time ones.
pub fn pidfd_send_signal(pidfd: BorrowedFd<'_>, signal: i32, to_group: bool) -> Result<(), Errno> {
    const PIDFD_SIGNAL_PROCESS_GROUP: usize = 1 << 2;
    // SAFETY: no pointer is passed (a null siginfo makes the kernel fill in
    // one as for kill).
    let ret = unsafe {
        syscall4(
            nr::PIDFD_SEND_SIGNAL,
            pidfd.as_raw_fd() as usize,
            signal as usize,
            0,
            if to_group {
                PIDFD_SIGNAL_PROCESS_GROUP
            } else {
                0
            },
        )
    };
    result(ret).map(drop)
}

/// `kill(-group, signal)`: sends `signal` to every process of a group.
pub fn kill_group(group: u32, signal: i32) -> Result<(), Errno> {
    // Group 0 or 1 would mean this process's own group, or every process.
    if group < 2 || group > i32::MAX as u32 {
        return Err(Errno::INVAL);
    }
    let target = -(group as i32);
    // SAFETY: no pointer is passed.
    let ret = unsafe { syscall4(nr::KILL, target as usize, signal as usize, 0, 0) };
    result(ret).map(drop)
}

/// `kill(getpid(), signal)`: raises `signal` on this process. Raw for the
/// same reason as [`pidfd_send_signal`].
pub fn raise(signal: i32) -> Result<(), Errno> {
    let pid = rustix::process::getpid().as_raw_nonzero().get();
    // SAFETY: no pointer is passed.
    let ret = unsafe { syscall4(nr::KILL, pid as usize, signal as usize, 0, 0) };
    result(ret).map(drop)
}

/// `getsockopt(socket, SOL_SOCKET, SO_PEERCRED)`: the effective user id of
/// the process at the other end of the connected Unix socket `socket`. Raw
/// rather than rustix's `socket_peercred`, whose credentials type cannot
/// hold the pid 0 the kernel reports for a peer outside this process's pid
/// namespace (a server on the host, seen from a container): it failed there.
pub fn peer_uid(socket: BorrowedFd<'_>) -> Result<rustix::process::Uid, Errno> {
    // The same on every architecture the client supports.
    const SOL_SOCKET: usize = 1;
    const SO_PEERCRED: usize = 17;
    // `struct ucred`: pid, uid, gid, 32 bits each.
    let mut credentials = [0u32; 3];
    let mut len = core::mem::size_of_val(&credentials) as u32;
    // SAFETY: `credentials` is writable for `len` bytes and `len` is a
    // writable socklen_t, as getsockopt expects.
    let ret = unsafe {
        syscall5(
            nr::GETSOCKOPT,
            socket.as_raw_fd() as usize,
            SOL_SOCKET,
            SO_PEERCRED,
            credentials.as_mut_ptr() as usize,
            &mut len as *mut u32 as usize,
        )
    };
    result(ret)?;
    if (len as usize) < core::mem::size_of_val(&credentials) {
        return Err(Errno::INVAL);
    }
    Ok(rustix::process::Uid::from_raw(credentials[1]))
}

/// `close_range(first, ~0, 0)` (Linux 5.9): closes every descriptor from
/// `first` on. Before 5.9 it fails (`ENOSYS`) and closes nothing.
pub fn close_range_from(first: u32) -> Result<(), Errno> {
    // SAFETY: no pointer is passed; closing descriptors is the caller's
    // intent (a child about to exec).
    let ret = unsafe { syscall4(nr::CLOSE_RANGE, first as usize, u32::MAX as usize, 0, 0) };
    result(ret).map(drop)
}

/// `execve`—replaces this process with the program at `path`. Returns only
/// on failure.
///
/// # Safety
///
/// `argv` and `envp` must be null-terminated arrays of pointers to
/// NUL-terminated strings.
pub unsafe fn execve(path: &CStr, argv: *const *const c_char, envp: *const *const c_char) -> Errno {
    // SAFETY: the caller vouches for the arrays; `path` is NUL-terminated.
    let ret = unsafe {
        syscall4(
            nr::EXECVE,
            path.as_ptr() as usize,
            argv as usize,
            envp as usize,
            0,
        )
    };
    Errno::from_raw_os_error(-ret as i32)
}

/// `fork`, as `clone(SIGCHLD)` (aarch64 has no `fork` system call).
/// Returns the child's pid in the parent and `None` in the child.
///
/// # Safety
///
/// The process must have a single thread; the child must only make system
/// calls until it execs or exits (it shares nothing, but inherits a copy of
/// a process that libc-less code may not expect to be duplicated).
pub unsafe fn fork() -> Result<Option<rustix::process::Pid>, Errno> {
    // SAFETY: with no new stack and no thread-related flags, clone returns
    // twice like fork, each process on its own copy of this stack.
    let ret = unsafe { syscall4(nr::CLONE, SIGCHLD as usize, 0, 0, 0) };
    let pid = result(ret)?;
    Ok(rustix::process::Pid::from_raw(pid as i32))
}

/// `exit_group`—ends the process with status `code`.
pub fn exit(code: i32) -> ! {
    // SAFETY: `exit_group` takes one integer and never returns.
    unsafe { syscall4(nr::EXIT_GROUP, code as usize, 0, 0, 0) };
    unreachable!("exit_group returned")
}
