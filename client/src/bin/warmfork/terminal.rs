//! The user's terminal under `WARMFORK_PTY=1`: its modes as the client
//! found them, raw mode while the client relays, and the modes put back on
//! every way out.
//!
//! While the client relays a pseudo-terminal, the user's terminal must pass
//! every byte through untouched (raw mode): the pseudo-terminal does the
//! echoing, line editing and Ctrl-C itself. A shell does not put a terminal
//! back after a program that left it raw (bash even adopts the new modes
//! when the program exits normally), so the client restores it on each of
//! its exits: the program's status (`reply::finish`), each failure and the
//! panic handler (`Failure::exit`), the fallback interpreter
//! (`fallback::exec`), and a stop (Ctrl-Z, `while_stopped`). Deaths that
//! run no code, SIGKILL first, are the watchdog's (`watchdog.rs`).
//!
//! The state lives in statics because those exits are reached from
//! anywhere, the panic handler included. The client has one thread; the
//! atomics only make the statics shareable.

use core::cell::UnsafeCell;
use core::mem::MaybeUninit;
use core::sync::atomic::{AtomicU8, Ordering};

use rustix::termios::{OptionalActions, Termios};

use crate::start::stdio_fd;
use crate::watchdog::Watchdog;

/// `MODE`: not in pseudo-terminal mode; nothing was saved.
const OFF: u8 = 0;
/// `MODE`: the terminal has the modes the client found.
const AS_FOUND: u8 = 1;
/// `MODE`: the client has put the terminal in raw mode.
const RAW: u8 = 2;
/// `MODE`: as found, while the job runs in the background after `bg`; raw
/// again once it is in the foreground (`fg`).
const PAUSED: u8 = 3;

static MODE: AtomicU8 = AtomicU8::new(OFF);
static SAVED: Saved = Saved(UnsafeCell::new(MaybeUninit::uninit()));

/// The place of the saved [`Modes`].
struct Saved(UnsafeCell<MaybeUninit<Modes>>);

// SAFETY: written once, by `save`, before `MODE` leaves `OFF`, and only read
// after that, on the client's only thread (the watchdog is another process
// with its own copy).
unsafe impl Sync for Saved {}

/// The user's terminal's modes, and the watchdog that knows them.
#[derive(Debug)]
struct Modes {
    /// As the client found them.
    found: Termios,
    /// While the client relays.
    raw: Termios,
    watchdog: Option<Watchdog>,
}

/// The terminal whose modes are saved: standard input, which pseudo-terminal
/// mode requires to be the user's terminal.
fn tty() -> rustix::fd::BorrowedFd<'static> {
    stdio_fd(0)
}

fn saved() -> Option<&'static Modes> {
    if MODE.load(Ordering::Relaxed) == OFF {
        return None;
    }
    // SAFETY: `MODE` is not `OFF`, so `save` has initialised `SAVED`, which
    // nothing writes again.
    Some(unsafe { (*SAVED.0.get()).assume_init_ref() })
}

/// Remembers the terminal's modes as found and the raw modes for the
/// relay, and starts the watchdog that restores them if the client dies
/// without running any code. Called once, before the client opens the
/// pseudo-terminal or connects: the watchdog is to hold neither.
pub fn save(found: Termios, raw: Termios) {
    if MODE.load(Ordering::Relaxed) != OFF {
        return;
    }
    let watchdog = Watchdog::start(&found, &raw);
    // SAFETY: `MODE` is `OFF`, so nothing has read `SAVED` or holds a
    // reference to it; this is its only write.
    unsafe {
        (*SAVED.0.get()).write(Modes {
            found,
            raw,
            watchdog,
        })
    };
    MODE.store(AS_FOUND, Ordering::Relaxed);
}

/// `found` in raw mode (`cfmakeraw`): every typed byte passes unchanged,
/// nothing is echoed, no key sends a signal. Output processing (`OPOST`,
/// which turns `\n` into `\r\n`) stays as found when `keep_output` is set:
/// when the program's stdout is not the terminal (`| cat`), another
/// process writes to the terminal meanwhile and needs it. The relayed
/// `\r\n` of the pseudo-terminal then shows as it would have anyway.
pub fn raw(found: &Termios, keep_output: bool) -> Termios {
    let mut raw = found.clone();
    raw.make_raw();
    if keep_output {
        raw.output_modes = found.output_modes;
    }
    raw
}

