//! The `RUN` request: the one frame a client sends.
//!
//! ```text
//! offset  size  field
//!      0     8  prefix: version 1, kind 1 (RUN), flags = FdSet, length
//!      8     4  argc
//!     12     4  envc
//!     16     4  umask
//!     20     8  ignored signals (bit N-1 set: signal N is ignored)
//!     28     …  with EXTRA_FDS only: fdc (4 bytes), then fdc descriptor numbers (4 bytes each)
//!      …     …  argc + envc strings, each terminated by one NUL byte
//! ```
//!
//! The descriptors named by the flags travel in the `SCM_RIGHTS` ancillary
//! data of the frame's first byte, in flag-bit order, followed by the
//! client's other descriptors ([`FdSet::EXTRA_FDS`]) in the order of their
//! numbers. One flag names no descriptor: [`FdSet::CONTROLLING_TTY`] asks the
//! worker to make its stdin its controlling terminal.

use crate::frame::{Kind, MAX_FRAME_LEN, PREFIX_LEN, Prefix, WireError, u32_at};

/// Bytes in a `RUN` frame before its strings (and before its list of
/// descriptor numbers, when it has one).
pub const RUN_HEADER_LEN: usize = PREFIX_LEN + 20;

/// The most descriptors beyond the standard ones a `RUN` frame may carry.
///
/// Linux passes at most 253 descriptors in one message (`SCM_MAX_FD`); the
/// server hands a request to a worker in one message with the client's
/// connection ahead of the request's four standard descriptors, which
/// leaves 248.
pub const MAX_EXTRA_FDS: usize = 248;

/// Bytes of the list of descriptor numbers of a frame that carries `count`
/// descriptors beyond the standard ones: none without any, else the count
/// and the numbers.
pub const fn fd_list_len(count: usize) -> usize {
    if count == 0 { 0 } else { 4 + 4 * count }
}

/// Writes the list of descriptor numbers (see [`fd_list_len`]) into `out`
/// and returns its length, or `None` when `out` is too small.
pub fn encode_fd_list(numbers: &[u32], out: &mut [u8]) -> Option<usize> {
    let len = fd_list_len(numbers.len());
    let list = out.get_mut(..len)?;
    if len == 0 {
        return Some(0);
    }
    list[..4].copy_from_slice(&(numbers.len() as u32).to_le_bytes());
    for (slot, number) in list[4..].chunks_exact_mut(4).zip(numbers) {
        slot.copy_from_slice(&number.to_le_bytes());
    }
    Some(len)
}

/// The flags of a `RUN` frame: the descriptors it carries (bits 0–3),
/// whether the worker takes its stdin as its controlling terminal (bit 4),
/// and whether the client's other descriptors follow (bit 5).
///
/// A missing stdio bit means the client had that descriptor closed; the
/// worker then has it closed too.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FdSet(pub u16);

impl FdSet {
    /// The client's standard input.
    pub const STDIN: FdSet = FdSet(1 << 0);
    /// The client's standard output.
    pub const STDOUT: FdSet = FdSet(1 << 1);
    /// The client's standard error.
    pub const STDERR: FdSet = FdSet(1 << 2);
    /// A descriptor of the client's working directory (opened `O_PATH`).
    pub const CWD: FdSet = FdSet(1 << 3);
    /// Not a descriptor: the worker makes its stdin (a terminal, normally
    /// the slave of a pseudo-terminal the client relays) its controlling
    /// terminal, so that `/dev/tty`, job control and curses work.
    pub const CONTROLLING_TTY: FdSet = FdSet(1 << 4);
    /// The client's descriptors other than 0, 1 and 2: the frame holds
    /// their numbers, and they ride after the standard ones, so that the
    /// program finds each at its number (`/dev/fd/63` of a `<(...)`).
    pub const EXTRA_FDS: FdSet = FdSet(1 << 5);
    /// Every bit this version defines.
    pub const ALL: FdSet = FdSet(0b11_1111);
    /// The bits that announce a descriptor.
    const DESCRIPTORS: FdSet = FdSet(0b1111);
    /// The slots in the order their descriptors appear in `SCM_RIGHTS`.
    pub const SLOTS: [FdSet; 4] = [FdSet::STDIN, FdSet::STDOUT, FdSet::STDERR, FdSet::CWD];

