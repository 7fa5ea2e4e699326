//! Taking a run's copy-on-write faults before the run: prefaulting idle
//! workers.
//!
//! CPython writes a reference count into every object it touches, so a run
//! copies a few hundred of the server's pages, one page fault each, all
//! between the request and its exit status (fewer from 3.12 on, where the
//! server makes its warm objects immortal: see `immortal.rs`; the rest are
//! new objects filling the allocator's shared pages, the interpreter's own
//! state, caches). Which pages it copies hardly
//! changes from one run to the next: the same set-up code touches the same
//! objects (522 pages, the same ones four runs in a row, for `-c pass` on a
//! numpy server). So now and then one worker, the *learner* ([`Learner`]),
//! notes which of its pages it owns alone, once when idle and again after its
//! run; the pages of the second list missing from the first are those its run
//! wrote. It publishes them in a [`Table`] shared by the server and every
//! worker, if the server has not designated a newer learner meanwhile (a run
//! may last for ever; see [`forks_between_learners`]). Each other idle
//! worker takes its copies of those pages with
//! `MADV_POPULATE_WRITE` (Linux 5.14) before it waits for a request: the
//! faults move off the critical path, and one system call takes many of them
//! at a time (all of them, through `process_madvise`, from Linux 6.13). The
//! learner notes the pages of the libraries' code and constants that its run
//! mapped in too (a fork does not copy those page tables, so each worker
//! faults them in again), and idle workers map them ahead with
//! `MADV_POPULATE_READ`, which costs no memory of their own.
//!
//! Populating writes no byte, and only pages of the idle worker's own private
//! writable mappings are touched, so a stale table costs memory, never
//! correctness. What an idle worker then holds of its own stays within
//! [`IDLE_BUDGET`]: the learner publishes no more pages than fit beside what
//! it held itself when idle. Without
//! `/proc/self/pagemap` or `MADV_POPULATE_WRITE` nothing is learned or
//! populated, and runs take their faults as before.

use std::ops::Range;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, Ordering, fence};

use rustix::process::{Pid, WaitId, WaitIdOptions};

use crate::maps;

mod learner;

pub use learner::Learner;

/// Most pages an idle worker may hold of its own, those it populates
/// included: 1984 KiB of 4 KiB pages, under the 2 MiB of issue 4's target by
/// what the estimate misses (the learner counts what it holds itself when
/// idle; a worker that populates instead may hold a few pages more, such as
/// the stack its system calls take).
pub const IDLE_BUDGET: usize = 496;

/// Most file pages published for idle workers to map ahead: 8 MiB of code
/// and constants, shared with every other process that maps them.
const MAPPED_CAPACITY: usize = 2048;

/// A new learner is chosen once this many workers have been forked since the
/// last one, so the table follows what the server is asked to run; more if
/// learning took long (see [`forks_between_learners`]).
const RELEARN_AFTER: u32 = 64;

/// While nothing is learned, a new learner is chosen this many forks after
/// the last one has had its turn in the pool (its run may never end, or end
/// in a way that learns nothing).
const RETRY_AFTER: u32 = 8;

/// Learning may cost on average this much per worker forked. It reads 8 bytes
/// per page of the server's private writable memory, twice: about 5 ms for a
/// server holding 1 GiB on huge pages, 100 ms without them.
const LEARNING_MICROS_PER_FORK: u64 = 10;

/// Pagemap entry bits (Documentation/admin-guide/mm/pagemap.rst).
const PRESENT: u64 = 1 << 63;
const FILE_OR_SHARED: u64 = 1 << 61;
const EXCLUSIVE: u64 = 1 << 56;

/// Set in [`Table::designated`] while the learner writes.
const WRITING: u64 = 1 << 63;

/// Pagemap entries read at a time.
const CHUNK: usize = 4096;

/// The pages to populate, as page numbers (address / page size) in
/// ascending order, behind a sequence lock: the writer makes `sequence` odd
/// while it writes, and a reader that saw it change discards what it read.
///
/// Only the learner the server designated last may write: `designated`
/// holds its pid, with [`WRITING`] set while it writes. A learner claims the
/// table by setting that bit, so the server never designates another while
/// one is writing, and one that lost its designation cannot write.
#[derive(Debug)]
#[repr(C)]
pub struct Table {
    designated: AtomicU64,
    sequence: AtomicU64,
    /// How long the last learner took over its two scans.
    learning_micros: AtomicU64,
    written_len: AtomicU64,
    written: [AtomicU64; IDLE_BUDGET],
    mapped_len: AtomicU64,
    mapped: [AtomicU64; MAPPED_CAPACITY],
}

