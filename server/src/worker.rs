//! A worker's life, from the fork to `_exit`.
//!
//! The fork follows what `os.fork` does: `PyOS_BeforeFork`, `fork`, then
//! `PyOS_AfterFork_Child` or `PyOS_AfterFork_Parent`, all with the GIL held
//! and with no other thread in the server. The after-fork hooks reinitialise
//! the interpreter's locks and run `os.register_at_fork` callbacks (so
//! `random` is reseeded in every worker). A new worker then waits, idle, for
//! the server to hand it a request (see `pool.rs`).

use std::io::Write as _;
use std::os::fd::{AsRawFd, RawFd};

use pyo3::exceptions::PyKeyboardInterrupt;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList};
use rustix::event::{PollFd, PollFlags};
use rustix::fd::{AsFd, OwnedFd};
use rustix::net::SendFlags;
use rustix::process::Pid;
use warmfork::{ErrorCode, ExitStatus, FdSet, Reply, RunRequest};

use crate::descriptors;
use crate::incoming::{Incoming, Progress};
use crate::pool;
use crate::prefault::{Learner, Role};
use crate::sigmask::Blocked;

/// The Python callables a worker runs.
#[derive(Debug)]
pub struct Hooks<'a, 'py> {
    /// The handler the program runs under.
    pub handler: &'a Bound<'py, PyAny>,
    /// `warmfork._worker.prepare()`: the set-up that needs no request.
    pub prepare: &'a Bound<'py, PyAny>,
    /// `warmfork._worker.run(handler, argv, env, umask, ignored_signals)`.
    pub run: &'a Bound<'py, PyAny>,
    /// Called in the server before each fork, if given: it compiles what
    /// workers left for it (`warmfork._codecache.take_left_sources`).
    pub before_fork: Option<&'a Bound<'py, PyAny>>,
}

/// Forks the warm interpreter. Returns `Some(pid)` in the server and `None`
/// in the new worker, which must end with `_exit` and never return to the
/// server's loop.
pub fn fork(py: Python<'_>) -> Result<Option<Pid>, String> {
    // The hooks run Python code: a signal handled there would raise the
    // server's stop in a hook, which drops it (see `sigmask.rs`).
    let blocked = Blocked::all();
    // One that came just before the block is noted but not yet handled: it
    // is handled here, not in a hook. What its handler raised (the server's
    // stop) is left set for the caller, which takes it (`PyErr::take`).
    if let Err(stop) = py.check_signals() {
        stop.restore(py);
        return Err(STOPPING.into());
    }
    // SAFETY: called with the GIL held on the only thread of the process
    // (the server checks there is no other), as `PyOS_BeforeFork` requires.
    unsafe { pyo3::ffi::PyOS_BeforeFork() };
    // SAFETY: `fork` in a single-threaded process.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        // SAFETY: in the child right after fork, GIL held, as required.
        unsafe { pyo3::ffi::PyOS_AfterFork_Child() };
        return Ok(None);
    }
    let fork_error = std::io::Error::last_os_error();
    // SAFETY: in the parent right after fork (or its failure), GIL held.
    unsafe { pyo3::ffi::PyOS_AfterFork_Parent() };
    drop(blocked);
    pool::forked(pid).map(Some).ok_or_else(|| {
        format!(
            "cannot fork a worker: {fork_error}; the server is at its limit of processes \
             or memory (RLIMIT_NPROC, a cgroup); try again once other runs have ended"
        )
    })
}

/// Why a fork did not happen when a signal stopped the server.
pub const STOPPING: &str = "the server is stopping";

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

/// Tells the client the program is starting, with a pidfd of this worker
/// through which the client forwards the signals it receives.
fn send_started(connection: &OwnedFd, pid: Pid) {
    let pidfd = rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty()).ok();
    let mut frame = [0u8; warmfork::reply::MAX_REPLY_LEN];
    let started = Reply::Started {
        pid: pid.as_raw_nonzero().get() as u32,
        pidfd: pidfd.is_some(),
    };
    let Some(len) = started.encode(&mut frame) else {
        return;
    };
    let rights: Vec<_> = pidfd.iter().map(AsFd::as_fd).collect();
    let mut space = vec![std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = rustix::net::SendAncillaryBuffer::new(&mut space);
    if !rights.is_empty() {
        control.push(rustix::net::SendAncillaryMessage::ScmRights(&rights));
    }
    let _ = rustix::net::sendmsg(
        connection,
        &[std::io::IoSlice::new(&frame[..len])],
        &mut control,
        SendFlags::NOSIGNAL,
    );
}

