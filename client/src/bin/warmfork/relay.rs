//! Relaying between the user's terminal and the program's pseudo-terminal
//! under `WARMFORK_PTY=1` (see `pty.rs`), while the client waits for the
//! program's status.
//!
//! The user's terminal is raw (`terminal.rs`), so every key arrives as a
//! byte and goes to the pseudo-terminal, whose own line discipline echoes,
//! edits lines and turns Ctrl-C into SIGINT for the program: nothing is
//! forwarded for those. Three things still need the client: a resize of
//! the user's terminal is copied onto the pseudo-terminal (whose kernel
//! then sends the program SIGWINCH), Ctrl-Z is spotted in the typed bytes
//! (`suspend.rs`), and the program's output is passed on until the program
//! has really gone, not just reported its status.

use rustix::event::{PollFd, PollFlags, Timespec};
use rustix::fd::{AsFd, BorrowedFd, OwnedFd};
use rustix::io::Errno;
use rustix::net::RecvFlags;
use rustix::process::Signal;
use rustix::termios::{LocalModes, SpecialCodeIndex, Termios};

use crate::signals::Forwarder;
use crate::start::stdio_fd;
use crate::suspend::{Keys, Scanner};
use crate::terminal;

/// Bytes moved per read, each way.
const CHUNK: usize = 4096;

/// The client's side of the pseudo-terminal and what is in flight.
#[derive(Debug)]
pub struct Relay {
    /// The pseudo-terminal's master side, non-blocking.
    master: OwnedFd,
    /// Where the program's output is shown: the user's terminal.
    screen: BorrowedFd<'static>,
    /// Whether the user's terminal (standard input) can still be read.
    keyboard_open: bool,
    /// Whether the slave side is still open somewhere (the program, its
    /// children); after that the master reads EIO.
    master_open: bool,
    /// Typed bytes the pseudo-terminal has not taken yet: while there are
    /// any, the keyboard is not read, so a program that reads nothing holds
    /// up the typing and never the relaying of its output.
    typed: [u8; CHUNK],
    typed_from: usize,
    typed_to: usize,
    scanner: Scanner,
}

impl Relay {
    /// A relay between `master` and the user's terminal, showing output on
    /// `screen`.
    pub fn new(master: OwnedFd, screen: BorrowedFd<'static>) -> Relay {
        Relay {
            master,
            screen,
            keyboard_open: true,
            master_open: true,
            typed: [0; CHUNK],
            typed_from: 0,
            typed_to: 0,
            scanner: Scanner::default(),
        }
    }

    /// Waits until `socket` is readable, relaying both ways and handling
    /// signals meanwhile. Returns false when only those were done.
    pub fn wait(&mut self, socket: BorrowedFd<'_>, signals: &mut Forwarder) -> bool {
        let typing = self.typed_from < self.typed_to;
        let placeholder = || PollFd::from_borrowed_fd(socket, PollFlags::empty());
        let mut fds = [
            PollFd::from_borrowed_fd(socket, PollFlags::IN),
            placeholder(),
            placeholder(),
            placeholder(),
        ];
        let mut used = 1;
        let at_signals = signals
            .signals()
            .map(|fd| watch(&mut fds, &mut used, fd, PollFlags::IN));
        let at_keyboard = (self.keyboard_open && !typing && terminal::is_raw())
            .then(|| watch(&mut fds, &mut used, stdio_fd(0), PollFlags::IN));
        let master_flags = if typing {
            PollFlags::IN | PollFlags::OUT
        } else {
            PollFlags::IN
        };
        let at_master = self
            .master_open
            .then(|| watch(&mut fds, &mut used, self.master.as_fd(), master_flags));
        // In the background after `bg`, look every so often for the `fg`
        // that gives the keyboard back (`terminal::is_paused`).
        const BACKGROUND_CHECK: Timespec = Timespec {
            tv_sec: 0,
            tv_nsec: 100_000_000,
        };
        let paused = terminal::is_paused();
        let hold = signals.hold();
        let timeout = if paused {
            Some(&BACKGROUND_CHECK)
        } else {
            hold.as_ref()
        };
        let polled = rustix::event::poll(&mut fds[..used], timeout);
        if paused {
            terminal::resume_in_foreground();
        }
        if polled.is_err() {
            return false;
        }
        let revents = |at: Option<usize>| at.map_or(PollFlags::empty(), |i| fds[i].revents());
        let (socket_ready, signals_ready, keyboard_ready, master_ready) = (
            !fds[0].revents().is_empty(),
            !revents(at_signals).is_empty(),
            !revents(at_keyboard).is_empty(),
            revents(at_master),
        );
        if master_ready.intersects(PollFlags::IN | PollFlags::HUP | PollFlags::ERR) {
            self.show();
        }
        if master_ready.contains(PollFlags::OUT) {
            self.pass_on();
        }
        if keyboard_ready {
            self.read_keyboard(signals);
        }
        if signals_ready {
            let master = &self.master;
            signals.receive(|number| on_signal(master, number));
        }
        // A reply that has come (STARTED, say) is read before giving up.
        if !socket_ready {
            crate::reply::give_up_on_held_signal(signals);
        }
        socket_ready
    }

    /// After the program's status: goes on relaying until the worker has
    /// been reaped (the server then closes the connection) or the slave side
    /// is closed, then passes on whatever output is left, without waiting
    /// for more.
    pub fn finish(&mut self, socket: &OwnedFd, signals: &mut Forwarder) {
        while self.master_open {
            if self.wait(socket.as_fd(), signals) && connection_ended(socket) {
                break;
            }
        }
        while self.show() {}
    }

