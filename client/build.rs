//! Link flags for the libc-free client binary.
//!
//! The binary brings its own `_start` (see `src/bin/warmfork/start.rs`), so the
//! C start files must stay out, and with no libc there is nothing to link
//! dynamically: `-static` gives a binary the kernel can run directly, with no
//! interpreter and no relocation work at start-up. The library is unaffected:
//! `rustc-link-arg-bins` only reaches binary targets.
fn main() {
    if std::env::var_os("CARGO_FEATURE_CLIENT_BIN").is_some() {
        println!("cargo:rustc-link-arg-bins=-nostartfiles");
        println!("cargo:rustc-link-arg-bins=-nostdlib");
        println!("cargo:rustc-link-arg-bins=-static");
        println!("cargo:rustc-link-arg-bins=-Wl,--gc-sections");
    }
    println!("cargo:rerun-if-changed=build.rs");
}
