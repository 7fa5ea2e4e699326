//! `decode_run`: arbitrary bytes as a whole `RUN` frame.
//!
//! The server hands every complete request frame to `RunRequest::decode`, so
//! it must never panic. What it accepts must also be exactly what
//! `encode_run` produces: decode then encode gives back the same bytes (the
//! format has one encoding per request), and decoding those gives the same
//! fields. A decoder that accepted a frame the encoder cannot produce would
//! let two sides disagree about what a request means.

use warmfork::request::{RUN_HEADER_LEN, encode_run_with_fds, fd_list_len};
use warmfork::{FdSet, RunRequest};

/// Runs one input; panics when a property fails.
pub fn decode_run(data: &[u8]) {
    let Ok(run) = RunRequest::decode(data) else {
        return;
    };
    assert!(run.umask <= 0o777, "accepted umask {:#o}", run.umask);
    assert!(
        FdSet::ALL.contains(run.fds),
        "accepted flags {:#06x}",
        run.fds.0
    );
    let argv: Vec<&[u8]> = run.argv().collect();
    let env: Vec<&[u8]> = run.env().collect();
    assert_eq!(run.argv().len(), argv.len(), "argv's announced length");
    assert_eq!(run.env().len(), env.len(), "env's announced length");
    for s in argv.iter().chain(&env) {
        assert!(!s.contains(&0), "a decoded string holds a NUL: {s:?}");
    }
    let strings: usize = argv.iter().chain(&env).map(|s| s.len() + 1).sum();
    assert_eq!(
        RUN_HEADER_LEN + fd_list_len(run.extra_fds().len()) + strings,
        data.len(),
        "strings cover the frame"
    );

    let mut out = vec![0; data.len()];
    let extra: Vec<u32> = run.extra_fds().iter().collect();
    assert!(
        extra.windows(2).all(|w| w[0] < w[1]) && extra.first().is_none_or(|&n| n >= 3),
        "accepted descriptor numbers {extra:?}"
    );
    let len = encode_run_with_fds(
        &mut out,
        run.fds,
        run.umask,
        run.ignored_signals,
        &extra,
        &argv,
        &env,
    )
    .expect("a decoded request encodes");
    assert_eq!(&out[..len], data, "re-encoding changed the frame");

    let again = RunRequest::decode(&out[..len]).expect("a re-encoded request decodes");
    assert_eq!(
        (again.fds, again.umask, again.ignored_signals),
        (run.fds, run.umask, run.ignored_signals)
    );
    assert!(
        again.extra_fds().iter().eq(extra),
        "descriptor numbers changed"
    );
    assert!(again.argv().eq(argv.iter().copied()), "argv changed");
    assert!(again.env().eq(env.iter().copied()), "env changed");
}
