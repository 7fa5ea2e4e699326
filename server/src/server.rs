//! The event loop: accept clients, read their requests, hand each to an idle
//! worker, keep the pool full, and report how each worker ended.
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
use rustix::fd::{AsFd, BorrowedFd, OwnedFd};
use rustix::io::Errno;
use rustix::net::SocketFlags;
use rustix::process::{Pid, Signal, Uid, WaitIdStatus};
use warmfork::{ErrorCode, ExitStatus, Reply};

use crate::incoming::{Incoming, Progress};
use crate::listener::Listener;
use crate::log;
use crate::pool::{self, Pool, Process};
use crate::prefault::Schedule;
use crate::reload::{self, Reload};
use crate::worker::{self, Hooks};

/// How many workers a request is offered before it is refused.
const MAX_HAND_OFFS: u32 = 3;
/// How long a worker whose client hung up gets between SIGHUP and SIGKILL.
const HANGUP_GRACE: Duration = Duration::from_secs(5);

/// Connections accepted per wake-up, so a flood cannot starve the others.
const ACCEPT_BATCH: usize = 64;

/// Longest wait for runs in progress to end before the pool is refilled
/// (see [`Server::refill_due`]).
const REFILL_DELAY: Duration = Duration::from_millis(20);

/// How long the server waits after a failed fork before it refills again.
const REFILL_RETRY: Duration = Duration::from_secs(1);

/// How often the server checks that its socket file is still in place.
const SOCKET_CHECK: Duration = Duration::from_secs(2);

/// How long the server stops accepting when it has no descriptor left for a
/// new connection, unless a connection ends first: the listener stays
/// readable meanwhile, and polling it would spin.
const OUT_OF_FDS_PAUSE: Duration = Duration::from_millis(250);

/// How often idle workers that end before any request are logged.
const IDLE_DEATH_LOG_EVERY: Duration = Duration::from_secs(60);

/// Why a worker is forked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fork {
    /// To wait in the pool.
    Ahead,
    /// For a request that found the pool empty.
    OnDemand,
}

/// Settings of a serving loop.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// How long a client has to send its whole request.
    pub request_timeout: Duration,
    /// How many idle workers to keep ready.
    pub pool: usize,
    /// The read end of the pipe Python's signal handler writes to
    /// (`signal.set_wakeup_fd`), so that a signal wakes the loop even when it
    /// arrives outside `poll`.
    pub wakeup: Option<RawFd>,
    /// How long runs in progress may go on once the server is told to stop.
    pub grace: Duration,
}

struct Connection {
    socket: OwnedFd,
    state: State,
    /// When the current state times out (request not sent, or grace over).
    deadline: Option<Instant>,
}

enum State {
    Reading(Incoming),
    Running {
        worker: Process,
        client_gone: bool,
        /// When the request was handed to the worker.
        started: Instant,
        /// The first arguments, for the log.
        summary: String,
    },
}

struct Server<'a, 'py> {
    py: Python<'py>,
    listener: &'a Listener,
    hooks: Hooks<'a, 'py>,
    settings: Settings,
    uid: Uid,
    connections: Vec<Connection>,
    pool: Pool,
    /// Which new worker learns the pages a run writes (see `prefault.rs`).
    prefault: Schedule,
    /// When the pool is refilled at the latest, while runs are in progress.
    refill_by: Option<Instant>,
    /// When to try refilling again after a fork failed, unless a run ends
    /// first.
    retry_at: Option<Instant>,
    /// Out of descriptors for new connections: when to try accepting
    /// again, unless a connection ends first.
    accept_at: Option<Instant>,
    /// Said so in the log, once until a connection is accepted again.
    out_of_fds_logged: bool,
    /// What a signal's Python handler raised just before a fork (the
    /// server's stop), for the loop to act on.
    interrupted: Option<PyErr>,
    /// When an idle worker's end was last logged.
    idle_death_logged_at: Option<Instant>,
    /// Keeps the served code fresh, when asked to (see `reload.rs`).
    reload: Option<Reload>,
    /// When to check next that the socket file is still in place.
    socket_check_at: Instant,
    /// The socket has been handed to a fresh server; this one only lets its
    /// runs in progress finish.
    retiring: bool,
    /// Frame buffers of requests handed off, for the next ones to read
    /// into (see [`Incoming::into_buffer`]).
    spare_buffers: Vec<Vec<u8>>,
    /// The descriptors the server process was started with, which are not
    /// a program's (see `serve`).
    inherited: Vec<RawFd>,
}