/// What a learner found its run did, as page numbers in ascending order.
#[cfg(test)]
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Learned {
    /// Pages it wrote: copied from the server, or new.
    written: Vec<u64>,
    /// Pages of files it mapped in for reading: code and constants.
    mapped: Vec<u64>,
}

impl Table {
    /// An empty table in this process's memory.
    pub const fn new() -> Table {
        Table {
            designated: AtomicU64::new(0),
            sequence: AtomicU64::new(0),
            learning_micros: AtomicU64::new(0),
            written_len: AtomicU64::new(0),
            written: [const { AtomicU64::new(0) }; IDLE_BUDGET],
            mapped_len: AtomicU64::new(0),
            mapped: [const { AtomicU64::new(0) }; MAPPED_CAPACITY],
        }
    }

    /// An empty table in memory that processes forked from this one share,
    /// for the life of the process; `None` if it cannot be mapped.
    pub fn shared() -> Option<&'static Table> {
        // SAFETY: zero bytes are a valid empty `Table` (every field is an
        // atomic integer), which other processes only use through the same
        // atomics.
        unsafe { maps::shared_zeroed() }
    }

    /// Replaces the pages, learned in `micros` by learner `pid`, if it is
    /// still the designated one; then designates none.
    pub fn publish(&self, pid: u64, written: &[u64], mapped: &[u64], micros: u64) -> bool {
        let claim = self.designated.compare_exchange(
            pid,
            pid | WRITING,
            Ordering::Acquire,
            Ordering::Relaxed,
        );
        if claim.is_err() {
            return false;
        }
        let sequence = self.sequence.load(Ordering::Relaxed) | 1;
        self.sequence.store(sequence, Ordering::Relaxed);
        fence(Ordering::Release);
        store(&self.written, &self.written_len, written);
        store(&self.mapped, &self.mapped_len, mapped);
        self.learning_micros.store(micros, Ordering::Relaxed);
        self.sequence.store(sequence + 1, Ordering::Release);
        self.designated.store(0, Ordering::Release);
        true
    }

    /// The pages written and mapped, each ascending, read where they lie;
    /// none while a learner writes them.
    ///
    /// A worker populating them must not copy them first: the copy would be
    /// memory it writes, so pages copied from the server (growing a list on
    /// the heap also walks the allocator's free chunks all over it). A
    /// learner that starts writing while they are read only gives the worker
    /// wrong pages to populate, which costs memory, never correctness.
    pub fn pages(&self) -> (Pages<'_>, Pages<'_>) {
        let writing = self.sequence.load(Ordering::Acquire) % 2 == 1;
        (
            Pages::in_place(&self.written, &self.written_len, writing),
            Pages::in_place(&self.mapped, &self.mapped_len, writing),
        )
    }

    /// The pages, copied, or none if they changed while being read.
    #[cfg(test)]
    fn read(&self) -> Learned {
        let before = self.sequence.load(Ordering::Acquire);
        let (written, mapped) = self.pages();
        let learned = Learned {
            written: written.collect(),
            mapped: mapped.collect(),
        };
        fence(Ordering::Acquire);
        if self.sequence.load(Ordering::Relaxed) != before {
            return Learned::default();
        }
        learned
    }

    /// Whether no written pages have been published.
    pub fn is_empty(&self) -> bool {
        self.written_len.load(Ordering::Relaxed) == 0
    }

    /// The server's side: whether a learner may be designated now. If the
    /// learner writing the table has died, empties the table it left half
    /// written and says yes.
    fn may_designate(&self, exited: impl Fn(u64) -> bool) -> bool {
        let designated = self.designated.load(Ordering::Acquire);
        if designated & WRITING == 0 {
            return true;
        }
        if !exited(designated & !WRITING) {
            return false;
        }
        let sequence = self.sequence.load(Ordering::Relaxed);
        if sequence % 2 == 1 {
            self.written_len.store(0, Ordering::Relaxed);
            self.mapped_len.store(0, Ordering::Relaxed);
            self.sequence.store(sequence + 1, Ordering::Release);
        }
        self.designated.store(0, Ordering::Release);
        true
    }

    /// Designates learner `pid`, unless a learner has started writing since
    /// [`Table::may_designate`]; the new one then learns in vain.
    fn designate(&self, pid: u64) {
        let current = self.designated.load(Ordering::Acquire);
        if current & WRITING == 0 {
            let _ =
                self.designated
                    .compare_exchange(current, pid, Ordering::AcqRel, Ordering::Relaxed);
        }
    }
}

