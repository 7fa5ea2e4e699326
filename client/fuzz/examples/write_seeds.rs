//! Rewrites the `protocol-*` seeds of every target from `protocol.md`
//! (`scripts/fuzz --seeds`). Other files in the seed directories stay.

use std::process::ExitCode;

use warmfork_fuzz::seed_files::{protocol_seeds, seeds_dir, write};
use warmfork_fuzz::target_names;

fn main() -> ExitCode {
    let written = protocol_seeds()
        .and_then(|seeds| write(&seeds, &target_names()).map_err(|e| e.to_string()));
    match written {
        Ok(n) => {
            println!("seeds: wrote {n} files under {}", seeds_dir().display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("seeds: {e}");
            ExitCode::FAILURE
        }
    }
}
