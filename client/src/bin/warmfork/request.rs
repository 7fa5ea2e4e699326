//! Sending the `RUN` frame: header, strings and descriptors in as few
//! `sendmsg` calls as the kernel allows.
//!
//! Nothing is copied: the argument and environment strings go out straight
//! from where the kernel put them, each with its NUL, as one gather list.
//!
//! Besides its stdio and working directory, the client passes every other
//! descriptor it was started with (`EXTRA_FDS`), so that the program
//! inherits them as a child of the client would: `/dev/fd/63` of a shell's
//! `<(...)` names the same pipe in the program.

use core::mem::MaybeUninit;

use rustix::event::PollFlags;
use rustix::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use rustix::fs::{Mode, OFlags, RawDir};
use rustix::io::{Errno, IoSlice};
use rustix::net::{SendAncillaryBuffer, SendAncillaryMessage, SendFlags};
use warmfork::request::{MAX_EXTRA_FDS, encode_fd_list, fd_list_len};
use warmfork::{FdSet, RunHeader};

use crate::failure::Failure;
use crate::signals::Forwarder;
use crate::start::{Process, inherited_fd, stdio_fd};

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
    extra: Extra,
}

/// The client's descriptors other than 0, 1 and 2, as it was started with
/// them, in increasing order.
struct Extra {
    numbers: [u32; MAX_EXTRA_FDS],
    /// How many there are; more than [`MAX_EXTRA_FDS`] when the rest did not
    /// fit.
    count: usize,
}

impl Extra {
    fn numbers(&self) -> &[u32] {
        &self.numbers[..self.count.min(MAX_EXTRA_FDS)]
    }
}

/// Calls `each` with the number of every descriptor `/proc/self/fd` lists
/// (but the one reading it); `None` when it cannot be read (no `/proc`), or
/// fails part of the way.
///
/// Three system calls (open, a `getdents64` that fills the buffer with a
/// typical process's few entries, one that finds the end) and a close.
/// `each` may close descriptors: the kernel lists them by number, and a
/// closed one does not move the others.
pub fn each_open(each: impl FnMut(u32)) -> Option<()> {
    each_number_in(c"/proc/self/fd", each)
}

