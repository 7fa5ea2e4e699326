//! The hex examples of `protocol.md` are test vectors.
//!
//! Every fenced ```` ```hex ```` block in the document must be named by an
//! `<!-- example: NAME -->` comment on the line before it, and every name must
//! have an expected message here. Each example must decode to exactly that
//! message, and encoding the message must give exactly the example's bytes,
//! so the document and the implementation cannot drift apart.

mod common {
    pub mod hex_examples;
}

use std::collections::BTreeMap;

use warmfork::request::encode_run_with_fds;
use warmfork::{ErrorCode, ExitStatus, FdSet, Reply, RunRequest};

/// What an example of `protocol.md` must decode to.
#[derive(Debug)]
enum Expected {
    Run {
        fds: FdSet,
        umask: u32,
        ignored_signals: u64,
        extra_fds: &'static [u32],
        argv: &'static [&'static [u8]],
        env: &'static [&'static [u8]],
    },
    Reply(Reply<'static>),
}

fn expected_examples() -> BTreeMap<&'static str, Expected> {
    let all = FdSet::STDIN
        .with(FdSet::STDOUT)
        .with(FdSet::STDERR)
        .with(FdSet::CWD);
    BTreeMap::from([
        (
            "run-python-c",
            Expected::Run {
                fds: all,
                umask: 0o022,
                ignored_signals: 0,
                extra_fds: &[],
                argv: &[b"warmfork", b"-c", b"print(1)"],
                env: &[b"LANG=C.UTF-8"],
            },
        ),
        (
            "run-non-utf8-stdout-closed",
            Expected::Run {
                fds: all.without(FdSet::STDOUT),
                umask: 0o077,
                ignored_signals: 0b1, // bit 0: SIGHUP, ignored as under nohup
                extra_fds: &[],
                argv: &[b"warmfork", b"job.py", b"caf\xe9.csv"],
                env: &[],
            },
        ),
        (
            "run-extra-fds",
            Expected::Run {
                fds: all.with(FdSet::EXTRA_FDS),
                umask: 0o022,
                ignored_signals: 0,
                extra_fds: &[7, 63],
                argv: &[b"warmfork", b"/dev/fd/7", b"/dev/fd/63"],
                env: &[],
            },
        ),
        (
            "run-controlling-tty",
            Expected::Run {
                fds: all.with(FdSet::CONTROLLING_TTY),
                umask: 0o022,
                ignored_signals: 0,
                extra_fds: &[],
                argv: &[b"warmfork", b"top.py"],
                env: &[b"WARMFORK_PTY=1"],
            },
        ),
        (
            "started-pid-4242",
            Expected::Reply(Reply::Started {
                pid: 4242,
                pidfd: false,
            }),
        ),
        (
            "started-pid-4242-pidfd",
            Expected::Reply(Reply::Started {
                pid: 4242,
                pidfd: true,
            }),
        ),
        (
            "exit-0",
            Expected::Reply(Reply::Exit(ExitStatus::Exited(0))),
        ),
        (
            "exit-44",
            Expected::Reply(Reply::Exit(ExitStatus::Exited(44))),
        ),
        (
            "exit-signal-11",
            Expected::Reply(Reply::Exit(ExitStatus::Signaled(11))),
        ),
        (
            "error-unsupported",
            Expected::Reply(Reply::Error {
                code: ErrorCode::Unsupported,
                message: b"python -O is not supported",
            }),
        ),
        (
            "error-unsupported-version",
            Expected::Reply(Reply::Error {
                code: ErrorCode::UnsupportedVersion,
                message: b"server speaks protocol version 1",
            }),
        ),
    ])
}

fn protocol_md() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../protocol.md");
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {path}: {e}"))
}

/// The named hex examples of a Markdown document, in document order; a
/// mistake in the document fails the test.
fn hex_examples(markdown: &str) -> Vec<(String, Vec<u8>)> {
    common::hex_examples::examples(markdown)
        .unwrap_or_else(|e| panic!("protocol.md: {e}"))
        .into_iter()
        .map(|example| (example.name, example.bytes))
        .collect()
}

