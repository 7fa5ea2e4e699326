//! The learner: a worker that notes which pages its run writes and maps in,
//! and publishes them in the [`Table`] for the idle workers that follow
//! (see the parent module).

use std::fs::File;
use std::io::Read;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::time::{Duration, Instant};

use super::{CHUNK, IDLE_BUDGET, MAPPED_CAPACITY, PRESENT, Table, owned_alone};
use crate::maps::Mapping;

/// A worker learning which pages its run writes.
#[derive(Debug)]
pub struct Learner {
    table: &'static Table,
    pagemap: File,
    /// Time spent scanning.
    spent: Duration,
    /// How many pages it may publish: [`IDLE_BUDGET`] less what it held
    /// when idle, its scratch memory aside.
    room: usize,
    scratch: Scratch,
}

/// A learner's working memory, in an anonymous mapping of its own rather
/// than on the heap: learning must leave the heap as every other worker's
/// is when its run starts. (A list grown on the heap moves the allocator's
/// free chunks, and the learner's run would then write other pages than
/// the runs it learns for.) Pages of the mapping never touched cost nothing,
/// so the lists can be long.
struct Scratch {
    /// All of it, as page numbers.
    pages: Range<u64>,
    /// The text of `/proc/self/maps`, and pagemap entries, as read.
    maps: &'static mut [u8],
    entries: &'static mut [u8],
    /// The pages it owned alone, and the file pages it had mapped, when
    /// idle.
    idle_written: List,
    idle_mapped: List,
    /// What the run wrote and mapped.
    found_written: List,
    found_mapped: List,
}

/// Page numbers, ascending, in [`Scratch`] memory: a list that never grows;
/// pages past its capacity are dropped.
struct List {
    slots: &'static mut [u64],
    len: usize,
}

impl List {
    fn push(&mut self, page: u64) {
        if let Some(slot) = self.slots.get_mut(self.len) {
            *slot = page;
            self.len += 1;
        }
    }

    fn pages(&self) -> &[u64] {
        &self.slots[..self.len]
    }
}

/// Bytes of `/proc/self/maps` a learner can read: some 20 000 mappings.
const MAPS_CAPACITY: usize = 2 << 20;

/// Pages a learner can note when idle, of each kind (8 MiB of list each).
const IDLE_CAPACITY: usize = 1 << 20;

impl Scratch {
    /// Maps a fresh scratch area; `None` if there is no memory for one.
    fn map() -> Option<Scratch> {
        // The parts, in bytes: four lists of page numbers (idle written and
        // mapped, found written and mapped), the text of the mappings, and
        // a chunk of pagemap entries.
        let sizes = [
            IDLE_CAPACITY * 8,
            IDLE_CAPACITY * 8,
            IDLE_BUDGET * 8,
            MAPPED_CAPACITY * 8,
            MAPS_CAPACITY,
            CHUNK * 8,
        ];
        let page_size = rustix::param::page_size();
        let len = sizes
            .iter()
            .map(|size| size.next_multiple_of(page_size))
            .sum();
        // SAFETY: a fresh anonymous mapping, touching no existing memory.
        let at = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if at == libc::MAP_FAILED {
            return None;
        }
        let mut next = at.cast::<u8>();
        let [
            idle_written,
            idle_mapped,
            found_written,
            found_mapped,
            maps,
            entries,
        ] = sizes.map(|size| {
            let part = next;
            // SAFETY: the parts lie one after the other, each rounded up
            // to whole pages, and together take the `len` bytes mapped.
            next = unsafe { part.add(size.next_multiple_of(page_size)) };
            // SAFETY: `size` bytes of the mapping, zero-filled,
            // page-aligned, used through this part alone, and never
            // unmapped (a learner ends with its process).
            unsafe { std::slice::from_raw_parts_mut(part, size) }
        });
        let list = |bytes: &'static mut [u8]| {
            let capacity = bytes.len() / 8;
            // SAFETY: page-aligned zeroed bytes are valid `u64`s; the part
            // is only used as this list from here on.
            let slots =
                unsafe { std::slice::from_raw_parts_mut(bytes.as_mut_ptr().cast(), capacity) };
            List { slots, len: 0 }
        };
        Some(Scratch {
            pages: pages_of(at.cast(), len, page_size),
            maps,
            entries,
            idle_written: list(idle_written),
            idle_mapped: list(idle_mapped),
            found_written: list(found_written),
            found_mapped: list(found_mapped),
        })
    }
}