/// An idle worker: sheds the server's descriptors, does every step that
/// needs no request (prefaulting last, see `prefault.rs`), then waits on
/// `channel` for one, closes the channel and runs the request.
pub fn idle(
    py: Python<'_>,
    close: &[RawFd],
    channel: OwnedFd,
    hooks: &Hooks<'_, '_>,
    role: Role,
) -> ! {
    for &fd in close {
        // SAFETY: these descriptors belong to the server, whose copy of
        // memory this process will never return to.
        unsafe { libc::close(fd) };
    }
    // A session of its own: signals meant for the server's terminal or
    // process group do not reach workers, and the client's terminal is not
    // the worker's controlling terminal, so reading it never stops the
    // worker with SIGTTIN.
    let _ = rustix::process::setsid();
    if let Err(error) = hooks.prepare.call0() {
        error.print(py);
        exit(1);
    }
    let learner = role.begin();
    let own = crate::limits::Own::read();
    let mut job = Incoming::handed_off();
    loop {
        // Blocking wait: an idle worker has nothing else to do. The server
        // validated the request; EOF means the server has gone.
        let _ = rustix::event::poll(&mut [PollFd::new(&channel, PollFlags::IN)], None);
        match job.read(&channel) {
            Progress::Pending => {}
            Progress::Complete => break,
            Progress::Closed => exit(0),
            // The hand-off failed here (the worker could not take all the
            // client's descriptors, which a worker holding fewer than the
            // server should never meet): tell the client, if its
            // connection came through, before the server reports this
            // worker's exit; otherwise the client gets that exit, 1.
            Progress::Refused(code, message) => {
                if let Some(connection) = job.into_parts().1.first() {
                    fail(connection.as_raw_fd(), code, &message);
                }
                exit(1)
            }
        }
    }
    // The program must not see it; a worker takes one request.
    drop(channel);
    if job.request().is_err() {
        exit(1)
    }
    let (frame, mut fds) = job.into_parts();
    // The frame lives until `_exit`: `environ` points into it.
    let Ok(request) = RunRequest::decode(&frame) else {
        exit(1)
    };
    // Checked by `request()`: a hand-off carries the connection first.
    let connection = fds.remove(0);
    run_request(py, request, fds, connection, hooks, learner, &own)
}

