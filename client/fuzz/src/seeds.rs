//! The seed corpus, built from the worked examples of `protocol.md`.
//!
//! Every `<!-- example: NAME -->` hex block of the document is a whole frame;
//! each target gets those frames in the shape its input takes, plus a few
//! cuts and descriptor counts that a fuzzer would take long to stumble on.
//! The seeds are committed under `seeds/<target>/protocol-*`; `scripts/fuzz
//! --seeds` rewrites them from the document, and `tests/seeds.rs` fails when
//! they are stale. Other files in a seed directory (inputs that once found a
//! bug, kept as regression tests) are left alone.

use warmfork::reply::{MAX_REPLY_LEN, REPLY_FIXED_LEN};

use crate::plan::Plan;

#[path = "../../tests/common/hex_examples.rs"]
mod hex_examples;

pub use hex_examples::{Example, examples};

/// One seed file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Seed {
    /// The target whose directory it goes in.
    pub target: &'static str,
    /// Its file name, `protocol-…`.
    pub name: String,
    /// Its contents.
    pub bytes: Vec<u8>,
}

/// The seeds for every target, built from the examples.
pub fn seeds(examples: &[Example]) -> Vec<Seed> {
    let mut out = Vec::new();
    let mut seed = |target, name: &str, bytes| {
        out.push(Seed {
            target,
            name: format!("protocol-{name}"),
            bytes,
        })
    };
    let (runs, replies): (Vec<_>, Vec<_>) = examples.iter().partition(|e| is_run(&e.bytes));

    // decode_run: every frame as it is; the replies exercise the kind check.
    for e in examples {
        seed("decode_run", &e.name, e.bytes.clone());
    }

    // reply_stream: each reply whole and cut inside and at the end of the
    // prefix, then whole runs: a STARTED followed by how the run ended, and
    // every reply of the document in one stream, a byte at a time at first.
    for e in &replies {
        seed("reply_stream", &e.name, Plan::input(false, &[], &e.bytes));
        let cut = Plan::input(false, &[(1, 0), (6, 0), (1, 0), (2, 0)], &e.bytes);
        seed("reply_stream", &format!("{}-cut", e.name), cut);
    }
    let started = replies.iter().filter(|e| kind(&e.bytes) == 2);
    for first in started {
        for last in replies.iter().filter(|e| kind(&e.bytes) != 2) {
            let stream = [first.bytes.as_slice(), &last.bytes].concat();
            let name = format!("{}-then-{}", first.name, last.name);
            seed("reply_stream", &name, Plan::input(false, &[], &stream));
        }
    }
    // Replies at the limit the client's fixed buffer is sized for, which a
    // coverage-guided fuzzer has no reason to grow towards: the first ERROR
    // with its message repeated to the longest a server may send, after a
    // STARTED and cut so the client must move a partial prefix to the front
    // of its buffer first; the same one byte too long; a frame of a kind this
    // version does not know, as long as a reply may be, before an EXIT.
    let first = |kind_byte| replies.iter().find(|e| kind(&e.bytes) == kind_byte);
    if let (Some(started), Some(exit), Some(error)) = (first(2), first(3), first(4)) {
        let longest = resized(&error.bytes, MAX_REPLY_LEN);
        let stream = [started.bytes.as_slice(), &longest].concat();
        let cut = Plan::input(false, &[(started.bytes.len() + 7, 0)], &stream);
        let name = format!("{}-then-{}-longest", started.name, error.name);
        seed("reply_stream", &name, cut);
        let too_long = resized(&error.bytes, MAX_REPLY_LEN + 1);
        let name = format!("{}-too-long", error.name);
        seed("reply_stream", &name, Plan::input(false, &[], &too_long));
        let mut unknown = resized(&exit.bytes, MAX_REPLY_LEN);
        unknown[1] = 0xff;
        let stream = [unknown.as_slice(), &exit.bytes].concat();
        let name = format!("unknown-kind-longest-then-{}", exit.name);
        seed("reply_stream", &name, Plan::input(false, &[], &stream));
    }
    let all: Vec<u8> = replies.iter().flat_map(|e| e.bytes.clone()).collect();
    let bytewise = Plan::input(false, &[(1, 0); 15], &all);
    seed("reply_stream", "every-reply-bytewise", bytewise);

    // server_request: each RUN with the descriptors its flags announce, in
    // one piece, cut inside the prefix, as a hand-off (the connection rides
    // first), one descriptor short, one too many, and a byte short; each
    // reply sent as if it were a request.
    for e in &runs {
        let (len, fds) = (e.bytes.len().min(255), fd_count(&e.bytes));
        let name = |variant: &str| format!("{}-{variant}", e.name);
        seed(
            "server_request",
            &name("whole"),
            Plan::input(false, &[(len, fds)], &e.bytes),
        );
        let cut = Plan::input(false, &[(3, fds), (0, 0), (5, 0), (1, 0)], &e.bytes);
        seed("server_request", &name("cut"), cut);
        let handed_off = Plan::input(true, &[(len, fds + 1)], &e.bytes);
        seed("server_request", &name("handed-off"), handed_off);
        let short = Plan::input(false, &[(len, fds.saturating_sub(1))], &e.bytes);
        seed("server_request", &name("fd-missing"), short);
        let extra = Plan::input(false, &[(len, fds + 1)], &e.bytes);
        seed("server_request", &name("fd-extra"), extra);
        let truncated = &e.bytes[..e.bytes.len() - 1];
        let truncated = Plan::input(false, &[(len, fds)], truncated);
        seed("server_request", &name("truncated"), truncated);
    }
    for e in &replies {
        let as_request = Plan::input(false, &[], &e.bytes);
        seed(
            "server_request",
            &format!("{}-as-request", e.name),
            as_request,
        );
    }
    out
}

/// `frame` made `len` bytes long, its length field to match: the bytes after
/// the fixed part repeated (an `ERROR` message), or zeros when there are none.
fn resized(frame: &[u8], len: usize) -> Vec<u8> {
    let (fixed, body) = frame.split_at(REPLY_FIXED_LEN.min(frame.len()));
    let filler = if body.is_empty() { &[0][..] } else { body };
    let mut out = fixed.to_vec();
    out.extend(filler.iter().cycle().take(len - fixed.len()));
    out[4..8].copy_from_slice(&u32::try_from(len).expect("a reply length").to_le_bytes());
    out
}

/// The kind byte of a frame.
fn kind(frame: &[u8]) -> u8 {
    frame.get(1).copied().unwrap_or(0)
}

fn is_run(frame: &[u8]) -> bool {
    kind(frame) == warmfork::Kind::Run as u8
}

/// The descriptors a `RUN` frame's flags announce.
fn fd_count(frame: &[u8]) -> usize {
    match warmfork::RunRequest::decode(frame) {
        Ok(run) => run.fd_count(),
        Err(_) => warmfork::Prefix::parse(frame).map_or(0, |p| warmfork::FdSet(p.flags).count()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comments_are_not_bytes() {
        let doc = "<!-- example: a -->\n```hex\n01 0f  # prefix 01 ff\n```\n";
        let want = Example {
            name: "a".into(),
            bytes: vec![1, 0x0f],
        };
        assert_eq!(examples(doc), Ok(vec![want]));
    }

    #[test]
    fn an_unnamed_block_a_bad_byte_and_a_duplicate_are_refused() {
        assert!(examples("```hex\n01\n```\n").is_err());
        assert!(examples("<!-- example: b -->\n```hex\n01 f\n```\n").is_err());
        let twice = "<!-- example: c -->\n```hex\n01\n```\n".repeat(2);
        assert!(examples(&twice).is_err());
    }
}