    /// Whether every bit of `other` is set here.
    pub fn contains(self, other: FdSet) -> bool {
        self.0 & other.0 == other.0
    }

    /// This set with the bits of `other` added.
    pub fn with(self, other: FdSet) -> FdSet {
        FdSet(self.0 | other.0)
    }

    /// This set with the bits of `other` removed.
    pub fn without(self, other: FdSet) -> FdSet {
        FdSet(self.0 & !other.0)
    }

    /// How many standard descriptors (stdio and working directory) the
    /// frame carries.
    pub fn count(self) -> usize {
        (self.0 & FdSet::DESCRIPTORS.0).count_ones() as usize
    }
}

/// The fixed part of a `RUN` frame, as the client builds it before sending
/// the strings that follow it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RunHeader {
    /// Descriptors carried in the ancillary data.
    pub fds: FdSet,
    /// Number of argument strings.
    pub argc: u32,
    /// Number of environment strings.
    pub envc: u32,
    /// The client's file mode creation mask.
    pub umask: u32,
    /// The signals the client ignores (bit N-1 for signal N); the program
    /// keeps them ignored, as `nohup` expects.
    pub ignored_signals: u64,
    /// Bytes of string data that follow the header, NULs included.
    pub strings_len: usize,
    /// How many descriptors beyond the standard ones ride along; their
    /// numbers (see [`encode_fd_list`]) follow the header. The header's
    /// [`FdSet::EXTRA_FDS`] bit is set exactly when there are any.
    pub extra_fds: usize,
}

impl RunHeader {
    /// The header as it goes on the wire, or [`WireError::TooLarge`] when the
    /// frame would exceed [`MAX_FRAME_LEN`].
    /// More than [`MAX_EXTRA_FDS`] extra descriptors is
    /// [`WireError::BadField`].
    pub fn to_bytes(&self) -> Result<[u8; RUN_HEADER_LEN], WireError> {
        if self.extra_fds > MAX_EXTRA_FDS {
            return Err(WireError::BadField("fdc"));
        }
        let len = (RUN_HEADER_LEN + fd_list_len(self.extra_fds)).saturating_add(self.strings_len);
        if len > MAX_FRAME_LEN as usize {
            return Err(WireError::TooLarge(u32::try_from(len).unwrap_or(u32::MAX)));
        }
        let flags = if self.extra_fds > 0 {
            self.fds.with(FdSet::EXTRA_FDS)
        } else {
            self.fds.without(FdSet::EXTRA_FDS)
        };
        let mut out = [0u8; RUN_HEADER_LEN];
        out[..PREFIX_LEN].copy_from_slice(&Prefix::new(Kind::Run, flags.0, len as u32).to_bytes());
        out[8..12].copy_from_slice(&self.argc.to_le_bytes());
        out[12..16].copy_from_slice(&self.envc.to_le_bytes());
        out[16..20].copy_from_slice(&self.umask.to_le_bytes());
        out[20..28].copy_from_slice(&self.ignored_signals.to_le_bytes());
        Ok(out)
    }
}

/// Writes a whole `RUN` frame that passes no extra descriptors into `out`
/// and returns its length, or `None` when `out` is too small or a string
/// holds a NUL byte. See [`encode_run_with_fds`].
pub fn encode_run(
    out: &mut [u8],
    fds: FdSet,
    umask: u32,
    ignored_signals: u64,
    argv: &[&[u8]],
    env: &[&[u8]],
) -> Option<usize> {
    encode_run_with_fds(out, fds, umask, ignored_signals, &[], argv, env)
}

