//! The terminal's watchdog under `WARMFORK_PTY=1`: a tiny child process
//! that puts the user's terminal back when the client dies without running
//! any code of its own (SIGKILL, or a signal whose default action kills).
//!
//! The watchdog gets, by the fork, the terminal (standard input) and its
//! modes as found; the client keeps the only other end of a socket pair and
//! tells it, one byte at a time, whether the terminal is raw. When that
//! socket reaches end-of-file, the client is gone (or has become another
//! program); if the terminal was raw then, the watchdog restores it and
//! exits. The client's last word before a normal exit is "restored", so the
//! watchdog then leaves the terminal alone.
//!
//! It is forked before the client opens the pseudo-terminal or connects, so
//! it holds neither; it closes the client's stdout and stderr (a pipe to
//! `| cat` must not wait for it) and keeps only the terminal, the socket
//! pair's end and descriptors that hold nothing up (the client's working
//! directory and signalfd). A socket pair rather than a pipe: the client
//! writes with `MSG_NOSIGNAL`, so a watchdog killed on its own never brings
//! the client down with SIGPIPE.

use rustix::fd::OwnedFd;
use rustix::io::Errno;
use rustix::net::{AddressFamily, SendFlags, SocketFlags, SocketType};
use rustix::process::{Pid, WaitId, WaitIdOptions};
use rustix::termios::Termios;

use crate::{syscall, terminal};

/// The client has put the terminal in raw mode.
const RAW: u8 = b'r';
/// The client has given the terminal back its modes as found.
const RESTORED: u8 = b'k';
/// The client becomes another program: exit now, restore nothing.
const QUIT: u8 = b'q';

/// The client's side of the watchdog.
#[derive(Debug)]
pub struct Watchdog {
    line: OwnedFd,
    pid: Pid,
}

impl Watchdog {
    /// Forks the watchdog for a terminal whose modes are `found` and, while
    /// the client relays, `raw`. `None` when it cannot be started: the
    /// client then runs without it, and only a SIGKILL would leave the
    /// terminal raw.
    pub fn start(found: &Termios, raw: &Termios) -> Option<Watchdog> {
        let (line, far_end) = rustix::net::socketpair(
            AddressFamily::UNIX,
            SocketType::STREAM,
            SocketFlags::CLOEXEC,
            None,
        )
        .ok()?;
        // SAFETY: the client has a single thread, so the child is a plain
        // copy of it; it only makes system calls and exits.
        match unsafe { syscall::fork() }.ok()? {
            Some(pid) => Some(Watchdog { line, pid }),
            None => {
                drop(line);
                watch(&far_end, found, raw)
            }
        }
    }

    /// Says the terminal is about to be raw.
    pub fn tell_raw(&self) {
        self.tell(RAW);
    }

    /// Says the terminal has its modes as found again.
    pub fn tell_restored(&self) {
        self.tell(RESTORED);
    }

    /// Ends the watchdog and reaps it, before the client execs.
    pub fn dismiss(&self) {
        self.tell(QUIT);
        let _ = rustix::process::waitid(WaitId::Pid(self.pid), WaitIdOptions::EXITED);
    }

    fn tell(&self, word: u8) {
        // If the watchdog is gone, there is nobody left to tell.
        let _ = rustix::net::send(&self.line, &[word], SendFlags::NOSIGNAL);
    }
}

/// The watchdog's whole life: wait for the client to go, restore the
/// terminal if it was left raw, exit.
fn watch(line: &OwnedFd, found: &Termios, raw: &Termios) -> ! {
    // `kill %1` and the terminal's hang-up signal the client's whole process
    // group; the watchdog must outlive the client to be of use. So it
    // blocks every signal (SIGKILL and SIGSTOP cannot be) and takes a
    // process group of its own. A blocked SIGTTOU also lets it restore the
    // terminal from the background.
    let _ = syscall::block(!0);
    let _ = rustix::process::setpgid(None, None);
    // SAFETY: the watchdog never uses its standard output or error; no
    // object in this process owns them, so nothing can use them after this.
    unsafe {
        rustix::io::close(1);
        rustix::io::close(2);
    }
    let mut is_raw = false;
    let mut words = [0u8; 64];
    loop {
        match rustix::io::read(line, &mut words) {
            Ok(0) => break,
            Ok(n) => {
                for &word in &words[..n] {
                    match word {
                        RAW => is_raw = true,
                        RESTORED => is_raw = false,
                        _ => syscall::exit(0),
                    }
                }
            }
            Err(Errno::INTR) => {}
            Err(_) => break,
        }
    }
    if is_raw {
        terminal::put_back(found, raw);
    }
    syscall::exit(0)
}
