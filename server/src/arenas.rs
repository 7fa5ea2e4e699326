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
//! maps each arena at the lowest free 1 MiB slot of one region of address
//! space, so that arenas lie next to each other and `hugepages::collapse`
//! moves them onto huge pages before serving (256 MiB of that server's):
//! one entry per 2 MiB.
//!
//! The region is only an address: nothing holds it reserved, since address
//! space held would count against `ulimit -v` in every worker. It lies in
//! the middle of the largest gap between the process's mappings (on x86-64,
//! tens of TiB between the C library's heap and the libraries), far from
//! both ends, where the heap grows up and `mmap` places mappings down. An
//! arena is mapped when pymalloc asks for it (`MAP_FIXED_NOREPLACE`, so a
//! mapping made there meanwhile by anyone else is never replaced: that slot
//! is skipped for good) and unmapped when pymalloc frees it, as CPython's
//! own allocator does. Slots are mapped off huge pages (`MADV_NOHUGEPAGE`), so
//! that an arena a worker adds costs it 4 KiB pages as before; the collapse
//! lifts that for the stretches it moves, and puts it back.
//!
//! Arenas made before [`place`] (the 5 MiB of Python's start-up and
//! warmfork's imports), arenas of another size, and arenas that cannot be
//! mapped in the region come from the allocator that was there before,
//! which also frees them. The slots are taken and given back with atomic
//! operations, no lock, so that a fork from any thread leaves the child
//! nothing to wait for; at worst the child sees a slot taken that a thread
//! of its parent was mapping, and never uses it.

use std::ffi::c_void;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use pyo3::ffi;

use crate::maps::Mapping;

/// The size of a slot: pymalloc's arena size on 64-bit builds.
const SLOT: usize = 1 << 20;
/// Slots in a region at most: 64 GiB of arenas.
const MAX_SLOTS: usize = 1 << 16;
/// The smallest region worth having.
const MIN_SLOTS: usize = 256;
const WORDS: usize = MAX_SLOTS / 64;
const HUGE_PAGE: usize = 2 << 20;

/// Slots of a region of address space, mapped on demand, lowest first.
pub struct Region {
    /// The first slot's address; 0 before [`Region::at`].
    start: AtomicUsize,
    /// How many slots the region has.
    slots: AtomicUsize,
    /// Slots taken: mapped here, being mapped, or found in use by another
    /// mapping. A bit each.
    taken: [AtomicU64; WORDS],
    /// Slots mapped here: those `release` unmaps.
    mapped: [AtomicU64; WORDS],
    /// Set once the kernel has been seen to take `MAP_FIXED_NOREPLACE` for
    /// a mere hint (before Linux 4.17): then no more slots are mapped.
    no_fixed: AtomicBool,
}

/// The region the installed allocator maps arenas in.
static REGION: Region = Region::new();
/// The arena allocator in place before; set once [`place`] has run.
static PREVIOUS: OnceLock<Previous> = OnceLock::new();

struct Previous(ffi::PyObjectArenaAllocator);

// SAFETY: the allocator's `ctx` is only handed back to its own functions;
// CPython's own (a null `ctx`, `mmap` and `munmap`) may be called from any
// thread, as interpreters with GILs of their own do.
unsafe impl Send for Previous {}
// SAFETY: as for `Send`: the value is never changed once set.
unsafe impl Sync for Previous {}

/// Puts the arenas pymalloc makes from now on side by side (see the
/// module's documentation). Does nothing the second time, nor where no
/// region can be found.
pub fn place() {
    if PREVIOUS.get().is_some() {
        return;
    }
    let Some((start, slots)) = find_region() else {
        return;
    };
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
    REGION.at(start, slots);
    let mut ours = ffi::PyObjectArenaAllocator {
        ctx: std::ptr::null_mut(),
        alloc: Some(alloc),
        free: Some(free),
    };
    // SAFETY: as above.
    unsafe { ffi::PyObject_SetArenaAllocator(&mut ours) };
}

/// Whether the 1 MiB at `address` is an arena slot the region mapped (for
/// the collapse, which gives the arenas' stretches their advice back).
pub fn is_arena(address: usize) -> bool {
    REGION.is_mapped(address)
}

/// The highest address a mapping made without a hint can have: 47 bits,
/// the user address space of 4-level page tables.
const HIGHEST: usize = 1 << 47;