/// Most frame buffers kept for reuse: one per request read at once, beyond
/// which a burst's buffers are freed.
const SPARE_BUFFERS: usize = 8;

/// Serves `listener` until a Python signal handler raises. A server started
/// by another to replace it reports ready on `ready` first. Workers close
/// `inherited`, the descriptors the server process was started with, as
/// they close every descriptor the server serves with.
pub fn serve(
    py: Python<'_>,
    listener: &Listener,
    hooks: Hooks<'_, '_>,
    settings: Settings,
    reload: Option<Reload>,
    ready: Option<OwnedFd>,
    inherited: Vec<RawFd>,
) -> PyResult<()> {
    crate::ended::prepare();
    let mut server = Server {
        py,
        listener,
        hooks,
        settings,
        uid: rustix::process::geteuid(),
        connections: Vec::new(),
        pool: Pool::new(settings.pool),
        prefault: Schedule::new(settings.pool),
        refill_by: None,
        retry_at: None,
        accept_at: None,
        out_of_fds_logged: false,
        interrupted: None,
        idle_death_logged_at: None,
        reload,
        socket_check_at: Instant::now() + SOCKET_CHECK,
        retiring: false,
        spare_buffers: Vec::with_capacity(SPARE_BUFFERS),
        inherited,
    };
    // Again (`serve` in Python raised it before the warm-up): the warm-up
    // may have lowered it since.
    crate::limits::raise_descriptor_limit();
    // Before the first fork, so no worker holds the pipe.
    crate::handover::report_ready(ready, listener);
    server.refill();
    loop {
        match server.turn() {
            Ok(true) => {}
            // Retired (a fresh server has the socket, or the socket is
            // gone) and every run has ended.
            Ok(false) => return Ok(()),
            Err(stop) => {
                server.shutdown();
                return Err(stop);
            }
        }
    }
}

impl Server<'_, '_> {
    /// Stops serving. The socket goes first, so new clients find no server
    /// (and can fall back or start another); idle workers end; runs in
    /// progress get the grace period to finish and are then killed. Every
    /// client of a run still gets its status. A second signal during the
    /// grace period ends it at once.
    fn shutdown(&mut self) {
        if let Some(reload) = &mut self.reload {
            reload.abandon();
        }
        self.listener.remove();
        self.pool.clear();
        for connection in &self.connections {
            if let State::Reading(_) = connection.state {
                refuse_quietly(
                    &connection.socket,
                    ErrorCode::Internal,
                    "the server is stopping",
                );
            }
        }
        self.connections
            .retain(|c| matches!(c.state, State::Running { .. }));
        if !self.connections.is_empty() {
            let running = self.connections.len();
            log::info(&if self.settings.grace.is_zero() {
                format!("stopping: ending {running} run(s) now (--grace 0)")
            } else {
                format!(
                    "stopping: waiting up to {:.0?} for {running} run(s) to finish",
                    self.settings.grace
                )
            });
        }
        let mut deadline = Instant::now() + self.settings.grace;
        while !self.connections.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            let overdue = left.is_zero();
            if !overdue {
                // The workers' ends, and their clients' hang-ups.
                let mut fds: Vec<PollFd<'_>> = Vec::new();
                for connection in &self.connections {
                    if let State::Running {
                        worker,
                        client_gone,
                        ..
                    } = &connection.state
                    {
                        fds.push(PollFd::new(&worker.pidfd, PollFlags::IN));
                        if !client_gone {
                            fds.push(PollFd::new(
                                &connection.socket,
                                PollFlags::IN | PollFlags::RDHUP,
                            ));
                        }
                    }
                }
                let timeout = rustix::time::Timespec::try_from(left).ok();
                let _ = self
                    .py
                    .detach(|| rustix::event::poll(&mut fds, timeout.as_ref()));
                if self.py.check_signals().is_err() {
                    deadline = Instant::now();
                }
            }
            let uid = self.uid;
            self.connections.retain_mut(|connection| {
                let State::Running {
                    worker,
                    started,
                    summary,
                    client_gone,
                } = &mut connection.state
                else {
                    return false;
                };
                // As while serving: a client that hangs up during the grace
                // period gets its program a SIGHUP, as a terminal would.
                if !*client_gone && client_hung_up(&connection.socket) {
                    *client_gone = true;
                    hang_up(worker);
                }
                let status = if overdue {
                    // With its process group: what the run started ends
                    // with it, rather than live on after the server (the
                    // group's number is the worker's pid, which no other
                    // process can take until the worker is reaped).
                    let _ = rustix::process::kill_process_group(worker.pid, Signal::KILL);
                    let _ = rustix::process::pidfd_send_signal(&worker.pidfd, Signal::KILL);
                    pool::reap_blocking(worker)
                } else {
                    pool::reap(worker)
                };
                let Some(status) = status else {
                    return !overdue;
                };
                report_end(&connection.socket, worker, uid, summary, *started, status);
                false
            });
        }
    }
}

