//! The frames a server sends back: `STARTED`, `EXIT` and `ERROR`.
//!
//! ```text
//! STARTED  8 prefix (flags: bit 0 = a pidfd rides in SCM_RIGHTS) | 4 pid
//! EXIT     8 prefix | 1 how (0 exited, 1 killed by signal) | 1 value | 2 reserved
//! ERROR    8 prefix | 2 code | 2 reserved | message (UTF-8, no terminator)
//! ```

use crate::frame::{Kind, PREFIX_LEN, Prefix, WireError, u32_at};

/// Bytes in a `STARTED` or `EXIT` frame, and in an `ERROR` frame before its
/// message.
pub const REPLY_FIXED_LEN: usize = PREFIX_LEN + 4;

/// The longest `ERROR` message a server sends, in bytes.
pub const MAX_ERROR_MESSAGE_LEN: usize = 4096;

/// The longest reply frame of any kind, so a client can receive replies into
/// a fixed buffer.
pub const MAX_REPLY_LEN: usize = REPLY_FIXED_LEN + MAX_ERROR_MESSAGE_LEN;

/// `STARTED` flag: the frame's ancillary data carries a pidfd of the worker.
pub const STARTED_PIDFD: u16 = 1;

/// How the program ended, as the parent of its process saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitStatus {
    /// It exited with this code (already reduced to 0..=255, as by the kernel).
    Exited(u8),
    /// It was killed by this signal.
    Signaled(u8),
}

/// Why a server refused or could not complete a run. Values are fixed by
/// `protocol.md`; a client treats an unknown code like [`ErrorCode::Internal`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u16)]
pub enum ErrorCode {
    /// The request was malformed.
    BadRequest = 1,
    /// The request's protocol version is not spoken by the server.
    UnsupportedVersion = 2,
    /// The request exceeds a limit.
    TooLarge = 3,
    /// The client's user may not use this server.
    PermissionDenied = 4,
    /// The client did not send its request in time.
    Timeout = 5,
    /// The program asked for something a warm interpreter cannot do (for
    /// example a python option such as `-O`); plain python can.
    Unsupported = 6,
    /// The server failed (for example it could not fork).
    Internal = 7,
}

impl ErrorCode {
    /// The code with wire value `value`; unknown values read as `Internal`.
    pub fn from_u16(value: u16) -> ErrorCode {
        match value {
            1 => ErrorCode::BadRequest,
            2 => ErrorCode::UnsupportedVersion,
            3 => ErrorCode::TooLarge,
            4 => ErrorCode::PermissionDenied,
            5 => ErrorCode::Timeout,
            6 => ErrorCode::Unsupported,
            _ => ErrorCode::Internal,
        }
    }
}

/// A reply frame from the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reply<'a> {
    /// The worker runs with this pid; `pidfd` says whether a pidfd of it
    /// rides in the ancillary data.
    Started {
        /// The worker's process id, in the server's pid namespace.
        pid: u32,
        /// Whether the frame carries a pidfd.
        pidfd: bool,
    },
    /// The program ended.
    Exit(ExitStatus),
    /// The run was refused or failed; `message` is for a person.
    Error {
        /// What went wrong.
        code: ErrorCode,
        /// A UTF-8 explanation for a person.
        message: &'a [u8],
    },
    /// A frame of a kind this version does not know, which a client skips.
    Unknown(u8),
}

