//! The event loop: accept clients, read their requests, fork their workers,
//! and report how each worker ended.
//!
//! One thread, one `poll`. The GIL is released while the loop waits, and a
//! signal (Ctrl-C, SIGTERM) interrupts the wait and is handed to Python with
//! `check_signals`, which raises out of the loop. Nothing a client does can
//! block the loop: sockets are non-blocking, each event gets one bounded read,
//! and a request has a deadline.

use std::os::fd::{AsRawFd, RawFd};
use std::time::{Duration, Instant};

use pyo3::prelude::*;
use rustix::event::{PollFd, PollFlags};
use rustix::fd::{AsFd, OwnedFd};
use rustix::io::Errno;
use rustix::net::SocketFlags;
use rustix::process::{Signal, WaitId, WaitIdOptions};
use warmfork::{ErrorCode, ExitStatus, Reply};

use crate::incoming::{Incoming, Progress};
use crate::listener::Listener;
use crate::log;
use crate::worker::{self, Job, Worker};

/// How long a worker whose client hung up gets between SIGHUP and SIGKILL.
const HANGUP_GRACE: Duration = Duration::from_secs(5);

/// Connections accepted per wake-up, so a flood cannot starve the others.
const ACCEPT_BATCH: usize = 64;

/// Settings of a serving loop.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// How long a client has to send its whole request.
    pub request_timeout: Duration,
}

struct Connection {
    socket: OwnedFd,
    state: State,
    /// When the current state times out (request not sent, or grace over).
    deadline: Option<Instant>,
}

enum State {
    Reading(Incoming),
    Running { worker: Worker, client_gone: bool },
}

/// Serves `listener` until a Python signal handler raises.
pub fn serve(
    py: Python<'_>,
    listener: &Listener,
    handler: &Bound<'_, PyAny>,
    run: &Bound<'_, PyAny>,
    settings: Settings,
) -> PyResult<()> {
    let mut connections: Vec<Connection> = Vec::new();
    let uid = rustix::process::geteuid();
    loop {
        let now = Instant::now();
        let timeout = connections
            .iter()
            .filter_map(|c| c.deadline)
            .min()
            .map(|d| d.saturating_duration_since(now));
        let ready = wait(py, listener, &connections, timeout)?;
        let now = Instant::now();
        // Walk backwards so removing a connection does not shift the ones
        // still to be visited.
        for index in (0..connections.len()).rev() {
            let (socket_ready, pidfd_ready) = ready.connections[index];
            let keep = step(
                py,
                listener,
                &mut connections,
                index,
                socket_ready,
                pidfd_ready,
                now,
                handler,
                run,
            );
            if !keep {
                connections.swap_remove(index);
            }
        }
        if ready.listener {
            accept(listener, &mut connections, uid, settings.request_timeout);
        }
    }
}

struct Ready {
    listener: bool,
    /// Per connection: its socket is ready, its worker's pidfd is ready.
    connections: Vec<(bool, bool)>,
}

