//! Moving a big warm heap onto transparent huge pages, so that forking stays
//! cheap however much the warm-up loaded.
//!
//! `fork` copies the page tables of every private mapping: one entry per
//! 4 KiB page, about 10 ms for 1 GiB of heap here, paid on every fork and so
//! on every run once the pool drains. A 2 MiB huge page needs one entry
//! where small pages need 512, which brings that back to the cost of an empty
//! server. After warm-up the server asks the kernel (`MADV_COLLAPSE`, Linux
//! 6.1+) to move each fully resident 2 MiB stretch of its anonymous memory
//! onto a huge page. Stretches with holes are left alone: collapsing them
//! would fill the holes and grow the server. Python's objects form such
//! stretches because `arenas.rs` keeps pymalloc's arenas side by side. A
//! worker that writes into a huge page gets a copy of the 4 KiB it touches,
//! as before (the kernel splits the worker's mapping of that huge page).

use std::sync::{Mutex, PoisonError};
use std::time::Instant;

use crate::arenas;
use crate::maps::Mapping;

const HUGE_PAGE: usize = 2 << 20;
const SMALL_PAGE: usize = 4096;

/// Anonymous mappings smaller than this are not worth a look.
const MIN_MAPPING: usize = 8 << 20;

/// What [`collapse`] did.
#[derive(Debug, Default)]
pub struct Collapsed {
    /// Bytes now on huge pages.
    pub bytes: usize,
    /// Time taken, in milliseconds.
    pub millis: u128,
}

/// The stretches moved so far, in order: a later call leaves them be.
static MOVED: Mutex<Vec<usize>> = Mutex::new(Vec::new());

/// Collapses the fully resident 2 MiB stretches of this process's large
/// anonymous mappings onto huge pages, but for those an earlier call moved.
/// Failures (no THP support, no free huge page) only mean less is
/// collapsed; forks are then slower, not wrong.
pub fn collapse() -> Collapsed {
    let start = Instant::now();
    let Ok(maps) = std::fs::read_to_string("/proc/self/maps") else {
        return Collapsed::default();
    };
    let mut moved = MOVED.lock().unwrap_or_else(PoisonError::into_inner);
    let before = moved.len();
    for (from, to) in maps.lines().filter_map(anonymous_writable) {
        let first = from.next_multiple_of(HUGE_PAGE);
        let mut at = first;
        while at + HUGE_PAGE <= to {
            if moved[..before].binary_search(&at).is_ok() {
                at += HUGE_PAGE;
                continue;
            }
            if fully_resident(at) && advise(at, libc::MADV_HUGEPAGE) && advise(at, MADV_COLLAPSE) {
                moved.push(at);
            }
            if arenas::is_arena(at) && arenas::is_arena(at + HUGE_PAGE / 2) {
                // Back off huge pages, as the other arenas: the huge page
                // stays, and khugepaged leaves the stretch alone once arenas
                // in it are freed and made again.
                advise(at, libc::MADV_NOHUGEPAGE);
            }
            at += HUGE_PAGE;
        }
    }
    let bytes = (moved.len() - before) * HUGE_PAGE;
    moved.sort_unstable();
    Collapsed {
        bytes,
        millis: start.elapsed().as_millis(),
    }
}

/// `MADV_COLLAPSE` (Linux 6.1); not in every libc crate release yet.
const MADV_COLLAPSE: libc::c_int = 25;

/// The address range of a private, writable, anonymous mapping of at least
/// [`MIN_MAPPING`] bytes, or of arenas (which may be fewer), from one line
/// of `/proc/self/maps`.
fn anonymous_writable(line: &str) -> Option<(usize, usize)> {
    let m = Mapping::parse(line)?;
    let anonymous = m.inode == "0" && (m.name.is_empty() || m.name == "[heap]");
    let large = m.to - m.from >= MIN_MAPPING || arenas::is_arena(m.from);
    (m.perms == "rw-p" && anonymous && large).then_some((m.from, m.to))
}

fn fully_resident(at: usize) -> bool {
    let mut pages = [0u8; HUGE_PAGE / SMALL_PAGE];
    // SAFETY: `at` is page-aligned and the 2 MiB range lies inside one
    // mapping of this process; mincore only writes the 512-byte vector.
    let ok = unsafe { libc::mincore(at as *mut libc::c_void, HUGE_PAGE, pages.as_mut_ptr()) } == 0;
    ok && pages.iter().all(|p| p & 1 == 1)
}

fn advise(at: usize, advice: libc::c_int) -> bool {
    // SAFETY: advice about a range of this process's own mapping; neither
    // MADV_HUGEPAGE nor MADV_COLLAPSE changes its contents.
    unsafe { libc::madvise(at as *mut libc::c_void, HUGE_PAGE, advice) == 0 }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prefault::tests::Region;

    /// The bytes on huge pages in the mappings that overlap `from..to`.
    fn huge_between(from: usize, to: usize) -> usize {
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
        let mut overlaps = false;
        let mut bytes = 0;
        for line in smaps.lines() {
            if let Some(m) = Mapping::parse(line) {
                overlaps = m.from < to && from < m.to;
            } else if let Some(kib) = line.strip_prefix("AnonHugePages:").filter(|_| overlaps) {
                bytes += kib.trim().trim_end_matches(" kB").parse::<usize>().unwrap() << 10;
            }
        }
        bytes
    }

    #[test]
    fn a_second_collapse_moves_only_what_became_resident_since() {
        // Needs transparent huge pages and MADV_COLLAPSE (Linux 6.1), as
        // the speed-up does; where they are missing it fails, and says so.
        let _layout = crate::memory_layout_lock();
        let mut region = Region::new((MIN_MAPPING + 2 * HUGE_PAGE) / SMALL_PAGE);
        let base = region.page(0) * SMALL_PAGE;
        let first = base.next_multiple_of(HUGE_PAGE);
        let second = first + HUGE_PAGE;
        let mut touch = |from: usize, bytes: usize| {
            for at in (from..from + bytes).step_by(SMALL_PAGE) {
                region.write((at - base) / SMALL_PAGE);
            }
        };
        touch(first, HUGE_PAGE);
        touch(second, HUGE_PAGE / 2);
        collapse();
        let end = second + HUGE_PAGE;
        assert_eq!(
            huge_between(first, end),
            HUGE_PAGE,
            "the fully resident stretch alone"
        );

        touch(second + HUGE_PAGE / 2, HUGE_PAGE / 2);
        let again = collapse();
        assert_eq!(again.bytes, HUGE_PAGE, "only the stretch resident since");
        assert_eq!(huge_between(first, end), 2 * HUGE_PAGE);
    }
}