/// What `poll` reported for one connection or idle worker.
#[derive(Clone, Copy, Default)]
struct Ready {
    socket: bool,
    pidfd: bool,
}

impl Server<'_, '_> {
    /// One turn of the loop: wait, then serve everything that is ready.
    fn turn(&mut self) -> PyResult<bool> {
        // A signal that arrived while the loop was busy (forking, say) was
        // only noted by Python's C handler; act on it now.
        if let Some(stop) = self.interrupted.take() {
            return Err(stop);
        }
        self.py.check_signals()?;
        let (listener_ready, ready, dead_idle, reload_ready) = self.wait()?;
        let now = Instant::now();
        // Before any new client is accepted: is the code still fresh?
        if reload_ready || self.reload_due(now) {
            self.check_freshness(now);
        }
        // Backwards, so removing a connection does not move those still to
        // be visited.
        for index in (0..self.connections.len()).rev() {
            if !self.step(index, ready[index], now) {
                self.connections.swap_remove(index);
                // What a failed fork or accept lacked (memory, descriptors)
                // may be back now that a run has ended.
                self.retry_at = None;
                self.accept_at = None;
            }
        }
        if let Some((pid, status)) = self.pool.reap_dead(&dead_idle) {
            self.idle_worker_died(pid, status, now);
        }
        self.check_socket(now);
        if self.retiring {
            return Ok(!self.connections.is_empty());
        }
        if self.accept_at.is_some_and(|at| at <= now) {
            self.accept_at = None;
        }
        if listener_ready && self.accepting() {
            let accepted = self.connections.len();
            self.accept();
            // A client sends its request as soon as it has connected, so it
            // is usually there already: read it now, not after another poll.
            let ready = Ready {
                socket: true,
                pidfd: false,
            };
            for index in (accepted..self.connections.len()).rev() {
                if !self.step(index, ready, now) {
                    self.connections.swap_remove(index);
                }
            }
        }
        // Every run that became ready this turn has started; only now fork.
        if self.refill_due(now) {
            self.refill();
        }
        Ok(true)
    }

    /// An idle worker has no program yet: one that ended was killed, or the
    /// server's own code failed in it (a fork hook, the worker's set-up),
    /// and would in its replacement too. So the refill waits
    /// [`REFILL_RETRY`] rather than fork in a loop, and the log says so, at
    /// most once every [`IDLE_DEATH_LOG_EVERY`].
    fn idle_worker_died(&mut self, pid: Pid, status: Option<WaitIdStatus>, now: Instant) {
        self.retry_at = Some(now + REFILL_RETRY);
        if self
            .idle_death_logged_at
            .is_some_and(|at| now < at + IDLE_DEATH_LOG_EVERY)
        {
            return;
        }
        self.idle_death_logged_at = Some(now);
        let how = status.map_or_else(|| "ended".into(), |s| describe(exit_status(s)));
        log::warning(&format!(
            "an idle worker (pid {}) ended before it had a request ({how}); \
             forking its replacement in {:?} (its own messages, if any, are above)",
            pid.as_raw_nonzero(),
            REFILL_RETRY
        ));
    }

