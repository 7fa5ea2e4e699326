//! Replays every target over its committed seeds, `seeds/<target>/`, through
//! the same harness the fuzzer runs: the regression half of `scripts/fuzz
//! --regress`, on stable Rust and without libFuzzer. Prints one line per
//! target; fails when an input fails or a target has no inputs.

use std::panic;
use std::process::ExitCode;

use warmfork_fuzz::TARGETS;
use warmfork_fuzz::seed_files::{seed_files, seeds_dir};

fn main() -> ExitCode {
    let mut ok = true;
    for target in TARGETS {
        let files = match seed_files(target.name) {
            Ok(files) => files,
            Err(e) => {
                eprintln!("regress: {}: cannot read its seeds: {e}", target.name);
                ok = false;
                continue;
            }
        };
        let mut failed = Vec::new();
        for path in &files {
            let bytes = match std::fs::read(path) {
                Ok(bytes) => bytes,
                Err(e) => {
                    eprintln!("regress: cannot read {}: {e}", path.display());
                    failed.push(path);
                    continue;
                }
            };
            if panic::catch_unwind(|| (target.run)(&bytes)).is_err() {
                failed.push(path);
            }
        }
        let verdict = if files.is_empty() {
            "FAILED: no inputs"
        } else if failed.is_empty() {
            "ok"
        } else {
            "FAILED"
        };
        println!(
            "regress: {:<15} {:>3} inputs, {} failed: {verdict}",
            target.name,
            files.len(),
            failed.len()
        );
        for path in &failed {
            println!("regress:   failing input {}", path.display());
        }
        ok &= !files.is_empty() && failed.is_empty();
    }
    if !ok {
        eprintln!(
            "regress: the panic above says which property failed; to debug an input, run \
             `cargo +nightly fuzz run TARGET FILE` in client/ (seeds: {})",
            seeds_dir().display()
        );
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