/// Waits, without the GIL, until something needs attention.
fn wait(
    py: Python<'_>,
    listener: &Listener,
    connections: &[Connection],
    timeout: Option<Duration>,
) -> PyResult<Ready> {
    // Where each connection's socket and pidfd sit in `fds`, if polled.
    let mut slots = Vec::with_capacity(connections.len());
    let mut fds = Vec::with_capacity(1 + 2 * connections.len());
    let listening = listener.socket();
    fds.push(PollFd::new(&listening, PollFlags::IN));
    for connection in connections {
        let (watch_socket, pidfd) = match &connection.state {
            State::Reading(_) => (true, None),
            // Once the client is gone its socket stays readable (EOF);
            // polling it again would spin.
            State::Running {
                worker,
                client_gone,
            } => (!*client_gone, Some(&worker.pidfd)),
        };
        let socket_at = watch_socket.then(|| {
            fds.push(PollFd::new(
                &connection.socket,
                PollFlags::IN | PollFlags::RDHUP,
            ));
            fds.len() - 1
        });
        let pidfd_at = pidfd.map(|pidfd| {
            fds.push(PollFd::new(pidfd, PollFlags::IN));
            fds.len() - 1
        });
        slots.push((socket_at, pidfd_at));
    }
    let timeout = timeout.map(|d| {
        rustix::time::Timespec::try_from(d).unwrap_or(rustix::time::Timespec {
            tv_sec: i64::MAX,
            tv_nsec: 0,
        })
    });
    match py.detach(|| rustix::event::poll(&mut fds, timeout.as_ref())) {
        Ok(_) => {}
        Err(Errno::INTR) => py.check_signals()?,
        Err(e) => {
            return Err(pyo3::exceptions::PyOSError::new_err(format!(
                "poll failed: {e}"
            )));
        }
    }
    let busy = |at: Option<usize>| at.is_some_and(|at| !fds[at].revents().is_empty());
    Ok(Ready {
        listener: busy(Some(0)),
        connections: slots
            .into_iter()
            .map(|(socket, pidfd)| (busy(socket), busy(pidfd)))
            .collect(),
    })
}

/// Accepts waiting clients; refuses those of another user.
fn accept(
    listener: &Listener,
    connections: &mut Vec<Connection>,
    uid: rustix::process::Uid,
    timeout: Duration,
) {
    for _ in 0..ACCEPT_BATCH {
        let socket = match rustix::net::accept_with(
            listener.socket(),
            SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
        ) {
            Ok(socket) => socket,
            Err(Errno::AGAIN | Errno::INTR) => return,
            Err(Errno::MFILE | Errno::NFILE) => {
                log::event("out of file descriptors; a client waits until a run ends");
                return;
            }
            Err(e) => {
                log::event(&format!("accept failed: {e}"));
                return;
            }
        };
        match rustix::net::sockopt::socket_peercred(&socket) {
            Ok(cred) if cred.uid == uid => {}
            Ok(cred) => {
                log::event(&format!(
                    "refused a client of uid {} (pid {:?})",
                    cred.uid.as_raw(),
                    cred.pid
                ));
                let message =
                    "this server belongs to another user; start your own with warmfork-server";
                worker::send_reply(
                    &socket,
                    &Reply::Error {
                        code: ErrorCode::PermissionDenied,
                        message: message.as_bytes(),
                    },
                );
                continue;
            }
            Err(e) => {
                log::event(&format!("cannot read a client's credentials: {e}"));
                continue;
            }
        }
        connections.push(Connection {
            socket,
            state: State::Reading(Incoming::default()),
            deadline: Some(Instant::now() + timeout),
        });
    }
}

/// Advances connection `index`; false when it is finished and can go.
#[allow(clippy::too_many_arguments)]
fn step(
    py: Python<'_>,
    listener: &Listener,
    connections: &mut [Connection],
    index: usize,
    socket_ready: bool,
    pidfd_ready: bool,
    now: Instant,
    handler: &Bound<'_, PyAny>,
    run: &Bound<'_, PyAny>,
) -> bool {
    let connection = &mut connections[index];
    let timed_out = connection.deadline.is_some_and(|d| d <= now);
    let progress = match &mut connection.state {
        State::Running {
            worker,
            client_gone,
        } => {
            if pidfd_ready {
                if let Some(status) = reap(worker) {
                    // The worker normally reported first; this covers a
                    // worker that died before it could (a signal, os._exit).
                    worker::send_reply(&connection.socket, &Reply::Exit(status));
                    return false;
                }
            }
            if socket_ready && client_hung_up(&connection.socket) {
                // As on a terminal hang-up: SIGHUP now, SIGKILL if it lingers.
                *client_gone = true;
                let _ = rustix::process::pidfd_send_signal(&worker.pidfd, Signal::HUP);
                connection.deadline = Some(now + HANGUP_GRACE);
            } else if timed_out {
                let _ = rustix::process::pidfd_send_signal(&worker.pidfd, Signal::KILL);
                connection.deadline = None;
            }
            return true;
        }
        State::Reading(_) if timed_out => Progress::Refused(
            ErrorCode::Timeout,
            "the request was not sent in time".into(),
        ),
        State::Reading(_) if !socket_ready => Progress::Pending,
        State::Reading(incoming) => incoming.read(&connection.socket),
    };
    match progress {
        Progress::Pending => true,
        Progress::Closed => false,
        Progress::Refused(code, message) => {
            refuse(&connection.socket, code, &message);
            false
        }
        Progress::Complete => start(py, listener, connections, index, handler, run),
    }
}

