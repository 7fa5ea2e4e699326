//! The frame prefix every message starts with, and the limits that apply to
//! every frame.

use core::fmt;

/// The protocol version this crate speaks.
pub const VERSION: u8 = 1;

/// Bytes in the prefix that starts every frame, in every version.
pub const PREFIX_LEN: usize = 8;

/// The largest frame either side accepts, prefix included.
///
/// Linux caps a program's argument and environment strings at 6 MiB
/// together, so every command line a shell can start fits with room to spare.
pub const MAX_FRAME_LEN: u32 = 8 << 20;

/// What a frame is. The values are fixed by `protocol.md`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// Client to server: run a program.
    Run = 1,
    /// Server to client: the worker is running, with its pid.
    Started = 2,
    /// Server to client: the program ended, with its status.
    Exit = 3,
    /// Server to client: the request was refused or failed.
    Error = 4,
}

impl Kind {
    /// The kind with wire value `value`, if it is one this version knows.
    pub fn from_u8(value: u8) -> Option<Kind> {
        Some(match value {
            1 => Kind::Run,
            2 => Kind::Started,
            3 => Kind::Exit,
            4 => Kind::Error,
            _ => return None,
        })
    }
}

/// The eight bytes that start every frame: version, kind, flags and the
/// length of the whole frame (the length includes the prefix itself).
///
/// The layout of the prefix is the same in every protocol version, so a peer
/// can always read one and answer a version it does not speak with an error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Prefix {
    /// Protocol version of the frame.
    pub version: u8,
    /// Raw kind byte; see [`Kind`].
    pub kind: u8,
    /// Kind-specific flag bits.
    pub flags: u16,
    /// Length of the whole frame in bytes, prefix included.
    pub len: u32,
}

impl Prefix {
    /// A version-1 prefix.
    pub fn new(kind: Kind, flags: u16, len: u32) -> Prefix {
        Prefix {
            version: VERSION,
            kind: kind as u8,
            flags,
            len,
        }
    }

    /// Reads a prefix from the first [`PREFIX_LEN`] bytes of `bytes`; `None`
    /// when fewer are available. Nothing is validated yet: see
    /// [`Prefix::validate`].
    pub fn parse(bytes: &[u8]) -> Option<Prefix> {
        let b: &[u8; PREFIX_LEN] = bytes.get(..PREFIX_LEN)?.try_into().ok()?;
        Some(Prefix {
            version: b[0],
            kind: b[1],
            flags: u16::from_le_bytes([b[2], b[3]]),
            len: u32::from_le_bytes([b[4], b[5], b[6], b[7]]),
        })
    }

    /// The prefix as it goes on the wire.
    pub fn to_bytes(self) -> [u8; PREFIX_LEN] {
        let f = self.flags.to_le_bytes();
        let l = self.len.to_le_bytes();
        [self.version, self.kind, f[0], f[1], l[0], l[1], l[2], l[3]]
    }

    /// Checks the version and the length against the limits shared by all
    /// kinds, and returns the kind. An unknown kind is returned as
    /// [`WireError::UnknownKind`] so that a reader can decide to skip it.
    pub fn validate(self) -> Result<Kind, WireError> {
        if self.version != VERSION {
            return Err(WireError::UnsupportedVersion(self.version));
        }
        if (self.len as usize) < PREFIX_LEN {
            return Err(WireError::BadLength(self.len));
        }
        if self.len > MAX_FRAME_LEN {
            return Err(WireError::TooLarge(self.len));
        }
        Kind::from_u8(self.kind).ok_or(WireError::UnknownKind(self.kind))
    }
}

/// Why bytes are not a valid frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WireError {
    /// The version byte is not [`VERSION`].
    UnsupportedVersion(u8),
    /// The kind byte names no kind of this version.
    UnknownKind(u8),
    /// The frame is of a kind the reader did not expect here.
    UnexpectedKind(Kind),
    /// The length field is above [`MAX_FRAME_LEN`].
    TooLarge(u32),
    /// The length field does not fit the kind's layout.
    BadLength(u32),
    /// Flag bits this version does not define are set.
    UnknownFlags(u16),
    /// A field holds a value outside its range.
    BadField(&'static str),
    /// The strings section does not hold the announced number of strings.
    BadStrings,
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            WireError::UnsupportedVersion(v) => {
                write!(
                    f,
                    "protocol version {v} is not supported (this side speaks {VERSION})"
                )
            }
            WireError::UnknownKind(k) => write!(f, "unknown message kind {k}"),
            WireError::UnexpectedKind(k) => write!(f, "unexpected message kind {k:?}"),
            WireError::TooLarge(n) => {
                write!(
                    f,
                    "frame of {n} bytes is larger than the limit of {MAX_FRAME_LEN} bytes"
                )
            }
            WireError::BadLength(n) => write!(f, "frame length {n} does not fit its kind"),
            WireError::UnknownFlags(x) => write!(f, "unknown flag bits {x:#06x}"),
            WireError::BadField(name) => write!(f, "field {name} is out of range"),
            WireError::BadStrings => {
                f.write_str("argument and environment strings do not match their counts")
            }
        }
    }
}

/// Reads the little-endian `u32` at `at`; the caller has checked the bounds.
pub(crate) fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}
