//! `WARMFORK_PTY=1`: the program gets a pseudo-terminal of its own as its
//! controlling terminal, and the client relays between it and the user's.
//!
//! A worker is a session of its own with no controlling terminal, so
//! opening `/dev/tty` fails (as do the prompt and full-screen libraries that
//! open it) when the program is handed the user's terminal directly, and
//! the kernel's job control cannot apply to its reads. In this mode the client
//! opens a pseudo-terminal with the user's terminal's modes and size, sends
//! its slave in place of each standard descriptor that is the user's
//! terminal (redirected ones go as they are), and asks the worker to make it
//! its controlling terminal (`CONTROLLING_TTY`, see protocol.md). The relay
//! itself is `relay.rs`; the user's terminal modes are `terminal.rs`'s.
//!
//! The mode takes effect only when standard input and output are a terminal
//! (standard input alone for `WARMFORK_PTY=always`, see [`start`]), and
//! costs nothing (not one system call) when `WARMFORK_PTY` is not set.

use rustix::fd::{BorrowedFd, OwnedFd};
use rustix::fs::{Mode, OFlags};
use rustix::io::Errno;
use rustix::pty::OpenptFlags;
use rustix::termios::OptionalActions;
use warmfork::FdSet;

use crate::failure::Failure;
use crate::relay::Relay;
use crate::request::Descriptors;
use crate::start::{Process, stdio_fd};
use crate::terminal;

/// Sets up pseudo-terminal mode if `WARMFORK_PTY=1` and standard input and
/// output are a terminal (with `WARMFORK_PTY=always`, standard input
/// alone): saves the terminal's modes, starts the watchdog, opens the
/// pseudo-terminal and puts its slave in `fds`. Returns the relay, or
/// `None` when the mode is off.
///
/// Where standard output goes elsewhere, the run is often one end of a
/// pipeline whose other end uses the terminal too (`| less`): the client
/// would take the pager's keys, and put back the modes it found over the
/// pager's, which the pager would then leave raw. Python there uses the
/// terminal only as its standard input, and so does the plain mode.
pub fn start(process: &Process, fds: &mut Descriptors) -> Result<Option<Relay>, Failure<'static>> {
    // Set, not empty and not 0, as python reads its own boolean variables.
    let setting = process.var(b"WARMFORK_PTY");
    if matches!(setting, None | Some(b"" | b"0")) {
        return Ok(None);
    }
    let user = stdio_fd(0);
    let on_terminal = terminal_slots(user, fds);
    if !on_terminal.contains(FdSet::STDOUT) && setting != Some(b"always") {
        return Ok(None);
    }
    // A run started in the background first waits to be in the foreground:
    // `tcdrain` makes the kernel stop it with SIGTTOU until `fg`, as it
    // stops any program that sets terminal modes there. Otherwise the modes
    // saved would be those of the shell's line editor, which a background
    // job sees, not those the shell gives a job in the foreground. Either
    // call fails on anything but a terminal, and in a background the kernel
    // will not stop (an orphaned one): then run as without the variable, as
    // python would have no terminal of its own either.
    if rustix::termios::tcdrain(user).is_err() {
        return Ok(None);
    }
    let Ok(modes) = rustix::termios::tcgetattr(user) else {
        return Ok(None);
    };
    let raw = terminal::raw(&modes, !on_terminal.contains(FdSet::STDOUT));
    terminal::save(modes.clone(), raw);
    let (master, slave) = open(user, &modes).map_err(|errno| Failure::System {
        call: "open a pseudo-terminal (WARMFORK_PTY=1)",
        errno,
    })?;
    // The program's output goes where its stdout would have gone, falling
    // back to stderr and then to the terminal that is standard input.
    let screen = [(1, FdSet::STDOUT), (2, FdSet::STDERR)]
        .into_iter()
        .find(|&(_, slot)| on_terminal.contains(slot))
        .map_or(user, |(fd, _)| stdio_fd(fd));
    fds.give_terminal(slave, on_terminal);
    Ok(Some(Relay::new(master, screen)))
}

/// A pseudo-terminal whose slave has the user's terminal's modes and size:
/// `(master, slave)`, both close-on-exec, the master non-blocking, neither
/// becoming this process's controlling terminal.
fn open(
    user: BorrowedFd<'_>,
    modes: &rustix::termios::Termios,
) -> Result<(OwnedFd, OwnedFd), Errno> {
    // What `posix_openpt` does, with `O_NONBLOCK` so that the relay never
    // waits on a program that does not read its input.
    let master = rustix::fs::open(
        c"/dev/ptmx",
        OFlags::RDWR | OFlags::NOCTTY | OFlags::CLOEXEC | OFlags::NONBLOCK,
        Mode::empty(),
    )?;
    rustix::pty::unlockpt(&master)?;
    // The slave by descriptor (`TIOCGPTPEER`), not by a name another
    // process could race for.
    let slave = rustix::pty::ioctl_tiocgptpeer(
        &master,
        OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC,
    )?;
    rustix::termios::tcsetattr(&slave, OptionalActions::Now, modes)?;
    if let Ok(size) = rustix::termios::tcgetwinsize(user) {
        let _ = rustix::termios::tcsetwinsize(&master, size);
    }
    Ok((master, slave))
}

/// The standard descriptors that are the user's terminal: standard input,
/// and stdout and stderr when they are the same character device. The
/// others (`| cat`, `> file`, `2>log`) reach the program as they are, as
/// they would reach python.
fn terminal_slots(user: BorrowedFd<'_>, fds: &Descriptors) -> FdSet {
    let device = |fd: BorrowedFd<'_>| {
        rustix::fs::fstat(fd)
            .ok()
            .filter(|stat| rustix::fs::FileType::from_raw_mode(stat.st_mode).is_char_device())
            .map(|stat| stat.st_rdev)
    };
    let terminal = device(user);
    [(1, FdSet::STDOUT), (2, FdSet::STDERR)]
        .into_iter()
        .filter(|&(fd, slot)| {
            fds.carries(slot) && terminal.is_some() && device(stdio_fd(fd)) == terminal
        })
        .fold(FdSet::STDIN, |set, (_, slot)| set.with(slot))
}