impl std::fmt::Debug for Scratch {
    /// The area, not the megabytes of lists and text in it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scratch")
            .field("pages", &self.pages)
            .field("idle", &(self.idle_written.len, self.idle_mapped.len))
            .field("found", &(self.found_written.len, self.found_mapped.len))
            .finish_non_exhaustive()
    }
}

/// What [`Learner::scan`] reports a page as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Seen {
    /// Owned alone, in a private writable mapping.
    Owned,
    /// A file's page, mapped for reading.
    Mapped,
}

impl Learner {
    /// Notes the pages this idle worker owns alone.
    pub(super) fn start(table: &'static Table) -> Option<Learner> {
        let mut learner = Learner {
            table,
            // Out of the way of the program, which runs in between.
            pagemap: File::from(
                crate::descriptors::move_high(File::open("/proc/self/pagemap").ok()?, &[]).ok()?,
            ),
            spent: Duration::ZERO,
            room: 0,
            scratch: Scratch::map()?,
        };
        let started = Instant::now();
        let scanned = learner.scan(|scratch, page, seen| match seen {
            Seen::Owned => scratch.idle_written.push(page),
            Seen::Mapped => scratch.idle_mapped.push(page),
        });
        if !scanned {
            return None;
        }
        let scratch = &learner.scratch;
        let held = scratch
            .idle_written
            .pages()
            .iter()
            .filter(|page| !scratch.pages.contains(page))
            .count();
        learner.room = IDLE_BUDGET.saturating_sub(held);
        learner.spent = started.elapsed();
        Some(learner)
    }

    /// Moves the learner's own descriptor off `numbers` (sorted), which the
    /// program is to have as the client's.
    pub fn keep_clear_of(&mut self, numbers: &[std::os::fd::RawFd]) {
        use std::os::fd::AsRawFd;
        if numbers.binary_search(&self.pagemap.as_raw_fd()).is_ok() {
            if let Ok(moved) = crate::descriptors::move_high(&self.pagemap, numbers) {
                self.pagemap = File::from(moved);
            }
        }
    }

    /// After the run: publishes the pages the run wrote and mapped.
    pub fn finish(mut self) {
        let started = Instant::now();
        let room = self.room;
        self.scan(|scratch, page, seen| {
            if scratch.pages.contains(&page) {
                return;
            }
            let (list, before, most) = match seen {
                Seen::Owned => (&mut scratch.found_written, &scratch.idle_written, room),
                Seen::Mapped => (
                    &mut scratch.found_mapped,
                    &scratch.idle_mapped,
                    MAPPED_CAPACITY,
                ),
            };
            if list.len < most && before.pages().binary_search(&page).is_err() {
                list.push(page);
            }
        });
        let found = (
            self.scratch.found_written.pages(),
            self.scratch.found_mapped.pages(),
        );
        if !found.0.is_empty() {
            let spent = self.spent + started.elapsed();
            let micros = u64::try_from(spent.as_micros()).unwrap_or(u64::MAX);
            let pid = rustix::process::getpid().as_raw_nonzero().get() as u64;
            self.table.publish(pid, found.0, found.1, micros);
        }
    }

    /// Calls `seen` with each page, in ascending order, that this process
    /// owns alone in its private writable mappings or has mapped in from a
    /// file it maps for reading only. False if the mappings could not be
    /// read whole.
    fn scan(&mut self, mut seen: impl FnMut(&mut Scratch, u64, Seen)) -> bool {
        let Some(len) = read_whole("/proc/self/maps", self.scratch.maps) else {
            return false;
        };
        let page_size = rustix::param::page_size();
        let scratch = &mut self.scratch;
        // Taken out while its lines are parsed, as `seen` gets the rest.
        let maps = std::mem::take(&mut scratch.maps);
        for line in maps[..len].split(|&byte| byte == b'\n') {
            // Only a path can be other than UTF-8, and the fields before it
            // are what counts here: cut the line there rather than copy it.
            let line = std::str::from_utf8(line).unwrap_or_else(|error| {
                std::str::from_utf8(&line[..error.valid_up_to()]).unwrap_or_default()
            });
            let Some(mapping) = Mapping::parse(line) else {
                continue;
            };
            let kind = if mapping.private_writable() {
                Seen::Owned
            } else if mapping.read_only_file() {
                Seen::Mapped
            } else {
                continue;
            };
            let (first, end) = (mapping.from / page_size, mapping.to / page_size);
            let mut page = first;
            while page < end {
                let count = (end - page).min(CHUNK);
                let bytes = &mut scratch.entries[..count * 8];
                if self.pagemap.read_exact_at(bytes, page as u64 * 8).is_err() {
                    break;
                }
                for n in 0..count {
                    let entry = &scratch.entries[n * 8..n * 8 + 8];
                    let entry = u64::from_ne_bytes(entry.try_into().expect("8 bytes"));
                    let counts = match kind {
                        Seen::Owned => owned_alone(entry),
                        Seen::Mapped => entry & PRESENT != 0,
                    };
                    if counts {
                        seen(scratch, (page + n) as u64, kind);
                    }
                }
                page += count;
            }
        }
        scratch.maps = maps;
        true
    }
}

