//! Plain python when warmfork cannot run the program: `WARMFORK_FALLBACK`.
//!
//! When no server answers, or the server cannot honour the request (a python
//! option such as `-O`, a protocol version it does not speak), and
//! `WARMFORK_FALLBACK` names an interpreter, the client becomes that
//! interpreter with the same arguments and environment, so a run is never
//! worse than plain python. A name without `/` is looked up in `PATH`.

use rustix::io::Errno;

use crate::cstr::CBuf;
use crate::failure::Failure;
use crate::signals;
use crate::start::Process;
use crate::terminal;

/// The longest interpreter path the client builds.
const MAX_PATH: usize = 4096;

/// Whether `WARMFORK_FALLBACK` names an interpreter.
pub fn is_set(process: &Process) -> bool {
    interpreter(process).is_some()
}

fn interpreter(process: &Process) -> Option<&'static [u8]> {
    process
        .var(b"WARMFORK_FALLBACK")
        .filter(|name| !name.is_empty())
}

/// Replaces this process with the fallback interpreter. Returns `None` when
/// no fallback is configured, or the failure to report when it cannot run.
pub fn exec(process: &mut Process) -> Option<Failure<'static>> {
    let name = interpreter(process)?;
    // The interpreter must start with the signal mask the client was given,
    // and the terminal as the user had it (`WARMFORK_PTY=1`).
    signals::release_all();
    terminal::release();
    let mut last = Errno::NOENT;
    if name.contains(&b'/') {
        if let Some(path) = CBuf::<MAX_PATH>::join(&[name]) {
            last = process.exec(path.as_c_str());
        }
    } else {
        let search = process
            .var(b"PATH")
            .unwrap_or(b"/usr/local/bin:/usr/bin:/bin");
        for dir in search.split(|&b| b == b':') {
            // An empty entry means the working directory, as for a shell.
            let dir: &[u8] = if dir.is_empty() { b"." } else { dir };
            let Some(path) = CBuf::<MAX_PATH>::join(&[dir, b"/", name]) else {
                continue;
            };
            match process.exec(path.as_c_str()) {
                Errno::NOENT | Errno::NOTDIR => {}
                // As a shell: a file found but not executable is what is
                // reported if no later one runs.
                Errno::ACCESS => last = Errno::ACCESS,
                errno => {
                    last = errno;
                    break;
                }
            }
        }
    }
    Some(Failure::Fallback { name, errno: last })
}
