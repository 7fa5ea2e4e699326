//! Properties of the wire format that must hold for every message, not just
//! the examples of `protocol.md`: encoding and decoding are inverse, decoding
//! never panics on hostile bytes, a partial frame is never taken for a whole
//! one, and the limits are enforced where the document puts them.

use proptest::collection::{btree_set, vec};
use proptest::prelude::*;
use warmfork::frame::{MAX_FRAME_LEN, PREFIX_LEN, VERSION};
use warmfork::reply::{MAX_ERROR_MESSAGE_LEN, MAX_REPLY_LEN, REPLY_FIXED_LEN, can_end_a_process};
use warmfork::request::{MAX_EXTRA_FDS, RUN_HEADER_LEN, encode_run, encode_run_with_fds};
use warmfork::{
    ErrorCode, ExitStatus, FdSet, Kind, Prefix, Reply, RunHeader, RunRequest, WireError,
};

/// A `RUN` request as owned values, so proptest can generate and shrink it.
#[derive(Clone, Debug)]
struct Run {
    fds: FdSet,
    umask: u32,
    ignored_signals: u64,
    extra_fds: Vec<u32>,
    argv: Vec<Vec<u8>>,
    env: Vec<Vec<u8>>,
}

impl Run {
    fn encode(&self) -> Vec<u8> {
        let argv: Vec<&[u8]> = self.argv.iter().map(Vec::as_slice).collect();
        let env: Vec<&[u8]> = self.env.iter().map(Vec::as_slice).collect();
        let mut out = vec![0; 1 << 16];
        let len = encode_run_with_fds(
            &mut out,
            self.fds,
            self.umask,
            self.ignored_signals,
            &self.extra_fds,
            &argv,
            &env,
        )
        .expect("a valid RUN encodes");
        out.truncate(len);
        out
    }
}

/// A reply as owned values; [`ReplyCase::reply`] borrows it as a [`Reply`].
#[derive(Clone, Debug)]
enum ReplyCase {
    Started { pid: u32, pidfd: bool },
    Exit(ExitStatus),
    Error { code: ErrorCode, message: Vec<u8> },
}

impl ReplyCase {
    fn reply(&self) -> Reply<'_> {
        match self {
            ReplyCase::Started { pid, pidfd } => Reply::Started {
                pid: *pid,
                pidfd: *pidfd,
            },
            ReplyCase::Exit(status) => Reply::Exit(*status),
            ReplyCase::Error { code, message } => Reply::Error {
                code: *code,
                message,
            },
        }
    }

    fn encode(&self) -> Vec<u8> {
        let mut out = vec![0; MAX_REPLY_LEN];
        let len = self
            .reply()
            .encode(&mut out)
            .expect("a reply fits in MAX_REPLY_LEN");
        out.truncate(len);
        out
    }
}

/// Strings as a C program sees them: any bytes but NUL.
fn c_strings() -> impl Strategy<Value = Vec<Vec<u8>>> {
    vec(vec(1u8..=255, 0..24), 0..8)
}

fn runs() -> impl Strategy<Value = Run> {
    (
        0u16..=FdSet::ALL.0,
        0u32..=0o777,
        any::<u64>(),
        btree_set(3u32..=i32::MAX as u32, 0..6),
        c_strings(),
        c_strings(),
    )
        .prop_map(|(fds, umask, ignored_signals, extra_fds, argv, env)| Run {
            // The bit says whether there is a list: the encoder sets it.
            fds: if extra_fds.is_empty() {
                FdSet(fds).without(FdSet::EXTRA_FDS)
            } else {
                FdSet(fds).with(FdSet::EXTRA_FDS)
            },
            umask,
            ignored_signals,
            extra_fds: extra_fds.into_iter().collect(),
            argv,
            env,
        })
}

const ERROR_CODES: [ErrorCode; 7] = [
    ErrorCode::BadRequest,
    ErrorCode::UnsupportedVersion,
    ErrorCode::TooLarge,
    ErrorCode::PermissionDenied,
    ErrorCode::Timeout,
    ErrorCode::Unsupported,
    ErrorCode::Internal,
];