/// Writes a whole `RUN` frame into `out`, with the numbers of `extra_fds`
/// descriptors beyond the standard ones, and returns its length, or `None`
/// when `out` is too small, a string holds a NUL byte or there are more than
/// [`MAX_EXTRA_FDS`] numbers. The numbers are written as given: whether
/// they are valid is for [`RunRequest::decode`] to say.
///
/// The client sends its strings straight from where the kernel put them and
/// never builds a frame this way; tests, fuzzers and other tools do.
pub fn encode_run_with_fds(
    out: &mut [u8],
    fds: FdSet,
    umask: u32,
    ignored_signals: u64,
    extra_fds: &[u32],
    argv: &[&[u8]],
    env: &[&[u8]],
) -> Option<usize> {
    let strings = argv.iter().chain(env);
    let strings_len: usize = strings.clone().map(|s| s.len() + 1).sum();
    let header = RunHeader {
        fds,
        argc: u32::try_from(argv.len()).ok()?,
        envc: u32::try_from(env.len()).ok()?,
        umask,
        ignored_signals,
        strings_len,
        extra_fds: extra_fds.len(),
    };
    let list_len = fd_list_len(extra_fds.len());
    let frame = out.get_mut(..RUN_HEADER_LEN + list_len + strings_len)?;
    frame[..RUN_HEADER_LEN].copy_from_slice(&header.to_bytes().ok()?);
    encode_fd_list(extra_fds, &mut frame[RUN_HEADER_LEN..])?;
    let mut at = RUN_HEADER_LEN + list_len;
    for s in strings {
        if s.contains(&0) {
            return None;
        }
        frame[at..at + s.len()].copy_from_slice(s);
        frame[at + s.len()] = 0;
        at += s.len() + 1;
    }
    Some(at)
}

/// A decoded and validated `RUN` frame, borrowing its strings from the frame.
#[derive(Clone, Copy, Debug)]
pub struct RunRequest<'a> {
    /// Descriptors the frame announced in its ancillary data.
    pub fds: FdSet,
    /// The client's file mode creation mask (at most `0o777`).
    pub umask: u32,
    /// The signals the client ignores: bit N-1 for signal N.
    pub ignored_signals: u64,
    extra_fds: FdNumbers<'a>,
    argc: u32,
    envc: u32,
    strings: &'a [u8],
    env_at: usize,
}

impl<'a> RunRequest<'a> {
    /// Decodes a complete `RUN` frame, prefix included.
    ///
    /// Every field is checked: the version, kind and length, that no unknown
    /// flag is set, that the umask is a permission mask, that the list of
    /// descriptor numbers (with [`FdSet::EXTRA_FDS`]) holds 1 to
    /// [`MAX_EXTRA_FDS`] numbers, strictly increasing, each from 3 to
    /// `i32::MAX`, and that the string section holds exactly `argc + envc`
    /// NUL-terminated strings.
    pub fn decode(frame: &'a [u8]) -> Result<RunRequest<'a>, WireError> {
        let prefix = Prefix::parse(frame).ok_or(WireError::BadLength(frame.len() as u32))?;
        match prefix.validate()? {
            Kind::Run => {}
            other => return Err(WireError::UnexpectedKind(other)),
        }
        if prefix.len as usize != frame.len() || frame.len() < RUN_HEADER_LEN {
            return Err(WireError::BadLength(prefix.len));
        }
        let fds = FdSet(prefix.flags);
        if !FdSet::ALL.contains(fds) {
            return Err(WireError::UnknownFlags(prefix.flags & !FdSet::ALL.0));
        }
        let argc = u32_at(frame, 8);
        let envc = u32_at(frame, 12);
        let umask = u32_at(frame, 16);
        if umask > 0o777 {
            return Err(WireError::BadField("umask"));
        }
        let ignored_signals = u64::from(u32_at(frame, 20)) | (u64::from(u32_at(frame, 24)) << 32);
        let extra_fds = if fds.contains(FdSet::EXTRA_FDS) {
            FdNumbers::decode(&frame[RUN_HEADER_LEN..])?
        } else {
            FdNumbers { list: &[] }
        };
        let strings = &frame[RUN_HEADER_LEN + fd_list_len(extra_fds.len())..];
        // Counted in u64: two u32 counts can overflow a 32-bit usize.
        let count = u64::from(argc) + u64::from(envc);
        let nuls = strings.iter().filter(|&&b| b == 0).count() as u64;
        if strings.last().is_some_and(|&b| b != 0) || nuls != count {
            return Err(WireError::BadStrings);
        }
        let env_at = Strings::new(strings, argc).rest_offset();
        Ok(RunRequest {
            fds,
            umask,
            ignored_signals,
            extra_fds,
            argc,
            envc,
            strings,
            env_at,
        })
    }

    /// The numbers of the client's descriptors beyond the standard ones, in
    /// the order they ride in `SCM_RIGHTS` (after the standard ones).
    pub fn extra_fds(&self) -> FdNumbers<'a> {
        self.extra_fds
    }