/// Puts the user's terminal in raw mode, if its modes were saved.
pub fn enter_raw() {
    let Some(modes) = saved() else {
        return;
    };
    if MODE.load(Ordering::Relaxed) == RAW {
        return;
    }
    // The watchdog hears first: dying between the two calls must leave it
    // restoring, not trusting a terminal that is already raw.
    if let Some(watchdog) = &modes.watchdog {
        watchdog.tell_raw();
    }
    // Failing here (the terminal hung up) leaves nothing to restore; the
    // relay still runs, so the program's status is not lost.
    let _ = rustix::termios::tcsetattr(tty(), OptionalActions::Now, &modes.raw);
    MODE.store(RAW, Ordering::Relaxed);
}

/// Gives the user's terminal back its modes as found, if the client changed
/// them. Safe to call on any path, any number of times.
pub fn restore() {
    let Some(modes) = saved() else {
        return;
    };
    match MODE.load(Ordering::Relaxed) {
        RAW => {}
        // Already as found, and the watchdog told so.
        PAUSED => return MODE.store(AS_FOUND, Ordering::Relaxed),
        _ => return,
    }
    let _ = rustix::termios::tcsetattr(tty(), OptionalActions::Now, &modes.found);
    MODE.store(AS_FOUND, Ordering::Relaxed);
    // Also the watchdog's disarming: when this process ends next, the
    // watchdog finds the terminal already restored.
    if let Some(watchdog) = &modes.watchdog {
        watchdog.tell_restored();
    }
}

/// Before this process becomes another program: restores the terminal and
/// ends the watchdog, so that it is not left to the new program as a child
/// it never started.
pub fn release() {
    restore();
    if let Some(watchdog) = saved().and_then(|modes| modes.watchdog.as_ref()) {
        watchdog.dismiss();
    }
}

/// Whether the client relays the keyboard: the terminal is raw, so the
/// client is in the foreground. In the background (after `bg`) a read of
/// the terminal would stop the client with SIGTTIN, and the keys are the
/// shell's.
pub fn is_raw() -> bool {
    MODE.load(Ordering::Relaxed) == RAW
}

/// Runs `stop`, which stops this process, with the terminal's modes as found
/// for as long as it is stopped (the shell prints its prompt and reads a
/// line), and raw again once it continues in the foreground (`fg`), if it
/// was raw before. Continued in the background (`bg`), it stays as found and
/// the program goes on as it would under python, until
/// `resume_in_foreground` sees the `fg` that follows.
pub fn while_stopped(stop: impl FnOnce()) {
    // Stopped again in the background (`kill -TSTP`), it is still to be
    // raw at the next `fg`.
    let was_raw = is_raw() || is_paused();
    restore();
    stop();
    if was_raw {
        // Not raw in the background: setting modes there would stop the
        // client with SIGTTOU while the program it relays runs on.
        MODE.store(PAUSED, Ordering::Relaxed);
        resume_in_foreground();
    }
}

/// Whether the job runs in the background after `bg`, its terminal as
/// found. Nothing tells a running process that `fg` gave it the terminal
/// (bash sends no SIGCONT to a job that runs), so the relay then calls
/// `resume_in_foreground` every so often.
pub fn is_paused() -> bool {
    MODE.load(Ordering::Relaxed) == PAUSED
}

/// Makes the terminal raw again if the job had been sent to the background
/// by `bg` and is now in the foreground.
pub fn resume_in_foreground() {
    if !is_paused() {
        return;
    }
    let foreground =
        rustix::termios::tcgetpgrp(tty()).is_ok_and(|group| group == rustix::process::getpgrp());
    if foreground {
        enter_raw();
    }
}

/// In the watchdog, after the client has died with the terminal raw: puts
/// back the modes as `found`, unless someone else (a shell that restores
/// the terminal after a job killed by a signal, as bash does) already
/// changed it from the `raw` modes the client set.
pub fn put_back(found: &Termios, raw: &Termios) {
    let Ok(now) = rustix::termios::tcgetattr(tty()) else {
        return;
    };
    let untouched = now.input_modes == raw.input_modes
        && now.output_modes == raw.output_modes
        && now.local_modes == raw.local_modes;
    if untouched {
        let _ = rustix::termios::tcsetattr(tty(), OptionalActions::Now, found);
    }
}
