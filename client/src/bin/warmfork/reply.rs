//! Waiting for the program's status, and ending this process with it.

use core::mem::MaybeUninit;

use rustix::event::{PollFd, PollFlags};
use rustix::fd::{AsFd, OwnedFd};
use rustix::io::{Errno, IoSliceMut};
use rustix::net::{RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags};
use warmfork::reply::{MAX_REPLY_LEN, REPLY_FIXED_LEN};
use warmfork::{ExitStatus, Reply};

use crate::failure::Failure;
use crate::relay::Relay;
use crate::signals::{self, Forwarder};
use crate::syscall::exit;
use crate::terminal;

/// Reads reply frames until one says how the run ended, relaying the
/// program's pseudo-terminal meanwhile if it has one (`WARMFORK_PTY=1`).
///
/// `buf` is the caller's so an `ERROR` message can be borrowed from it.
pub fn wait<'b>(
    socket: &OwnedFd,
    buf: &'b mut [u8; MAX_REPLY_LEN],
    signals: &mut Forwarder,
    mut relay: Option<&mut Relay>,
) -> Result<ExitStatus, Failure<'b>> {
    let mut filled = 0;
    // Whether the program has started (a `STARTED` frame came): a connection
    // that ends before it ran nothing.
    let mut started = false;
    let lost = |started| {
        if started {
            Failure::Lost
        } else {
            Failure::NotStarted
        }
    };
    loop {
        // Frames are consumed from the front; `start` is where the next begins.
        let mut start = 0;
        let mut refused = None;
        while let Some((reply, len)) =
            Reply::decode(&buf[start..filled]).map_err(Failure::Protocol)?
        {
            match reply {
                Reply::Exit(status) => return Ok(status),
                Reply::Error { code, .. } => {
                    refused = Some((code, start + REPLY_FIXED_LEN..start + len));
                    break;
                }
                Reply::Started { .. } => {
                    started = true;
                    start += len;
                }
                Reply::Unknown(_) => start += len,
            }
        }
        if let Some((code, message)) = refused {
            return Err(Failure::Refused {
                code,
                message: &buf[message],
            });
        }
        buf.copy_within(start..filled, 0);
        filled -= start;
        let readable = match relay.as_deref_mut() {
            Some(relay) => relay.wait(socket.as_fd(), signals),
            None => ready(socket, signals),
        };
        if !readable {
            continue;
        }
        match receive(socket, &mut buf[filled..]) {
            Ok((0, _)) => return Err(lost(started)),
            Ok((n, pidfd)) => {
                filled += n;
                // Only `STARTED` carries a descriptor: the worker's pidfd.
                if let Some(pidfd) = pidfd {
                    signals.started(pidfd);
                }
            }
            Err(Errno::INTR | Errno::AGAIN) => {}
            Err(Errno::CONNRESET) => return Err(lost(started)),
            Err(errno) => {
                return Err(Failure::System {
                    call: "recvmsg",
                    errno,
                });
            }
        }
    }
}

/// Waits until the socket is readable, forwarding signals meanwhile.
/// Returns false when only signals were handled.
fn ready(socket: &OwnedFd, signals: &mut Forwarder) -> bool {
    let Some(signalfd) = signals.signals() else {
        // No forwarding: wait for the socket alone (it is non-blocking).
        let _ = rustix::event::poll(&mut [PollFd::new(socket, PollFlags::IN)], None);
        return true;
    };
    let mut fds = [
        PollFd::new(socket, PollFlags::IN),
        PollFd::new(&signalfd, PollFlags::IN),
    ];
    let hold = signals.hold();
    if rustix::event::poll(&mut fds, hold.as_ref()).is_err() {
        return false;
    }
    let (socket_ready, signal_ready) = (!fds[0].revents().is_empty(), !fds[1].revents().is_empty());
    if signal_ready {
        signals.receive(|_| false);
    }
    // A reply that has come (STARTED, say) is read before giving up.
    if !socket_ready {
        give_up_on_held_signal(signals);
    }
    socket_ready
}

/// Ends the client by a signal that has waited too long for a worker (see
/// `signals.rs`); returns otherwise.
pub fn give_up_on_held_signal(signals: &Forwarder) {
    if let Some(number) = signals.held_too_long() {
        finish(ExitStatus::Signaled(number));
    }
}

/// `recvmsg` with room for the pidfd a `STARTED` frame carries, which a
/// plain `read` would drop.
fn receive(socket: &OwnedFd, buf: &mut [u8]) -> rustix::io::Result<(usize, Option<OwnedFd>)> {
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let msg = rustix::net::recvmsg(
        socket,
        &mut [IoSliceMut::new(buf)],
        &mut control,
        RecvFlags::CMSG_CLOEXEC,
    )?;
    let pidfd = control.drain().find_map(|message| match message {
        RecvAncillaryMessage::ScmRights(mut fds) => fds.next(),
        _ => None,
    });
    Ok((msg.bytes, pidfd))
}

/// Ends this process the way the program's process ended: with its exit
/// code, or killed by its signal so the shell reports what it would for
/// plain `python` (e.g. `$?` = 139 and "Segmentation fault" for SIGSEGV).
pub fn finish(status: ExitStatus) -> ! {
    // The terminal as the user had it, before the shell sees this end.
    terminal::restore();
    match status {
        ExitStatus::Exited(code) => exit(i32::from(code)),
        ExitStatus::Signaled(number) => {
            // The program has dumped its core, if it could: this process's
            // own would take its place (a `core` file in the same directory)
            // or stand beside it as a second crash. So the shell says
            // "Aborted" where it says "Aborted (core dumped)" for python.
            let _ = rustix::process::setrlimit(
                rustix::process::Resource::Core,
                rustix::process::Rlimit {
                    current: Some(0),
                    maximum: Some(0),
                },
            );
            // The program died of it, so python's process would have, even
            // if whoever started the client had it ignored (the program may
            // have restored the default): the default action, unblocked.
            let _ = crate::syscall::default_action(i32::from(number));
            signals::release(i32::from(number));
            let _ = crate::syscall::raise(i32::from(number));
            // Still here: the signal stops rather than kills, or cannot be
            // raised. Report it as a shell reports a death by signal.
            exit(128 + i32::from(number))
        }
    }
}