    /// Whether new clients are accepted: not while a change of the code is
    /// being dealt with (they wait in the backlog), nor while the server is
    /// out of descriptors, nor once retired.
    fn accepting(&self) -> bool {
        !self.retiring
            && self.accept_at.is_none()
            && self.reload.as_ref().is_none_or(Reload::accepting)
    }

    fn reload_due(&self, now: Instant) -> bool {
        self.reload
            .as_ref()
            .and_then(Reload::deadline)
            .is_some_and(|at| at <= now)
    }

    /// Follows changes of the code and the hand-over to a fresh server.
    fn check_freshness(&mut self, now: Instant) {
        let running = self
            .connections
            .iter()
            .filter(|c| matches!(c.state, State::Running { .. }))
            .count();
        let Some(reload) = &mut self.reload else {
            return;
        };
        if reload.step(self.listener, running, now) == reload::Outcome::Retire {
            self.listener.hand_over();
            self.retire();
        }
    }

    /// Takes no more clients, only serves those it has; the loop ends once
    /// their runs have.
    fn retire(&mut self) {
        self.retiring = true;
        self.pool.clear();
        // A retiring server forks no more workers ahead: no refill to
        // wake for.
        self.refill_by = None;
        self.retry_at = None;
    }

    /// Retires a server whose socket file has left its path: no one can
    /// reach it any more, and it would hold its memory for ever, out of
    /// sight of `status` and `stop` too once the directory is gone.
    fn check_socket(&mut self, now: Instant) {
        if self.retiring || now < self.socket_check_at {
            return;
        }
        self.socket_check_at = now + SOCKET_CHECK;
        if !self.listener.is_gone() {
            return;
        }
        log::warning(&format!(
            "the socket {} is gone (deleted, or its directory removed or replaced): \
             no new client can reach this server; it stops once its {} client(s) are served",
            self.listener.path().display(),
            self.connections.len()
        ));
        // A replacement would take over a socket no one can reach either.
        if let Some(mut reload) = self.reload.take() {
            reload.abandon();
        }
        self.retire();
    }