    /// Shows one read's worth of the program's output; false when there was
    /// nothing to read.
    fn show(&mut self) -> bool {
        let mut output = [0u8; CHUNK];
        match rustix::io::read(&self.master, &mut output) {
            Ok(0) => false,
            Ok(n) => {
                write_all(self.screen, &output[..n]);
                true
            }
            Err(Errno::AGAIN | Errno::INTR) => false,
            // EIO: no process has the slave side open any more.
            Err(_) => {
                self.master_open = false;
                false
            }
        }
    }

    /// Reads what the user typed and passes it on; stops the program and
    /// the client if it holds the program's suspend key.
    fn read_keyboard(&mut self, signals: &mut Forwarder) {
        match rustix::io::read(stdio_fd(0), &mut self.typed) {
            Ok(n) if n > 0 => {
                (self.typed_from, self.typed_to) = (0, n);
                // The master reads and sets the slave's modes: the
                // program's own, as its line discipline will apply them.
                let suspends = rustix::termios::tcgetattr(&self.master)
                    .is_ok_and(|modes| self.scanner.suspends(keys(&modes), &self.typed[..n]));
                let ignored = suspends && signals.program_ignores_suspend();
                self.pass_on();
                if suspends {
                    self.settle();
                    signals.suspend(ignored);
                }
            }
            Err(Errno::AGAIN | Errno::INTR) => {}
            // End of file or an error: the user's terminal has hung up.
            _ => self.keyboard_open = false,
        }
    }

    /// Shows what the line discipline makes of a suspend key before the
    /// client stops: the `^Z` it echoes, which the user expects before the
    /// shell's "Stopped", as a terminal shows it. The kernel handles typed
    /// bytes a moment after they are written, so this waits a little for
    /// them, and reads a bounded amount of output, however fast the program
    /// writes until it is stopped.
    fn settle(&mut self) {
        const SETTLE: Timespec = Timespec {
            tv_sec: 0,
            tv_nsec: 50_000_000,
        };
        let mut master = [PollFd::new(&self.master, PollFlags::IN)];
        if rustix::event::poll(&mut master, Some(&SETTLE)).is_ok_and(|ready| ready > 0) {
            for _ in 0..16 {
                if !self.show() {
                    break;
                }
            }
        }
    }

    /// Writes typed bytes to the pseudo-terminal as far as it takes them.
    fn pass_on(&mut self) {
        while self.typed_from < self.typed_to {
            match rustix::io::write(&self.master, &self.typed[self.typed_from..self.typed_to]) {
                Ok(n) => self.typed_from += n,
                Err(Errno::INTR) => {}
                Err(Errno::AGAIN) => return,
                // Nobody is left to read them.
                Err(_) => self.typed_from = self.typed_to,
            }
        }
    }
}

/// Puts `fd` in the next free entry of `fds`; returns the entry's index.
fn watch<'a>(
    fds: &mut [PollFd<'a>],
    used: &mut usize,
    fd: BorrowedFd<'a>,
    flags: PollFlags,
) -> usize {
    fds[*used] = PollFd::from_borrowed_fd(fd, flags);
    *used += 1;
    *used - 1
}

/// The keys that the program's terminal modes make special.
fn keys(modes: &Termios) -> Keys {
    let local = modes.local_modes;
    Keys::new(
        local.contains(LocalModes::ISIG),
        local.contains(LocalModes::ICANON | LocalModes::IEXTEN),
        modes.special_codes[SpecialCodeIndex::VSUSP],
        modes.special_codes[SpecialCodeIndex::VLNEXT],
    )
}

/// Handles a signal the pseudo-terminal needs; true when it must not also
/// be forwarded. A resize is copied onto the pseudo-terminal, whose kernel
/// sends SIGWINCH to the program's process group once the size has
/// changed, so the program never reads the old size after the signal. The
/// size may also have changed while the client was stopped.
fn on_signal(master: &OwnedFd, number: i32) -> bool {
    let resized = number == Signal::WINCH.as_raw();
    if resized || number == Signal::CONT.as_raw() {
        if let Ok(size) = rustix::termios::tcgetwinsize(stdio_fd(0)) {
            let _ = rustix::termios::tcsetwinsize(master, size);
        }
    }
    resized
}

/// Whether the server has closed the connection, which it does once it has
/// reaped the worker; anything still on it (the server's own `EXIT`) is of
/// no use after the first one.
fn connection_ended(socket: &OwnedFd) -> bool {
    let mut rest = [0u8; 64];
    match rustix::net::recv(socket, &mut rest, RecvFlags::DONTWAIT) {
        Ok((0, _)) => true,
        Ok(_) | Err(Errno::AGAIN | Errno::INTR) => false,
        Err(_) => true,
    }
}

/// Writes all of `bytes` to the user's terminal, or as much as a terminal
/// that has gone will take.
fn write_all(screen: BorrowedFd<'_>, mut bytes: &[u8]) {
    while !bytes.is_empty() {
        match rustix::io::write(screen, bytes) {
            Ok(n) => bytes = &bytes[n..],
            Err(Errno::INTR) => {}
            // Someone else made the terminal non-blocking: wait for room.
            Err(Errno::AGAIN) => {
                let _ = rustix::event::poll(
                    &mut [PollFd::from_borrowed_fd(screen, PollFlags::OUT)],
                    None,
                );
            }
            Err(_) => return,
        }
    }
}
