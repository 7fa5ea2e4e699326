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
#[derive(Clone, Copy, Debug)]
pub struct Process {
    argv: &'static [*const c_char],
    envp: &'static [*const c_char],
}

impl Process {
    /// The arguments, `argv[0]` first.
    pub fn args(&self) -> impl Iterator<Item = &'static CStr> + Clone {
        self.argv.iter().map(|&p| string(p))
    }

    /// The environment strings, `NAME=value` as given.
    pub fn env(&self) -> impl Iterator<Item = &'static CStr> + Clone {
        self.envp.iter().map(|&p| string(p))
    }

    /// The number of arguments.
    pub fn argc(&self) -> usize {
        self.argv.len()
    }

    /// The number of environment strings.
    pub fn envc(&self) -> usize {
        self.envp.len()
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
unsafe extern "C" fn entry(stack: *const usize) -> ! {
    // SAFETY: the kernel's initial stack is `argc`, then `argc` argument
    // pointers and a null, then the environment pointers and a null; all of
    // it stays mapped and untouched for the life of the process.
    let process = unsafe {
        let argc = *stack;
        let argv = stack.add(1).cast::<*const c_char>();
        let envp = argv.add(argc + 1);
        let mut envc = 0;
        while !(*envp.add(envc)).is_null() {
            envc += 1;
        }
        Process {
            argv: core::slice::from_raw_parts(argv, argc),
            envp: core::slice::from_raw_parts(envp, envc),
        }
    };
    crate::main(&process)
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
