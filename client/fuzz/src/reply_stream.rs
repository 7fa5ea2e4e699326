//! `reply_stream`: what a server sends back, cut at arbitrary points, read
//! the way the client reads it.
//!
//! The client keeps replies in one fixed buffer of `MAX_REPLY_LEN` bytes and
//! calls `Reply::decode` on what it has until a frame is missing bytes, then
//! receives more (`client/src/bin/warmfork/reply.rs`, `wait`). The harness
//! runs that loop, piece by piece as the [`plan`](crate::plan) says, and
//! checks that:
//!
//! - decoding never panics, and a decoded frame is at least a prefix long,
//!   no longer than the bytes at hand or `MAX_REPLY_LEN`, and is never found
//!   in fewer bytes than its `length` (a partial frame is never a whole one);
//! - while a frame is incomplete, the rest of it fits the client's buffer, so
//!   the client never has to receive into no room;
//! - the run ends the same way however the stream is cut: the same replies
//!   in the same order, then the same status, refusal, protocol error or lost
//!   connection as when the whole stream is decoded at once;
//! - every known reply encodes to a frame of the same length that decodes to
//!   the same reply.

use warmfork::frame::{PREFIX_LEN, Prefix};
use warmfork::reply::{MAX_REPLY_LEN, REPLY_FIXED_LEN};
use warmfork::{ErrorCode, ExitStatus, Reply, WireError};

use crate::plan::{Piece, Plan};

/// Runs one input; panics when a property fails.
pub fn reply_stream(data: &[u8]) {
    let (plan, stream) = Plan::split(data);
    let whole = read_whole(stream);
    let cut = read_as_the_client_does(&plan.pieces, stream);
    assert_eq!(
        cut, whole,
        "the cut stream reads differently from the whole"
    );
}

/// A reply the client reads past on its way to the end of the run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Passed {
    Started { pid: u32, pidfd: bool },
    Unknown(u8),
}

/// How the client's wait for the program's status ends.
#[derive(Clone, Debug, PartialEq, Eq)]
enum End {
    Status(ExitStatus),
    Refused(ErrorCode, Vec<u8>),
    Protocol(WireError),
    /// The stream ended before an `EXIT` or `ERROR`.
    Lost,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Outcome {
    passed: Vec<Passed>,
    end: Option<End>,
}

impl Outcome {
    /// Takes a decoded reply; returns true when it ends the run.
    fn take(&mut self, reply: Reply<'_>) -> bool {
        let end = match reply {
            Reply::Started { pid, pidfd } => {
                self.passed.push(Passed::Started { pid, pidfd });
                return false;
            }
            Reply::Unknown(kind) => {
                self.passed.push(Passed::Unknown(kind));
                return false;
            }
            Reply::Exit(status) => End::Status(status),
            Reply::Error { code, message } => End::Refused(code, message.to_vec()),
        };
        self.end = Some(end);
        true
    }
}

/// The reference reading: every frame decoded from the whole stream.
fn read_whole(stream: &[u8]) -> Outcome {
    let mut outcome = Outcome::default();
    let mut at = 0;
    loop {
        match decode(&stream[at..]) {
            Err(error) => outcome.end = Some(End::Protocol(error)),
            Ok(None) => outcome.end = Some(End::Lost),
            Ok(Some((reply, len))) => {
                if !outcome.take(reply) {
                    at += len;
                    continue;
                }
            }
        }
        return outcome;
    }
}

/// The client's loop, with the pieces of the plan as what each receive
/// returns (a receive never returns more than one piece, nor more than the
/// room left in the buffer).
fn read_as_the_client_does(pieces: &[Piece], stream: &[u8]) -> Outcome {
    let mut outcome = Outcome::default();
    let mut buf = [0u8; MAX_REPLY_LEN];
    let mut filled = 0;
    // Pieces of length 0 stand for reads that find nothing; a blocking
    // receive just waits for the next one.
    let mut pieces = pieces.iter().filter(|p| p.len > 0).copied();
    let mut current: Option<Piece> = None;
    loop {
        let mut start = 0;
        loop {
            match decode(&buf[start..filled]) {
                Err(error) => {
                    outcome.end = Some(End::Protocol(error));
                    return outcome;
                }
                Ok(None) => break,
                Ok(Some((reply, len))) => {
                    if outcome.take(reply) {
                        return outcome;
                    }
                    start += len;
                }
            }
        }
        buf.copy_within(start..filled, 0);
        filled -= start;
        assert!(
            filled < buf.len(),
            "the client must receive into a full buffer"
        );
        let piece = match current.take().or_else(|| pieces.next()) {
            Some(piece) => piece,
            None => {
                outcome.end = Some(End::Lost);
                return outcome;
            }
        };
        let n = piece.len.min(buf.len() - filled);
        buf[filled..filled + n].copy_from_slice(&stream[piece.start..piece.start + n]);
        filled += n;
        if n < piece.len {
            current = Some(Piece {
                start: piece.start + n,
                len: piece.len - n,
                fds: 0,
            });
        }
    }
}

/// `Reply::decode`, with the properties every answer must have.
fn decode(buf: &[u8]) -> Result<Option<(Reply<'_>, usize)>, WireError> {
    let result = Reply::decode(buf);
    match result {
        Ok(Some((reply, len))) => {
            assert!(
                (PREFIX_LEN..=buf.len().min(MAX_REPLY_LEN)).contains(&len),
                "decoded {len} bytes of {}",
                buf.len()
            );
            let prefix = Prefix::parse(buf).expect("a decoded frame has a prefix");
            assert_eq!(prefix.len as usize, len, "consumed other than `length`");
            assert_eq!(
                Reply::decode(&buf[..len]),
                Ok(Some((reply, len))),
                "a frame reads differently without what follows it"
            );
            assert_eq!(
                Reply::decode(&buf[..len - 1]),
                Ok(None),
                "a frame one byte short was taken as complete"
            );
            round_trip(reply, len);
        }
        Ok(None) => assert!(
            buf.len() < MAX_REPLY_LEN,
            "{} bytes at hand and still no whole frame",
            buf.len()
        ),
        Err(error) => assert!(
            buf.len() >= PREFIX_LEN,
            "{error:?} from {} bytes, less than a prefix",
            buf.len()
        ),
    }
    result
}

/// Encoding a decoded reply gives a frame of the same length that decodes to
/// it (only bits and fields the reader ignores may differ).
fn round_trip(reply: Reply<'_>, len: usize) {
    if let Reply::Unknown(_) = reply {
        return;
    }
    let mut out = [0u8; MAX_REPLY_LEN];
    let encoded = reply.encode(&mut out).expect("a decoded reply encodes");
    assert_eq!(encoded, len, "re-encoded {reply:?} has another length");
    assert!(encoded >= REPLY_FIXED_LEN);
    assert_eq!(
        Reply::decode(&out[..encoded]),
        Ok(Some((reply, len))),
        "re-encoded reply reads differently"
    );
}