/// Checks one example in both directions, or says what differs.
fn check(name: &str, bytes: &[u8], expected: &Expected) {
    let mut encoded = vec![0u8; bytes.len() + 64];
    let len = match *expected {
        Expected::Run {
            fds,
            umask,
            ignored_signals,
            extra_fds,
            argv,
            env,
        } => {
            let run = RunRequest::decode(bytes)
                .unwrap_or_else(|e| panic!("example {name}: decoding failed: {e}"));
            assert_eq!(run.fds, fds, "example {name}: fds");
            assert_eq!(run.umask, umask, "example {name}: umask");
            assert_eq!(
                run.ignored_signals, ignored_signals,
                "example {name}: ignored signals"
            );
            assert_eq!(
                run.extra_fds().iter().collect::<Vec<_>>(),
                extra_fds,
                "example {name}: extra descriptors"
            );
            assert_eq!(run.argv().collect::<Vec<_>>(), argv, "example {name}: argv");
            assert_eq!(run.env().collect::<Vec<_>>(), env, "example {name}: env");
            encode_run_with_fds(
                &mut encoded,
                fds,
                umask,
                ignored_signals,
                extra_fds,
                argv,
                env,
            )
        }
        Expected::Reply(reply) => {
            let decoded = Reply::decode(bytes)
                .unwrap_or_else(|e| panic!("example {name}: decoding failed: {e}"));
            assert_eq!(
                decoded,
                Some((reply, bytes.len())),
                "example {name}: decoded reply"
            );
            reply.encode(&mut encoded)
        }
    };
    let len = len.unwrap_or_else(|| panic!("example {name}: encoding failed"));
    assert_eq!(
        hex(&encoded[..len]),
        hex(bytes),
        "example {name}: encoding differs from protocol.md"
    );
}

fn hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(" ")
}

#[test]
fn every_example_in_protocol_md_decodes_and_encodes_to_its_bytes() {
    let expected = expected_examples();
    for (name, bytes) in hex_examples(&protocol_md()) {
        let want = expected.get(name.as_str()).unwrap_or_else(|| {
            panic!("protocol.md has example {name:?}, which this test does not know")
        });
        check(&name, &bytes, want);
    }
}

#[test]
fn every_expected_example_is_in_protocol_md() {
    let found: Vec<String> = hex_examples(&protocol_md())
        .into_iter()
        .map(|(name, _)| name)
        .collect();
    let missing: Vec<&str> = expected_examples()
        .into_keys()
        .filter(|name| !found.iter().any(|f| f == name))
        .collect();
    assert!(
        missing.is_empty(),
        "examples missing from protocol.md: {missing:?}"
    );
}

#[test]
#[should_panic(expected = "hex block without")]
fn example_reader_rejects_an_unnamed_hex_block() {
    hex_examples("text\n```hex\n01 02\n```\n");
}

#[test]
#[should_panic(expected = "has no hex block")]
fn example_reader_rejects_a_name_without_a_hex_block() {
    hex_examples("<!-- example: lost -->\n\nsome text\n");
}

#[test]
#[should_panic(expected = "example twice is named twice")]
fn example_reader_rejects_a_duplicate_name() {
    let block = "<!-- example: twice -->\n```hex\n01\n```\n";
    hex_examples(&block.repeat(2));
}

#[test]
fn example_reader_skips_comments() {
    let doc = "<!-- example: a -->\n```hex\n01 0f  # prefix 01 ff\n```\n";
    assert_eq!(hex_examples(doc), vec![("a".to_owned(), vec![0x01, 0x0f])]);
}

#[test]
#[should_panic(expected = "is not a hex byte")]
fn example_reader_rejects_a_token_that_is_not_one_hex_byte() {
    hex_examples("<!-- example: b -->\n```hex\n01 f\n```\n");
}