/// Forks the worker for the complete request of connection `index`.
fn start(
    py: Python<'_>,
    listener: &Listener,
    connections: &mut [Connection],
    index: usize,
    handler: &Bound<'_, PyAny>,
    run: &Bound<'_, PyAny>,
) -> bool {
    // Every descriptor of the server except this client's connection and
    // request: the worker closes them first thing.
    let close: Vec<RawFd> = listener
        .fds()
        .iter()
        .map(AsRawFd::as_raw_fd)
        .chain(
            connections
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != index)
                .flat_map(|(_, c)| c.fds()),
        )
        .collect();
    let connection = &mut connections[index];
    let State::Reading(incoming) = &mut connection.state else {
        unreachable!("start is only called for a complete request")
    };
    let request = match incoming.request() {
        Ok(request) => request,
        Err(Progress::Refused(code, message)) => {
            refuse(&connection.socket, code, &message);
            return false;
        }
        Err(_) => return false,
    };
    let job = Job {
        request,
        fds: incoming.fds(),
        connection: &connection.socket,
        close: &close,
        handler,
        run,
    };
    match worker::spawn(py, &job) {
        Ok(worker) => {
            connection.state = State::Running {
                worker,
                client_gone: false,
            };
            connection.deadline = None;
            true
        }
        Err(message) => {
            log::event(&message);
            refuse(&connection.socket, ErrorCode::Internal, &message);
            false
        }
    }
}

impl Connection {
    /// The descriptors this connection holds.
    fn fds(&self) -> Vec<RawFd> {
        let mut fds = vec![self.socket.as_raw_fd()];
        match &self.state {
            State::Reading(incoming) => fds.extend(incoming.fds().iter().map(AsRawFd::as_raw_fd)),
            State::Running { worker, .. } => fds.push(worker.pidfd.as_raw_fd()),
        }
        fds
    }
}

fn refuse(socket: &OwnedFd, code: ErrorCode, message: &str) {
    log::event(&format!("refused a request: {message}"));
    worker::send_reply(
        socket,
        &Reply::Error {
            code,
            message: message.as_bytes(),
        },
    );
}

/// Whether the client end of a running connection has closed. A client
/// sends nothing after its request, so any bytes are discarded.
fn client_hung_up(socket: &OwnedFd) -> bool {
    let mut buf = [0u8; 512];
    match rustix::net::recv(socket, &mut buf, rustix::net::RecvFlags::DONTWAIT) {
        Ok((0, _)) => true,
        Ok(_) | Err(Errno::AGAIN | Errno::INTR) => false,
        Err(_) => true,
    }
}

/// Collects the worker's status, if it has ended.
fn reap(worker: &Worker) -> Option<ExitStatus> {
    let status = rustix::process::waitid(
        WaitId::PidFd(worker.pidfd.as_fd()),
        WaitIdOptions::EXITED | WaitIdOptions::NOHANG,
    )
    .ok()
    .flatten()?;
    if let Some(signal) = status.terminating_signal() {
        return Some(ExitStatus::Signaled(signal as u8));
    }
    Some(ExitStatus::Exited(status.exit_status().unwrap_or(0) as u8))
}