fn replies() -> impl Strategy<Value = ReplyCase> {
    prop_oneof![
        (any::<u32>(), any::<bool>()).prop_map(|(pid, pidfd)| ReplyCase::Started { pid, pidfd }),
        any::<u8>().prop_map(|code| ReplyCase::Exit(ExitStatus::Exited(code))),
        any::<u8>()
            .prop_filter(
                "a signal a process can die of",
                |&signal| can_end_a_process(signal)
            )
            .prop_map(|signal| ReplyCase::Exit(ExitStatus::Signaled(signal))),
        (
            prop::sample::select(&ERROR_CODES[..]),
            vec(any::<u8>(), 0..=MAX_ERROR_MESSAGE_LEN)
        )
            .prop_map(|(code, message)| ReplyCase::Error { code, message }),
    ]
}

/// A frame with a version-1 prefix whose length matches, of any kind and
/// flags, and a body of noise: bytes that get past the prefix checks and so
/// reach the kind-specific decoding.
fn plausible_frames() -> impl Strategy<Value = Vec<u8>> {
    (
        0u8..=6,
        any::<u16>(),
        vec(prop_oneof![Just(0u8), any::<u8>()], 0..48),
    )
        .prop_map(|(kind, flags, body)| {
            let len = (PREFIX_LEN + body.len()) as u32;
            let prefix = Prefix {
                version: VERSION,
                kind,
                flags,
                len,
            };
            [&prefix.to_bytes()[..], &body].concat()
        })
}

/// A `RUN` frame of real strings whose counts split them at any point,
/// sometimes with one byte of the strings replaced by noise.
fn plausible_runs() -> impl Strategy<Value = Vec<u8>> {
    (
        c_strings(),
        any::<prop::sample::Index>(),
        0u32..0o1000,
        proptest::option::of((any::<prop::sample::Index>(), any::<u8>())),
    )
        .prop_map(|(strings, split, umask, noise)| {
            let argc = split.index(strings.len() + 1);
            let envc = strings.len() - argc;
            let mut bytes: Vec<u8> = strings
                .iter()
                .flat_map(|s| s.iter().copied().chain([0]))
                .collect();
            if let (Some((at, byte)), false) = (noise, bytes.is_empty()) {
                let at = at.index(bytes.len());
                bytes[at] = byte;
            }
            let header = RunHeader {
                fds: FdSet::ALL,
                argc: argc as u32,
                envc: envc as u32,
                umask,
                ignored_signals: 0,
                strings_len: bytes.len(),
                extra_fds: 0,
            };
            [&header.to_bytes().unwrap()[..], &bytes].concat()
        })
}

/// Overwrites the prefix of `frame` with `f` applied to it.
fn with_prefix(mut frame: Vec<u8>, f: impl FnOnce(&mut Prefix)) -> Vec<u8> {
    let mut prefix = Prefix::parse(&frame).unwrap();
    f(&mut prefix);
    frame[..PREFIX_LEN].copy_from_slice(&prefix.to_bytes());
    frame
}