impl<'a> Reply<'a> {
    /// Decodes the reply at the start of `buf`, returning it with the number
    /// of bytes it occupies, or `None` while `buf` holds less than a whole
    /// frame.
    pub fn decode(buf: &'a [u8]) -> Result<Option<(Reply<'a>, usize)>, WireError> {
        let Some(prefix) = Prefix::parse(buf) else {
            return Ok(None);
        };
        let len = prefix.len as usize;
        let kind = match prefix.validate() {
            Err(WireError::UnknownKind(k)) if (PREFIX_LEN..=MAX_REPLY_LEN).contains(&len) => {
                return Ok(buf.get(..len).map(|_| (Reply::Unknown(k), len)));
            }
            other => other?,
        };
        let fixed = kind != Kind::Error;
        if !(REPLY_FIXED_LEN..=MAX_REPLY_LEN).contains(&len) || (fixed && len != REPLY_FIXED_LEN) {
            return Err(WireError::BadLength(prefix.len));
        }
        let Some(frame) = buf.get(..len) else {
            return Ok(None);
        };
        let reply = match kind {
            Kind::Started => Reply::Started {
                pid: u32_at(frame, 8),
                pidfd: prefix.flags & STARTED_PIDFD != 0,
            },
            Kind::Exit => Reply::Exit(match frame[8] {
                0 => ExitStatus::Exited(frame[9]),
                1 if can_end_a_process(frame[9]) => ExitStatus::Signaled(frame[9]),
                1 => return Err(WireError::BadField("signal")),
                _ => return Err(WireError::BadField("how")),
            }),
            Kind::Error => Reply::Error {
                code: ErrorCode::from_u16(u16::from_le_bytes([frame[8], frame[9]])),
                message: &frame[REPLY_FIXED_LEN..],
            },
            Kind::Run => return Err(WireError::UnexpectedKind(Kind::Run)),
        };
        Ok(Some((reply, len)))
    }

    /// Writes the frame into `out` and returns its length, or `None` when
    /// `out` is too small. An `ERROR` message longer than
    /// [`MAX_ERROR_MESSAGE_LEN`] is cut to at most that length, on a character
    /// boundary so that a UTF-8 message stays UTF-8.
    pub fn encode(&self, out: &mut [u8]) -> Option<usize> {
        let (kind, flags, body, message): (Kind, u16, [u8; 4], &[u8]) = match *self {
            Reply::Started { pid, pidfd } => {
                (Kind::Started, u16::from(pidfd), pid.to_le_bytes(), &[])
            }
            Reply::Exit(ExitStatus::Exited(code)) => (Kind::Exit, 0, [0, code, 0, 0], &[]),
            Reply::Exit(ExitStatus::Signaled(sig)) => (Kind::Exit, 0, [1, sig, 0, 0], &[]),
            Reply::Error { code, message } => {
                let c = (code as u16).to_le_bytes();
                let cut = &message[..utf8_cut(message, MAX_ERROR_MESSAGE_LEN)];
                (Kind::Error, 0, [c[0], c[1], 0, 0], cut)
            }
            Reply::Unknown(_) => return None,
        };
        let len = REPLY_FIXED_LEN + message.len();
        let frame = out.get_mut(..len)?;
        frame[..PREFIX_LEN].copy_from_slice(&Prefix::new(kind, flags, len as u32).to_bytes());
        frame[PREFIX_LEN..REPLY_FIXED_LEN].copy_from_slice(&body);
        frame[REPLY_FIXED_LEN..].copy_from_slice(message);
        Some(len)
    }
}

/// The length of the longest prefix of `message` that fits in `max` bytes
/// without splitting a UTF-8 sequence: the cut backs off over continuation
/// bytes (`0b10xx_xxxx`), at most three of them for a valid message.
fn utf8_cut(message: &[u8], max: usize) -> usize {
    if message.len() <= max {
        return message.len();
    }
    let mut end = max;
    while end > 0 && max - end < 3 && message[end] & 0xc0 == 0x80 {
        end -= 1;
    }
    end
}

/// Whether a process can die of signal `number` (Linux): 1 to 64, but for
/// those whose default action is to be ignored (SIGCHLD, SIGURG, SIGWINCH)
/// or to stop or continue the process (SIGCONT, SIGSTOP, SIGTSTP, SIGTTIN,
/// SIGTTOU). An EXIT naming another is a protocol error: raised, SIGSTOP
/// would stop the client for good.
pub fn can_end_a_process(number: u8) -> bool {
    matches!(number, 1..=64) && !matches!(number, 17..=23 | 28)
}
