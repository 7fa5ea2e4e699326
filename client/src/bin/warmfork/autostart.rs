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

use core::ffi::c_char;

use rustix::fd::OwnedFd;
use rustix::fs::{FlockOperation, Mode, OFlags};
use rustix::io::Errno;
use rustix::process::{Pid, WaitId, WaitIdOptions};

use crate::connect::{self, SocketPath};
use crate::cstr::CBuf;
use crate::failure::{CommandEnd, Failure};
use crate::signals::Forwarder;
use crate::start::Process;
use crate::{request, signals, syscall};

/// How long a started server has to accept connections.
pub const READY_TIMEOUT_MS: u32 = 60_000;

/// How often the client tries to connect while the server starts.
const POLL_MS: u32 = 10;

/// Starts the server named by `WARMFORK_SERVER`, unless another client just
/// did, and returns a connection to it. `None` when no command is set.
/// Signals that arrive meanwhile are held as while waiting for the worker
/// (see `signals.rs`).
pub fn start<'p>(
    process: &Process,
    path: &'p SocketPath,
    signals: &mut Forwarder,
) -> Option<Result<OwnedFd, Failure<'p>>> {
    let command = process.var(b"WARMFORK_SERVER").filter(|c| !c.is_empty())?;
    Some(start_with(process, path, command, signals))
}

fn start_with<'p>(
    process: &Process,
    path: &'p SocketPath,
    command: &'static [u8],
    signals: &mut Forwarder,
) -> Result<OwnedFd, Failure<'p>> {
    // The socket path is at most 107 bytes; these names fit.
    let beside =
        |suffix: &[u8]| CBuf::<128>::join(&[path.as_bytes(), suffix]).ok_or(Errno::NAMETOOLONG);
    let system = |call| move |errno| Failure::System { call, errno };
    // The server would create the directory too; the lock file needs it now,
    // and, like the socket, only in a directory no one else can write to.
    if let Some(dir) = CBuf::<128>::join(&[path.dir()]) {
        let _ = rustix::fs::mkdir(dir.as_c_str(), Mode::from_raw_mode(0o700));
    }
    connect::private_dir(path, rustix::process::geteuid())?;
    let lock_name = beside(b".start").map_err(system("name the server start lock"))?;
    let lock = rustix::fs::open(
        lock_name.as_c_str(),
        OFlags::CREATE | OFlags::RDWR | OFlags::CLOEXEC | OFlags::NOFOLLOW,
        Mode::from_raw_mode(0o600),
    )
    .map_err(|errno| Failure::System {
        call: "open the server start lock",
        errno,
    })?;
    // Not a blocking flock, which the held signals could not interrupt.
    loop {
        match rustix::fs::flock(&lock, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => break,
            Err(Errno::WOULDBLOCK | Errno::INTR) => signals.pause(POLL_MS),
            Err(errno) => {
                return Err(Failure::System {
                    call: "flock the server start lock",
                    errno,
                });
            }
        }
    }
    // Another client may have started it while this one waited for the lock.
    if let Ok(socket) = connect::connect_waiting(path, signals) {
        return Ok(socket);
    }
    let log = rustix::fs::open(
        beside(b".log")
            .map_err(system("name the server log"))?
            .as_c_str(),
        OFlags::CREATE | OFlags::WRONLY | OFlags::APPEND | OFlags::CLOEXEC | OFlags::NOFOLLOW,
        Mode::from_raw_mode(0o600),
    )
    .map_err(|errno| Failure::System {
        call: "open the server log",
        errno,
    })?;
    let _statuses = ChildStatuses::kept();
    let server = spawn(process, path, command, &log).map_err(|errno| Failure::System {
        call: "start the server",
        errno,
    })?;
    drop(log); // the command has it; a client short of descriptors needs the number
    // A command that exits 0 has started the server in the background
    // (`--daemon`, `systemctl --user start`, a trailing `&`), which then
    // has the rest of the time to listen; any other end is a failure.
    let mut command_running = true;
    let mut waited = 0;
    loop {
        match connect::connect_waiting(path, signals) {
            Ok(socket) => return Ok(socket),
            Err(Failure::NoServer { .. }) => {}
            Err(other) => return Err(other),
        }
        if command_running {
            match rustix::process::waitid(
                WaitId::Pid(server),
                WaitIdOptions::EXITED | WaitIdOptions::NOHANG,
            ) {
                Ok(Some(status)) if status.exit_status() == Some(0) => command_running = false,
                Ok(Some(status)) => {
                    let end = match status.terminating_signal() {
                        Some(signal) => CommandEnd::Killed(signal),
                        None => CommandEnd::Exited(status.exit_status().unwrap_or(-1)),
                    };
                    return Err(Failure::ServerDidNotStart {
                        path: path.as_bytes(),
                        command,
                        end,
                    });
                }
                // Reaped by someone else: this client cannot tell how it
                // ended, and waits for the socket.
                Err(Errno::CHILD) => command_running = false,
                _ => {}
            }
        }
        if waited >= READY_TIMEOUT_MS {
            return Err(Failure::ServerDidNotStart {
                path: path.as_bytes(),
                command,
                end: CommandEnd::NotListening {
                    exited: !command_running,
                },
            });
        }
        signals.pause(POLL_MS);
        waited += POLL_MS;
    }
}