proptest! {
    #[test]
    fn every_run_decodes_back_to_its_argv_env_umask_and_fds(run in runs()) {
        let frame = run.encode();
        let decoded = RunRequest::decode(&frame).unwrap();
        prop_assert_eq!(decoded.fds, run.fds);
        prop_assert_eq!(decoded.umask, run.umask);
        prop_assert_eq!(decoded.ignored_signals, run.ignored_signals);
        prop_assert_eq!(decoded.extra_fds().iter().collect::<Vec<_>>(), run.extra_fds.clone());
        prop_assert_eq!(decoded.argv().collect::<Vec<_>>(), run.argv.iter().map(Vec::as_slice).collect::<Vec<_>>());
        prop_assert_eq!(decoded.env().collect::<Vec<_>>(), run.env.iter().map(Vec::as_slice).collect::<Vec<_>>());
    }

    #[test]
    fn a_run_does_not_encode_into_a_buffer_one_byte_short(run in runs()) {
        let len = run.encode().len();
        let argv: Vec<&[u8]> = run.argv.iter().map(Vec::as_slice).collect();
        let env: Vec<&[u8]> = run.env.iter().map(Vec::as_slice).collect();
        let mut out = vec![0; len - 1];
        prop_assert_eq!(encode_run_with_fds(&mut out, run.fds, run.umask, run.ignored_signals, &run.extra_fds, &argv, &env), None);
    }

    #[test]
    fn an_exit_by_a_signal_no_process_dies_of_is_rejected(
        signal in any::<u8>().prop_filter("no process dies of it", |&signal| !can_end_a_process(signal))
    ) {
        let frame = ReplyCase::Exit(ExitStatus::Signaled(signal)).encode();
        prop_assert_eq!(Reply::decode(&frame), Err(WireError::BadField("signal")));
    }

    #[test]
    fn every_reply_decodes_back_to_itself(case in replies()) {
        let frame = case.encode();
        prop_assert_eq!(Reply::decode(&frame), Ok(Some((case.reply(), frame.len()))));
    }

    #[test]
    fn replies_read_one_after_another_from_one_buffer(first in replies(), second in replies()) {
        let stream = [first.encode(), second.encode()].concat();
        let (reply, used) = Reply::decode(&stream).unwrap().unwrap();
        prop_assert_eq!(reply, first.reply());
        prop_assert_eq!(Reply::decode(&stream[used..]), Ok(Some((second.reply(), stream.len() - used))));
    }

    #[test]
    fn decoding_arbitrary_bytes_never_panics(bytes in vec(any::<u8>(), 0..64)) {
        exercise_decoders(&bytes);
    }

    #[test]
    fn decoding_plausible_frames_never_panics(frame in plausible_frames()) {
        exercise_decoders(&frame);
    }

    #[test]
    fn decoding_plausible_runs_never_panics(frame in plausible_runs()) {
        exercise_decoders(&frame);
    }

    #[test]
    fn every_truncation_of_a_run_is_rejected(run in runs()) {
        let frame = run.encode();
        for cut in 0..frame.len() {
            prop_assert!(RunRequest::decode(&frame[..cut]).is_err(), "accepted {cut} of {} bytes", frame.len());
        }
    }

    #[test]
    fn every_truncation_of_a_reply_asks_for_more_bytes(case in replies()) {
        let frame = case.encode();
        for cut in 0..frame.len() {
            prop_assert_eq!(Reply::decode(&frame[..cut]), Ok(None), "at {} of {} bytes", cut, frame.len());
        }
    }

    #[test]
    fn a_run_with_unknown_flag_bits_is_rejected(run in runs(), extra in 1u16..=(u16::MAX >> 6)) {
        let unknown = extra << 6;
        let frame = with_prefix(run.encode(), |p| p.flags |= unknown);
        prop_assert_eq!(RunRequest::decode(&frame).unwrap_err(), WireError::UnknownFlags(unknown));
    }

    #[test]
    fn a_run_with_a_bad_descriptor_list_is_rejected(
        run in runs(),
        numbers in vec(any::<u32>(), 0..6),
        // The count as written (`None`: as many as there are numbers): 0 or
        // beyond the limit; a count within it but not the list's own would
        // make the frame's other bytes numbers or strings, maybe valid ones.
        count in prop_oneof![Just(None), Just(Some(0u32)), (MAX_EXTRA_FDS as u32 + 1..).prop_map(Some)],
    ) {
        let valid = !numbers.is_empty()
            && numbers.windows(2).all(|w| w[0] < w[1])
            && numbers[0] >= 3
            && numbers[numbers.len() - 1] <= i32::MAX as u32;
        prop_assume!(!valid || count.is_some());
        let mut frame = Run { extra_fds: Vec::new(), fds: run.fds.without(FdSet::EXTRA_FDS), ..run }.encode();
        let mut list = count.unwrap_or(numbers.len() as u32).to_le_bytes().to_vec();
        list.extend(numbers.iter().flat_map(|n| n.to_le_bytes()));
        frame.splice(RUN_HEADER_LEN..RUN_HEADER_LEN, list);
        let len = frame.len() as u32;
        let frame = with_prefix(frame, |p| { p.flags |= FdSet::EXTRA_FDS.0; p.len = len; });
        prop_assert!(RunRequest::decode(&frame).is_err());
    }

    #[test]
    fn a_run_of_another_version_is_rejected_as_such(run in runs(), version in any::<u8>()) {
        prop_assume!(version != VERSION);
        let frame = with_prefix(run.encode(), |p| p.version = version);
        prop_assert_eq!(RunRequest::decode(&frame).unwrap_err(), WireError::UnsupportedVersion(version));
    }

    #[test]
    fn a_reply_of_another_version_is_rejected_as_such(case in replies(), version in any::<u8>()) {
        prop_assume!(version != VERSION);
        let frame = with_prefix(case.encode(), |p| p.version = version);
        prop_assert_eq!(Reply::decode(&frame), Err(WireError::UnsupportedVersion(version)));
        // The prefix alone is enough to give up: the client need not wait.
        prop_assert_eq!(Reply::decode(&frame[..PREFIX_LEN]), Err(WireError::UnsupportedVersion(version)));
    }

    #[test]
    fn unknown_flag_bits_in_a_reply_are_ignored(case in replies(), extra in 1u16..=(u16::MAX >> 1)) {
        let frame = with_prefix(case.encode(), |p| p.flags |= extra << 1);
        prop_assert_eq!(Reply::decode(&frame), Ok(Some((case.reply(), frame.len()))));
    }

    #[test]
    fn a_reply_of_unknown_kind_is_skipped_by_its_length(
        kind in prop_oneof![Just(0u8), 5u8..=255],
        body in vec(any::<u8>(), 0..=MAX_REPLY_LEN - PREFIX_LEN),
        next in replies(),
    ) {
        let prefix = Prefix { version: VERSION, kind, flags: 0, len: (PREFIX_LEN + body.len()) as u32 };
        let stream = [&prefix.to_bytes()[..], &body, &next.encode()].concat();
        prop_assert_eq!(Reply::decode(&stream), Ok(Some((Reply::Unknown(kind), prefix.len as usize))));
        let rest = &stream[prefix.len as usize..];
        prop_assert_eq!(Reply::decode(rest), Ok(Some((next.reply(), rest.len()))));
    }
}