/// The region for the arenas: up to [`MAX_SLOTS`] slots, a quarter of the
/// largest gap between this process's mappings at most, centred in it and
/// aligned to a huge page; `None` if no gap is large enough.
fn find_region() -> Option<(usize, usize)> {
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    let mut spans = maps
        .lines()
        .filter_map(Mapping::parse)
        .map(|m| (m.from, m.to));
    let mut covered_to = spans.next()?.1;
    let mut largest = (0, 0);
    for (from, to) in spans {
        let gap_end = from.min(HIGHEST);
        if gap_end > covered_to && gap_end - covered_to > largest.1 - largest.0 {
            largest = (covered_to, gap_end);
        }
        covered_to = covered_to.max(to);
    }
    let slots = ((largest.1 - largest.0) / 4 / SLOT).min(MAX_SLOTS);
    if slots < MIN_SLOTS {
        return None;
    }
    let middle = largest.0 + (largest.1 - largest.0) / 2;
    Some((
        (middle - slots * SLOT / 2).next_multiple_of(HUGE_PAGE),
        slots,
    ))
}

/// How mapping a slot failed.
enum Unmappable {
    /// Something else is mapped there: skip the slot.
    Occupied,
    /// No mapping can be made (no memory, `ulimit -v`): give up for now.
    Refused,
    /// The kernel (before 4.17) took the address for a mere hint.
    Unplaceable,
}

impl Region {
    pub const fn new() -> Self {
        Region {
            start: AtomicUsize::new(0),
            slots: AtomicUsize::new(0),
            taken: [const { AtomicU64::new(0) }; WORDS],
            mapped: [const { AtomicU64::new(0) }; WORDS],
            no_fixed: AtomicBool::new(false),
        }
    }

    /// Sets where the region lies: `slots` slots from `start`.
    fn at(&self, start: usize, slots: usize) {
        self.slots.store(slots.min(MAX_SLOTS), Ordering::Relaxed);
        self.start.store(start, Ordering::Release);
    }

    /// Whether the slot at `address` is one the region mapped.
    fn is_mapped(&self, address: usize) -> bool {
        self.slot_of(address)
            .is_some_and(|slot| self.mapped[slot / 64].load(Ordering::Acquire) & bit(slot) != 0)
    }

    /// The slot at `address`, if it is a slot's start in the region.
    fn slot_of(&self, address: usize) -> Option<usize> {
        let start = self.start.load(Ordering::Acquire);
        let offset = address.wrapping_sub(start);
        let slot = offset / SLOT;
        (start != 0 && offset % SLOT == 0 && slot < self.slots.load(Ordering::Relaxed))
            .then_some(slot)
    }

    /// The address of a newly mapped slot, the lowest free one; `None` if
    /// none is left or none can be mapped.
    fn take(&self) -> Option<usize> {
        let start = self.start.load(Ordering::Acquire);
        if start == 0 || self.no_fixed.load(Ordering::Relaxed) {
            return None;
        }
        loop {
            let slot = self.claim()?;
            let address = start + slot * SLOT;
            match map_at(address) {
                Ok(()) => {
                    self.mapped[slot / 64].fetch_or(bit(slot), Ordering::Release);
                    return Some(address);
                }
                // Left taken: someone else's mapping is there.
                Err(Unmappable::Occupied) => {}
                Err(failure) => {
                    if let Unmappable::Unplaceable = failure {
                        self.no_fixed.store(true, Ordering::Relaxed);
                    }
                    self.taken[slot / 64].fetch_and(!bit(slot), Ordering::Release);
                    return None;
                }
            }
        }
    }

    /// Marks the lowest slot not taken as taken, and returns it.
    fn claim(&self) -> Option<usize> {
        let slots = self.slots.load(Ordering::Relaxed);
        for (index, word) in self.taken[..slots.div_ceil(64)].iter().enumerate() {
            let mut bits = word.load(Ordering::Relaxed);
            while bits != u64::MAX {
                let slot = index * 64 + bits.trailing_ones() as usize;
                if slot >= slots {
                    return None;
                }
                let before = word.fetch_or(bit(slot), Ordering::AcqRel);
                if before & bit(slot) == 0 {
                    return Some(slot);
                }
                bits = before;
            }
        }
        None
    }

    /// Unmaps the slot at `address` and frees it; false if it is not a
    /// slot this region mapped.
    fn release(&self, address: usize) -> bool {
        let Some(slot) = self.slot_of(address) else {
            return false;
        };
        if self.mapped[slot / 64].fetch_and(!bit(slot), Ordering::AcqRel) & bit(slot) == 0 {
            return false;
        }
        // SAFETY: a slot this region mapped, whose arena pymalloc has freed.
        unsafe { libc::munmap(address as *mut c_void, SLOT) };
        self.taken[slot / 64].fetch_and(!bit(slot), Ordering::Release);
        true
    }
}

fn bit(slot: usize) -> u64 {
    1 << (slot % 64)
}

