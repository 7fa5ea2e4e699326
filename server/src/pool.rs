//! The pool of idle workers: processes forked in advance from the warm
//! server, already past every post-fork step, each waiting on a channel for
//! a request to run.
//!
//! Handing a request to an idle worker is one `sendmsg` (the request's bytes
//! with the client's descriptors and connection); the fork that replaces the
//! worker happens after the runs in progress (see `Server::refill_due`), so
//! it is never on a run's critical path. An empty pool is refilled on demand:
//! a request then pays for one fork, and is never refused.

use std::collections::VecDeque;
use std::io::IoSlice;
use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, RawFd};
use std::time::Duration;

use pyo3::prelude::*;
use rustix::fd::{AsFd, BorrowedFd, OwnedFd};
use rustix::io::Errno;
use rustix::net::{
    AddressFamily, SendAncillaryBuffer, SendAncillaryMessage, SendFlags, SocketFlags, SocketType,
};
use rustix::process::{Pid, PidfdFlags, Signal, WaitIdStatus};

use crate::prefault::Role;
use crate::worker::{self, Hooks};

/// How long the server waits for an idle worker to take a request before it
/// gives up on that worker. A healthy worker is blocked reading its channel.
const HAND_OFF_TIMEOUT: Duration = Duration::from_secs(2);

/// A forked worker process, seen from the server.
#[derive(Debug)]
pub struct Process {
    /// Its pid, valid until the server reaps it.
    pub pid: Pid,
    /// A pidfd: readable once the process has exited, and a race-free
    /// handle for signals.
    pub pidfd: OwnedFd,
}

impl Process {
    /// The child `pid` this process just forked, with a pidfd for it; if
    /// none can be had, the child is killed and `what` it was is named in
    /// the error.
    pub fn of_child(pid: Pid, what: &str) -> Result<Process, String> {
        // The child cannot have been reaped yet, so `pid` still names it.
        let pidfd = rustix::process::pidfd_open(pid, PidfdFlags::empty()).map_err(|e| {
            let _ = rustix::process::kill_process(pid, Signal::KILL);
            format!(
                "cannot open a pidfd for {what} {}: {e}",
                pid.as_raw_nonzero()
            )
        })?;
        Ok(Process { pid, pidfd })
    }
}

/// The child a `fork` in this process returned, `None` when it failed.
///
/// `fork` returns -1 on failure (no processes left under `RLIMIT_NPROC` or
/// a pids cgroup, no memory), which rustix's `Pid::from_raw` takes for a
/// pid: a "child" -1 passed on to `kill` signals every process the server
/// may signal, as root the whole machine.
pub fn forked(raw: libc::pid_t) -> Option<Pid> {
    if raw > 0 { Pid::from_raw(raw) } else { None }
}

/// An idle worker and the server's end of its channel.
#[derive(Debug)]
pub struct IdleWorker {
    /// The process.
    pub process: Process,
    channel: OwnedFd,
}

/// Idle workers, oldest first.
#[derive(Debug)]
pub struct Pool {
    idle: VecDeque<IdleWorker>,
    /// How many idle workers to keep.
    pub size: usize,
}

impl Pool {
    /// An empty pool that will be kept at `size` idle workers.
    pub fn new(size: usize) -> Pool {
        Pool {
            idle: VecDeque::with_capacity(size),
            size,
        }
    }

    /// The idle workers.
    pub fn idle(&self) -> impl Iterator<Item = &IdleWorker> {
        self.idle.iter()
    }

    /// Takes the oldest idle worker, if any.
    pub fn take(&mut self) -> Option<IdleWorker> {
        self.idle.pop_front()
    }

    /// Adds a freshly forked worker.
    pub fn put(&mut self, worker: IdleWorker) {
        self.idle.push_back(worker);
    }

    /// Ends every idle worker (they have no client yet) and reaps it.
    pub fn clear(&mut self) {
        for idle in self.idle.drain(..) {
            let _ = rustix::process::pidfd_send_signal(&idle.process.pidfd, Signal::KILL);
            let _ = reap_blocking(&idle.process);
        }
    }

    /// How many workers are missing.
    pub fn missing(&self) -> usize {
        self.size.saturating_sub(self.idle.len())
    }

