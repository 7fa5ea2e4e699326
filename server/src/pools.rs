//! Filling the warm server's half-used allocator pools, so that a run's new
//! objects land on fresh pages instead of copying the server's.
//!
//! CPython's small-object allocator (pymalloc) carves 16 KiB pools out of
//! 1 MiB arenas; each pool holds blocks of one size class (16, 32, ... 512
//! bytes), and a new block comes from the first pool of its class that has
//! a free one. After warm-up most classes have such half-used pools, their
//! free blocks scattered over pages full of warm objects: every object a run
//! made there (a run makes a few thousand) copied the server's page around
//! it, about a quarter of the pages a `-c pass` run wrote.
//!
//! So just before it serves, the server allocates every free block of every
//! half-used pool and never frees them. Those pages were resident anyway; the
//! blocks cost no memory, only the space they would have offered. A worker
//! then finds every pool of its class full and starts new pools, which it
//! fills densely with its own objects: pages it alone writes, zero-filled
//! rather than copied when they were never used, and few of them.
//!
//! This reads pymalloc's pool header (`Objects/obmalloc.c`, the same from
//! 3.10 to 3.13: a 16 KiB pool on 64-bit platforms starts with its block
//! count, an `unsigned int`, and has its size class index at byte 36 and
//! the offset past its last block at byte 44), so the caller makes sure
//! pymalloc is the object allocator, without debug hooks (see `server.py`).
//! Each header is read only from a private writable mapping, and every block
//! must sit where that header says before it is kept: allocated elsewhere
//! (another allocator, debug hooks), the filling stops.

use pyo3::ffi;

use crate::maps;

/// Bytes in a pool; pools are aligned on their size.
const POOL_SIZE: usize = 16 << 10;
/// Bytes of a pool's header, before its first block.
const HEADER: usize = 48;
/// Offset of the size class index in a pool's header.
const SIZE_INDEX_OFFSET: usize = 36;
/// Offset of the offset past the pool's last block.
const END_OFFSET: usize = 44;
/// Blocks are multiples of this many bytes...
const ALIGNMENT: usize = 16;
/// ...up to this many.
const LARGEST_BLOCK: usize = 512;
/// Most memory the filling may keep, so that a layout other than the one
/// expected cannot make it run away: the free space of half-used pools is
/// rarely more than a few hundred KiB.
const MOST_KEPT: usize = 64 << 20;

/// What [`fill`] did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Filled {
    /// Blocks allocated and kept.
    pub blocks: usize,
    /// Their bytes.
    pub bytes: usize,
    /// Why the filling stopped before every size class was done, if it did.
    pub stopped: Option<&'static str>,
}

