//! Replacing the server with a fresh one when code it loaded has changed,
//! without ever leaving the socket unserved.
//!
//! 1. A change to a watched file (see `watch.rs`) makes the server stop
//!    accepting: new clients wait in the socket's backlog, so no run that
//!    comes after the edit sees stale code. Connections already accepted are
//!    served as usual.
//! 2. It waits until the files are quiet: unchanged for [`QUIET`] and none of
//!    them missing, so an install that removes files and writes new ones a
//!    moment later is over first. It waits at most [`SETTLE_LIMIT`] (a file
//!    may be gone for good).
//! 3. It starts its own command line again with the listening socket and
//!    the lock as descriptors 3 and 4 (the systemd socket-activation
//!    convention, `LISTEN_FDS=2`, named `warmfork:warmfork-lock`) and the
//!    write end of a pipe as descriptor 5 (`WARMFORK_READY_FD`). The fresh
//!    server warms up and writes one byte there just before it serves
//!    (`handover.rs` starts it and reports ready).
//! 4. On that byte the old server retires: it lets its runs in progress
//!    finish and exits. If instead the fresh server exits, closes the pipe,
//!    or is not ready within its time (then it is killed), the old server
//!    logs why, takes the socket back (it never closed it, and the clients
//!    waiting in the backlog are still there) and serves on with the code it
//!    has. It tries again at the next change, and, in case a change came
//!    unnoticed, whenever the files differ from those the failed attempt saw.
//!
//! Everything here is polled from the server's one loop: no thread, no
//! blocking wait.

use std::ffi::CString;
use std::os::fd::{AsRawFd, RawFd};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use rustix::fd::{AsFd, BorrowedFd, OwnedFd};
use rustix::process::{Signal, WaitIdStatus};

use crate::handover::{Said, said_ready, spawn_replacement, where_its_messages_went};
use crate::listener::Listener;
use crate::log;
use crate::pool::{self, Process};
use crate::watch::{Snapshot, Watcher};

/// How long the watched files must stay unchanged before a fresh server is
/// started: an editor's save is one event, an install many within
/// milliseconds of each other.
const QUIET: Duration = Duration::from_millis(250);

/// Longest wait for the files to be quiet and complete; a file may be gone
/// for good, and clients are waiting.
const SETTLE_LIMIT: Duration = Duration::from_secs(5);

/// How long a fresh server that closed its ready pipe without reporting
/// ready has to exit by itself before it is killed.
const EXIT_GRACE: Duration = Duration::from_secs(1);

/// How often a server whose fresh copy failed looks whether the files have
/// changed since, should inotify have missed it.
const RECHECK: Duration = Duration::from_secs(2);

/// Keeping the served code fresh.
#[derive(Debug)]
pub struct Reload {
    watcher: Watcher,
    /// The server's own command line.
    restart: Vec<CString>,
    /// How long a fresh server may take to warm up.
    ready_timeout: Duration,
    phase: Phase,
}

#[derive(Debug)]
enum Phase {
    /// Serving. After a failed replacement: what the files were then, and
    /// when to look at them again.
    Watching { failed: Option<(Snapshot, Instant)> },
    /// A file changed; waiting for the files to be quiet.
    Settling {
        file: PathBuf,
        since: Instant,
        check_at: Instant,
        snapshot: Snapshot,
    },
    /// A fresh server is warming up.
    HandingOver(HandOver),
    /// The fresh server serves; this one only finishes its runs.
    Retired,
}

#[derive(Debug)]
struct HandOver {
    file: PathBuf,
    replacement: Process,
    /// The read end of the ready pipe, until it reports end of file.
    ready: Option<OwnedFd>,
    deadline: Instant,
    /// The files the fresh server started from.
    snapshot: Snapshot,
    /// A watched file changed again while the fresh server warmed up.
    changed_again: bool,
    /// Why the fresh server was killed, once it was.
    killed: Option<String>,
}

/// What the server is to do after [`Reload::step`].
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Go on.
    Serve,
    /// A fresh server has the socket: stop accepting for good, finish the
    /// runs in progress, exit.
    Retire,
}

