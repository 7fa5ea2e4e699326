//! Reading `/proc/self/maps`, the list of this process's mappings.

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

/// The private writable mappings of this process that hold any of `pages`
/// (page numbers, ascending), as ranges of page numbers, ascending.
pub fn private_writable_holding(pages: &[u64]) -> Vec<Range<u64>> {
    let page_size = rustix::param::page_size() as u64;
    let Ok(maps) = File::open("/proc/self/maps") else {
        return Vec::new();
    };
    if let Some(found) = query(&maps, pages, page_size) {
        return found;
    }
    let mut text = String::new();
    if std::io::Read::read_to_string(&mut &maps, &mut text).is_err() {
        return Vec::new();
    }
    text.lines()
        .filter_map(Mapping::parse)
        .filter(Mapping::private_writable)
        .map(|m| m.from as u64 / page_size..m.to as u64 / page_size)
        .collect()
}

/// `PROCMAP_QUERY` (Linux 6.11), an ioctl on `/proc/self/maps` that
/// describes one mapping without generating the text of them all (which
/// takes some 200 µs for a process with numpy loaded).
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

/// [`private_writable_holding`] asked of the kernel one writable mapping at
/// a time, skipping those that hold none of `pages`; `None` if the kernel
/// cannot be asked.
fn query(maps: &File, pages: &[u64], page_size: u64) -> Option<Vec<Range<u64>>> {
    let mut found = Vec::new();
    let mut rest = pages;
    while let Some(&page) = rest.first() {
        // Page numbers come from memory every worker can write: one past any
        // address ends the list.
        let Some(address) = page.checked_mul(page_size) else {
            break;
        };
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
            // ENOENT: no writable mapping at or after `page`.
            return (error.raw_os_error() == Some(libc::ENOENT)).then_some(found);
        }
        let mapping = query.vma_start / page_size..query.vma_end / page_size;
        // At least one page a turn, whatever the kernel answered.
        rest = &rest[rest.partition_point(|&p| p < mapping.end).max(1)..];
        if query.vma_flags & QUERY_VMA_SHARED == 0 {
            found.push(mapping);
        }
    }
    Some(found)
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
    fn the_mappings_holding_pages_are_private_writable_ones_the_same_asked_or_read() {
        let private = anonymous(8, false);
        let shared = anonymous(8, true);
        let mut pages = vec![private.start + 2, private.start + 3, shared.start + 1];
        pages.sort_unstable();
        let page_size = rustix::param::page_size() as u64;
        let maps = File::open("/proc/self/maps").unwrap();
        let asked = query(&maps, &pages, page_size).expect("a kernel with PROCMAP_QUERY (6.11+)");
        assert!(
            asked
                .iter()
                .any(|m| m.contains(&private.start) && m.contains(&(private.end - 1)))
        );
        assert!(
            !asked.iter().any(|m| m.contains(&shared.start)),
            "a shared mapping"
        );
        // The text of /proc/self/maps says the same about these pages.
        let read: Vec<Range<u64>> = std::fs::read_to_string("/proc/self/maps")
            .unwrap()
            .lines()
            .filter_map(Mapping::parse)
            .filter(Mapping::private_writable)
            .map(|m| m.from as u64 / page_size..m.to as u64 / page_size)
            .filter(|m| pages.iter().any(|p| m.contains(p)))
            .collect();
        assert_eq!(asked, read);
        assert_eq!(private_writable_holding(&pages), asked);
    }
}