/// Allocates, one size class at a time, blocks until pymalloc hands out the
/// first block of a new pool; frees that one (its pool goes back to the
/// arena) and keeps the others. Stops at the first block that is not where
/// a pool header says it would be, which means pymalloc is not laid out as
/// expected: what was kept so far only costs its memory.
///
/// The caller must hold the GIL. Does nothing where pointers are not 64 bits
/// wide (pools are 4 KiB there).
pub fn fill() -> Filled {
    let mut filled = Filled::default();
    if cfg!(not(target_pointer_width = "64")) {
        filled.stopped = Some("pointers are not 64 bits wide");
        return filled;
    }
    let Some(mut mappings) = maps::PrivateWritable::open() else {
        filled.stopped = Some("/proc/self/maps cannot be read");
        return filled;
    };
    let page_size = rustix::param::page_size();
    // The private writable mapping the last header was in, in pages.
    let mut readable = 0..0;
    for class in 0..LARGEST_BLOCK / ALIGNMENT {
        let size = (class + 1) * ALIGNMENT;
        loop {
            if filled.bytes + size > MOST_KEPT {
                filled.stopped = Some("it kept the most it may, 64 MiB");
                return filled;
            }
            // SAFETY: the caller holds the GIL.
            let block = unsafe { ffi::PyObject_Malloc(size) };
            if block.is_null() {
                filled.stopped = Some("memory ran out");
                return filled;
            }
            let pool = block as usize & !(POOL_SIZE - 1);
            let page = (pool / page_size) as u64;
            if !readable.contains(&page) {
                // A new arena may have been mapped since the mappings were
                // listed (where the kernel cannot be asked about one, they
                // are listed once): look again, afresh, before giving up.
                let found = mapping_of(&mut mappings, page).or_else(|| {
                    mappings = maps::PrivateWritable::open()?;
                    mapping_of(&mut mappings, page)
                });
                match found {
                    Some(mapping) => readable = mapping,
                    None => {
                        return unkept(
                            block,
                            filled,
                            "a block's pool header would lie outside writable memory",
                        );
                    }
                }
            }
            // SAFETY: the header's 48 bytes lie in the page just found mapped:
            // a pool is aligned on its 16 KiB, so its header never crosses a
            // page boundary, whatever the page size.
            let field = |offset: usize| unsafe { ((pool + offset) as *const u32).read() } as usize;
            let (count, index, end) = (field(0), field(SIZE_INDEX_OFFSET), field(END_OFFSET));
            let offset = block as usize - pool;
            if index != class
                || end != POOL_SIZE - size
                || offset < HEADER
                || (offset - HEADER) % size != 0
            {
                return unkept(
                    block,
                    filled,
                    "a block is not where a pymalloc pool header says",
                );
            }
            if count == 1 {
                // A new pool: every half-used one of this class is full.
                // SAFETY: allocated above with PyObject_Malloc.
                unsafe { ffi::PyObject_Free(block) };
                break;
            }
            filled.blocks += 1;
            filled.bytes += size;
        }
    }
    filled
}

/// The private writable mapping holding `page`, as a range of pages.
fn mapping_of(mappings: &mut maps::PrivateWritable, page: u64) -> Option<std::ops::Range<u64>> {
    mappings
        .at_or_after(page)
        .filter(|mapping| mapping.start <= page)
}

/// Frees `block`, which is not kept, and returns `filled`, stopped because
/// of `why`.
fn unkept(block: *mut std::ffi::c_void, mut filled: Filled, why: &'static str) -> Filled {
    // SAFETY: `block` came from PyObject_Malloc, the GIL still held.
    unsafe { ffi::PyObject_Free(block) };
    filled.stopped = Some(why);
    filled
}

/// Fills the half-used pools of pymalloc (see the module's note); returns
/// the blocks and bytes kept, and why it stopped early, if it did.
/// `warmfork-server` has [`fill`] called through `serve`; this is for tests.
#[pyo3::pyfunction]
pub fn fill_pools(_py: pyo3::Python<'_>) -> (usize, usize, Option<&'static str>) {
    let filled = fill();
    (filled.blocks, filled.bytes, filled.stopped)
}

/// The name CPython gives the memory allocators it runs on (`pymalloc`,
/// `pymalloc_debug`, `malloc`, `mimalloc`, ...), from its exported but
/// private `_PyMem_GetCurrentAllocatorName` (3.8 and later); `None` where it
/// is missing, or names nothing because hooks it does not know are
/// installed (tracemalloc's, an extension's `PyMem_SetAllocator`).
#[pyo3::pyfunction]
pub fn allocator_name(_py: pyo3::Python<'_>) -> Option<String> {
    // SAFETY: looking a symbol up by a NUL-terminated name.
    let symbol = unsafe {
        libc::dlsym(
            libc::RTLD_DEFAULT,
            c"_PyMem_GetCurrentAllocatorName".as_ptr(),
        )
    };
    if symbol.is_null() {
        return None;
    }
    // SAFETY: CPython's `const char *_PyMem_GetCurrentAllocatorName(void)`,
    // which the GIL held here makes safe to call.
    let current: extern "C" fn() -> *const std::ffi::c_char =
        unsafe { std::mem::transmute(symbol) };
    let name = current();
    if name.is_null() {
        return None;
    }
    // SAFETY: one of CPython's static C strings.
    let name = unsafe { std::ffi::CStr::from_ptr(name) };
    Some(name.to_string_lossy().into_owned())
}
