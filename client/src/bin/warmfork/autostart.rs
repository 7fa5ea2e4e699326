//! Starting a server when there is none: `WARMFORK_SERVER`.
//!
//! When no server answers and `WARMFORK_SERVER` holds a server command line
//! (for example `warmfork-server --preload numpy`), the client starts it in
//! the background with `/bin/sh -c`, its output going to `SOCKET.log`, and
//! connects as soon as the socket accepts connections (the server binds
//! before it warms up; the connection then waits in its backlog).
//!
//! Clients starting at once take turns on an `flock` of `SOCKET.start`:
//! the first starts the server, the others find it already listening, so
//! exactly one server starts.

use core::ffi::CStr;

use rustix::fd::OwnedFd;
use rustix::fs::{FlockOperation, Mode, OFlags};
use rustix::io::Errno;
use rustix::process::{Pid, WaitId, WaitIdOptions};

use crate::connect::{self, SocketPath};
use crate::failure::Failure;
use crate::start::Process;
use crate::{signals, syscall};

/// How long a started server has to accept connections.
const READY_TIMEOUT_MS: u32 = 60_000;

/// How often the client tries to connect while the server starts.
const POLL_MS: u32 = 10;

/// Starts the server named by `WARMFORK_SERVER`, unless another client just
/// did, and returns a connection to it. `None` when no command is set.
pub fn start<'p>(process: &Process, path: &'p SocketPath) -> Option<Result<OwnedFd, Failure<'p>>> {
    let command = process.var(b"WARMFORK_SERVER").filter(|c| !c.is_empty())?;
    Some(start_with(process, path, command))
}

fn start_with<'p>(
    process: &Process,
    path: &'p SocketPath,
    command: &'static [u8],
) -> Result<OwnedFd, Failure<'p>> {
    let mut names = Names::new(path.as_bytes());
    // The server would create the directory too; the lock file needs it now.
    let _ = rustix::fs::mkdir(names.dir(), Mode::from_raw_mode(0o700));
    let lock = rustix::fs::open(
        names.with_suffix(b".start"),
        OFlags::CREATE | OFlags::RDWR | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o600),
    )
    .map_err(|errno| Failure::System {
        call: "open the server start lock",
        errno,
    })?;
    rustix::fs::flock(&lock, FlockOperation::LockExclusive).map_err(|errno| Failure::System {
        call: "flock the server start lock",
        errno,
    })?;
    // Another client may have started it while this one waited for the lock.
    if let Ok(socket) = connect::connect(path) {
        return Ok(socket);
    }
    let log = rustix::fs::open(
        names.with_suffix(b".log"),
        OFlags::CREATE | OFlags::WRONLY | OFlags::APPEND | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o600),
    )
    .map_err(|errno| Failure::System {
        call: "open the server log",
        errno,
    })?;
    let server = spawn(process, command, &log).map_err(|errno| Failure::System {
        call: "start the server",
        errno,
    })?;
    let mut waited = 0;
    loop {
        match connect::connect(path) {
            Ok(socket) => return Ok(socket),
            Err(Failure::NoServer { .. }) => {}
            Err(other) => return Err(other),
        }
        if let Ok(Some(status)) = rustix::process::waitid(
            WaitId::Pid(server),
            WaitIdOptions::EXITED | WaitIdOptions::NOHANG,
        ) {
            let code = status.exit_status().unwrap_or(-1);
            return Err(Failure::ServerDidNotStart {
                path: path.as_bytes(),
                command,
                code,
            });
        }
        if waited >= READY_TIMEOUT_MS {
            return Err(Failure::ServerDidNotStart {
                path: path.as_bytes(),
                command,
                code: -1,
            });
        }
        let pause = rustix::event::Timespec {
            tv_sec: 0,
            tv_nsec: i64::from(POLL_MS) * 1_000_000,
        };
        let _ = rustix::event::poll(&mut [], Some(&pause));
        waited += POLL_MS;
    }
}

/// Forks `/bin/sh -c COMMAND` in a session of its own, with the client's
/// environment, `/dev/null` as stdin and the log as stdout and stderr.
fn spawn(process: &Process, command: &'static [u8], log: &OwnedFd) -> Result<Pid, Errno> {
    let mut script = [0u8; 4096];
    let script = nul_terminated(&mut script, command).ok_or(Errno::TOOBIG)?;
    let null = rustix::fs::open(
        c"/dev/null",
        OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    // SAFETY: this process has a single thread, so the child is a plain copy
    // that only makes system calls and then execs or exits.
    match unsafe { syscall::fork() }? {
        Some(pid) => Ok(pid),
        None => {
            let _ = rustix::process::setsid();
            let _ = rustix::stdio::dup2_stdin(&null);
            let _ = rustix::stdio::dup2_stdout(log);
            let _ = rustix::stdio::dup2_stderr(log);
            signals::release_all();
            let argv = [
                c"sh".as_ptr(),
                c"-c".as_ptr(),
                script.as_ptr(),
                core::ptr::null(),
            ];
            // SAFETY: `argv` is a null-terminated array of NUL-terminated
            // strings; the environment is the client's own.
            let _ = unsafe { syscall::execve(c"/bin/sh", argv.as_ptr(), process.envp()) };
            syscall::exit(127)
        }
    }
}

fn nul_terminated<'b>(buf: &'b mut [u8; 4096], bytes: &[u8]) -> Option<&'b CStr> {
    let len = bytes.len();
    if len >= buf.len() || bytes.contains(&0) {
        return None;
    }
    buf[..len].copy_from_slice(bytes);
    buf[len] = 0;
    CStr::from_bytes_with_nul(&buf[..=len]).ok()
}

/// Paths next to the socket, built in a stack buffer.
struct Names<'a> {
    socket: &'a [u8],
    buf: [u8; 256],
}

impl<'a> Names<'a> {
    fn new(socket: &'a [u8]) -> Names<'a> {
        Names {
            socket,
            buf: [0; 256],
        }
    }

    /// The socket's directory (`.` when the path has none).
    fn dir(&mut self) -> &CStr {
        let end = self.socket.iter().rposition(|&b| b == b'/').unwrap_or(0);
        let dir: &[u8] = if end == 0 && !self.socket.starts_with(b"/") {
            b"."
        } else {
            &self.socket[..end.max(1)]
        };
        self.fill(dir, b"")
    }

    /// The socket path with `suffix` appended.
    fn with_suffix(&mut self, suffix: &[u8]) -> &CStr {
        let socket = self.socket;
        self.fill(socket, suffix)
    }

    fn fill(&mut self, base: &[u8], suffix: &[u8]) -> &CStr {
        // The socket path is at most 107 bytes and suffixes are short.
        let len = base.len() + suffix.len();
        self.buf[..base.len()].copy_from_slice(base);
        self.buf[base.len()..len].copy_from_slice(suffix);
        self.buf[len] = 0;
        CStr::from_bytes_with_nul(&self.buf[..=len]).unwrap_or(c".")
    }
}
