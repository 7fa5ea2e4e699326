//! Forking a worker from the warm interpreter, and everything the worker does
//! before and after the Python code runs.
//!
//! The fork follows what `os.fork` does: `PyOS_BeforeFork`, `fork`, then
//! `PyOS_AfterFork_Child` or `PyOS_AfterFork_Parent`, all with the GIL held
//! and with no other thread in the server. The after-fork hooks reinitialise
//! the interpreter's locks and run `os.register_at_fork` callbacks (so
//! `random` is reseeded in every worker).

use std::os::fd::{AsRawFd, RawFd};

use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList};
use rustix::fd::{AsFd, OwnedFd};
use rustix::net::SendFlags;
use rustix::process::Pid;
use warmfork::{ErrorCode, ExitStatus, FdSet, Reply, RunRequest};

/// A running worker, seen from the server.
#[derive(Debug)]
pub struct Worker {
    /// A pidfd of the worker: readable when it exits, and a race-free handle
    /// for signals.
    pub pidfd: OwnedFd,
}

/// What the worker needs from the server's side.
pub struct Job<'a, 'py> {
    /// The decoded request.
    pub request: RunRequest<'a>,
    /// The descriptors that came with it, in flag-bit order.
    pub fds: &'a [OwnedFd],
    /// The connection to the client.
    pub connection: &'a OwnedFd,
    /// Descriptors of the server that the worker must not keep.
    pub close: &'a [RawFd],
    /// The handler the program runs under.
    pub handler: &'a Bound<'py, PyAny>,
    /// `warmfork._worker.run`.
    pub run: &'a Bound<'py, PyAny>,
}

impl std::fmt::Debug for Job<'_, '_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job")
            .field("request", &self.request)
            .finish_non_exhaustive()
    }
}

/// Forks a worker for `job`. Returns in the server only; the worker runs the
/// program and exits.
pub fn spawn(py: Python<'_>, job: &Job<'_, '_>) -> Result<Worker, String> {
    // SAFETY: called with the GIL held on the only thread of the process
    // (the server checks there is no other), as `PyOS_BeforeFork` requires.
    unsafe { pyo3::ffi::PyOS_BeforeFork() };
    // SAFETY: `fork` in a single-threaded process; the child only runs
    // `become_worker`, which ends in `_exit` and never returns here.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        // SAFETY: in the child right after fork, GIL held, as required.
        unsafe { pyo3::ffi::PyOS_AfterFork_Child() };
        become_worker(py, job);
    }
    let fork_error = std::io::Error::last_os_error();
    // SAFETY: in the parent right after fork (or its failure), GIL held.
    unsafe { pyo3::ffi::PyOS_AfterFork_Parent() };
    if pid < 0 {
        return Err(format!("cannot fork a worker: {fork_error}"));
    }
    let pid = Pid::from_raw(pid).expect("fork returned a positive pid");
    // The child cannot have been reaped yet, so `pid` still names it.
    let pidfd =
        rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty()).map_err(|e| {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
            format!("cannot open a pidfd for worker {pid:?}: {e}")
        })?;
    Ok(Worker { pidfd })
}

/// Sends `reply` on `connection`, ignoring a client that has gone.
pub fn send_reply(connection: impl AsFd, reply: &Reply<'_>) {
    let mut frame = [0u8; warmfork::reply::MAX_REPLY_LEN];
    if let Some(len) = reply.encode(&mut frame) {
        let _ = rustix::net::send(
            connection,
            &frame[..len],
            SendFlags::NOSIGNAL | SendFlags::DONTWAIT,
        );
    }
}

/// The worker's life: from the fork to `_exit`.
fn become_worker(py: Python<'_>, job: &Job<'_, '_>) -> ! {
    let connection = job.connection.as_raw_fd();
    for &fd in job.close {
        // SAFETY: these descriptors belong to the server, whose copy of
        // memory this process will never return to.
        unsafe { libc::close(fd) };
    }
    // A session of its own: signals meant for the server's terminal or
    // process group do not reach workers, and the client's terminal is not
    // the worker's controlling terminal, so reading it never stops the
    // worker with SIGTTIN.
    let _ = rustix::process::setsid();
    if let Err(message) = install_descriptors(job.request.fds, job.fds) {
        fail(connection, ErrorCode::BadRequest, &message);
    }
    send_reply(
        job.connection,
        &Reply::Started {
            pid: std::process::id(),
            pidfd: false,
        },
    );
    let outcome = run_python(py, job);
    let status = match outcome {
        Ok(Outcome::Exited(code)) => ExitStatus::Exited(code),
        Ok(Outcome::Signaled(signal)) => ExitStatus::Signaled(signal),
        Ok(Outcome::Unsupported(message)) => fail(connection, ErrorCode::Unsupported, &message),
        Err(error) => {
            error.print(py);
            fail(
                connection,
                ErrorCode::Internal,
                &format!("the worker failed: {error}"),
            )
        }
    };
    // The status goes out before the interpreter's heap teardown, which never
    // happens at all: `_exit` below skips it.
    send_reply(job.connection, &Reply::Exit(status));
    match status {
        ExitStatus::Exited(code) => exit(i32::from(code)),
        ExitStatus::Signaled(signal) => die_by(signal),
    }
}