    /// Waits, without the GIL, until something needs attention. Returns
    /// whether the listener is ready, what is ready per connection, and the
    /// pidfds of idle workers that have exited.
    fn wait(&self) -> PyResult<(bool, Vec<Ready>, Vec<RawFd>, bool)> {
        let now = Instant::now();
        let timeout = self
            .connections
            .iter()
            .filter_map(|c| c.deadline)
            .chain(self.refill_by)
            .chain(self.retry_at)
            .chain(self.accept_at)
            .chain((!self.retiring).then_some(self.socket_check_at))
            .chain(self.reload.as_ref().and_then(Reload::deadline))
            .min()
            .map(|d| {
                let left = d.saturating_duration_since(now);
                rustix::time::Timespec::try_from(left).unwrap_or(rustix::time::Timespec {
                    tv_sec: i64::MAX,
                    tv_nsec: 0,
                })
            });
        // Where each connection's socket and pidfd sit in `fds`, if polled.
        let mut slots = Vec::with_capacity(self.connections.len());
        let listening = self.listener.socket();
        let accepting = if self.accepting() {
            PollFlags::IN
        } else {
            PollFlags::empty()
        };
        let mut fds = vec![PollFd::new(&listening, accepting)];
        for connection in &self.connections {
            let (watch_socket, pidfd) = match &connection.state {
                State::Reading(_) => (true, None),
                // Once the client is gone its socket stays readable (EOF);
                // polling it again would spin.
                State::Running {
                    worker,
                    client_gone,
                    ..
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
        // SAFETY: Python keeps the wakeup pipe open for the whole of `serve`.
        let wakeup = self
            .settings
            .wakeup
            .map(|fd| unsafe { BorrowedFd::borrow_raw(fd) });
        if let Some(wakeup) = &wakeup {
            fds.push(PollFd::new(wakeup, PollFlags::IN));
        }
        let reloading = self.reload.as_ref().map(Reload::poll_fds);
        let reload_from = fds.len();
        for fd in reloading.iter().flatten() {
            fds.push(PollFd::new(fd, PollFlags::IN));
        }
        let reload_to = fds.len();
        let idle_from = fds.len();
        for idle in self.pool.idle() {
            fds.push(PollFd::new(&idle.process.pidfd, PollFlags::IN));
        }
        match self
            .py
            .detach(|| rustix::event::poll(&mut fds, timeout.as_ref()))
        {
            Ok(_) => {}
            Err(Errno::INTR) => {}
            Err(e) => {
                return Err(pyo3::exceptions::PyOSError::new_err(format!(
                    "poll failed: {e}"
                )));
            }
        }
        if let Some(wakeup) = wakeup {
            // Empty the pipe; the signal itself is handled by check_signals.
            let mut bytes = [0u8; 64];
            while matches!(rustix::io::read(wakeup, &mut bytes), Ok(n) if n > 0) {}
        }
        self.py.check_signals()?;
        let busy = |at: Option<usize>| at.is_some_and(|at| !fds[at].revents().is_empty());
        let ready = slots
            .into_iter()
            .map(|(socket, pidfd)| Ready {
                socket: busy(socket),
                pidfd: busy(pidfd),
            })
            .collect();
        let dead_idle = fds[idle_from..]
            .iter()
            .filter(|fd| !fd.revents().is_empty())
            .map(|fd| fd.as_fd().as_raw_fd())
            .collect();
        let reload_ready = fds[reload_from..reload_to]
            .iter()
            .any(|fd| !fd.revents().is_empty());
        Ok((busy(Some(0)), ready, dead_idle, reload_ready))
    }

    /// Accepts waiting clients; refuses those of another user.
    fn accept(&mut self) {
        for _ in 0..ACCEPT_BATCH {
            let socket = match rustix::net::accept_with(
                self.listener.socket(),
                SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
            ) {
                Ok(socket) => {
                    self.out_of_fds_logged = false;
                    socket
                }
                Err(Errno::AGAIN | Errno::INTR) => return,
                Err(Errno::MFILE | Errno::NFILE) => {
                    self.accept_at = Some(Instant::now() + OUT_OF_FDS_PAUSE);
                    if std::mem::replace(&mut self.out_of_fds_logged, true) {
                        return;
                    }
                    log::warning(&format!(
                        "out of file descriptors (the soft limit is {}); new clients wait \
                         until a connection or run ends, and are tried every {:?}",
                        crate::limits::descriptor_limit(),
                        OUT_OF_FDS_PAUSE
                    ));
                    return;
                }
                Err(e) => {
                    log::warning(&format!("accept failed: {e}"));
                    return;
                }
            };
            match crate::listener::peer(socket.as_fd()) {
                Ok(peer) if peer.uid == self.uid => {}
                Ok(peer) => {
                    log::warning(&format!(
                        "refused a client of uid {} (pid {})",
                        peer.uid.as_raw(),
                        peer.pid
                    ));
                    let message =
                        "this server belongs to another user; start your own with warmfork-server";
                    refuse_quietly(&socket, ErrorCode::PermissionDenied, message);
                    continue;
                }
                Err(e) => {
                    log::warning(&format!("cannot read a client's credentials: {e}"));
                    continue;
                }
            }
            self.connections.push(Connection {
                socket,
                state: State::Reading(Incoming::reusing(
                    self.spare_buffers.pop().unwrap_or_default(),
                )),
                deadline: Some(Instant::now() + self.settings.request_timeout),
            });
        }
    }

    /// Advances connection `index`; false when it is finished and can go.
    fn step(&mut self, index: usize, ready: Ready, now: Instant) -> bool {
        let connection = &mut self.connections[index];
        let timed_out = connection.deadline.is_some_and(|d| d <= now);
        let progress = match &mut connection.state {
            State::Running {
                worker,
                client_gone,
                started,
                summary,
            } => {
                if ready.pidfd {
                    if let Some(status) = pool::reap(worker) {
                        report_end(
                            &connection.socket,
                            worker,
                            self.uid,
                            summary,
                            *started,
                            status,
                        );
                        return false;
                    }
                }
                if ready.socket && client_hung_up(&connection.socket) {
                    // As on a terminal hang-up: SIGHUP now, SIGKILL if it lingers.
                    *client_gone = true;
                    hang_up(worker);
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
            State::Reading(_) if !ready.socket => Progress::Pending,
            State::Reading(incoming) => incoming.read(&connection.socket),
        };
        match progress {
            Progress::Pending => true,
            Progress::Closed => false,
            Progress::Refused(code, message) => {
                refuse(&connection.socket, code, &message);
                false
            }
            // Also while the server hands over or retires: the client was
            // accepted before the change was noticed, so it is served with
            // the code that was current when it came.
            Progress::Complete => self.start(index),
        }
    }

    /// Hands the complete request of connection `index` to a worker.
    fn start(&mut self, index: usize) -> bool {
        let State::Reading(incoming) = &self.connections[index].state else {
            unreachable!("start is only called for a complete request")
        };
        let summary = match incoming.request() {
            Ok(request) => summarize(request.argv()),
            Err(Progress::Refused(code, message)) => {
                refuse(&self.connections[index].socket, code, &message);
                return false;
            }
            Err(_) => return false,
        };
        // A client killed while its request waited (in the backlog while the
        // server replaced itself, say) has gone for good: its program must
        // not run unattended, writing to a terminal someone else now uses.
        if client_hung_up(&self.connections[index].socket) {
            log::info(&format!(
                "the client of {summary} went away before its run started; nothing was run"
            ));
            return false;
        }
        // A hand-off that fails for the worker's sake (it died) is retried
        // with another; one that keeps failing is the request's (say too
        // many descriptors in flight for the user's limit): refused.
        let mut attempts = 0;
        let worker = loop {
            attempts += 1;
            let idle = match self.pool.take() {
                Some(idle) => idle,
                // The pool is empty: this run pays for a fork.
                None => match self.fork_idle(Fork::OnDemand) {
                    Ok(idle) => idle,
                    Err(message) => {
                        refuse(
                            &self.connections[index].socket,
                            ErrorCode::Internal,
                            &message,
                        );
                        return false;
                    }
                },
            };
            let connection = &self.connections[index];
            let State::Reading(incoming) = &connection.state else {
                unreachable!()
            };
            match idle.hand_off(incoming.frame(), connection.socket.as_fd(), incoming.fds()) {
                Ok(worker) => break worker,
                Err(message) if attempts >= MAX_HAND_OFFS => {
                    log::warning(&message);
                    refuse(&connection.socket, ErrorCode::Internal, &message);
                    return false;
                }
                Err(message) => log::warning(&message),
            }
        };
        let connection = &mut self.connections[index];
        let running = State::Running {
            worker,
            client_gone: false,
            started: Instant::now(),
            summary,
        };
        connection.deadline = None;
        // Letting go of the request closes the server's copies of its
        // descriptors.
        if let State::Reading(incoming) = std::mem::replace(&mut connection.state, running) {
            if let Some(buffer) = incoming.into_buffer() {
                if self.spare_buffers.len() < SPARE_BUFFERS {
                    self.spare_buffers.push(buffer);
                }
            }
        }
        true
    }

    /// Whether to fork the pool's missing workers now. A fork copies the
    /// server's page tables (about 1 ms with numpy loaded) and the new worker
    /// then gets ready (as long again): work that competes for a CPU with the
    /// runs just handed off, on their way to an exit status, when cores are
    /// few. So while runs are in progress and an idle worker is left, the
    /// refill waits for them to end, [`REFILL_DELAY`] at most.
    fn refill_due(&mut self, now: Instant) -> bool {
        if self.pool.missing() == 0 {
            self.refill_by = None;
            return false;
        }
        if self.retry_at.is_some_and(|at| now < at) {
            return false;
        }
        let running = self
            .connections
            .iter()
            .any(|c| matches!(c.state, State::Running { .. }));
        if !running || self.pool.idle().next().is_none() {
            return true;
        }
        now >= *self.refill_by.get_or_insert(now + REFILL_DELAY)
    }

    /// Forks idle workers until the pool is full.
    fn refill(&mut self) {
        self.refill_by = None;
        self.retry_at = None;
        for _ in 0..self.pool.missing() {
            match self.fork_idle(Fork::Ahead) {
                Ok(idle) => self.pool.put(idle),
                Err(_) if self.interrupted.is_some() => return,
                Err(message) => {
                    // Not again at every turn: a failing fork (out of
                    // memory, processes or descriptors) would flood the log.
                    log::warning(&message);
                    self.retry_at = Some(Instant::now() + REFILL_RETRY);
                    return;
                }
            }
        }
    }

    fn fork_idle(&mut self, fork: Fork) -> Result<pool::IdleWorker, String> {
        // A signal noted since the turn began is acted on by the loop: its
        // Python handler would otherwise run in a fork hook, which reports
        // and drops what it raises (the server's stop). So is one handled
        // in the Python this calls first, which is why it is called here
        // and not registered as a fork hook.
        let before_fork = self.hooks.before_fork.map(|hook| hook.call0());
        if let Some(Err(stop)) = before_fork {
            self.interrupted = Some(stop);
            return Err(crate::worker::STOPPING.into());
        }
        if let Err(stop) = self.py.check_signals() {
            self.interrupted = Some(stop);
            return Err(crate::worker::STOPPING.into());
        }
        let close = self.fds();
        // A worker forked for a waiting request must not make it wait for a
        // learner's scan of its memory.
        let role = self.prefault.next(fork == Fork::Ahead);
        let idle = pool::fork_idle(self.py, &close, &self.hooks, role).inspect_err(|_| {
            // A signal that came as the fork began (see `worker::fork`).
            if let Some(stop) = PyErr::take(self.py) {
                self.interrupted = Some(stop);
            }
        })?;
        self.prefault.forked(role, idle.process.pid);
        Ok(idle)
    }

    /// Every descriptor the server holds or inherited, which a new worker
    /// closes: none is the program's.
    fn fds(&self) -> Vec<RawFd> {
        let mut fds: Vec<RawFd> = self.listener.fds().iter().map(AsRawFd::as_raw_fd).collect();
        fds.extend(self.settings.wakeup);
        fds.extend(&self.inherited);
        for connection in &self.connections {
            fds.push(connection.socket.as_raw_fd());
            match &connection.state {
                State::Reading(incoming) => {
                    fds.extend(incoming.fds().iter().map(AsRawFd::as_raw_fd))
                }
                State::Running { worker, .. } => fds.push(worker.pidfd.as_raw_fd()),
            }
        }
        fds.extend(self.pool.fds());
        fds.extend(self.reload.iter().flat_map(Reload::fds));
        fds
    }
}

fn refuse(socket: &OwnedFd, code: ErrorCode, message: &str) {
    log::warning(&format!("refused a request: {message}"));
    refuse_quietly(socket, code, message);
}

fn refuse_quietly(socket: &OwnedFd, code: ErrorCode, message: &str) {
    worker::send_reply(
        socket,
        &Reply::Error {
            code,
            message: message.as_bytes(),
        },
    );
}

/// SIGHUP for a run whose client has gone. A client that died during the
/// run hangs up the program's whole process group, as a terminal's hang-up
/// reaches its foreground group: the worker leads a group of its own (its
/// own session), which the program's children share unless they left it.
/// It goes by the group's number, the worker's pid, which no other process
/// can take while the server has not reaped the worker, and to the worker
/// through its pidfd too when the program has moved it to another group.
/// A client that hangs up once its worker has sent the status has just
/// read it: then only the worker gets the signal (it ignores it by then),
/// and the children the program left running go on, as python's do.
///
/// SIGCONT follows where the worker or a child of its is stopped, as the
/// kernel follows the SIGHUP it sends an orphaned group with a stopped
/// member: a job stopped with Ctrl-Z whose client was then killed (`kill -9
/// %1`) would otherwise keep its children stopped for good.
fn hang_up(worker: &Process) {
    // Every run's client hangs up once it has the status: that common end
    // takes the one signal, and none of the look at `/proc` below.
    if crate::ended::status_sent(worker.pid) != Some(false) {
        let _ = rustix::process::pidfd_send_signal(&worker.pidfd, Signal::HUP);
        return;
    }
    let stopped = is_stopped(worker.pid) || children(worker.pid).into_iter().any(is_stopped);
    let _ = rustix::process::kill_process_group(worker.pid, Signal::HUP);
    if stopped {
        let _ = rustix::process::kill_process_group(worker.pid, Signal::CONT);
    }
    if rustix::process::getpgid(Some(worker.pid)).is_ok_and(|group| group == worker.pid) {
        return;
    }
    let _ = rustix::process::pidfd_send_signal(&worker.pidfd, Signal::HUP);
    if stopped {
        let _ = rustix::process::pidfd_send_signal(&worker.pidfd, Signal::CONT);
    }
}

/// The children of process `pid`, of all its threads, as `/proc` lists them.
fn children(pid: rustix::process::Pid) -> Vec<rustix::process::Pid> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{}/task", pid.as_raw_nonzero())) else {
        return Vec::new();
    };
    tasks
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join("children")).ok())
        .flat_map(|listed| {
            listed
                .split_whitespace()
                .filter_map(|child| child.parse().ok().and_then(rustix::process::Pid::from_raw))
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Whether process `pid` is stopped (state `T` in `/proc/PID/stat`).
fn is_stopped(pid: rustix::process::Pid) -> bool {
    std::fs::read_to_string(format!("/proc/{}/stat", pid.as_raw_nonzero()))
        .ok()
        .and_then(|stat| {
            let (_, after_name) = stat.rsplit_once(')')?;
            after_name
                .split_whitespace()
                .next()
                .map(|state| state == "T")
        })
        .unwrap_or(false)
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

/// An exit status in words, for the log.
fn describe(status: ExitStatus) -> String {
    match status {
        ExitStatus::Exited(code) => format!("exit {code}"),
        ExitStatus::Signaled(signal) => format!("killed by signal {signal}"),
    }
}

fn exit_status(status: rustix::process::WaitIdStatus) -> ExitStatus {
    match status.terminating_signal() {
        Some(signal) => ExitStatus::Signaled(signal as u8),
        None => ExitStatus::Exited(status.exit_status().unwrap_or(0) as u8),
    }
}

/// The first arguments of a run, for its log line: lossily decoded, each
/// cut short, at most a few.
fn summarize<'a>(argv: impl Iterator<Item = &'a [u8]>) -> String {
    const ARGS: usize = 4;
    const ARG_CHARS: usize = 40;
    let mut summary = String::new();
    for (i, arg) in argv.take(ARGS + 1).enumerate() {
        if i == ARGS {
            summary.push_str(" ...");
            break;
        }
        if i > 0 {
            summary.push(' ');
        }
        let arg = String::from_utf8_lossy(arg);
        summary.extend(arg.chars().take(ARG_CHARS).flat_map(char::escape_debug));
        if arg.chars().count() > ARG_CHARS {
            summary.push_str("...");
        }
    }
    summary
}

/// A worker has ended: send its client the status (the worker normally
/// reported it first; this covers one that died before it could, by a
/// signal or `os._exit`) and log one line for the run: worker, user,
/// program, duration and status.
fn report_end(
    socket: &OwnedFd,
    worker: &Process,
    uid: Uid,
    summary: &str,
    started: Instant,
    status: rustix::process::WaitIdStatus,
) {
    crate::ended::forget(worker.pid);
    let status = exit_status(status);
    worker::send_reply(socket, &Reply::Exit(status));
    let took = started.elapsed();
    let status = describe(status);
    // Tenths of a millisecond, rounded, in integers: formatting a float takes
    // a deep stack, and stack pages too are shared with the workers.
    let tenths = (took.as_micros() + 50) / 100;
    log::info(&format!(
        "run pid={} uid={} argv=[{summary}] {}.{}ms {status}",
        worker.pid.as_raw_nonzero(),
        uid.as_raw(),
        tenths / 10,
        tenths % 10
    ));
}
