//! The short mode of the fuzz targets: the committed corpus, then random mutants (with the
//! target's dictionary, if it has one) for `LOOKBACK_FUZZ_SECONDS` (default 15) per target. A
//! failure prints the input in hex and writes it to `target/fuzz-failures/` to be added to the
//! corpus once fixed. `LOOKBACK_FUZZ_SEED` (default 1) picks another sequence of mutants;
//! `LOOKBACK_FUZZ_LAST_INPUT=<file>` keeps each input there before it runs, for a run that
//! ends in an abort (a failed allocation, a stack overflow) instead of a panic.

use lookback_fuzz::{driver, TARGETS};
use std::time::Duration;

fn seconds() -> u64 {
    std::env::var("LOOKBACK_FUZZ_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(15)
}

fn seed() -> u64 {
    std::env::var("LOOKBACK_FUZZ_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(1)
}

fn fuzz(name: &str) {
    let (_, target) = TARGETS.iter().find(|(n, _)| *n == name).expect("a known target");
    let corpus = driver::corpus(name).expect("the committed corpus");
    assert!(!corpus.is_empty(), "{name}: the corpus is empty");
    let dictionary = driver::dictionary(name).expect("a readable dictionary");
    match driver::run(*target, &corpus, &dictionary, Duration::from_secs(seconds()), seed()) {
        Ok(executions) => eprintln!("{name}: {executions} executions, no failure"),
        Err(failure) => {
            let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/fuzz-failures");
            let _ = std::fs::create_dir_all(&dir);
            let _ = std::fs::write(dir.join(name), &failure.input);
            let hex: String = failure.input.iter().take(512).map(|b| format!("{b:02x}")).collect();
            panic!("{name}: {} on input ({} bytes) {hex}", failure.message, failure.input.len());
        }
    }
}

#[test]
fn ingest_frame() {
    fuzz("ingest_frame");
}

#[test]
fn wal_record() {
    fuzz("wal_record");
}

#[test]
fn segment() {
    fuzz("segment");
}

#[test]
fn manifest() {
    fuzz("manifest");
}

#[test]
fn pgwire() {
    fuzz("pgwire");
}

#[test]
fn sql() {
    fuzz("sql");
}

#[test]
fn the_driver_finds_a_planted_bug() {
    fn planted(data: &[u8]) {
        assert!(!(data.len() > 3 && data[0] == b'L' && data[1] == 0xff), "planted bug");
    }
    let failure = driver::run(planted, &[b"LKBK".to_vec()], &[], Duration::from_secs(20), 3).expect_err("the mutator reaches the planted input");
    assert!(failure.message.contains("planted bug"));
}