/// Stores as many of `pages` as `slots` hold, and their number in `len`.
fn store(slots: &[AtomicU64], len: &AtomicU64, pages: &[u64]) {
    let pages = &pages[..pages.len().min(slots.len())];
    for (slot, &page) in slots.iter().zip(pages) {
        slot.store(page, Ordering::Relaxed);
    }
    len.store(pages.len() as u64, Ordering::Relaxed);
}

/// Page numbers published in a [`Table`], read one by one.
#[derive(Debug, Clone)]
pub struct Pages<'a>(std::slice::Iter<'a, AtomicU64>);

impl<'a> Pages<'a> {
    /// The slots [`store`] filled; none if `writing`.
    fn in_place(slots: &'a [AtomicU64], len: &AtomicU64, writing: bool) -> Pages<'a> {
        let len = if writing {
            0
        } else {
            len.load(Ordering::Relaxed) as usize
        };
        Pages(slots[..len.min(slots.len())].iter())
    }
}

impl Iterator for Pages<'_> {
    type Item = u64;

    fn next(&mut self) -> Option<u64> {
        self.0.next().map(|page| page.load(Ordering::Relaxed))
    }
}

impl Default for Table {
    fn default() -> Table {
        Table::new()
    }
}

/// What a new worker does about prefaulting before it waits for a request.
#[derive(Debug, Clone, Copy)]
pub enum Role {
    /// Learns which pages its run writes, and publishes them.
    Learn(&'static Table),
    /// Populates the published pages.
    Prefault(&'static Table),
    /// Nothing: the server has no table.
    Neither,
}

impl Role {
    /// The worker's side, once idle and set up: populates the published
    /// pages, or starts learning. Returns the learner, to be finished after
    /// the run.
    pub fn begin(self) -> Option<Learner> {
        match self {
            Role::Learn(table) => Learner::start(table),
            Role::Prefault(table) => {
                let (written, mapped) = table.pages();
                let mut advice = Advice::new();
                populate(written, &mut advice);
                map_ahead(mapped, &mut advice);
                None
            }
            Role::Neither => None,
        }
    }
}

/// The server's side: who learns, and when.
#[derive(Debug)]
pub struct Schedule {
    table: Option<&'static Table>,
    /// The server's pool size: a learner waits for its turn behind as many
    /// idle workers.
    pool: u32,
    /// Workers forked since the last learner.
    since_learner: u32,
}

impl Schedule {
    /// A schedule with a fresh shared table, for a pool of `pool` workers.
    pub fn new(pool: usize) -> Schedule {
        Schedule {
            table: Table::shared(),
            pool: u32::try_from(pool).unwrap_or(u32::MAX),
            since_learner: u32::MAX,
        }
    }

    /// The role of the next worker: a learner when `may_learn`, it is time
    /// for one (see [`forks_between_learners`]) and none is writing, else a
    /// prefaulter.
    pub fn next(&mut self, may_learn: bool) -> Role {
        let Some(table) = self.table else {
            return Role::Neither;
        };
        // Asked before every fork, for what `exited` relies on.
        let free = table.may_designate(exited);
        let micros = table.learning_micros.load(Ordering::Relaxed);
        let due = self.since_learner >= forks_between_learners(self.pool, table.is_empty(), micros);
        if may_learn && due && free {
            Role::Learn(table)
        } else {
            Role::Prefault(table)
        }
    }

    /// Records that worker `pid` was forked with `role`.
    pub fn forked(&mut self, role: Role, pid: Pid) {
        if let Role::Learn(table) = role {
            table.designate(pid.as_raw_nonzero().get() as u64);
            self.since_learner = 0;
        } else {
            self.since_learner = self.since_learner.saturating_add(1);
        }
    }
}

/// How many workers to fork after a learner before the next: while nothing
/// is learned, enough for the last learner to have had its turn in a pool of
/// `pool` ([`RETRY_AFTER`] more); once something is, at least
/// [`RELEARN_AFTER`], and enough to keep learning, which took `micros` last
/// time, within [`LEARNING_MICROS_PER_FORK`] however large the heap.
fn forks_between_learners(pool: u32, empty: bool, micros: u64) -> u32 {
    let turn = pool.saturating_add(RETRY_AFTER);
    if empty {
        return turn;
    }
    let affordable = u32::try_from(micros / LEARNING_MICROS_PER_FORK).unwrap_or(u32::MAX);
    affordable.max(RELEARN_AFTER).max(turn)
}

/// Whether worker `pid`, the learner writing the table, has exited. Once
/// the server has reaped it, `pid` is no child of the server's (ECHILD), and
/// cannot have become one again: while a learner writes, this is asked before
/// every fork, so no child was forked since the reap. Before the reap,
/// `WNOWAIT` looks without reaping.
fn exited(pid: u64) -> bool {
    let Some(pid) = i32::try_from(pid).ok().and_then(Pid::from_raw) else {
        return true;
    };
    let options = WaitIdOptions::EXITED | WaitIdOptions::NOHANG | WaitIdOptions::NOWAIT;
    match rustix::process::waitid(WaitId::Pid(pid), options) {
        Ok(status) => status.is_some(),
        Err(error) => error == rustix::io::Errno::CHILD,
    }
}

/// A pagemap entry of a page in memory, mapped by this process only, and
/// anonymous (a copy this process made or a page it allocated).
fn owned_alone(entry: u64) -> bool {
    entry & (PRESENT | EXCLUSIVE | FILE_OR_SHARED) == PRESENT | EXCLUSIVE
}

/// Populates, writable, each of `pages` (ascending page numbers) that lies in
/// one of this process's private writable mappings, through `advice`.
fn populate(pages: impl Iterator<Item = u64> + Clone, advice: &mut Advice) {
    let page_size = rustix::param::page_size();
    let Some(first) = pages.clone().next() else {
        return;
    };
    // Kernels before 5.14 refuse the advice itself (EINVAL), which they
    // check before the length: an empty range asks without populating.
    // SAFETY: advice about no memory at all.
    let asked = unsafe {
        libc::madvise(
            (first as usize * page_size) as *mut libc::c_void,
            0,
            libc::MADV_POPULATE_WRITE,
        )
    };
    if asked != 0 {
        return;
    }
    let Some(mut mappings) = maps::PrivateWritable::open() else {
        return;
    };
    // Each range lies inside one private writable mapping of this process:
    // populating copies its pages into this process without changing any
    // byte of them. A range that cannot be populated (device memory, memory
    // short) is left to fault as usual.
    for_each_run(
        pages,
        |page| mappings.at_or_after(page),
        |run| advice.give(libc::MADV_POPULATE_WRITE, run, page_size),
    );
}

/// Maps in, for reading, each run of consecutive `pages` (ascending page
/// numbers). Populating for reading changes nothing and costs no memory of
/// this process's own; a range that is no longer a file's is populated all
/// the same or refused, either of which is harmless.
fn map_ahead(pages: impl Iterator<Item = u64>, advice: &mut Advice) {
    let page_size = rustix::param::page_size();
    // Page numbers come from memory every worker can write: none past the
    // last address.
    let last = (usize::MAX / page_size) as u64;
    for_each_run(
        pages,
        |_| Some(0..last),
        |run| advice.give(libc::MADV_POPULATE_READ, run, page_size),
    );
}

/// Ranges most given an advice in one `process_madvise`.
const ADVISED_AT_ONCE: usize = 256;

/// `MADV_POPULATE_*` advice for many ranges of this process's memory, in as
/// few system calls as the kernel allows: `process_madvise` on this process
/// takes any advice from Linux 6.13 and up to [`ADVISED_AT_ONCE`] ranges of
/// one advice a call (an idle worker populates some 170), where `madvise`
/// takes one range a call. Older kernels refuse, and get one `madvise` a
/// range. The advice is given as ranges come, when it changes, and when this
/// is dropped.
struct Advice {
    advice: libc::c_int,
    ranges: [libc::iovec; ADVISED_AT_ONCE],
    len: usize,
    /// This process, for `process_madvise`; `None` once that is refused.
    pidfd: Option<rustix::fd::OwnedFd>,
}

impl Advice {
    fn new() -> Advice {
        let this = rustix::process::getpid();
        Advice {
            advice: 0,
            ranges: [libc::iovec {
                iov_base: std::ptr::null_mut(),
                iov_len: 0,
            }; ADVISED_AT_ONCE],
            len: 0,
            pidfd: rustix::process::pidfd_open(this, rustix::process::PidfdFlags::empty()).ok(),
        }
    }

    /// Gives `advice` for `pages` (page numbers), now or later.
    fn give(&mut self, advice: libc::c_int, pages: Range<u64>, page_size: usize) {
        if self.len == ADVISED_AT_ONCE || (self.len > 0 && advice != self.advice) {
            self.flush();
        }
        self.advice = advice;
        self.ranges[self.len] = libc::iovec {
            iov_base: (pages.start as usize * page_size) as *mut libc::c_void,
            iov_len: (pages.end - pages.start) as usize * page_size,
        };
        self.len += 1;
    }

    fn flush(&mut self) {
        let ranges = &self.ranges[..self.len];
        let mut next = 0;
        while next < ranges.len() {
            let Some(pidfd) = &self.pidfd else {
                for range in &ranges[next..] {
                    // SAFETY: see `populate` and `map_ahead`.
                    unsafe { libc::madvise(range.iov_base, range.iov_len, self.advice) };
                }
                break;
            };
            let rest = &ranges[next..];
            // SAFETY: as `madvise` on each range; the kernel reads `rest`.
            let advised = unsafe {
                libc::syscall(
                    libc::SYS_process_madvise,
                    pidfd.as_raw_fd(),
                    rest.as_ptr(),
                    rest.len(),
                    self.advice,
                    0,
                )
            };
            match usize::try_from(advised) {
                Ok(mut bytes) => {
                    // Past the ranges advised in full; the kernel stops at
                    // the first it cannot take, which faults as usual.
                    while next < ranges.len() && bytes >= ranges[next].iov_len {
                        bytes -= ranges[next].iov_len;
                        next += 1;
                    }
                    next += 1;
                }
                Err(_) => match std::io::Error::last_os_error().raw_os_error() {
                    // The advice, or the call, is not taken for a process:
                    // one `madvise` a range from here on.
                    Some(libc::EINVAL | libc::ENOSYS | libc::EPERM | libc::EBADF) => {
                        self.pidfd = None
                    }
                    // The first range failed: it faults as usual.
                    _ => next += 1,
                },
            }
        }
        self.len = 0;
    }
}

impl Drop for Advice {
    fn drop(&mut self) {
        self.flush();
    }
}

/// Calls `each` with the runs of consecutive `pages` (ascending) that lie
/// inside one mapping, in order; `mapping_at(page)` gives the first mapping
/// that ends after `page`, if any. It is asked once per mapping, and nothing
/// is allocated. Pages out of order (a table rewritten while it was read)
/// are skipped, make shorter runs or end the search early (when no mapping
/// follows one of them), and never make a run outside a mapping.
fn for_each_run(
    pages: impl IntoIterator<Item = u64>,
    mut mapping_at: impl FnMut(u64) -> Option<Range<u64>>,
    mut each: impl FnMut(Range<u64>),
) {
    let mut mapping: Option<Range<u64>> = None;
    let mut run: Option<Range<u64>> = None;
    for page in pages {
        if mapping.as_ref().is_none_or(|mapping| page >= mapping.end) {
            mapping = mapping_at(page);
        }
        let Some(mapping) = &mapping else {
            break;
        };
        if !mapping.contains(&page) {
            continue;
        }
        match &mut run {
            Some(run) if run.end == page && mapping.contains(&run.start) => run.end += 1,
            _ => {
                if let Some(done) = run.replace(page..page + 1) {
                    each(done);
                }
            }
        }
    }
    if let Some(done) = run {
        each(done);
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::fs::File;
    use std::os::unix::fs::FileExt;
    use std::time::Duration;

    use super::*;

    /// Pages a run wrote, and none it mapped.
    fn wrote(pages: &[u64]) -> Learned {
        Learned {
            written: pages.to_vec(),
            mapped: Vec::new(),
        }
    }

    /// Designates learner `pid` and has it publish `learned`.
    fn learn(table: &Table, pid: u64, learned: &Learned) {
        assert!(table.may_designate(|_| false));
        table.designate(pid);
        assert!(
            table.publish(pid, &learned.written, &learned.mapped, 1),
            "a designated learner must publish"
        );
    }

    #[test]
    fn a_published_table_reads_back_and_is_capped() {
        let table = Table::new();
        assert!(table.is_empty());
        assert_eq!(table.read(), Learned::default());
        let both = Learned {
            written: vec![3, 4, 9],
            mapped: vec![100, 101],
        };
        learn(&table, 10, &both);
        assert_eq!(table.read(), both);
        let many: Vec<u64> = (0..MAPPED_CAPACITY as u64 + 10).collect();
        learn(
            &table,
            11,
            &Learned {
                written: many.clone(),
                mapped: many.clone(),
            },
        );
        let read = table.read();
        assert_eq!(read.written, many[..IDLE_BUDGET]);
        assert_eq!(read.mapped, many[..MAPPED_CAPACITY]);
        learn(&table, 12, &wrote(&[7]));
        assert_eq!(table.read(), wrote(&[7]));
    }

    #[test]
    fn only_the_last_designated_learner_publishes_and_only_once() {
        let table = Table::new();
        table.designate(10);
        table.designate(11);
        assert!(
            !table.publish(10, &[1], &[], 1),
            "a learner no longer designated"
        );
        assert!(table.publish(11, &[2], &[], 1));
        assert!(
            !table.publish(11, &[3], &[], 1),
            "a learner that has published"
        );
        assert_eq!(table.read(), wrote(&[2]));
    }

    #[test]
    fn no_learner_is_designated_while_one_writes_unless_it_died() {
        let table = Table::new();
        learn(&table, 10, &wrote(&[1, 2]));
        // Learner 11, designated, is killed while it writes the table.
        table.designate(11);
        table.designated.fetch_or(WRITING, Ordering::Relaxed);
        table.sequence.fetch_add(1, Ordering::Relaxed);
        assert_eq!(table.read(), Learned::default(), "a table being written");
        table.designate(12);
        assert_eq!(table.designated.load(Ordering::Relaxed), 11 | WRITING);
        assert!(!table.may_designate(|_| false), "the writer is alive");
        assert!(table.may_designate(|pid| pid == 11), "the writer died");
        assert!(table.is_empty());
        assert_eq!(table.sequence.load(Ordering::Relaxed) % 2, 0);
        learn(&table, 12, &wrote(&[5]));
        assert_eq!(table.read(), wrote(&[5]));
    }

    #[test]
    fn a_child_has_exited_once_it_ends_reaped_or_not() {
        let _layout = crate::memory_layout_lock();
        let (reader, writer) = rustix::pipe::pipe().expect("a pipe");
        // SAFETY: the child only reads a byte and calls `_exit`, both
        // async-signal-safe, as a child of a multi-threaded process must.
        let child = unsafe { libc::fork() };
        if child == 0 {
            let mut byte = [0u8];
            // SAFETY: a plain read into a local buffer, then `_exit`.
            unsafe {
                libc::read(
                    std::os::fd::AsRawFd::as_raw_fd(&reader),
                    byte.as_mut_ptr().cast(),
                    1,
                );
                libc::_exit(0);
            }
        }
        let pid = child as u64;
        assert!(!exited(pid), "a running child");
        rustix::io::write(&writer, b"x").expect("waking the child");
        let zombie = (0..500).any(|_| {
            std::thread::sleep(Duration::from_millis(10));
            exited(pid)
        });
        assert!(zombie, "an ended child, not yet reaped");
        let mut status = 0;
        // SAFETY: reaping this test's own child.
        assert_eq!(unsafe { libc::waitpid(child, &mut status, 0) }, child);
        assert!(exited(pid), "a reaped child (ECHILD)");
    }

    #[test]
    fn learners_come_after_a_pool_s_turn_and_slow_learning_less_often() {
        // Nothing learned yet: once the last learner has had its turn.
        assert_eq!(forks_between_learners(4, true, 0), 4 + RETRY_AFTER);
        assert_eq!(forks_between_learners(0, true, 0), RETRY_AFTER);
        // Learned: every RELEARN_AFTER forks, or less often if it was slow.
        assert_eq!(forks_between_learners(4, false, 300), RELEARN_AFTER);
        assert_eq!(forks_between_learners(4, false, 5_000), 500);
        assert_eq!(forks_between_learners(4, false, 100_000), 10_000);
        assert_eq!(forks_between_learners(4, false, u64::MAX), u32::MAX);
        assert_eq!(forks_between_learners(100, false, 0), 100 + RETRY_AFTER);
    }

    /// The runs [`for_each_run`] finds among `pages` in `mappings`
    /// (ascending), and how often it asked for a mapping.
    fn runs(pages: &[u64], mappings: &[Range<u64>]) -> (Vec<Range<u64>>, usize) {
        let (mut runs, mut asked) = (Vec::new(), 0);
        for_each_run(
            pages.iter().copied(),
            |page| {
                asked += 1;
                mappings.iter().find(|m| m.end > page).cloned()
            },
            |run| runs.push(run),
        );
        (runs, asked)
    }

    #[test]
    fn runs_join_neighbours_within_a_mapping_and_drop_pages_outside() {
        let pages = [1, 2, 3, 5, 10, 11, 12, 20, 30, 31];
        let mappings = [2..12, 12..13, 25..31];
        let (runs, asked) = runs(&pages, &mappings);
        assert_eq!(runs, [2..4, 5..6, 10..12, 12..13, 30..31]);
        assert_eq!(asked, 4, "once per mapping, and once to find no more");
    }

    #[test]
    fn no_mappings_no_runs() {
        assert_eq!(runs(&[1, 2], &[]), (Vec::new(), 1));
    }

    #[test]
    fn pages_out_of_order_never_make_a_run_outside_a_mapping() {
        let (runs, _) = runs(&[5, 6, 2, 3, 7, 11, 40, 11], &[2..8, 10..12]);
        assert_eq!(runs, [5..7, 2..4, 7..8, 11..12]);
    }

    #[test]
    fn only_present_exclusive_anonymous_pages_are_owned_alone() {
        assert!(owned_alone(PRESENT | EXCLUSIVE | 0x1234));
        assert!(!owned_alone(PRESENT), "shared with the server");
        assert!(!owned_alone(EXCLUSIVE), "not in memory");
        assert!(
            !owned_alone(PRESENT | EXCLUSIVE | FILE_OR_SHARED),
            "a file's page"
        );
    }

    /// This process's pagemap entry for `page`.
    pub(super) fn entry(page: usize) -> u64 {
        let pagemap = File::open("/proc/self/pagemap").expect("pagemap");
        let mut bytes = [0; 8];
        pagemap
            .read_exact_at(&mut bytes, page as u64 * 8)
            .expect("entry");
        u64::from_ne_bytes(bytes)
    }

    /// The page numbers of a fresh anonymous region of `pages` pages, none
    /// of them in memory yet; unmapped when dropped.
    pub(crate) struct Region(&'static mut [u8]);

    impl Region {
        pub(crate) fn new(pages: usize) -> Region {
            let len = pages * rustix::param::page_size();
            // SAFETY: a fresh private anonymous mapping.
            let at = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    len,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                    -1,
                    0,
                )
            };
            assert_ne!(at, libc::MAP_FAILED);
            // SAFETY: the mapping is ours, `len` bytes long, until drop.
            Region(unsafe { std::slice::from_raw_parts_mut(at.cast(), len) })
        }

        pub(crate) fn page(&self, n: usize) -> usize {
            self.0.as_ptr() as usize / rustix::param::page_size() + n
        }

        pub(crate) fn write(&mut self, n: usize) {
            let at = n * rustix::param::page_size();
            // SAFETY: inside the region; volatile so the write happens.
            unsafe { std::ptr::write_volatile(&mut self.0[at], 1) };
        }
    }

    impl Drop for Region {
        fn drop(&mut self) {
            // SAFETY: unmaps exactly the region's own mapping.
            unsafe { libc::munmap(self.0.as_mut_ptr().cast(), self.0.len()) };
        }
    }

    /// A private read-only mapping of a fresh file of `pages` pages, as the
    /// page number of its first page; never unmapped (the tests are short).
    pub(super) fn file_mapping(name: &str, pages: usize) -> usize {
        let page_size = rustix::param::page_size();
        let path =
            std::env::temp_dir().join(format!("warmfork-prefault-{}-{name}", std::process::id()));
        std::fs::write(&path, vec![7u8; pages * page_size]).expect("a temporary file");
        let file = File::open(&path).expect("the temporary file");
        std::fs::remove_file(&path).expect("removing the temporary file");
        // SAFETY: a fresh private read-only mapping of a file this test owns.
        let at = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                pages * page_size,
                libc::PROT_READ,
                libc::MAP_PRIVATE,
                std::os::fd::AsRawFd::as_raw_fd(&file),
                0,
            )
        };
        assert_ne!(at, libc::MAP_FAILED);
        at as usize / page_size
    }

