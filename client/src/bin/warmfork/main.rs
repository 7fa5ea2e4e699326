//! `warmfork`: run a Python program in a warm interpreter, as if by `python`.
//!
//! The client interprets none of its arguments. It connects to the server's
//! socket, sends one `RUN` frame (its argv, environment and umask, with its
//! stdin, stdout, stderr and working directory as descriptors), waits for the
//! program's status and ends the same way the program did.
//!
//! It is static, libc-free and allocation-free: the kernel runs it directly,
//! there is nothing to load or initialise, and a run costs a handful of
//! system calls (see `scripts/bench`). See `protocol.md` for the wire format.
//!
//! With `WARMFORK_PTY=1` at a terminal, the program gets a pseudo-terminal
//! of its own instead, which the client relays (`pty.rs`).

#![no_std]
#![no_main]

mod autostart;
mod connect;
mod cstr;
mod failure;
mod fallback;
mod mem;
mod proc_status;
mod pty;
mod relay;
mod reply;
mod request;
mod signals;
mod start;
mod suspend;
mod syscall;
mod terminal;
mod watchdog;

use warmfork::reply::MAX_REPLY_LEN;

use crate::failure::Failure;
use crate::start::Process;

fn main(process: &mut Process) -> ! {
    // Before any other descriptor is opened: see `Descriptors::gather`.
    let mut fds = request::Descriptors::gather();
    // From here on, signals meant for the program are held, not lost.
    let status = proc_status::ProcStatus::read();
    let mut signals = signals::Forwarder::install(status.ignored);
    let path = match connect::SocketPath::of(process) {
        Ok(path) => path,
        Err(failure) => failure.exit(),
    };
    let relay = match pty::start(process, &mut fds) {
        Ok(relay) => relay,
        Err(failure) => failure.exit(),
    };
    if relay.is_some() {
        // Before connecting: a run started in the background stops here
        // (SIGTTOU) until `fg`, not with a request half-sent to the server.
        terminal::enter_raw();
    }
    let mut buf = [0; MAX_REPLY_LEN];
    let mut request = Request {
        process,
        fds: &mut fds,
        status: &status,
        relay,
    };
    let failure = match run(&mut request, &path, &mut buf, &mut signals) {
        Ok(status) => reply::finish(status),
        Err(failure) => failure,
    };
    if failure.allows_fallback() {
        if failure.warns_before_fallback() && fallback::is_set(process) {
            failure.report();
        }
        if let Some(fallback_failure) = fallback::exec(process) {
            fallback_failure.exit();
        }
    }
    failure.exit()
}

/// What the client sends, and the pseudo-terminal it relays, if any.
struct Request<'a> {
    process: &'a Process,
    fds: &'a mut request::Descriptors,
    /// The signals it ignores and its umask.
    status: &'a proc_status::ProcStatus,
    relay: Option<relay::Relay>,
}

fn run<'a>(
    request: &mut Request<'_>,
    path: &'a connect::SocketPath,
    buf: &'a mut [u8; MAX_REPLY_LEN],
    signals: &mut signals::Forwarder,
) -> Result<warmfork::ExitStatus, Failure<'a>> {
    request.fds.check()?;
    let socket = match connect::connect_waiting(path, signals) {
        Err(failure @ Failure::NoServer { .. }) => {
            match autostart::start(request.process, path, signals) {
                Some(started) => started?,
                None => return Err(failure),
            }
        }
        connected => connected?,
    };
    request::send(
        &socket,
        request.process,
        request.status.umask().bits(),
        request.status.ignored,
        request.fds,
        signals,
    )?;
    request.fds.close_sent();
    let status = reply::wait(&socket, buf, signals, request.relay.as_mut());
    if let (Ok(_), Some(relay)) = (&status, &mut request.relay) {
        relay.finish(&socket, signals);
    }
    // The process ends right after this; closing is left to the kernel.
    core::mem::forget(socket);
    status
}
