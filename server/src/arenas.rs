//! Keeping pymalloc's arenas side by side, so that the warm heap can go
//! onto huge pages.
//!
//! Python's objects live in pymalloc's arenas of 1 MiB, each mapped on its
//! own wherever the kernel finds room, between the C library's own large
//! blocks and the libraries' mappings: in a server holding 270 MiB of
//! objects, only 82 MiB of them lay in whole, aligned 2 MiB stretches.
//! `fork` copies one page-table entry for each resident 4 KiB page, and the
//! worker's exit drops each again, about 70 ns a page here: for that server
//! half of a run's CPU. [`place`] gives pymalloc an arena allocator that
//! hands out the 1 MiB slots of ranges reserved for arenas alone, lowest
//! free slot first, so that arenas lie next to each other and
//! `hugepages::collapse` moves them onto huge pages before serving (256 MiB
//! of that server's): one entry per 2 MiB.
//!
//! A range is address space only (`MAP_NORESERVE`), 64 MiB of it, and is
//! kept off huge pages until the collapse picks its stretches, so that an
//! arena a worker adds costs it 4 KiB pages as before. A freed arena's
//! memory goes back to the system (`MADV_DONTNEED`) and its slot is reused.
//! Arenas made before [`place`] (the 5 MiB of Python's start-up and
//! warmfork's imports) stay where they are, and those that do not fit, in
//! size or in number, or when no range can be reserved (`ulimit -v`), come
//! from the allocator that was there before, which also frees them.

use std::ffi::c_void;
use std::sync::{Mutex, MutexGuard, OnceLock, PoisonError};

use pyo3::ffi;

/// The size of a slot: pymalloc's arena size on 64-bit builds.
const SLOT: usize = 1 << 20;
/// A range holds 64 slots, one bit each of a word: 64 MiB of address
/// space, the most that reserving costs beyond what the arenas use.
const RANGE: usize = SLOT * 64;
/// Ranges reserved at most: 64 GiB of arenas, then the previous allocator's.
const MAX_RANGES: usize = 1024;
const HUGE_PAGE: usize = 2 << 20;

/// The ranges reserved so far and which of their slots are in use.
struct Ranges {
    count: usize,
    starts: [usize; MAX_RANGES],
    used: [u64; MAX_RANGES],
}

static RANGES: Mutex<Ranges> = Mutex::new(Ranges::new());
/// The arena allocator in place before; set once [`place`] has run.
static PREVIOUS: OnceLock<Previous> = OnceLock::new();

struct Previous(ffi::PyObjectArenaAllocator);

// SAFETY: the allocator's `ctx` is only handed back to its own functions,
// which CPython calls with the GIL held, from whichever thread holds it.
unsafe impl Send for Previous {}
// SAFETY: as for `Send`: the value is never changed once set.
unsafe impl Sync for Previous {}

/// Puts pymalloc's arenas made from now on in reserved ranges (see the
/// module's documentation). Does nothing the second time.
pub fn place() {
    let mut previous = ffi::PyObjectArenaAllocator {
        ctx: std::ptr::null_mut(),
        alloc: None,
        free: None,
    };
    // SAFETY: called with the GIL held (from a pyfunction), as CPython
    // requires of a change of allocator; ours hands every arena it does not
    // make to the previous one.
    unsafe { ffi::PyObject_GetArenaAllocator(&mut previous) };
    if PREVIOUS.set(Previous(previous)).is_err() {
        return;
    }
    let mut ours = ffi::PyObjectArenaAllocator {
        ctx: std::ptr::null_mut(),
        alloc: Some(alloc),
        free: Some(free),
    };
    // SAFETY: as above.
    unsafe { ffi::PyObject_SetArenaAllocator(&mut ours) };
}

fn ranges() -> MutexGuard<'static, Ranges> {
    RANGES.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Ranges {
    const fn new() -> Self {
        Ranges {
            count: 0,
            starts: [0; MAX_RANGES],
            used: [0; MAX_RANGES],
        }
    }

    /// The lowest free slot, now taken; in a new range if all are full.
    fn take(&mut self) -> Option<usize> {
        let index = match self.used[..self.count]
            .iter()
            .position(|bits| *bits != u64::MAX)
        {
            Some(index) => index,
            None if self.count < MAX_RANGES => {
                self.starts[self.count] = reserve()?;
                self.count += 1;
                self.count - 1
            }
            None => return None,
        };
        let bit = self.used[index].trailing_ones() as usize;
        self.used[index] |= 1 << bit;
        Some(self.starts[index] + bit * SLOT)
    }

    /// Frees the slot at `address`, its memory going back to the system;
    /// false if no range holds it.
    fn release(&mut self, address: usize) -> bool {
        let count = self.count;
        let Some(index) = (0..count).find(|&i| address.wrapping_sub(self.starts[i]) < RANGE) else {
            return false;
        };
        // SAFETY: the slot's memory, which pymalloc no longer uses; it
        // reads as zeros again, as a new mapping's would.
        unsafe { libc::madvise(address as *mut c_void, SLOT, libc::MADV_DONTNEED) };
        self.used[index] &= !(1 << ((address - self.starts[index]) / SLOT));
        true
    }
}