impl Reload {
    /// Watches `watcher`'s files; a change starts `restart`, which has
    /// `ready_timeout` to warm up. `changed` is a file that changed while
    /// this server warmed up (after it had loaded it, perhaps): it is dealt
    /// with as a change seen now, before any client is served.
    pub fn new(
        watcher: Watcher,
        restart: Vec<CString>,
        ready_timeout: Duration,
        changed: Option<PathBuf>,
    ) -> Reload {
        let now = Instant::now();
        let phase = match changed {
            None => Phase::Watching { failed: None },
            Some(file) => Phase::Settling {
                file,
                since: now,
                check_at: now + QUIET,
                snapshot: watcher.snapshot(),
            },
        };
        Reload {
            watcher,
            restart,
            ready_timeout,
            phase,
        }
    }

    /// Whether the server accepts new clients: not while a change is being
    /// dealt with, and never again once retired.
    pub fn accepting(&self) -> bool {
        matches!(self.phase, Phase::Watching { .. })
    }

    /// The descriptors to poll for [`Reload::step`].
    pub fn poll_fds(&self) -> Vec<BorrowedFd<'_>> {
        match &self.phase {
            Phase::Retired => Vec::new(),
            Phase::HandingOver(h) => [Some(self.watcher.fd()), Some(h.replacement.pidfd.as_fd())]
                .into_iter()
                .chain([h.ready.as_ref().map(AsFd::as_fd)])
                .flatten()
                .collect(),
            _ => vec![self.watcher.fd()],
        }
    }

    /// When [`Reload::step`] is due even if nothing is polled ready.
    pub fn deadline(&self) -> Option<Instant> {
        match &self.phase {
            Phase::Watching { failed } => failed.as_ref().map(|(_, at)| *at),
            Phase::Settling {
                since, check_at, ..
            } => Some((*check_at).min(*since + SETTLE_LIMIT)),
            Phase::HandingOver(h) => h.killed.is_none().then_some(h.deadline),
            Phase::Retired => None,
        }
    }

    /// Every descriptor held here, which a new worker closes.
    pub fn fds(&self) -> Vec<RawFd> {
        let mut fds = vec![self.watcher.fd().as_raw_fd()];
        if let Phase::HandingOver(h) = &self.phase {
            fds.push(h.replacement.pidfd.as_raw_fd());
            fds.extend(h.ready.as_ref().map(AsRawFd::as_raw_fd));
        }
        fds
    }

    /// Acts on file changes and on the fresh server's progress. `running`
    /// counts the runs in progress, for the log.
    pub fn step(&mut self, listener: &Listener, running: usize, now: Instant) -> Outcome {
        match &mut self.phase {
            Phase::Watching { failed } => {
                let changed = self.watcher.changed().or_else(|| {
                    let (before, at) = failed.as_mut().filter(|(_, at)| *at <= now)?;
                    *at = now + RECHECK;
                    let after = self.watcher.snapshot();
                    self.watcher
                        .difference(before, &after)
                        .map(|file| file.to_owned())
                });
                if let Some(file) = changed {
                    self.phase = Phase::Settling {
                        file,
                        since: now,
                        check_at: now + QUIET,
                        snapshot: self.watcher.snapshot(),
                    };
                }
                Outcome::Serve
            }
            Phase::Settling {
                file,
                since,
                check_at,
                snapshot,
            } => {
                if self.watcher.changed().is_some() {
                    *check_at = now + QUIET;
                }
                // Files that never stop changing must not starve the clients.
                let settled = now >= *since + SETTLE_LIMIT;
                if now < *check_at && !settled {
                    return Outcome::Serve;
                }
                let current = self.watcher.snapshot();
                if !settled && (current != *snapshot || !current.complete()) {
                    *snapshot = current;
                    *check_at = now + QUIET;
                    return Outcome::Serve;
                }
                let file = std::mem::take(file);
                self.start_replacement(file, current, listener, running, now);
                Outcome::Serve
            }
            Phase::HandingOver(h) => {
                if self.watcher.changed().is_some() {
                    h.changed_again = true;
                }
                match h.ready.as_ref().map(said_ready) {
                    Some(Said::Ready) => {
                        log::info(&format!(
                            "the fresh server (pid {}) is ready; this one (pid {}) exits after its {running} run(s)",
                            h.replacement.pid.as_raw_nonzero(),
                            std::process::id()
                        ));
                        self.phase = Phase::Retired;
                        return Outcome::Retire;
                    }
                    Some(Said::Closed) => {
                        // Normally it is exiting: a moment to collect its
                        // status, which says more than a kill would.
                        h.ready = None;
                        h.deadline = h.deadline.min(now + EXIT_GRACE);
                    }
                    Some(Said::Nothing) | None => {}
                }
                if let Some(status) = pool::reap(&h.replacement) {
                    self.give_up(listener, status, now);
                } else if h.killed.is_none() && now >= h.deadline {
                    let why = match h.ready {
                        Some(_) => format!("was not ready within {:.0?}", self.ready_timeout),
                        None => "closed its ready pipe without reporting ready".into(),
                    };
                    let _ = rustix::process::pidfd_send_signal(&h.replacement.pidfd, Signal::KILL);
                    h.killed = Some(why);
                }
                Outcome::Serve
            }
            Phase::Retired => Outcome::Serve,
        }
    }

    /// Ends a fresh server still warming up (the old one is stopping).
    pub fn abandon(&mut self) {
        if let Phase::HandingOver(h) = &self.phase {
            let _ = rustix::process::pidfd_send_signal(&h.replacement.pidfd, Signal::KILL);
            let _ = pool::reap_blocking(&h.replacement);
            self.phase = Phase::Watching { failed: None };
        }
    }

    fn start_replacement(
        &mut self,
        file: PathBuf,
        snapshot: Snapshot,
        listener: &Listener,
        running: usize,
        now: Instant,
    ) {
        // A directory replaced since the watch began is watched anew, so a
        // change after a failed replacement is noticed.
        if let Err(message) = self.watcher.rewatch() {
            log::warning(&message);
        }
        match spawn_replacement(&self.restart, listener) {
            Ok((replacement, ready)) => {
                log::info(&format!(
                    "{} changed: handing the socket to a fresh server (pid {}) once it is warm; {running} run(s) finish here",
                    file.display(),
                    replacement.pid.as_raw_nonzero(),
                ));
                self.phase = Phase::HandingOver(HandOver {
                    file,
                    replacement,
                    ready: Some(ready),
                    deadline: now + self.ready_timeout,
                    snapshot,
                    changed_again: false,
                    killed: None,
                });
            }
            Err(message) => {
                log::warning(&format!(
                    "{} changed but {message}; this server serves on with the code it has",
                    file.display()
                ));
                self.phase = Phase::Watching {
                    failed: Some((snapshot, now + RECHECK)),
                };
            }
        }
    }

    /// The fresh server ended before it was ready: say why, and serve on.
    fn give_up(&mut self, listener: &Listener, status: WaitIdStatus, now: Instant) {
        let Phase::HandingOver(h) = std::mem::replace(&mut self.phase, Phase::Retired) else {
            unreachable!("give_up is only called while handing over")
        };
        let how = match (&h.killed, status.terminating_signal()) {
            (Some(why), _) => format!("{why}, and was killed"),
            (None, Some(signal)) => format!("was killed by signal {signal} before it was ready"),
            (None, None) => format!(
                "exited with status {} before it was ready",
                status.exit_status().unwrap_or(0)
            ),
        };
        log::warning(&format!(
            "{} changed, but the fresh server (pid {}) {how} ({}); this server (pid {}) takes the socket back, \
             serves on with the code it has, and tries again when the files change",
            h.file.display(),
            h.replacement.pid.as_raw_nonzero(),
            where_its_messages_went(),
            std::process::id()
        ));
        listener.own();
        self.phase = if h.changed_again {
            Phase::Settling {
                file: h.file,
                since: now,
                check_at: now + QUIET,
                snapshot: self.watcher.snapshot(),
            }
        } else {
            Phase::Watching {
                failed: Some((h.snapshot, now + RECHECK)),
            }
        };
    }
}