/// Lets this client learn how the server command ended while it starts a
/// server: a client started with SIGCHLD ignored has its children reaped by
/// the kernel, which leaves it no exit status to read. The disposition it
/// inherited comes back when this is dropped, before the program runs
/// anywhere (the request carries the signals ignored at the client's start).
struct ChildStatuses {
    ignored: bool,
}

impl ChildStatuses {
    fn kept() -> ChildStatuses {
        let ignored = syscall::is_ignored(syscall::SIGCHLD);
        if ignored {
            let _ = syscall::default_action(syscall::SIGCHLD);
        }
        ChildStatuses { ignored }
    }
}

impl Drop for ChildStatuses {
    fn drop(&mut self) {
        if self.ignored {
            let _ = syscall::ignore(syscall::SIGCHLD);
        }
    }
}

/// Most environment strings passed on to the server command with
/// `WARMFORK_SOCKET` added; a client with more passes its own as they are.
const MAX_ENVIRONMENT: usize = 4096;

/// Says to the server that a client started it, with that client's
/// environment: a run the server refuses for a start-up setting (the first
/// client's `PYTHONOPTIMIZE=1`, say) is told how to get a server of its own.
const STARTED_BY_A_CLIENT: &core::ffi::CStr = c"WARMFORK_AUTOSTARTED=1";

