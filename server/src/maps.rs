//! Reading `/proc/self/maps`, the list of this process's mappings.

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

    /// Private and writable: a write copies the page rather than changing a
    /// file or memory shared with another process.
    pub fn private_writable(&self) -> bool {
        self.perms.starts_with("rw") && self.perms.ends_with('p')
    }
}

#[cfg(test)]
mod tests {
    use super::Mapping;

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
}
