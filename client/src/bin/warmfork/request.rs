//! Sending the `RUN` frame: header, strings and descriptors in as few
//! `sendmsg` calls as the kernel allows.
//!
//! Nothing is copied: the argument and environment strings go out straight
//! from where the kernel put them, each with its NUL, as one gather list.

use core::mem::MaybeUninit;

use rustix::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use rustix::fs::{Mode, OFlags};
use rustix::io::{Errno, IoSlice};
use rustix::net::{SendAncillaryBuffer, SendAncillaryMessage, SendFlags};
use warmfork::{FdSet, RunHeader};

use crate::failure::Failure;
use crate::start::{Process, stdio_fd};

/// Gather-list entries per `sendmsg`; far below `IOV_MAX` (1024), and a
/// typical environment fits in one call.
const BATCH: usize = 128;

/// The client's side of the descriptors a `RUN` frame carries.
pub struct Descriptors {
    set: FdSet,
    cwd: Option<OwnedFd>,
    /// Under `WARMFORK_PTY=1`, the pseudo-terminal's slave, sent in place of
    /// the standard descriptors in `on_terminal`.
    terminal: Option<OwnedFd>,
    on_terminal: FdSet,
}

impl Descriptors {
    /// Stdio 0, 1 and 2, as far as they are open, and a descriptor of the
    /// working directory (`O_PATH` needs no permission on the directory).
    ///
    /// This must run before the client opens anything else. The kernel hands
    /// out the lowest free number, so a directory descriptor numbered 3 or
    /// more proves 0, 1 and 2 are open, and only otherwise are they probed.
    /// Later the socket could take a closed stdio number, and sending it as
    /// that stdio would pour the program's output into the protocol.
    pub fn gather() -> Descriptors {
        let cwd = rustix::fs::open(
            ".",
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .ok();
        let mut set = FdSet::STDIN.with(FdSet::STDOUT).with(FdSet::STDERR);
        let cwd_number = cwd.as_ref().map(AsRawFd::as_raw_fd);
        if cwd_number.is_none_or(|n| n < 3) {
            for (fd, slot) in [(0, FdSet::STDIN), (1, FdSet::STDOUT), (2, FdSet::STDERR)] {
                // The directory itself may have taken a closed stdio number.
                if cwd_number == Some(i32::from(fd))
                    || rustix::io::fcntl_getfd(stdio_fd(fd)).is_err()
                {
                    set = set.without(slot);
                }
            }
        }
        if cwd.is_some() {
            set = set.with(FdSet::CWD);
        }
        Descriptors {
            set,
            cwd,
            terminal: None,
            on_terminal: FdSet::default(),
        }
    }

    /// Whether the frame carries the descriptor of `slot`.
    pub fn carries(&self, slot: FdSet) -> bool {
        self.set.contains(slot)
    }

    /// Sends `slave` in place of the standard descriptors in `slots`
    /// (standard input among them) and asks the worker to make it its
    /// controlling terminal.
    pub fn give_terminal(&mut self, slave: OwnedFd, slots: FdSet) {
        self.terminal = Some(slave);
        self.on_terminal = slots;
        self.set = self.set.with(FdSet::CONTROLLING_TTY);
    }

    /// Closes the client's copy of the slave once it has been sent: the
    /// master reads end-of-file (EIO) only when no copy is left open.
    pub fn close_terminal(&mut self) {
        self.terminal = None;
    }

    fn each(&self) -> impl Iterator<Item = BorrowedFd<'_>> {
        let stdio = |fd: u8, slot: FdSet| match &self.terminal {
            Some(slave) if self.on_terminal.contains(slot) => slave.as_fd(),
            _ => stdio_fd(fd),
        };
        let all = [
            stdio(0, FdSet::STDIN),
            stdio(1, FdSet::STDOUT),
            stdio(2, FdSet::STDERR),
        ]
        .into_iter()
        .chain(self.cwd.as_ref().map(|fd| fd.as_fd()));
        FdSet::SLOTS
            .into_iter()
            .zip(all)
            .filter(|(slot, _)| self.set.contains(*slot))
            .map(|(_, fd)| fd)
    }
}

/// Sends the whole `RUN` frame on `socket`.
///
/// Returns `Ok(false)` when the server hung up before taking all of it: it
/// has usually explained why in an `ERROR` frame, which the caller reads next.
pub fn send(
    socket: &OwnedFd,
    process: &Process,
    umask: u32,
    ignored_signals: u64,
    fds: &Descriptors,
) -> Result<bool, Failure<'static>> {
    let header = RunHeader {
        fds: fds.set,
        argc: process.argc() as u32,
        envc: process.envc() as u32,
        umask,
        ignored_signals,
        strings_len: pieces(&[], process).map(<[u8]>::len).sum(),
    };
    let header_bytes = header.to_bytes().map_err(|_| Failure::TooLarge)?;
    let mut at = Position::default();
    loop {
        let pieces = pieces(&header_bytes, process);
        let mut slices = [IoSlice::new(&[]); BATCH];
        let mut count = 0;
        for (slot, piece) in slices.iter_mut().zip(pieces.clone().skip(at.piece)) {
            *slot = IoSlice::new(if count == 0 {
                &piece[at.offset..]
            } else {
                piece
            });
            count += 1;
        }
        if count == 0 {
            return Ok(true);
        }
        let first = at.piece == 0 && at.offset == 0;
        let result = if first {
            let mut rights = [stdio_fd(0); 4];
            let mut n = 0;
            for (slot, fd) in rights.iter_mut().zip(fds.each()) {
                *slot = fd;
                n += 1;
            }
            let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(4))];
            let mut control = SendAncillaryBuffer::new(&mut space);
            control.push(SendAncillaryMessage::ScmRights(&rights[..n]));
            rustix::net::sendmsg(socket, &slices[..count], &mut control, SendFlags::NOSIGNAL)
        } else {
            rustix::net::sendmsg(
                socket,
                &slices[..count],
                &mut SendAncillaryBuffer::default(),
                SendFlags::NOSIGNAL,
            )
        };
        match result {
            Ok(sent) => at.advance(sent, pieces),
            Err(Errno::INTR) => {}
            Err(Errno::PIPE | Errno::CONNRESET) => return Ok(false),
            Err(errno) => {
                return Err(Failure::System {
                    call: "sendmsg",
                    errno,
                });
            }
        }
    }
}

/// The frame as a sequence of byte strings: the header, then every argument
/// and environment string with its NUL.
fn pieces<'a>(
    header: &'a [u8],
    process: &'a Process,
) -> impl Iterator<Item = &'a [u8]> + Clone + 'a {
    let strings = process
        .args()
        .chain(process.env())
        .map(|s| -> &'a [u8] { s.to_bytes_with_nul() });
    core::iter::once(header).chain(strings)
}

/// How far into the sequence of pieces the kernel has taken bytes.
#[derive(Default)]
struct Position {
    piece: usize,
    offset: usize,
}

impl Position {
    fn advance<'a>(&mut self, mut sent: usize, pieces: impl Iterator<Item = &'a [u8]>) {
        for piece in pieces.skip(self.piece) {
            let left = piece.len() - self.offset;
            if sent < left {
                self.offset += sent;
                return;
            }
            sent -= left;
            self.piece += 1;
            self.offset = 0;
        }
    }
}
