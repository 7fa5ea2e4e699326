//! The client's search for Ctrl-Z in typed bytes under `WARMFORK_PTY=1`
//! (`src/bin/warmfork/suspend.rs`), which must read them as the
//! pseudo-terminal's line discipline does. The binary builds only without
//! std, so its pure module is included here and tested on the host.

#[path = "../src/bin/warmfork/suspend.rs"]
mod suspend;

use suspend::{Keys, Scanner};

const CTRL_Z: u8 = 0x1a;
const CTRL_V: u8 = 0x16;

/// A line-editing program's settings: `ISIG`, `ICANON` and `IEXTEN` on.
fn cooked() -> Keys {
    Keys::new(true, true, CTRL_Z, CTRL_V)
}

#[test]
fn ctrl_z_suspends_at_a_cooked_terminal() {
    assert!(Scanner::default().suspends(cooked(), b"abc\x1a"));
    assert!(!Scanner::default().suspends(cooked(), b"abc\n"));
}

#[test]
fn ctrl_z_is_a_byte_when_the_program_turned_isig_off() {
    // curses' raw(): the program reads Ctrl-Z itself.
    let raw = Keys::new(false, false, CTRL_Z, CTRL_V);
    assert!(!Scanner::default().suspends(raw, &[CTRL_Z]));
}

#[test]
fn a_disabled_suspend_key_never_suspends() {
    // `stty susp undef` sets VSUSP to 0, which is then an ordinary NUL byte.
    let keys = Keys::new(true, true, 0, CTRL_V);
    assert!(!Scanner::default().suspends(keys, b"\0\x1a"));
}

#[test]
fn the_suspend_key_is_whatever_the_program_set() {
    let keys = Keys::new(true, true, b'q', CTRL_V);
    assert!(Scanner::default().suspends(keys, b"q"));
    assert!(!Scanner::default().suspends(keys, &[CTRL_Z]));
}

#[test]
fn ctrl_v_makes_the_next_ctrl_z_literal_even_across_reads() {
    let mut scanner = Scanner::default();
    assert!(!scanner.suspends(cooked(), &[b'a', CTRL_V]));
    assert!(!scanner.suspends(cooked(), &[CTRL_Z]));
    assert!(
        scanner.suspends(cooked(), &[CTRL_Z]),
        "only one byte is literal"
    );
}

#[test]
fn ctrl_v_is_data_without_icanon() {
    // The line discipline honours literal-next only in canonical mode.
    let keys = Keys::new(true, false, CTRL_Z, CTRL_V);
    assert!(Scanner::default().suspends(keys, &[CTRL_V, CTRL_Z]));
}

#[test]
fn a_suspend_key_that_is_also_literal_next_suspends() {
    // Signal keys are checked first.
    let keys = Keys::new(true, true, CTRL_Z, CTRL_Z);
    assert!(Scanner::default().suspends(keys, &[CTRL_Z]));
}
