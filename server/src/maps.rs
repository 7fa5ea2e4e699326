//! Reading `/proc/self/maps`, the list of this process's mappings; and
//! making the memory a server shares with the workers it forks.

use std::fs::File;
use std::ops::Range;
use std::os::fd::AsRawFd;

/// One line of `/proc/self/maps`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mapping<'a> {
    /// First address.
    pub from: usize,
    /// One past the last address.
    pub to: usize,
    /// Permissions, such as `rw-p` (`p`: private, copy-on-write).
    pub perms: &'a str,
    /// Inode of the mapped file, `0` for anonymous memory.
    pub inode: &'a str,
    /// Path of the mapped file, `[heap]`, `[stack]`, or empty.
    pub name: &'a str,
}

impl Mapping<'_> {
    /// Parses one line; `None` for a line that is not one.
    pub fn parse(line: &str) -> Option<Mapping<'_>> {
        let mut fields = line.split_ascii_whitespace();
        let (from, to) = fields.next()?.split_once('-')?;
        let perms = fields.next()?;
        let inode = fields.nth(2)?;
        Some(Mapping {
            from: usize::from_str_radix(from, 16).ok()?,
            to: usize::from_str_radix(to, 16).ok()?,
            perms,
            inode,
            name: fields.next().unwrap_or(""),
        })
    }

    /// A private mapping of a file that cannot be written: code or
    /// constants.
    pub fn read_only_file(&self) -> bool {
        self.perms.as_bytes().get(1) == Some(&b'-')
            && self.perms.ends_with('p')
            && self.inode != "0"
    }

    /// Private and writable: a write copies the page rather than changing a
    /// file or memory shared with another process.
    pub fn private_writable(&self) -> bool {
        self.perms.as_bytes().get(1) == Some(&b'w') && self.perms.ends_with('p')
    }
}

/// This process's private writable mappings, looked up one at a time.
#[derive(Debug)]
pub struct PrivateWritable {
    maps: File,
    page_size: u64,
    /// All of them, from the text of `/proc/self/maps`: read once, where
    /// the kernel cannot be asked about one mapping (before Linux 6.11).
    listed: Option<Vec<Range<u64>>>,
}

impl PrivateWritable {
    /// Opens `/proc/self/maps`; `None` if it cannot be read.
    pub fn open() -> Option<PrivateWritable> {
        Some(PrivateWritable {
            maps: File::open("/proc/self/maps").ok()?,
            page_size: rustix::param::page_size() as u64,
            listed: None,
        })
    }

    /// The first private writable mapping that ends after `page` (a page
    /// number), as a range of page numbers; `None` if there is none.
    ///
    /// The kernel is asked about that one mapping: listing them all (the
    /// text of `/proc/self/maps`, some 200 µs for a process with numpy
    /// loaded) also takes memory to hold the list, which in a worker means
    /// pages copied from the server.
    pub fn at_or_after(&mut self, page: u64) -> Option<Range<u64>> {
        if self.listed.is_none() {
            match query(&self.maps, page, self.page_size) {
                Ok(found) => return found,
                Err(Unsupported) => self.listed = Some(self.list()),
            }
        }
        let listed = self.listed.as_ref()?;
        listed.iter().find(|mapping| mapping.end > page).cloned()
    }

    /// Every private writable mapping, ascending, read from the text.
    fn list(&self) -> Vec<Range<u64>> {
        let mut text = String::new();
        if std::io::Read::read_to_string(&mut &self.maps, &mut text).is_err() {
            return Vec::new();
        }
        text.lines()
            .filter_map(Mapping::parse)
            .filter(Mapping::private_writable)
            .map(|m| m.from as u64 / self.page_size..m.to as u64 / self.page_size)
            .collect()
    }
}

/// `PROCMAP_QUERY` (Linux 6.11), an ioctl on `/proc/self/maps` that
/// describes one mapping without generating the text of them all.
const PROCMAP_QUERY: libc::c_ulong = 0xC068_6611;
const QUERY_VMA_WRITABLE: u64 = 0x02;
const QUERY_VMA_SHARED: u64 = 0x08;
const QUERY_COVERING_OR_NEXT_VMA: u64 = 0x10;

/// `struct procmap_query` of `linux/fs.h`.
#[repr(C)]
#[derive(Debug, Default)]
struct ProcmapQuery {
    size: u64,
    query_flags: u64,
    query_addr: u64,
    vma_start: u64,
    vma_end: u64,
    vma_flags: u64,
    vma_page_size: u64,
    vma_offset: u64,
    inode: u64,
    dev_major: u32,
    dev_minor: u32,
    vma_name_size: u32,
    build_id_size: u32,
    vma_name_addr: u64,
    build_id_addr: u64,
}

/// The kernel cannot be asked about one mapping.
#[derive(Debug)]
struct Unsupported;

/// [`PrivateWritable::at_or_after`], asked of the kernel: one writable
/// mapping at a time, past the shared ones.
fn query(maps: &File, page: u64, page_size: u64) -> Result<Option<Range<u64>>, Unsupported> {
    // Page numbers come from memory every worker can write: one past any
    // address has no mapping after it.
    let Some(mut address) = page.checked_mul(page_size) else {
        return Ok(None);
    };
    loop {
        let mut query = ProcmapQuery {
            size: size_of::<ProcmapQuery>() as u64,
            query_flags: QUERY_COVERING_OR_NEXT_VMA | QUERY_VMA_WRITABLE,
            query_addr: address,
            ..ProcmapQuery::default()
        };
        // SAFETY: the argument is a `procmap_query` of the size it declares,
        // asking for no name or build id, so the kernel writes only into it.
        if unsafe { libc::ioctl(maps.as_raw_fd(), PROCMAP_QUERY, &mut query) } != 0 {
            let error = std::io::Error::last_os_error();
            // ENOENT: no writable mapping at or after `address`.
            return match error.raw_os_error() {
                Some(libc::ENOENT) => Ok(None),
                _ => Err(Unsupported),
            };
        }
        if query.vma_flags & QUERY_VMA_SHARED == 0 {
            return Ok(Some(query.vma_start / page_size..query.vma_end / page_size));
        }
        address = query.vma_end;
    }
}