/// Runs one request in this worker and ends it with the program's status.
///
/// The client's descriptors `fds` are installed, and their copies closed,
/// before anything else; the connection and a learner's descriptor are moved
/// out of the program's way first (see `descriptors.rs`).
fn run_request(
    py: Python<'_>,
    request: RunRequest<'_>,
    fds: Vec<OwnedFd>,
    connection: OwnedFd,
    hooks: &Hooks<'_, '_>,
    mut learner: Option<Learner>,
    own: &crate::limits::Own,
) -> ! {
    // The client's pid lets the worker take the client's limits (the
    // descriptor limit once its descriptors are installed, with room made
    // for them first) and act on the client's job (see `_stdio.py`);
    // 0 when it cannot be known (a client in another pid namespace reads as
    // 0 too).
    let client_pid = crate::listener::peer(connection.as_fd()).map_or(0, |peer| peer.pid);
    crate::limits::adopt(client_pid, own);
    let descriptor_limit = crate::limits::room_for_descriptors(client_pid, own);
    let targets = descriptors::targets(&request);
    let connection = descriptors::move_high(&connection, &targets).unwrap_or(connection);
    let connection = &connection;
    let identity = file_identity(connection);
    if let Some(learner) = &mut learner {
        learner.keep_clear_of(&targets);
    }
    let connection_fd = connection.as_raw_fd();
    if let Err((code, message)) = descriptors::install(request.fds, fds, &targets) {
        fail(connection_fd, code, &message);
    }
    crate::limits::adopt_descriptor_limit(descriptor_limit, own);
    if request.fds.contains(FdSet::CONTROLLING_TTY) {
        if let Err(message) = take_controlling_terminal(request.fds) {
            fail(connection_fd, ErrorCode::BadRequest, &message);
        }
    }
    set_environ(&request);
    let worker = rustix::process::getpid();
    send_started(connection, worker);
    crate::fastbins::restore();
    let outcome = run_python(py, &request, hooks, client_pid);
    if rustix::process::getpid() != worker {
        end_forked_child(py, outcome);
    }
    // The program may have closed the connection's number or put a file of
    // its own there (`os.closerange(3, 65536)`, `dup2`): the worker's last
    // word must not go into the program's socket. The server, which holds
    // the connection too, then reports the status once this worker has
    // exited with it.
    let connected = identity.is_some() && file_identity(connection) == identity;
    let status = match outcome {
        Ok(Outcome::Exited(code)) => ExitStatus::Exited(code),
        Ok(Outcome::Signaled(signal)) => ExitStatus::Signaled(signal),
        Ok(Outcome::Unsupported(_)) if !connected => exit(REFUSED),
        Ok(Outcome::Unsupported(message)) => fail(connection_fd, ErrorCode::Unsupported, &message),
        Err(error) => {
            error.print(py);
            if !connected {
                exit(REFUSED)
            }
            fail(
                connection_fd,
                ErrorCode::Internal,
                &format!("the worker failed: {error}"),
            )
        }
    };
    before_last_word(worker);
    // The status goes out before the interpreter's heap teardown, which never
    // happens at all: `_exit` below skips it.
    if connected {
        send_reply(connection, &Reply::Exit(status));
    }
    // The program is over and flushed: let go of the client's files now, so
    // that a pipe or a `$(...)` reading its output (or a `>(gzip ...)` one
    // of its other descriptors) ends with the client, not after this
    // worker's teardown.
    for &fd in &targets {
        // SAFETY: closing descriptors this process owns; nothing uses them
        // after the program (the interpreter never runs again here).
        unsafe { libc::close(fd) };
    }
    // A client relaying a pseudo-terminal waits for this worker's exit, which
    // nothing else may then delay.
    if connected && !request.fds.contains(FdSet::CONTROLLING_TTY) {
        give_way(connection);
        if let Some(learner) = learner {
            learner.finish();
        }
    }
    match status {
        ExitStatus::Exited(code) => exit(i32::from(code)),
        ExitStatus::Signaled(signal) => die_by(signal),
    }
}

/// Which file `fd` is (device and inode), `None` when it is closed.
fn file_identity(fd: impl AsFd) -> Option<(u64, u64)> {
    rustix::fs::fstat(fd)
        .ok()
        .map(|stat| (stat.st_dev, stat.st_ino))
}

enum Outcome {
    Exited(u8),
    Signaled(u8),
    Unsupported(String),
}

/// Lets the client have the CPU before this worker's teardown: waits until
/// the client, which exits on reading the status, has hung up, for
/// [`GIVE_WAY`] at most. Unmapping a warm worker takes about a millisecond,
/// and a client woken on the same CPU would otherwise wait behind it.
fn give_way(connection: &OwnedFd) {
    let timeout = rustix::time::Timespec::try_from(GIVE_WAY).expect("a small duration");
    let mut fds = [PollFd::new(connection, PollFlags::RDHUP)];
    let _ = rustix::event::poll(&mut fds, Some(&timeout));
}

/// Longest wait in [`give_way`].
const GIVE_WAY: std::time::Duration = std::time::Duration::from_millis(10);

/// Ends a process the program forked, which has come back here at the end
/// of the program, as python's child would end: with its own status, after
/// the finalisation `run` has done. The client's status is the worker's, so
/// nothing goes to the client, and only the worker learns (see `prefault.rs`).
fn end_forked_child(py: Python<'_>, outcome: PyResult<Outcome>) -> ! {
    match outcome {
        Ok(Outcome::Exited(code)) => exit(i32::from(code)),
        Ok(Outcome::Signaled(signal)) => die_by(signal),
        Ok(Outcome::Unsupported(message)) => {
            // A line lost to a closed stderr must not turn into a panic.
            let _ = std::io::stderr().write_all(format!("warmfork: {message}\n").as_bytes());
            exit(1)
        }
        Err(error) => {
            error.print(py);
            exit(1)
        }
    }
}