/// Runs every decoder on `bytes`, walking whatever they return.
fn exercise_decoders(bytes: &[u8]) {
    if let Ok(run) = RunRequest::decode(bytes) {
        let strings = run
            .argv()
            .chain(run.env())
            .map(|s| s.len() + 1)
            .sum::<usize>();
        assert_eq!(
            RUN_HEADER_LEN + strings,
            bytes.len(),
            "decoded strings must cover the frame exactly"
        );
    }
    if let Ok(Some((_, used))) = Reply::decode(bytes) {
        assert!((PREFIX_LEN..=bytes.len()).contains(&used));
    }
}

#[test]
fn the_controlling_tty_flag_announces_no_descriptor() {
    assert_eq!(FdSet::ALL.count(), 4);
    assert_eq!(FdSet::STDIN.with(FdSet::CONTROLLING_TTY).count(), 1);
    assert_eq!(FdSet::CONTROLLING_TTY.count(), 0);
}

/// A `RUN` header announcing `len` bytes, without the strings it announces.
fn run_header_announcing(len: u32) -> Vec<u8> {
    let mut frame = RunHeader {
        fds: FdSet::ALL,
        argc: 0,
        envc: 0,
        umask: 0o022,
        ignored_signals: 0,
        strings_len: 0,
        extra_fds: 0,
    }
    .to_bytes()
    .unwrap()
    .to_vec();
    frame[4..8].copy_from_slice(&len.to_le_bytes());
    frame
}

#[test]
fn a_run_announcing_more_than_max_frame_len_is_too_large() {
    let frame = run_header_announcing(MAX_FRAME_LEN + 1);
    assert_eq!(
        RunRequest::decode(&frame).unwrap_err(),
        WireError::TooLarge(MAX_FRAME_LEN + 1)
    );
    let frame = run_header_announcing(u32::MAX);
    assert_eq!(
        RunRequest::decode(&frame).unwrap_err(),
        WireError::TooLarge(u32::MAX)
    );
}