/// Zero-filled memory for a `T` that every process forked from this one
/// from now on shares with it, for the life of the process; `None` if it
/// cannot be mapped.
///
/// # Safety
///
/// All zero bytes must be a valid `T`, and processes must use it only
/// through atomics (or other types safe to share between processes).
pub unsafe fn shared_zeroed<T>() -> Option<&'static T> {
    // SAFETY: a fresh anonymous mapping, touching no existing memory.
    let at = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            size_of::<T>(),
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    // SAFETY: page-aligned, large enough, zero-filled and never unmapped;
    // the caller vouches for the rest.
    (at != libc::MAP_FAILED).then(|| unsafe { &*at.cast::<T>() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_anonymous_file_and_named_lines() {
        let anonymous = Mapping::parse("7f00a000-7f00c000 rw-p 00000000 00:00 0 ").unwrap();
        assert_eq!((anonymous.from, anonymous.to), (0x7f00a000, 0x7f00c000));
        assert_eq!((anonymous.inode, anonymous.name), ("0", ""));
        assert!(anonymous.private_writable());

        let library = "7f1c2a3e5000-7f1c2a3e9000 rw-p 00214000 fd:01 1835 /usr/lib/libc.so.6";
        let library = Mapping::parse(library).unwrap();
        assert_eq!(
            (library.inode, library.name),
            ("1835", "/usr/lib/libc.so.6")
        );

        let heap = Mapping::parse("55d0a000-55d2b000 rw-p 00000000 00:00 0   [heap]").unwrap();
        assert_eq!(heap.name, "[heap]");
    }

    #[test]
    fn only_private_writable_mappings_are_private_writable() {
        for (perms, expected) in [
            ("rw-p", true),
            ("rwxp", true),
            ("rw-s", false),
            ("r--p", false),
            ("r-xp", false),
        ] {
            let line = format!("1000-2000 {perms} 00000000 00:00 0");
            assert_eq!(
                Mapping::parse(&line).unwrap().private_writable(),
                expected,
                "{perms}"
            );
        }
    }

    #[test]
    fn read_only_files_are_private_unwritable_file_mappings() {
        for (line, expected) in [
            ("1000-2000 r-xp 00000000 fd:01 42 /usr/lib/libc.so.6", true),
            ("1000-2000 r--p 00000000 fd:01 42 /usr/lib/libc.so.6", true),
            ("1000-2000 rw-p 00000000 fd:01 42 /usr/lib/libc.so.6", false),
            ("1000-2000 r--s 00000000 fd:01 42 /dev/shm/x", false),
            ("1000-2000 r--p 00000000 00:00 0   [vvar]", false),
        ] {
            assert_eq!(
                Mapping::parse(line).unwrap().read_only_file(),
                expected,
                "{line}"
            );
        }
    }

    #[test]
    fn rejects_lines_that_are_not_mappings() {
        for line in [
            "",
            "1000-2000",
            "zz-2000 rw-p 0 00:00 0",
            "1000 rw-p 0 00:00 0",
        ] {
            assert_eq!(Mapping::parse(line), None, "{line:?}");
        }
    }

    /// A fresh anonymous mapping of `pages` pages, `shared` or private, as
    /// a range of page numbers; never unmapped (the tests are short).
    fn anonymous(pages: u64, shared: bool) -> Range<u64> {
        let page_size = rustix::param::page_size() as u64;
        let sharing = if shared {
            libc::MAP_SHARED
        } else {
            libc::MAP_PRIVATE
        };
        // SAFETY: a fresh anonymous mapping, touching no existing memory.
        let at = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                (pages * page_size) as usize,
                libc::PROT_READ | libc::PROT_WRITE,
                sharing | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(at, libc::MAP_FAILED);
        let first = at as u64 / page_size;
        first..first + pages
    }

    #[test]
    fn the_private_writable_mappings_are_the_same_asked_one_at_a_time_or_listed() {
        let _layout = crate::memory_layout_lock();
        let private = anonymous(8, false);
        let shared = anonymous(8, true);
        let mut asked = PrivateWritable::open().expect("/proc/self/maps");
        let mut listed = PrivateWritable::open().expect("/proc/self/maps");
        listed.listed = Some(listed.list());
        for page in [
            private.start,
            private.end - 1,
            shared.start,
            shared.end - 1,
            0,
        ] {
            let found = asked.at_or_after(page);
            assert!(
                asked.listed.is_none(),
                "a kernel with PROCMAP_QUERY (6.11+)"
            );
            assert_eq!(found, listed.at_or_after(page), "page {page:#x}");
            let found = found.expect("a private writable mapping after each page");
            assert!(found.end > page);
            assert!(
                !(found.start..found.end).contains(&shared.start),
                "a shared mapping"
            );
        }
        let holding = asked.at_or_after(private.start).unwrap();
        assert!(holding.contains(&private.start) && holding.contains(&(private.end - 1)));
        assert_eq!(asked.at_or_after(u64::MAX), None);
    }
}
