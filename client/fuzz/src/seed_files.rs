//! The committed seed directories, `seeds/<target>/`, and keeping their
//! `protocol-*` files in step with `protocol.md`.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::seeds::{Seed, examples, seeds};

/// Files whose names start with this are generated from `protocol.md`.
const GENERATED: &str = "protocol-";

/// `seeds/` of this crate.
pub fn seeds_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("seeds")
}

/// The seeds `protocol.md` gives today, or why they cannot be built.
pub fn protocol_seeds() -> Result<Vec<Seed>, String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../protocol.md");
    let markdown =
        fs::read_to_string(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let examples = examples(&markdown).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(seeds(&examples))
}

/// The files of one seed directory, sorted by name; none if it is missing.
pub fn seed_files(target: &str) -> io::Result<Vec<PathBuf>> {
    let dir = seeds_dir().join(target);
    if !dir.exists() {
        return Ok(Vec::new());
    }
    let mut files = Vec::new();
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// What differs between `seeds` and the generated files on disk: a line per
/// file that is missing, different or no longer generated.
pub fn stale(seeds: &[Seed], targets: &[&str]) -> io::Result<Vec<String>> {
    let mut out = Vec::new();
    for seed in seeds {
        let path = seeds_dir().join(seed.target).join(&seed.name);
        match fs::read(&path) {
            Ok(bytes) if bytes == seed.bytes => {}
            Ok(_) => out.push(format!("{} differs", path.display())),
            Err(_) => out.push(format!("{} is missing", path.display())),
        }
    }
    for target in targets {
        for path in generated_files(target)? {
            if !seeds
                .iter()
                .any(|s| path.ends_with(Path::new(s.target).join(&s.name)))
            {
                out.push(format!("{} is no longer generated", path.display()));
            }
        }
    }
    Ok(out)
}

/// Writes `seeds` and removes generated files of `targets` that are not
/// among them; returns how many files were written.
pub fn write(seeds: &[Seed], targets: &[&str]) -> io::Result<usize> {
    for target in targets {
        for path in generated_files(target)? {
            fs::remove_file(path)?;
        }
    }
    for seed in seeds {
        let dir = seeds_dir().join(seed.target);
        fs::create_dir_all(&dir)?;
        fs::write(dir.join(&seed.name), &seed.bytes)?;
    }
    Ok(seeds.len())
}

fn generated_files(target: &str) -> io::Result<Vec<PathBuf>> {
    let mut files = seed_files(target)?;
    files.retain(|p| {
        p.file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with(GENERATED))
    });
    Ok(files)
}
