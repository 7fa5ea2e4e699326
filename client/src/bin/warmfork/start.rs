//! Process entry without libc: `_start`, the initial stack, and the panic
//! handler.
//!
//! The kernel starts a static executable at `_start` with the stack pointer
//! at `argc`, followed by the `argv` pointers, a null, the `envp` pointers and
//! another null. There is no libc to find these for us, and no runtime to
//! initialise: rustix's raw-syscall backend needs none, so `_start` only has
//! to hand the stack pointer to Rust.

use core::ffi::{CStr, c_char};

// x86_64: the System V ABI entry state is `rsp` -> argc, `rsp` 16-byte
// aligned, and a zero frame pointer expected by unwinders and debuggers.
#[cfg(target_arch = "x86_64")]
core::arch::global_asm!(
    ".globl _start",
    ".type _start, @function",
    "_start:",
    "    xor ebp, ebp",  // outermost frame: no caller to walk back to
    "    mov rdi, rsp",  // first argument: the kernel's initial stack
    "    and rsp, -16",  // the call below must see a 16-byte aligned stack
    "    call {entry}",  // never returns
    "    ud2",
    entry = sym entry,
);

// aarch64: `sp` -> argc, already 16-byte aligned; clear the frame and link
// registers so backtraces stop here.
#[cfg(target_arch = "aarch64")]
core::arch::global_asm!(
    ".globl _start",
    ".type _start, %function",
    "_start:",
    "    mov x29, #0",   // no previous frame
    "    mov x30, #0",   // no return address
    "    mov x0, sp",    // first argument: the kernel's initial stack
    "    bl {entry}",    // never returns
    "    udf #0",
    entry = sym entry,
);

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
compile_error!(
    "warmfork's client has an entry point for x86_64 and aarch64 only; add one in start.rs"
);

/// The command line and environment the kernel gave this process.
///
/// Raw pointers rather than slices: [`Process::exec`] writes to the argument
/// array, which no reference may then be looking at.
#[derive(Debug)]
pub struct Process {
    argv: *mut *const c_char,
    argc: usize,
    envp: *const *const c_char,
    envc: usize,
}

impl Process {
    /// The arguments, `argv[0]` first.
    pub fn args(&self) -> impl Iterator<Item = &'static CStr> + Clone + '_ {
        // SAFETY: `argv` holds `argc` string pointers (see `entry`); the
        // slice lives only as long as the iterator, while nothing writes.
        unsafe { core::slice::from_raw_parts(self.argv, self.argc) }
            .iter()
            .map(|&p| string(p))
    }

    /// The environment strings, `NAME=value` as given.
    pub fn env(&self) -> impl Iterator<Item = &'static CStr> + Clone + '_ {
        // SAFETY: `envp` holds `envc` string pointers (see `entry`).
        unsafe { core::slice::from_raw_parts(self.envp, self.envc) }
            .iter()
            .map(|&p| string(p))
    }

    /// The environment array, null-terminated, for `execve`.
    pub fn envp(&self) -> *const *const c_char {
        self.envp
    }

    /// The number of arguments.
    pub fn argc(&self) -> usize {
        self.argc
    }

    /// The number of environment strings.
    pub fn envc(&self) -> usize {
        self.envc
    }

    /// Replaces this process with the program at `path`, given this
    /// process's arguments (with `argv[0]` replaced by `path`) and
    /// environment. Returns only on failure.
    pub fn exec(&mut self, path: &CStr) -> rustix::io::Errno {
        if self.argc == 0 {
            return rustix::io::Errno::INVAL;
        }
        // SAFETY: `argv[0]` is a slot of the kernel's argument array, which
        // this process owns; `&mut self` guarantees no slice of it is alive.
        // The old pointer is put back if the exec fails.
        unsafe {
            let argv0 = *self.argv;
            *self.argv = path.as_ptr();
            let errno = crate::syscall::execve(path, self.argv, self.envp);
            *self.argv = argv0;
            errno
        }
    }

    /// The value of the environment variable `name`, if set.
    pub fn var(&self, name: &[u8]) -> Option<&'static [u8]> {
        self.env().find_map(|entry| {
            let entry = entry.to_bytes();
            entry.strip_prefix(name)?.strip_prefix(b"=")
        })
    }
}

fn string(p: *const c_char) -> &'static CStr {
    // SAFETY: every pointer in `argv` and `envp` points at a NUL-terminated
    // string that the kernel placed on the initial stack, which lives (and is
    // never written by this program) until the process exits.
    unsafe { CStr::from_ptr(p) }
}

/// Reads `argc`, `argv` and `envp` off the initial stack and runs the client.
///
/// # Safety
///
/// `stack` must be the stack pointer the kernel handed to `_start`.
unsafe extern "C" fn entry(stack: *mut usize) -> ! {
    // SAFETY: the kernel's initial stack is `argc`, then `argc` argument
    // pointers and a null, then the environment pointers and a null; all of
    // it stays mapped for the life of the process and belongs to it.
    let mut process = unsafe {
        let argc = *stack;
        let argv = stack.add(1).cast::<*const c_char>();
        let envp = argv.add(argc + 1);
        let mut envc = 0;
        while !(*envp.add(envc)).is_null() {
            envc += 1;
        }
        Process {
            argv,
            argc,
            envp,
            envc,
        }
    };
    crate::main(&mut process)
}

/// Descriptor `fd`, which the client was started with and never closes,
/// borrowed for the life of the process.
pub fn inherited_fd(fd: u32) -> rustix::fd::BorrowedFd<'static> {
    // SAFETY: `fd` was listed open when the client started (see
    // `request::Descriptors::gather`), the client never closes it, and it
    // opens nothing before the listing that could have taken its number.
    unsafe { rustix::fd::BorrowedFd::borrow_raw(fd as i32) }
}

#[panic_handler]
fn panic(_: &core::panic::PanicInfo<'_>) -> ! {
    crate::failure::Failure::Internal.exit()
}

/// Descriptor 0, 1 or 2, borrowed for the life of the process.
pub fn stdio_fd(fd: u8) -> rustix::fd::BorrowedFd<'static> {
    // SAFETY: the client never closes or replaces its standard descriptors,
    // so the number keeps naming the same open file (or, if the client was
    // started with it closed, nothing: calls then fail with EBADF, which the
    // callers handle).
    unsafe {
        match fd {
            0 => rustix::stdio::stdin(),
            1 => rustix::stdio::stdout(),
            _ => rustix::stdio::stderr(),
        }
    }
}