    /// How many descriptors the frame carries in all.
    pub fn fd_count(&self) -> usize {
        self.fds.count() + self.extra_fds.len()
    }

    /// The client's arguments, `argv[0]` first, without their NULs.
    pub fn argv(&self) -> Strings<'a> {
        Strings::new(self.strings, self.argc)
    }

    /// The client's environment strings (`NAME=value`, as the client had
    /// them), without their NULs.
    pub fn env(&self) -> Strings<'a> {
        Strings::new(&self.strings[self.env_at..], self.envc)
    }
}

/// The numbers of a `RUN` frame's extra descriptors, as decoded and
/// checked: 1 to [`MAX_EXTRA_FDS`] of them, strictly increasing, each from 3
/// to `i32::MAX` (or none, without [`FdSet::EXTRA_FDS`]).
#[derive(Clone, Copy, Debug)]
pub struct FdNumbers<'a> {
    /// The numbers, four little-endian bytes each.
    list: &'a [u8],
}

impl<'a> FdNumbers<'a> {
    /// Reads and checks the list at the start of `body` (what follows the
    /// fixed header).
    fn decode(body: &'a [u8]) -> Result<FdNumbers<'a>, WireError> {
        if body.len() < 4 {
            return Err(WireError::BadField("fdc"));
        }
        let count = u32_at(body, 0) as usize;
        if count == 0 || count > MAX_EXTRA_FDS || body.len() < fd_list_len(count) {
            return Err(WireError::BadField("fdc"));
        }
        let numbers = FdNumbers {
            list: &body[4..fd_list_len(count)],
        };
        let mut previous = 2;
        for number in numbers.iter() {
            if number <= previous || number > i32::MAX as u32 {
                return Err(WireError::BadField("descriptor number"));
            }
            previous = number;
        }
        Ok(numbers)
    }

    /// How many numbers there are.
    pub fn len(&self) -> usize {
        self.list.len() / 4
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// The numbers, in increasing order.
    pub fn iter(&self) -> impl Iterator<Item = u32> + 'a {
        self.list.chunks_exact(4).map(|b| u32_at(b, 0))
    }
}

/// The NUL-terminated strings of a `RUN` frame, one at a time.
#[derive(Clone, Debug)]
pub struct Strings<'a> {
    bytes: &'a [u8],
    at: usize,
    left: u32,
}

impl<'a> Strings<'a> {
    fn new(bytes: &'a [u8], count: u32) -> Strings<'a> {
        Strings {
            bytes,
            at: 0,
            left: count,
        }
    }

    /// Where the strings after the last one this iterator yields begin.
    fn rest_offset(mut self) -> usize {
        while self.next().is_some() {}
        self.at
    }
}

impl<'a> Iterator for Strings<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        let rest = &self.bytes[self.at..];
        // Decoding checked there are enough NULs, so one is always found.
        let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
        self.at += end + 1;
        Some(&rest[..end])
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.left as usize, Some(self.left as usize))
    }
}

impl ExactSizeIterator for Strings<'_> {}