    /// Removes and reaps the idle workers that have exited (killed by
    /// someone, or failed to start); returns how the first of them ended.
    pub fn reap_dead(&mut self, dead: &[RawFd]) -> Option<(Pid, Option<WaitIdStatus>)> {
        if dead.is_empty() {
            return None;
        }
        let mut first = None;
        self.idle.retain(|w| {
            let gone = dead.contains(&w.process.pidfd.as_raw_fd());
            if gone {
                let status = reap(&w.process);
                first.get_or_insert((w.process.pid, status));
            }
            !gone
        });
        first
    }

    /// Every descriptor the pool holds.
    pub fn fds(&self) -> impl Iterator<Item = RawFd> + '_ {
        self.idle
            .iter()
            .flat_map(|w| [w.channel.as_raw_fd(), w.process.pidfd.as_raw_fd()])
    }
}

/// Forks an idle worker. `close` lists every descriptor of the server, which
/// the worker closes at once; `role` says what it does about prefaulting.
/// Returns in the server only.
pub fn fork_idle(
    py: Python<'_>,
    close: &[RawFd],
    hooks: &Hooks<'_, '_>,
    role: Role,
) -> Result<IdleWorker, String> {
    let (server_end, worker_end) = rustix::net::socketpair(
        AddressFamily::UNIX,
        SocketType::STREAM,
        SocketFlags::CLOEXEC,
        None,
    )
    .map_err(|e| format!("cannot create a worker channel: {e}"))?;
    let timeout = Some(HAND_OFF_TIMEOUT);
    rustix::net::sockopt::set_socket_timeout(
        &server_end,
        rustix::net::sockopt::Timeout::Send,
        timeout,
    )
    .map_err(|e| format!("cannot set a worker channel's timeout: {e}"))?;
    let Some(pid) = worker::fork(py)? else {
        // SAFETY: the server's end of the channel belongs to the server.
        unsafe { libc::close(server_end.as_raw_fd()) };
        worker::idle(py, close, worker_end, hooks, role)
    };
    drop(worker_end);
    Ok(IdleWorker {
        process: Process::of_child(pid, "worker")?,
        channel: server_end,
    })
}

impl IdleWorker {
    /// Hands a request to this worker: the complete `RUN` frame, with the
    /// client's connection followed by the request's descriptors. On failure
    /// the worker is killed and the error returned.
    pub fn hand_off(
        self,
        frame: &[u8],
        connection: BorrowedFd<'_>,
        fds: &[OwnedFd],
    ) -> Result<Process, String> {
        let mut rights: Vec<BorrowedFd<'_>> = Vec::with_capacity(1 + fds.len());
        rights.push(connection);
        rights.extend(fds.iter().map(AsFd::as_fd));
        match send_all(&self.channel, frame, &rights) {
            Ok(()) => Ok(self.process),
            Err(e) => {
                let _ = rustix::process::pidfd_send_signal(&self.process.pidfd, Signal::KILL);
                let _ = reap_blocking(&self.process);
                Err(format!(
                    "worker {} did not take the request: {e}",
                    self.process.pid.as_raw_nonzero()
                ))
            }
        }
    }
}

/// Sends `bytes` on a blocking socket, the descriptors with the first byte.
fn send_all(channel: &OwnedFd, bytes: &[u8], rights: &[BorrowedFd<'_>]) -> rustix::io::Result<()> {
    let mut space = vec![MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(rights.len()))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    control.push(SendAncillaryMessage::ScmRights(rights));
    let mut sent = 0;
    while sent < bytes.len() {
        let result = if sent == 0 {
            rustix::net::sendmsg(
                channel,
                &[IoSlice::new(bytes)],
                &mut control,
                SendFlags::NOSIGNAL,
            )
        } else {
            rustix::net::send(channel, &bytes[sent..], SendFlags::NOSIGNAL)
        };
        match result {
            Ok(n) => sent += n,
            Err(Errno::INTR) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Collects the status of an exited worker without waiting.
pub fn reap(process: &Process) -> Option<WaitIdStatus> {
    use rustix::process::{WaitId, WaitIdOptions};
    rustix::process::waitid(
        WaitId::PidFd(process.pidfd.as_fd()),
        WaitIdOptions::EXITED | WaitIdOptions::NOHANG,
    )
    .ok()
    .flatten()
}

/// Collects the status of a worker, waiting for it to end.
pub fn reap_blocking(process: &Process) -> Option<rustix::process::WaitIdStatus> {
    use rustix::process::{WaitId, WaitIdOptions};
    rustix::process::waitid(WaitId::PidFd(process.pidfd.as_fd()), WaitIdOptions::EXITED)
        .ok()
        .flatten()
}
