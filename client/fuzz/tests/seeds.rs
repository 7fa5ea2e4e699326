//! The committed seeds are the ones `protocol.md` gives today.

use warmfork_fuzz::seed_files::{protocol_seeds, stale};
use warmfork_fuzz::target_names;

#[test]
fn committed_seeds_match_the_examples_of_protocol_md() {
    let seeds = protocol_seeds().unwrap_or_else(|e| panic!("{e}"));
    let stale = stale(&seeds, &target_names()).expect("read the seed directories");
    assert!(
        stale.is_empty(),
        "the seeds are stale; run `scripts/fuzz --seeds`:\n  {}",
        stale.join("\n  ")
    );
}

#[test]
fn every_target_has_seeds() {
    let seeds = protocol_seeds().unwrap_or_else(|e| panic!("{e}"));
    for target in target_names() {
        assert!(
            seeds.iter().any(|s| s.target == target),
            "no seeds for {target}"
        );
    }
}
