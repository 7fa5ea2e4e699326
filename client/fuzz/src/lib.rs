//! Fuzz harnesses for warmfork: the wire decoder, the client's reply loop and
//! the server's request reader.
//!
//! Each harness is a plain function that panics when a property fails. The
//! cargo-fuzz targets in `fuzz_targets/` are one line each around them, and
//! `tests/corpus.rs` replays the committed seeds through the same functions on
//! stable Rust, so a regression run needs neither nightly nor libFuzzer.
//!
//! | target | input | what it drives |
//! |---|---|---|
//! | [`decode_run`] | a `RUN` frame | `RunRequest::decode`, then `encode_run` back |
//! | [`reply_stream`] | a [`plan`] + a reply stream | `Reply::decode` in the client's receive loop |
//! | [`server_request`] | a [`plan`] + a request stream | the server's `Incoming` reader over a socketpair |

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod decode_run;
pub mod plan;
pub mod reply_stream;
pub mod seed_files;
pub mod seeds;
pub mod server_request;

pub use decode_run::decode_run;
pub use reply_stream::reply_stream;
pub use server_request::server_request;

/// A fuzz target: its cargo-fuzz name, which is also the name of its seed
/// directory, and its harness.
#[derive(Clone, Copy, Debug)]
pub struct Target {
    /// The `[[bin]]` name in `Cargo.toml` and the directory under `seeds/`.
    pub name: &'static str,
    /// Runs one input; panics when a property fails.
    pub run: fn(&[u8]),
}

/// The names of [`TARGETS`].
pub fn target_names() -> Vec<&'static str> {
    TARGETS.iter().map(|t| t.name).collect()
}

/// Every target, in the order `scripts/fuzz` runs them.
pub const TARGETS: [Target; 3] = [
    Target {
        name: "decode_run",
        run: decode_run,
    },
    Target {
        name: "reply_stream",
        run: reply_stream,
    },
    Target {
        name: "server_request",
        run: server_request,
    },
];