enum Outcome {
    Exited(u8),
    Signaled(u8),
    Unsupported(String),
}

/// Calls `warmfork._worker.run(handler, argv, env, umask)`.
fn run_python(py: Python<'_>, job: &Job<'_, '_>) -> PyResult<Outcome> {
    let argv = PyList::new(py, job.request.argv().map(|a| PyBytes::new(py, a)))?;
    let env = PyList::new(py, job.request.env().map(|e| PyBytes::new(py, e)))?;
    let result = job.run.call1((job.handler, argv, env, job.request.umask))?;
    if let Ok(code) = result.extract::<i32>() {
        return Ok(match code {
            0.. => Outcome::Exited((code & 0xff) as u8),
            _ => Outcome::Signaled(code.unsigned_abs().min(255) as u8),
        });
    }
    Ok(Outcome::Unsupported(result.extract()?))
}

/// Installs the client's descriptors: stdio as 0, 1 and 2 (closed where the
/// client had them closed) and its working directory.
fn install_descriptors(set: FdSet, fds: &[OwnedFd]) -> Result<(), String> {
    let mut received = fds.iter();
    let mut stdio = [None, None, None];
    for (slot, target) in FdSet::SLOTS[..3].iter().zip(&mut stdio) {
        if set.contains(*slot) {
            *target = received.next();
        }
    }
    let cwd = if set.contains(FdSet::CWD) {
        received.next()
    } else {
        None
    };
    // Move any received descriptor that sits on 0..=2 out of the way first,
    // so installing one slot cannot clobber the source of another.
    let mut moved = Vec::new();
    let mut sources = [-1; 3];
    for (source, fd) in sources.iter_mut().zip(&stdio) {
        if let Some(fd) = fd {
            *source = if fd.as_raw_fd() < 3 {
                let copy = rustix::io::fcntl_dupfd_cloexec(fd, 3)
                    .map_err(|e| format!("cannot move a descriptor: {e}"))?;
                let raw = copy.as_raw_fd();
                moved.push(copy);
                raw
            } else {
                fd.as_raw_fd()
            };
        }
    }
    for (target, source) in (0..3).zip(sources) {
        // SAFETY: plain descriptor operations on numbers this process owns;
        // dup2 onto 0..=2 replaces the server's stdio in this worker only.
        let result = unsafe {
            if source < 0 {
                libc::close(target)
            } else {
                libc::dup2(source, target)
            }
        };
        if result < 0 && source >= 0 {
            return Err(format!(
                "cannot install descriptor {target}: {}",
                std::io::Error::last_os_error()
            ));
        }
    }
    match cwd {
        Some(dir) => rustix::process::fchdir(dir)
            .map_err(|e| format!("cannot enter the client's working directory: {e}"))?,
        None => rustix::process::chdir("/").map_err(|e| format!("cannot enter /: {e}"))?,
    }
    Ok(())
}

/// Answers the client with an error and ends the worker.
fn fail(connection: RawFd, code: ErrorCode, message: &str) -> ! {
    // SAFETY: the connection stays open for the life of the worker.
    let connection = unsafe { rustix::fd::BorrowedFd::borrow_raw(connection) };
    send_reply(
        connection,
        &Reply::Error {
            code,
            message: message.as_bytes(),
        },
    );
    exit(0)
}

/// Ends the worker by `signal`, as python ends itself after an uncaught
/// `KeyboardInterrupt`.
fn die_by(signal: u8) -> ! {
    // SAFETY: restoring the default action and raising the signal touch no
    // memory; if the process survives, it exits right after.
    unsafe {
        libc::signal(i32::from(signal), libc::SIG_DFL);
        libc::raise(i32::from(signal));
    }
    exit(128 + i32::from(signal))
}

fn exit(code: i32) -> ! {
    // SAFETY: `_exit` ends the process without running the interpreter's
    // finalisation or any destructor; the program's own finalisation
    // (threads, atexit, flushing) has already been done in Python.
    unsafe { libc::_exit(code) }
}
