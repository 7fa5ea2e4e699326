//! Handing the listening socket over to a fresh server (see `reload.rs` for
//! when and why): starting it with the socket, the lock and a ready pipe as
//! descriptors 3, 4 and 5, and, in the fresh server, reporting ready.

use std::ffi::{CString, c_char};
use std::os::fd::{AsRawFd, RawFd};

use rustix::fd::OwnedFd;
use rustix::io::Errno;

use crate::listener::Listener;
use crate::log;
use crate::pool::Process;
use crate::sigmask::{Blocked, default_caught_signals};

/// The names `LISTEN_FDNAMES` gives descriptors 3 and 4 on a hand-over: the
/// first says whose the socket file is, the server's (to remove when it
/// stops) or systemd's (left in place).
const FD_NAMES: &std::ffi::CStr = c"warmfork:warmfork-lock";
const FD_NAMES_SYSTEMD_SOCKET: &std::ffi::CStr = c"systemd:warmfork-lock";

/// The variable naming the descriptor a fresh server reports ready on.
const READY_FD_VAR: &std::ffi::CStr = c"WARMFORK_READY_FD";
const READY_FD: RawFd = 5;

/// What the fresh server has said on the ready pipe.
pub enum Said {
    Ready,
    Nothing,
    Closed,
}

/// Reads, without waiting, what the fresh server has said on the read end
/// `ready` of the pipe: a byte when it is ready, end of file when it exited
/// or closed the pipe without saying it.
pub fn said_ready(ready: &OwnedFd) -> Said {
    let mut byte = [0u8; 1];
    match rustix::io::read(ready, &mut byte) {
        Ok(1) => Said::Ready,
        Ok(_) => Said::Closed,
        Err(Errno::AGAIN | Errno::INTR) => Said::Nothing,
        Err(_) => Said::Closed,
    }
}

/// Where the fresh server's own messages (a traceback, say) are: it writes
/// to this server's standard error.
pub fn where_its_messages_went() -> String {
    match std::fs::read_link("/proc/self/fd/2") {
        Ok(path) if path.is_absolute() && path.is_file() => {
            format!("its own messages are in {}", path.display())
        }
        _ => "its own messages went to this server's standard error".into(),
    }
}

/// Starts `command` (the server's own command line) with `listener`'s
/// socket and lock as descriptors 3 and 4 and the write end of the ready
/// pipe as 5. Returns the process and the read end of the pipe.
pub fn spawn_replacement(
    command: &[CString],
    listener: &Listener,
) -> Result<(Process, OwnedFd), String> {
    let Some(program) = command.first() else {
        return Err("no command line to restart the server with".into());
    };
    let argv: Vec<*const c_char> = command
        .iter()
        .map(|arg| arg.as_ptr())
        .chain([std::ptr::null()])
        .collect();
    let (ready_read, ready_write) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
        .map_err(|e| format!("cannot create the ready pipe: {e}"))?;
    rustix::fs::fcntl_setfl(&ready_read, rustix::fs::OFlags::NONBLOCK)
        .map_err(|e| format!("cannot set up the ready pipe: {e}"))?;
    let [socket, lock] = listener.fds().map(|fd| fd.as_raw_fd());
    let names = if listener.owns_file() {
        FD_NAMES
    } else {
        FD_NAMES_SYSTEMD_SOCKET
    };
    let ready = ready_write.as_raw_fd();
    let cannot_exec = format!(
        "warmfork-server: cannot start a fresh server with {}",
        program.to_string_lossy()
    );
    // A signal that reaches the child before it execs must act as it would
    // on the fresh server, so signals wait, blocked, until the child has
    // dropped the server's handlers, as posix_spawn does it: `kill -TERM`
    // of the pid just logged stops the fresh server, however soon it comes.
    let blocked = Blocked::all();
    // SAFETY: the server is single-threaded, so the child may allocate and
    // call libc freely; it only rearranges descriptors, sets variables and
    // execs (or exits).
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        default_caught_signals();
        drop(blocked);
        // SAFETY: descriptor juggling on numbers this process owns, then
        // exec; nothing returns to the server's code.
        unsafe {
            // Out of the way first: any of them may already be 3, 4 or 5.
            let socket = libc::fcntl(socket, libc::F_DUPFD_CLOEXEC, 10);
            let lock = libc::fcntl(lock, libc::F_DUPFD_CLOEXEC, 10);
            let ready = libc::fcntl(ready, libc::F_DUPFD_CLOEXEC, 10);
            // dup2 leaves the copies without FD_CLOEXEC: they survive exec.
            libc::dup2(socket, 3);
            libc::dup2(lock, 4);
            libc::dup2(ready, READY_FD);
            let listen_pid = CString::new(libc::getpid().to_string()).unwrap_or_default();
            libc::setenv(c"LISTEN_PID".as_ptr(), listen_pid.as_ptr(), 1);
            libc::setenv(c"LISTEN_FDS".as_ptr(), c"2".as_ptr(), 1);
            libc::setenv(c"LISTEN_FDNAMES".as_ptr(), names.as_ptr(), 1);
            libc::setenv(READY_FD_VAR.as_ptr(), c"5".as_ptr(), 1);
            crate::limits::restore_descriptor_limit();
            libc::execv(program.as_ptr(), argv.as_ptr());
            let message = format!("{cannot_exec}: {}\n", std::io::Error::last_os_error());
            libc::write(2, message.as_ptr().cast(), message.len());
            libc::_exit(127);
        }
    }
    drop(blocked);
    drop(ready_write);
    let pid = crate::pool::forked(pid).ok_or_else(|| {
        format!(
            "cannot fork the fresh server: {}",
            std::io::Error::last_os_error()
        )
    })?;
    Ok((Process::of_child(pid, "the fresh server")?, ready_read))
}

/// In a fresh server, just before it serves: tells the server that started
/// it, through the inherited pipe `ready`, that it is ready; from here on
/// the socket file is this server's.
pub fn report_ready(ready: Option<OwnedFd>, listener: &Listener) {
    listener.own();
    if let Some(ready) = ready {
        if let Err(e) = rustix::io::write(&ready, b"!") {
            log::warning(&format!(
                "cannot tell the server that started this one that it is ready: {e}"
            ));
        }
    }
}