#[test]
fn a_run_header_past_max_frame_len_does_not_encode_and_names_the_frame_length() {
    let fits = RunHeader {
        fds: FdSet::ALL,
        argc: 1,
        envc: 0,
        umask: 0,
        ignored_signals: 0,
        strings_len: MAX_FRAME_LEN as usize - RUN_HEADER_LEN,
        extra_fds: 0,
    };
    assert!(fits.to_bytes().is_ok());
    let over = RunHeader {
        strings_len: fits.strings_len + 1,
        extra_fds: 0,
        ..fits
    };
    assert_eq!(over.to_bytes(), Err(WireError::TooLarge(MAX_FRAME_LEN + 1)));
    let absurd = RunHeader {
        strings_len: usize::MAX,
        extra_fds: 0,
        ..fits
    };
    assert_eq!(absurd.to_bytes(), Err(WireError::TooLarge(u32::MAX)));
}

#[test]
fn a_run_of_exactly_max_frame_len_round_trips() {
    let arg = vec![b'x'; MAX_FRAME_LEN as usize - RUN_HEADER_LEN - 1];
    let mut out = vec![0; MAX_FRAME_LEN as usize + 1];
    let len = encode_run(&mut out, FdSet::ALL, 0o022, 0, &[&arg], &[]).unwrap();
    assert_eq!(len, MAX_FRAME_LEN as usize);
    let run = RunRequest::decode(&out[..len]).unwrap();
    assert_eq!(run.argv().collect::<Vec<_>>(), [arg.as_slice()]);
    let longer = [arg.as_slice(), b"x"].concat();
    assert_eq!(
        encode_run(&mut out, FdSet::ALL, 0o022, 0, &[&longer], &[]),
        None
    );
}

#[test]
fn a_run_shorter_than_its_header_is_a_bad_length() {
    let mut frame = run_header_announcing(RUN_HEADER_LEN as u32 - 1);
    frame.pop();
    assert_eq!(
        RunRequest::decode(&frame).unwrap_err(),
        WireError::BadLength(RUN_HEADER_LEN as u32 - 1)
    );
}

#[test]
fn a_run_with_a_umask_above_0o777_is_rejected() {
    let mut frame = run_header_announcing(RUN_HEADER_LEN as u32);
    frame[16..20].copy_from_slice(&0o1000u32.to_le_bytes());
    assert_eq!(
        RunRequest::decode(&frame).unwrap_err(),
        WireError::BadField("umask")
    );
}

#[test]
fn a_run_whose_strings_do_not_match_their_counts_is_rejected() {
    let mut out = [0; 64];
    let len = encode_run(&mut out, FdSet::ALL, 0, 0, &[b"a", b"b"], &[]).unwrap();
    let mut frame = out[..len].to_vec();
    frame[8] = 3; // argc 3, two strings
    assert_eq!(
        RunRequest::decode(&frame).unwrap_err(),
        WireError::BadStrings
    );
    frame[8] = 2;
    *frame.last_mut().unwrap() = b'c'; // last string not terminated
    assert_eq!(
        RunRequest::decode(&frame).unwrap_err(),
        WireError::BadStrings
    );
}

#[test]
fn a_run_with_counts_that_overflow_32_bits_is_rejected() {
    let mut frame = run_header_announcing(RUN_HEADER_LEN as u32 + 1);
    frame[8..16].copy_from_slice(&[0xff; 8]);
    frame.push(0);
    assert_eq!(
        RunRequest::decode(&frame).unwrap_err(),
        WireError::BadStrings
    );
}

#[test]
fn a_reply_frame_is_not_a_run() {
    let mut out = [0; MAX_REPLY_LEN];
    let len = Reply::Exit(ExitStatus::Exited(0)).encode(&mut out).unwrap();
    assert_eq!(
        RunRequest::decode(&out[..len]).unwrap_err(),
        WireError::UnexpectedKind(Kind::Exit)
    );
}