/// Reads the file at `path` into `buffer`; its length, or `None` if it
/// cannot be read or does not fit.
fn read_whole(path: &str, buffer: &mut [u8]) -> Option<usize> {
    let mut file = File::open(path).ok()?;
    let mut len = 0;
    loop {
        match file.read(&mut buffer[len..]) {
            Ok(0) => return Some(len),
            Ok(read) if len + read < buffer.len() => len += read,
            Ok(_) => return None,
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return None,
        }
    }
}

/// The page numbers that `len` bytes at `at` lie on.
fn pages_of(at: *const u8, len: usize, page_size: usize) -> std::ops::Range<u64> {
    let (from, to) = (at as usize, at as usize + len);
    (from / page_size) as u64..to.div_ceil(page_size) as u64
}

#[cfg(test)]
mod tests {
    use super::super::tests::{Region, file_mapping};
    use super::*;

    #[test]
    fn a_learner_finds_the_pages_written_and_mapped_since_it_started() {
        let _layout = crate::memory_layout_lock();
        let table: &'static Table = Box::leak(Box::new(Table::new()));
        let mut region = Region::new(64);
        let file = file_mapping("learner", 64);
        let mut learner = Learner::start(table).expect("/proc/self/pagemap is readable");
        // This process holds pages of its own (a stack, a heap), so the room
        // left for a run's pages is less than the whole budget.
        assert!(learner.room < IDLE_BUDGET, "room {}", learner.room);
        learner.room = IDLE_BUDGET;
        for n in [3, 4, 40] {
            region.write(n);
        }
        let page_size = rustix::param::page_size();
        // SAFETY: a read inside the file's mapping.
        let byte = unsafe { std::ptr::read_volatile(((file + 33) * page_size) as *const u8) };
        assert_eq!(byte, 7);
        let (mut written_now, mut mapped_now) = (Vec::new(), Vec::new());
        assert!(learner.scan(|_, page, seen| match seen {
            Seen::Owned => written_now.push(page),
            Seen::Mapped => mapped_now.push(page),
        }));
        let new = |pages: &[u64], before: &[u64]| -> Vec<u64> {
            pages
                .iter()
                .copied()
                .filter(|p| before.binary_search(p).is_err())
                .collect()
        };
        let written = new(&written_now, learner.scratch.idle_written.pages());
        let mapped = new(&mapped_now, learner.scratch.idle_mapped.pages());
        for n in [3, 4, 40] {
            assert!(
                written.contains(&(region.page(n) as u64)),
                "page {n} not learned"
            );
        }
        assert!(
            !written.contains(&(region.page(20) as u64)),
            "an untouched page learned"
        );
        assert!(
            mapped.contains(&(file as u64 + 33)),
            "the file page read not learned"
        );
        table.designate(rustix::process::getpid().as_raw_nonzero().get() as u64);
        let scratch = learner.scratch.pages.clone();
        learner.finish();
        let published = table.read();
        assert!(
            !published.written.iter().any(|page| scratch.contains(page)),
            "the learner published pages of its own scratch memory"
        );
        assert!(!published.written.is_empty() && published.written.len() <= IDLE_BUDGET);
        assert!(published.written.is_sorted() && published.mapped.is_sorted());
        assert!(published.mapped.contains(&(file as u64 + 33)));
    }
}