    /// Counts the heap allocations of the thread that calls [`allocations`].
    struct Counting;

    thread_local! {
        static ALLOCATIONS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
    }

    // SAFETY: every call goes to the system allocator, unchanged.
    unsafe impl std::alloc::GlobalAlloc for Counting {
        unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
            ALLOCATIONS.with(|count| count.set(count.get() + 1));
            // SAFETY: the caller's promises about `layout` hold for System too.
            unsafe { std::alloc::System.alloc(layout) }
        }

        unsafe fn dealloc(&self, at: *mut u8, layout: std::alloc::Layout) {
            // SAFETY: `at` came from System.alloc with this layout.
            unsafe { std::alloc::System.dealloc(at, layout) }
        }

        unsafe fn realloc(&self, at: *mut u8, layout: std::alloc::Layout, size: usize) -> *mut u8 {
            ALLOCATIONS.with(|count| count.set(count.get() + 1));
            // SAFETY: as for `dealloc`, and `size` is the caller's to vouch for.
            unsafe { std::alloc::System.realloc(at, layout, size) }
        }
    }

    #[global_allocator]
    static COUNTING: Counting = Counting;

    /// How many heap allocations this thread made while calling `f`.
    fn allocations(f: impl FnOnce()) -> usize {
        let before = ALLOCATIONS.with(std::cell::Cell::get);
        f();
        ALLOCATIONS.with(std::cell::Cell::get) - before
    }

    #[test]
    fn neither_populating_nor_learning_touches_the_heap() {
        let _layout = crate::memory_layout_lock();
        // The heap is shared with the server until written; a worker that
        // allocated while it prepared would start its run with the
        // allocator's free chunks moved, and learner and populators would
        // disagree on the pages a run writes.
        let table: &'static Table = Box::leak(Box::new(Table::new()));
        let region = Region::new(16);
        let file = file_mapping("heap", 8);
        let pages = [region.page(1) as u64, region.page(2) as u64];
        learn(
            table,
            1,
            &Learned {
                written: pages.to_vec(),
                mapped: vec![file as u64],
            },
        );
        assert_eq!(
            allocations(|| assert!(Role::Prefault(table).begin().is_none())),
            0
        );
        assert!(owned_alone(entry(region.page(2))), "not populated");
        let pid = rustix::process::getpid().as_raw_nonzero().get() as u64;
        table.designate(pid);
        let learner = allocations(|| {
            let learner = Role::Learn(table).begin().expect("a learner");
            learner.finish();
        });
        assert_eq!(learner, 0);
    }

    #[test]
    fn mapping_ahead_maps_file_pages_in_without_owning_them() {
        let _layout = crate::memory_layout_lock();
        let file = file_mapping("ahead", 64);
        let page = file + 50;
        assert_eq!(entry(page) & PRESENT, 0, "mapped before it was asked for");
        map_ahead(
            [page as u64, page as u64 + 1].into_iter(),
            &mut Advice::new(),
        );
        assert_ne!(entry(page) & PRESENT, 0, "not mapped in");
        assert!(
            !owned_alone(entry(page)),
            "a file's page became this process's own"
        );
    }

    /// Populates, through an [`Advice`] that uses `process_madvise` or not,
    /// two ranges with an unmapped one between them: both get populated.
    fn advise_around_a_hole(batched: bool) {
        let _layout = crate::memory_layout_lock();
        let page_size = rustix::param::page_size();
        let (first, second) = (Region::new(4), Region::new(4));
        let hole = Region::new(1);
        let unmapped = hole.page(0) as u64;
        drop(hole);
        let mut advice = Advice::new();
        if !batched {
            advice.pidfd = None;
        }
        for (region, count) in [(&first, 2), (&second, 3)] {
            let start = region.page(1) as u64;
            advice.give(libc::MADV_POPULATE_WRITE, start..start + count, page_size);
            if region.page(0) == first.page(0) {
                advice.give(libc::MADV_POPULATE_WRITE, unmapped..unmapped + 1, page_size);
            }
        }
        advice.flush();
        if batched && kernel_at_least(6, 13) {
            assert!(advice.pidfd.is_some(), "process_madvise was refused");
        }
        drop(advice);
        let owned = |region: &Region| {
            (0..4)
                .map(|n| owned_alone(entry(region.page(n))))
                .collect::<Vec<_>>()
        };
        assert_eq!(owned(&first), [false, true, true, false]);
        assert_eq!(owned(&second), [false, true, true, true]);
    }

    /// Whether the running kernel is at least `major.minor`.
    fn kernel_at_least(major: u32, minor: u32) -> bool {
        let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
        let mut numbers = release
            .split(|c: char| !c.is_ascii_digit())
            .map(|n| n.parse::<u32>().unwrap_or(0));
        (numbers.next().unwrap_or(0), numbers.next().unwrap_or(0)) >= (major, minor)
    }

    #[test]
    fn advice_for_many_ranges_goes_on_past_one_it_cannot_take() {
        advise_around_a_hole(true);
    }

    #[test]
    fn advice_without_process_madvise_gives_each_range_its_madvise() {
        advise_around_a_hole(false);
    }

    #[test]
    fn populating_makes_pages_present_and_owned_and_skips_unmapped_ones() {
        let _layout = crate::memory_layout_lock();
        let region = Region::new(16);
        let (a, b) = (region.page(2), region.page(3));
        assert!(!owned_alone(entry(a)) && !owned_alone(entry(b)));
        // A page past the region, unmapped: skipped, not an error.
        let beyond = Region::new(1);
        let unmapped = beyond.page(0) as u64;
        drop(beyond);
        let mut pages = vec![a as u64, b as u64, unmapped];
        pages.sort_unstable();
        populate(pages.into_iter(), &mut Advice::new());
        assert!(owned_alone(entry(a)) && owned_alone(entry(b)));
        assert!(!owned_alone(entry(region.page(4))), "a page not asked for");
        assert!(
            region.0.iter().all(|&byte| byte == 0),
            "populating changed a byte"
        );
    }
}
