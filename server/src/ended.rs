//! Which runs are over: a worker notes, in memory it shares with the
//! server, that it has sent its run's status. A client that hangs up
//! before that has died during the run, and the server hangs up the
//! program's whole process group, as a terminal's hang-up reaches the
//! foreground group; one that hangs up after it has just read its status,
//! and the children the program left running are left alone, as python's
//! are.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};

use rustix::process::Pid;

/// Slots, one per worker by its pid (modulo): 64 KiB. Each holds the pid
/// of the worker that filled it, so that two workers sharing a slot are
/// told apart.
const SLOTS: usize = 16 * 1024;

type Slots = [AtomicU32; SLOTS];

static ENDED: OnceLock<Option<&'static Slots>> = OnceLock::new();

/// Maps the slots, in the server before it forks its workers (the first
/// call maps them; later ones, from a second `serve`, keep them).
pub fn prepare() {
    // SAFETY: zero bytes are empty slots, only used through the atomics.
    ENDED.get_or_init(|| unsafe { crate::maps::shared_zeroed() });
}

/// Worker `pid`'s slot, and the value that says it has sent its status.
fn slot(pid: Pid) -> Option<(&'static AtomicU32, u32)> {
    let pid = pid.as_raw_nonzero().get().unsigned_abs();
    let slots = ENDED.get().copied().flatten()?;
    Some((&slots[pid as usize % SLOTS], pid))
}

/// In a worker: its run's status is about to go out.
pub fn mark(pid: Pid) {
    if let Some((slot, sent)) = slot(pid) {
        slot.store(sent, Ordering::Release);
    }
}

/// Whether worker `pid` has sent its run's status; `None` when this cannot
/// be known (the slots could not be mapped).
pub fn status_sent(pid: Pid) -> Option<bool> {
    slot(pid).map(|(slot, sent)| slot.load(Ordering::Acquire) == sent)
}

/// In the server, once worker `pid` is reaped: its slot is free again.
pub fn forget(pid: Pid) {
    if let Some((slot, sent)) = slot(pid) {
        let _ = slot.compare_exchange(sent, 0, Ordering::AcqRel, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_marked_worker_has_sent_its_status_until_it_is_forgotten() {
        prepare();
        let pid = Pid::from_raw(4_000_001).expect("a pid");
        let same_slot = Pid::from_raw(4_000_001 + SLOTS as i32).expect("a pid");
        assert_eq!(status_sent(pid), Some(false));
        mark(pid);
        assert_eq!(status_sent(pid), Some(true));
        // Another worker in the same slot is not taken for this one.
        assert_eq!(status_sent(same_slot), Some(false));
        forget(same_slot);
        assert_eq!(status_sent(pid), Some(true));
        forget(pid);
        assert_eq!(status_sent(pid), Some(false));
    }
}