/// Maps a slot at `address`, off huge pages.
fn map_at(address: usize) -> Result<(), Unmappable> {
    // SAFETY: MAP_FIXED_NOREPLACE never replaces a mapping: it maps at
    // `address` only if nothing is mapped there.
    let got = unsafe {
        libc::mmap(
            address as *mut c_void,
            SLOT,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED_NOREPLACE,
            -1,
            0,
        )
    };
    if got == libc::MAP_FAILED {
        return Err(match std::io::Error::last_os_error().raw_os_error() {
            Some(libc::EEXIST) => Unmappable::Occupied,
            _ => Unmappable::Refused,
        });
    }
    if got as usize != address {
        // SAFETY: the mapping just made, elsewhere.
        unsafe { libc::munmap(got, SLOT) };
        return Err(Unmappable::Unplaceable);
    }
    // SAFETY: advice about the mapping just made. Without it a kernel that
    // puts all memory on huge pages would give a worker's new arena a
    // 2 MiB page to clear.
    unsafe { libc::madvise(got, SLOT, libc::MADV_NOHUGEPAGE) };
    Ok(())
}

fn previous() -> ffi::PyObjectArenaAllocator {
    PREVIOUS.get().expect("installed after PREVIOUS is set").0
}

extern "C" fn alloc(_ctx: *mut c_void, size: usize) -> *mut c_void {
    if size == SLOT {
        if let Some(address) = REGION.take() {
            return address as *mut c_void;
        }
    }
    let previous = previous();
    (previous.alloc.expect("an arena allocator has alloc"))(previous.ctx, size)
}

extern "C" fn free(_ctx: *mut c_void, ptr: *mut c_void, size: usize) {
    if REGION.release(ptr as usize) {
        return;
    }
    let previous = previous();
    (previous.free.expect("an arena allocator has free"))(previous.ctx, ptr, size);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A region of its own for a test, found as the allocator's is.
    fn region() -> Box<Region> {
        let region = Box::new(Region::new());
        let (start, _) = find_region().expect("address space for a region");
        region.at(start, 128);
        region
    }

    fn unmap_all(region: &Region) {
        for slot in 0..region.slots.load(Ordering::Relaxed) {
            region.release(region.start.load(Ordering::Relaxed) + slot * SLOT);
        }
    }

    #[test]
    fn slots_are_mapped_lowest_first_and_side_by_side() {
        let _layout = crate::memory_layout_lock();
        let region = region();
        let first = region.take().expect("a slot can be mapped");
        assert_eq!(first % HUGE_PAGE, 0, "the region starts on a huge page");
        let next: Vec<usize> = (1..70).map(|_| region.take().unwrap()).collect();
        assert_eq!(next, (1..70).map(|i| first + i * SLOT).collect::<Vec<_>>());

        assert!(region.release(first + 65 * SLOT));
        assert!(region.release(first + 3 * SLOT));
        assert_eq!(
            region.take(),
            Some(first + 3 * SLOT),
            "the lowest free slot first"
        );
        assert_eq!(region.take(), Some(first + 65 * SLOT));
        assert_eq!(region.take(), Some(first + 70 * SLOT));
        unmap_all(&region);
    }

    #[test]
    fn a_released_slot_is_unmapped_and_comes_back_zeroed() {
        let _layout = crate::memory_layout_lock();
        let region = region();
        let slot = region.take().unwrap();
        // SAFETY: the slot is this test's, 1 MiB of writable memory.
        unsafe { (slot as *mut u8).write_bytes(0xa5, SLOT) };
        assert!(region.release(slot));
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
        let mapped = maps
            .lines()
            .any(|line| line.starts_with(&format!("{slot:x}-")));
        assert!(!mapped, "a released slot is unmapped");
        assert_eq!(region.take(), Some(slot));
        // SAFETY: mapped again, 1 MiB.
        let memory = unsafe { std::slice::from_raw_parts(slot as *const u8, SLOT) };
        assert!(memory.iter().all(|&byte| byte == 0));
        unmap_all(&region);
    }

    #[test]
    fn slots_someone_else_mapped_are_skipped_and_never_released() {
        let _layout = crate::memory_layout_lock();
        let region = region();
        let start = region.start.load(Ordering::Relaxed);
        // A mapping of the test's own, made behind the region's back.
        assert!(map_at(start).is_ok());
        assert_eq!(
            region.take(),
            Some(start + SLOT),
            "the occupied slot is skipped"
        );
        assert!(
            !region.release(start),
            "someone else's mapping is not the region's to unmap"
        );
        assert!(
            !region.release(start + SLOT + 4096),
            "nor is an address inside a slot"
        );
        let elsewhere = Box::new(0u64);
        assert!(!region.release(&raw const *elsewhere as usize));
        assert_eq!(region.take(), Some(start + 2 * SLOT));
        unmap_all(&region);
        // SAFETY: this test's mapping, still there.
        assert_eq!(unsafe { libc::munmap(start as *mut c_void, SLOT) }, 0);
    }
}
