//! Replacing the server with a fresh one when code it loaded has changed.
//!
//! The replacement is the server's own command line, started again with the
//! listening socket and the lock handed over as descriptors 3 and 4 (the
//! systemd socket-activation convention, `LISTEN_FDS=2`, named
//! `warmfork:warmfork-lock`). Clients keep connecting to the same socket and
//! wait in its backlog while the replacement warms up, so no run sees stale
//! code and none is refused. The old server stops accepting, lets its runs
//! in progress finish, and exits.

use std::ffi::{CString, c_char};
use std::os::fd::AsRawFd;

use rustix::process::Pid;

use crate::listener::Listener;

/// The names `LISTEN_FDNAMES` gives descriptors 3 and 4 on a hand-over.
pub const FD_NAMES: &str = "warmfork:warmfork-lock";

/// Starts `command` (the server's own command line) with `listener`'s
/// socket and lock as descriptors 3 and 4.
pub fn spawn_replacement(command: &[CString], listener: &Listener) -> Result<Pid, String> {
    let Some(program) = command.first() else {
        return Err("no command line to restart the server with".into());
    };
    let argv: Vec<*const c_char> = command
        .iter()
        .map(|arg| arg.as_ptr())
        .chain([std::ptr::null()])
        .collect();
    let [socket, lock] = listener.fds().map(|fd| fd.as_raw_fd());
    // SAFETY: the server is single-threaded, so the child may allocate and
    // call libc freely; it only rearranges descriptors, sets three
    // variables and execs (or exits).
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        // SAFETY: descriptor juggling on numbers this process owns, then
        // exec; nothing returns to the server's code.
        unsafe {
            // Out of the way first: the socket or lock may already be 3 or 4.
            let socket = libc::fcntl(socket, libc::F_DUPFD, 10);
            let lock = libc::fcntl(lock, libc::F_DUPFD, 10);
            libc::dup2(socket, 3);
            libc::dup2(lock, 4);
            let listen_pid = CString::new(libc::getpid().to_string()).unwrap_or_default();
            libc::setenv(c"LISTEN_PID".as_ptr(), listen_pid.as_ptr(), 1);
            libc::setenv(c"LISTEN_FDS".as_ptr(), c"2".as_ptr(), 1);
            let names = CString::new(FD_NAMES).unwrap_or_default();
            libc::setenv(c"LISTEN_FDNAMES".as_ptr(), names.as_ptr(), 1);
            libc::execv(program.as_ptr(), argv.as_ptr());
            libc::_exit(127);
        }
    }
    Pid::from_raw(pid).ok_or_else(|| {
        format!(
            "cannot fork the replacement server: {}",
            std::io::Error::last_os_error()
        )
    })
}
