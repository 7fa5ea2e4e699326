//! Spotting the suspend key (Ctrl-Z) in what the user types under
//! `WARMFORK_PTY=1`, as the pseudo-terminal's line discipline will read it.
//!
//! The program's process group is alone in its session, so the kernel
//! discards the SIGTSTP the pseudo-terminal sends it for Ctrl-Z (an orphaned
//! process group must not stop on a terminal's signal: nobody would continue
//! it). The client therefore looks for the key itself, in the bytes it
//! passes on, and stops the program and itself as it does without a
//! pseudo-terminal. Only the program's own settings say which byte that is
//! and whether it is a key at all (a curses program turns `ISIG` off and
//! reads Ctrl-Z as a byte).
//!
//! Pure logic without system calls, so that `client/tests/suspend_key.rs`
//! can include this file and test it on the host.

/// What the program's terminal settings make of typed bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Keys {
    /// The byte that suspends (`VSUSP`), if `ISIG` is on and it is not
    /// disabled.
    pub suspend: Option<u8>,
    /// The byte that makes the next one literal (`VLNEXT`), if the line
    /// discipline honours it: only with `ICANON` and `IEXTEN` both on.
    pub literal_next: Option<u8>,
}

impl Keys {
    /// The keys from the terminal flags and control characters; a control
    /// character of 0 (`_POSIX_VDISABLE` on Linux) is disabled.
    pub fn new(isig: bool, icanon_and_iexten: bool, vsusp: u8, vlnext: u8) -> Keys {
        let enabled = |byte: u8| (byte != 0).then_some(byte);
        Keys {
            suspend: if isig { enabled(vsusp) } else { None },
            literal_next: if icanon_and_iexten {
                enabled(vlnext)
            } else {
                None
            },
        }
    }
}

/// The state the line discipline carries from one byte to the next that
/// matters here: a pending literal-next.
#[derive(Debug, Default)]
pub struct Scanner {
    literal: bool,
}

impl Scanner {
    /// Whether `typed`, read with settings `keys`, holds a suspend key the
    /// line discipline will act on. The line discipline checks signal keys
    /// before literal-next, and a byte after literal-next is only data.
    pub fn suspends(&mut self, keys: Keys, typed: &[u8]) -> bool {
        let mut suspends = false;
        for &byte in typed {
            if core::mem::take(&mut self.literal) {
                continue;
            }
            if Some(byte) == keys.suspend {
                suspends = true;
            } else if Some(byte) == keys.literal_next {
                self.literal = true;
            }
        }
        suspends
    }
}