/// Calls `warmfork._worker.run(handler, argv, env, umask, ignored_signals,
/// client_pid)`.
fn run_python(
    py: Python<'_>,
    request: &RunRequest<'_>,
    hooks: &Hooks<'_, '_>,
    client_pid: i32,
) -> PyResult<Outcome> {
    let argv = PyList::new(py, request.argv().map(|a| PyBytes::new(py, a)))?;
    let env = PyList::new(py, request.env().map(|e| PyBytes::new(py, e)))?;
    let result = match hooks.run.call1((
        hooks.handler,
        argv,
        env,
        request.umask,
        request.ignored_signals,
        client_pid,
    )) {
        Ok(result) => result,
        // Ctrl-C (or `kill -INT`) while the run was being set up, before the
        // handler took over: python, whose handler for it is not installed
        // that early, dies by SIGINT without a word.
        Err(error) if error.is_instance_of::<PyKeyboardInterrupt>(py) => {
            return Ok(Outcome::Signaled(libc::SIGINT as u8));
        }
        Err(error) => return Err(error),
    };
    if let Ok(code) = result.extract::<i32>() {
        return Ok(match code {
            0.. => Outcome::Exited((code & 0xff) as u8),
            _ => Outcome::Signaled(code.unsigned_abs().min(255) as u8),
        });
    }
    Ok(Outcome::Unsupported(result.extract()?))
}

/// Makes descriptor 0 this worker's controlling terminal, as the request's
/// `CONTROLLING_TTY` flag asks: normally the slave of a pseudo-terminal the
/// client relays. `/dev/tty` then opens it, and its line discipline signals
/// this worker's process group, which becomes the terminal's foreground
/// group (Ctrl-C is a byte the client relays, not a signal it forwards).
///
/// The idle worker is already a session leader with no controlling terminal
/// (see `idle`), as `TIOCSCTTY` requires; its argument 0 never takes a
/// terminal away from a session that has it.
fn take_controlling_terminal(set: FdSet) -> Result<(), String> {
    if !set.contains(FdSet::STDIN) {
        return Err(
            "the request asks for a controlling terminal (CONTROLLING_TTY) without a standard input"
                .into(),
        );
    }
    // SAFETY: an ioctl on descriptor 0 whose argument is a plain integer;
    // nothing is read or written through a pointer.
    if unsafe { libc::ioctl(0, libc::TIOCSCTTY, 0) } < 0 {
        return Err(format!(
            "cannot make standard input the controlling terminal (CONTROLLING_TTY): {}; \
             the client must pass a terminal that belongs to no session, such as a fresh pseudo-terminal",
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

/// Points the C `environ` at the request's environment strings, exactly as
/// the client had them, without copying: each string is followed by its NUL
/// in the request frame, which lives until the worker exits.
fn set_environ(request: &RunRequest<'_>) {
    unsafe extern "C" {
        static mut environ: *const *const libc::c_char;
    }
    let mut pointers: Vec<*const libc::c_char> =
        request.env().map(|entry| entry.as_ptr().cast()).collect();
    pointers.push(std::ptr::null());
    // SAFETY: this process has one thread and nothing reads `environ`
    // concurrently; the array and the strings it points to are never freed
    // (the worker ends with `_exit`). libc's setenv copies an array it did
    // not allocate before changing it, so later `os.environ` writes are safe.
    unsafe { environ = pointers.leak().as_ptr() };
}

/// The status a worker that refused its run ends with: the client's own for
/// a refusal (its `EXIT_REFUSED`), so that the server's log line for the run
/// says what the client exited with, not 0.
const REFUSED: i32 = 201;

/// The client exits as soon as it reads the status or an error, and the
/// server answers a client's hang-up with SIGHUP: from the worker's last
/// word on, that must not change how it ends; and the server, told that
/// the word is going out (see `ended.rs`), takes that hang-up for no
/// terminal's, and leaves the program's children be.
fn before_last_word(worker: Pid) {
    // SAFETY: setting a disposition to SIG_IGN runs no code.
    unsafe { libc::signal(libc::SIGHUP, libc::SIG_IGN) };
    crate::ended::mark(worker);
}

/// Answers the client with an error and ends the worker.
fn fail(connection: RawFd, code: ErrorCode, message: &str) -> ! {
    // SAFETY: the connection stays open for the life of the worker.
    let connection = unsafe { rustix::fd::BorrowedFd::borrow_raw(connection) };
    before_last_word(rustix::process::getpid());
    send_reply(
        connection,
        &Reply::Error {
            code,
            message: message.as_bytes(),
        },
    );
    exit(REFUSED)
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