/// A new range, aligned to a huge page and kept off huge pages for now.
fn reserve() -> Option<usize> {
    let length = RANGE + HUGE_PAGE;
    // SAFETY: a new private anonymous mapping; nothing else refers to it.
    let start = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            length,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if start == libc::MAP_FAILED {
        return None;
    }
    let start = start as usize;
    let aligned = start.next_multiple_of(HUGE_PAGE);
    let tail = aligned + RANGE;
    // SAFETY: the unaligned head and the tail beyond the range are parts of
    // the mapping just made, unused.
    unsafe {
        if aligned > start {
            libc::munmap(start as *mut c_void, aligned - start);
        }
        if start + length > tail {
            libc::munmap(tail as *mut c_void, start + length - tail);
        }
        // Advice only: without it a kernel that puts all memory on huge
        // pages would give each arena a worker adds a 2 MiB page to clear.
        libc::madvise(aligned as *mut c_void, RANGE, libc::MADV_NOHUGEPAGE);
    }
    Some(aligned)
}

fn previous() -> ffi::PyObjectArenaAllocator {
    PREVIOUS.get().expect("installed after PREVIOUS is set").0
}

extern "C" fn alloc(_ctx: *mut c_void, size: usize) -> *mut c_void {
    if size <= SLOT {
        if let Some(address) = ranges().take() {
            return address as *mut c_void;
        }
    }
    let previous = previous();
    (previous.alloc.expect("an arena allocator has alloc"))(previous.ctx, size)
}

extern "C" fn free(_ctx: *mut c_void, ptr: *mut c_void, size: usize) {
    if ranges().release(ptr as usize) {
        return;
    }
    let previous = previous();
    (previous.free.expect("an arena allocator has free"))(previous.ctx, ptr, size);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unmap_all(ranges: &Ranges) {
        for &start in &ranges.starts[..ranges.count] {
            // SAFETY: a range this test reserved, no longer used.
            unsafe { libc::munmap(start as *mut c_void, RANGE) };
        }
    }

    #[test]
    fn slots_are_taken_lowest_first_and_side_by_side() {
        let _layout = crate::memory_layout_lock();
        let mut ranges = Box::new(Ranges::new());
        let first = ranges.take().expect("a range can be reserved");
        assert_eq!(first % HUGE_PAGE, 0, "a range starts on a huge page");
        let taken: Vec<usize> = (1..64).map(|_| ranges.take().unwrap()).collect();
        assert_eq!(taken, (1..64).map(|i| first + i * SLOT).collect::<Vec<_>>());
        assert_eq!(ranges.count, 1);

        let second = ranges.take().unwrap();
        assert_eq!(
            ranges.count, 2,
            "a full range makes the next one be reserved"
        );
        assert_eq!(second % HUGE_PAGE, 0);
        assert!(second.abs_diff(first) >= RANGE, "ranges do not overlap");

        assert!(ranges.release(first + 5 * SLOT));
        assert!(ranges.release(first + 3 * SLOT));
        assert_eq!(
            ranges.take(),
            Some(first + 3 * SLOT),
            "the lowest free slot first"
        );
        assert_eq!(ranges.take(), Some(first + 5 * SLOT));
        assert_eq!(ranges.take(), Some(second + SLOT));
        unmap_all(&ranges);
    }

    #[test]
    fn a_released_slot_reads_as_zeros_and_foreign_addresses_are_not_released() {
        let _layout = crate::memory_layout_lock();
        let mut ranges = Box::new(Ranges::new());
        let slot = ranges.take().unwrap() as *mut u8;
        // SAFETY: the slot is this test's, 1 MiB of writable memory.
        unsafe {
            slot.write_bytes(0xa5, SLOT);
            assert!(ranges.release(slot as usize));
            assert_eq!(ranges.take(), Some(slot as usize));
            let memory = std::slice::from_raw_parts(slot, SLOT);
            assert!(
                memory.iter().all(|&byte| byte == 0),
                "a reused slot starts zeroed"
            );
        }
        let elsewhere = Box::new(0u64);
        assert!(!ranges.release(&*elsewhere as *const u64 as usize));
        assert!(!ranges.release(ranges.starts[0] + RANGE));
        assert_eq!(ranges.used[0], 1, "nothing else was freed");
        unmap_all(&ranges);
    }
}