/// Calls `each` with every entry of the directory `path` whose name is a
/// number (descriptors in `/proc/self/fd`, processes in `/proc`), but the
/// descriptor this reads it through; `None` when it cannot be read.
pub fn each_number_in(path: &core::ffi::CStr, mut each: impl FnMut(u32)) -> Option<()> {
    let dir = rustix::fs::open(
        path,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .ok()?;
    let own = dir.as_raw_fd() as u32;
    // An entry is 24 to 32 bytes: room for a hundred at a time.
    let mut buf = [MaybeUninit::uninit(); 3072];
    let mut entries = RawDir::new(&dir, &mut buf);
    while let Some(entry) = entries.next() {
        // `.` and `..` are not numbers.
        match decimal(entry.ok()?.file_name().to_bytes()) {
            Some(fd) if fd != own => each(fd),
            _ => {}
        }
    }
    Some(())
}

/// What `/proc/self/fd` lists: which of 0, 1 and 2 are open, and the
/// others; `None` when it cannot be read (no `/proc`).
fn list_open() -> Option<([bool; 3], Extra)> {
    let mut stdio = [false; 3];
    let mut extra = Extra {
        numbers: [0; MAX_EXTRA_FDS],
        count: 0,
    };
    each_open(|fd| match fd {
        0..=2 => stdio[fd as usize] = true,
        _ => {
            if let Some(slot) = extra.numbers.get_mut(extra.count) {
                *slot = fd;
            }
            extra.count += 1;
        }
    })?;
    // The kernel lists descriptors in order; the protocol requires it, so
    // it is not taken on trust (an insertion sort of sorted numbers is one
    // pass).
    let numbers = &mut extra.numbers[..extra.count.min(MAX_EXTRA_FDS)];
    for i in 1..numbers.len() {
        let mut j = i;
        while j > 0 && numbers[j - 1] > numbers[j] {
            numbers.swap(j - 1, j);
            j -= 1;
        }
    }
    Some((stdio, extra))
}

/// The value of a decimal number of at most nine digits, such as the names
/// `/proc/self/fd` holds besides `.` and `..`.
pub fn decimal(name: &[u8]) -> Option<u32> {
    if name.is_empty() || name.len() > 9 {
        return None;
    }
    name.iter().try_fold(0u32, |n, &b| {
        b.is_ascii_digit().then(|| n * 10 + u32::from(b - b'0'))
    })
}

impl Descriptors {
    /// Stdio 0, 1 and 2, as far as they are open, a descriptor of the
    /// working directory (`O_PATH` needs no permission on the directory),
    /// and the client's other open descriptors.
    ///
    /// This must run before the client opens anything else: later the socket
    /// could take a closed stdio number, and sending it as that stdio would
    /// pour the program's output into the protocol; and what the client
    /// opens is not the program's. Without `/proc`, no other descriptor is
    /// passed, and stdio is found from the number of the directory
    /// descriptor: the kernel hands out the lowest free number, so 3 or more
    /// proves 0, 1 and 2 are open, and only otherwise are they probed.
    pub fn gather() -> Descriptors {
        let listed = list_open();
        let cwd = rustix::fs::open(
            ".",
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .ok();
        let mut set = FdSet::STDIN.with(FdSet::STDOUT).with(FdSet::STDERR);
        let cwd_number = cwd.as_ref().map(AsRawFd::as_raw_fd);
        let slots = [FdSet::STDIN, FdSet::STDOUT, FdSet::STDERR];
        if let Some((open, _)) = &listed {
            for (is_open, slot) in open.iter().zip(slots) {
                if !is_open {
                    set = set.without(slot);
                }
            }
        } else if cwd_number.is_none_or(|n| n < 3) {
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
        let extra = listed.map_or(
            Extra {
                numbers: [0; MAX_EXTRA_FDS],
                count: 0,
            },
            |(_, extra)| extra,
        );
        Descriptors {
            set,
            cwd,
            terminal: None,
            on_terminal: FdSet::default(),
            extra,
        }
    }

    /// Fails when the client has more descriptors than a run can pass: a
    /// program that got only some would differ from python's child in a way
    /// nobody would notice until it bites.
    pub fn check(&self) -> Result<(), Failure<'static>> {
        if self.extra.count > MAX_EXTRA_FDS {
            return Err(Failure::TooManyFds {
                count: self.extra.count,
            });
        }
        Ok(())
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

    /// Closes the client's copies of what it opened for the request, once
    /// sent: the pseudo-terminal's slave, whose master reads end-of-file
    /// (EIO) only when no copy is left open, and the working directory,
    /// whose number is then free for the worker's pidfd (under a low
    /// `ulimit -n` the kernel would otherwise drop it from `STARTED`, and
    /// no signal would reach the program).
    pub fn close_sent(&mut self) {
        self.terminal = None;
        self.cwd = None;
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
        let extra = self.extra.numbers().iter().map(|&n| inherited_fd(n));
        FdSet::SLOTS
            .into_iter()
            .zip(all)
            .filter(|(slot, _)| self.set.contains(*slot))
            .map(|(_, fd)| fd)
            .chain(extra)
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
    signals: &mut Forwarder,
) -> Result<bool, Failure<'static>> {
    let header = RunHeader {
        fds: fds.set,
        argc: process.argc() as u32,
        envc: process.envc() as u32,
        umask,
        ignored_signals,
        strings_len: pieces(&[], &[], process).map(<[u8]>::len).sum(),
        extra_fds: fds.extra.numbers().len(),
    };
    let header_bytes = header.to_bytes().map_err(|_| Failure::TooLarge)?;
    let mut list = [0u8; fd_list_len(MAX_EXTRA_FDS)];
    let list_len = encode_fd_list(fds.extra.numbers(), &mut list).unwrap_or(0);
    let mut at = Position::default();
    loop {
        let pieces = pieces(&header_bytes, &list[..list_len], process);
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
            const MOST: usize = FdSet::SLOTS.len() + MAX_EXTRA_FDS;
            let mut rights = [stdio_fd(0); MOST];
            let mut n = 0;
            for (slot, fd) in rights.iter_mut().zip(fds.each()) {
                *slot = fd;
                n += 1;
            }
            let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MOST))];
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
            // The socket is non-blocking (see `connect.rs`): a server that
            // is not reading is waited for as for its status.
            Err(Errno::AGAIN) => signals.wait_for(socket.as_fd(), PollFlags::OUT),
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

/// The frame as a sequence of byte strings: the header, the list of extra
/// descriptor numbers, then every argument and environment string with its
/// NUL. Empty pieces (no list) are left out.
fn pieces<'a>(
    header: &'a [u8],
    list: &'a [u8],
    process: &'a Process,
) -> impl Iterator<Item = &'a [u8]> + Clone + 'a {
    let strings = process
        .args()
        .chain(process.env())
        .map(|s| -> &'a [u8] { s.to_bytes_with_nul() });
    [header, list]
        .into_iter()
        .filter(|piece| !piece.is_empty())
        .chain(strings)
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