#[test]
fn a_run_frame_is_not_a_reply() {
    let mut frame = run_header_announcing(REPLY_FIXED_LEN as u32);
    frame.truncate(REPLY_FIXED_LEN);
    assert_eq!(
        Reply::decode(&frame),
        Err(WireError::UnexpectedKind(Kind::Run))
    );
}

#[test]
fn an_error_with_the_longest_message_is_the_longest_reply() {
    let message = vec![b'm'; MAX_ERROR_MESSAGE_LEN];
    let reply = Reply::Error {
        code: ErrorCode::Internal,
        message: &message,
    };
    let mut out = [0; MAX_REPLY_LEN];
    assert_eq!(reply.encode(&mut out), Some(MAX_REPLY_LEN));
    assert_eq!(Reply::decode(&out), Ok(Some((reply, MAX_REPLY_LEN))));
}

#[test]
fn a_reply_announcing_more_than_max_reply_len_is_rejected_before_it_arrives() {
    for kind in [Kind::Error as u8, 9] {
        let prefix = Prefix {
            version: VERSION,
            kind,
            flags: 0,
            len: MAX_REPLY_LEN as u32 + 1,
        };
        assert!(Reply::decode(&prefix.to_bytes()).is_err(), "kind {kind}");
    }
}

#[test]
fn started_and_exit_of_any_length_but_twelve_are_rejected() {
    for kind in [Kind::Started, Kind::Exit] {
        for len in [PREFIX_LEN, REPLY_FIXED_LEN + 1] {
            let prefix = Prefix::new(kind, 0, len as u32);
            assert_eq!(
                Reply::decode(&prefix.to_bytes()),
                Err(WireError::BadLength(len as u32)),
                "{kind:?}"
            );
        }
    }
}

#[test]
fn a_frame_length_below_the_prefix_is_rejected() {
    for kind in [Kind::Started as u8, 9] {
        let prefix = Prefix {
            version: VERSION,
            kind,
            flags: 0,
            len: PREFIX_LEN as u32 - 1,
        };
        assert_eq!(
            Reply::decode(&prefix.to_bytes()),
            Err(WireError::BadLength(PREFIX_LEN as u32 - 1))
        );
    }
}

#[test]
fn an_exit_that_is_neither_exited_nor_signaled_is_rejected() {
    let mut out = [0; REPLY_FIXED_LEN];
    Reply::Exit(ExitStatus::Exited(0)).encode(&mut out).unwrap();
    out[8] = 2;
    assert_eq!(Reply::decode(&out), Err(WireError::BadField("how")));
}

#[test]
fn an_unknown_error_code_reads_as_internal() {
    let mut out = [0; REPLY_FIXED_LEN + 2];
    Reply::Error {
        code: ErrorCode::BadRequest,
        message: b"hi",
    }
    .encode(&mut out)
    .unwrap();
    out[8..10].copy_from_slice(&999u16.to_le_bytes());
    assert_eq!(
        Reply::decode(&out),
        Ok(Some((
            Reply::Error {
                code: ErrorCode::Internal,
                message: b"hi"
            },
            out.len()
        )))
    );
}

#[test]
fn a_long_error_message_is_cut_to_the_limit_on_a_character_boundary() {
    let ascii = vec![b'a'; MAX_ERROR_MESSAGE_LEN + 10];
    let mut out = [0; MAX_REPLY_LEN];
    let len = Reply::Error {
        code: ErrorCode::Internal,
        message: &ascii,
    }
    .encode(&mut out)
    .unwrap();
    assert_eq!(len, MAX_REPLY_LEN);

    // "é" is two bytes; one of them would fall past the limit.
    let mut split = vec![b'a'; MAX_ERROR_MESSAGE_LEN - 1];
    split.extend_from_slice("é and more".as_bytes());
    let len = Reply::Error {
        code: ErrorCode::Internal,
        message: &split,
    }
    .encode(&mut out)
    .unwrap();
    assert_eq!(len, MAX_REPLY_LEN - 1);
    assert!(std::str::from_utf8(&out[REPLY_FIXED_LEN..len]).is_ok());
}