/// Forks `/bin/sh -c COMMAND` in a session of its own, with the client's
/// environment, `WARMFORK_SOCKET` set to the socket it waits on (so that a
/// plain `warmfork-server` serves it, also for a client invoked by another
/// name) and [`STARTED_BY_A_CLIENT`], `/dev/null` as stdin, the log as
/// stdout and stderr, and no other descriptor.
fn spawn(
    process: &Process,
    path: &SocketPath,
    command: &'static [u8],
    log: &OwnedFd,
) -> Result<Pid, Errno> {
    let script = CBuf::<4096>::join(&[command]).ok_or(Errno::TOOBIG)?;
    let script = script.as_c_str();
    let socket =
        CBuf::<128>::join(&[b"WARMFORK_SOCKET=", path.as_bytes()]).ok_or(Errno::NAMETOOLONG)?;
    let mut environment = [core::ptr::null::<c_char>(); MAX_ENVIRONMENT + 3];
    let mut count = 0;
    for entry in process.env() {
        let entry_bytes = entry.to_bytes();
        if entry_bytes.starts_with(b"WARMFORK_SOCKET=")
            || entry_bytes.starts_with(b"WARMFORK_AUTOSTARTED=")
        {
            continue;
        }
        if count == MAX_ENVIRONMENT {
            count = usize::MAX;
            break;
        }
        environment[count] = entry.as_ptr();
        count += 1;
    }
    let envp = if count == usize::MAX {
        process.envp()
    } else {
        environment[count] = socket.as_c_str().as_ptr();
        environment[count + 1] = STARTED_BY_A_CLIENT.as_ptr();
        environment.as_ptr()
    };
    // SAFETY: this process has a single thread, so the child is a plain copy
    // that only makes system calls and then execs or exits.
    match unsafe { syscall::fork() }? {
        Some(pid) => Ok(pid),
        None => {
            let _ = rustix::process::setsid();
            let _ = rustix::stdio::dup2_stdout(log);
            let _ = rustix::stdio::dup2_stderr(log);
            // Nothing else the client has: a server lives on, and a pipe it
            // held (from `$(warmfork ...)`) would never reach end of file.
            close_from(3);
            // Opened only now, so that the client needs no descriptor for it.
            let Ok(null) = rustix::fs::open(c"/dev/null", OFlags::RDONLY, Mode::empty()) else {
                syscall::exit(127)
            };
            if rustix::fd::AsRawFd::as_raw_fd(&null) == 0 {
                core::mem::forget(null); // the client's stdin was closed: it is 0 already
            } else {
                let _ = rustix::stdio::dup2_stdin(&null);
                drop(null);
            }
            shed_client_settings();
            signals::release_all();
            let argv = [
                c"sh".as_ptr(),
                c"-c".as_ptr(),
                script.as_ptr(),
                core::ptr::null(),
            ];
            // SAFETY: `argv` and `envp` are null-terminated arrays of
            // NUL-terminated strings: the client's own, and `socket`, which
            // lives until the exec.
            let _ = unsafe { syscall::execve(c"/bin/sh", argv.as_ptr(), envp) };
            syscall::exit(127)
        }
    }
}

/// The server outlives this client and serves every run after it, so it
/// should not keep what the shell set for this one: soft resource limits
/// (`ulimit -S -t 5` would end the server after five seconds of CPU) go up
/// to the hard ones, the CPU affinity (`taskset`) to every CPU, the nice
/// value back to 0 where that is allowed. Each run takes its own client's
/// anyway. Hard limits and a higher nice value cannot be undone without
/// privilege; the stack limit decides the server's memory layout and the
/// core-dump size whether dumps were wanted, so those two stay; the
/// descriptor limit the server raises itself, keeping the one it started
/// with for workers that cannot read their client's.
fn shed_client_settings() {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let resources = [
        Resource::Cpu,
        Resource::Fsize,
        Resource::Data,
        Resource::Rss,
        Resource::Nproc,
        Resource::Memlock,
        Resource::As,
        Resource::Locks,
        Resource::Sigpending,
        Resource::Msgqueue,
        Resource::Rttime,
    ];
    for resource in resources {
        let limit = getrlimit(resource);
        if limit.current != limit.maximum {
            let raised = Rlimit {
                current: limit.maximum,
                maximum: limit.maximum,
            };
            let _ = setrlimit(resource, raised);
        }
    }
    let mut every = rustix::thread::CpuSet::new();
    for cpu in 0..rustix::thread::CpuSet::MAX_CPU {
        every.set(cpu);
    }
    let _ = rustix::thread::sched_setaffinity(None, &every);
    let _ = rustix::process::setpriority_process(None, 0);
}

/// Closes every descriptor from `first` on, in a child about to exec: with
/// `close_range`, or one by one as `/proc/self/fd` lists them on kernels
/// before 5.9. Without either, the descriptors stay open.
fn close_from(first: u32) {
    if syscall::close_range_from(first).is_err() {
        let _ = request::each_open(|fd| {
            if fd >= first {
                // SAFETY: a descriptor of this process, which is about to
                // exec and uses none of them from here on.
                unsafe { rustix::io::close(fd as i32) };
            }
        });
    }
}
