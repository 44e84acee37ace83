//! A small mutation fuzzer for stable Rust: the short mode the test suite runs. Each execution
//! takes a corpus input, applies one to four random mutations (bit flips, interesting bytes and
//! integers, insertions, deletions, duplicated or spliced ranges, truncation) and runs the
//! target under `catch_unwind`. It has no coverage feedback, which is what libFuzzer adds in
//! the long mode; the committed corpus (real files and frames) keeps the inputs deep.

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::time::{Duration, Instant};

/// Inputs grow to at most this many bytes.
pub const INPUT_BYTES_MAX: usize = 1 << 20;

#[derive(Debug)]
pub struct Failure {
    pub input: Vec<u8>,
    pub message: String,
}

/// Runs `target` on every corpus input, then on mutants until `duration` has passed.
/// Returns how many executions ran.
pub fn run(target: fn(&[u8]), corpus: &[Vec<u8>], duration: Duration, seed: u64) -> Result<u64, Failure> {
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut executions = 0u64;
    let empty = vec![Vec::new()];
    let corpus = if corpus.is_empty() { &empty[..] } else { corpus };
    for input in corpus {
        execute(target, input)?;
        executions += 1;
    }
    let deadline = Instant::now() + duration;
    let mut input = Vec::new();
    while Instant::now() < deadline {
        for _ in 0..64 {
            input.clear();
            input.extend_from_slice(&corpus[rng.gen_range(0..corpus.len())]);
            for _ in 0..rng.gen_range(1..=4) {
                mutate(&mut input, corpus, &mut rng);
            }
            execute(target, &input)?;
            executions += 1;
        }
    }
    Ok(executions)
}

fn execute(target: fn(&[u8]), input: &[u8]) -> Result<(), Failure> {
    std::panic::catch_unwind(|| target(input)).map_err(|panic| {
        let message = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "a panic without a message".into());
        Failure { input: input.to_vec(), message }
    })
}

const INTERESTING_U32: [u32; 8] = [0, 1, 0x7f, 0x80, 0xff, 0xffff, 0x7fff_ffff, u32::MAX];

fn mutate(input: &mut Vec<u8>, corpus: &[Vec<u8>], rng: &mut SmallRng) {
    let len = input.len();
    match rng.gen_range(0..8) {
        0 if len > 0 => {
            let at = rng.gen_range(0..len);
            input[at] ^= 1 << rng.gen_range(0..8);
        }
        1 if len > 0 => {
            let at = rng.gen_range(0..len);
            input[at] = [0u8, 0xff, 0x7f, 0x80, 1][rng.gen_range(0..5)];
        }
        2 if len >= 4 => {
            let at = rng.gen_range(0..=len - 4);
            let value = INTERESTING_U32[rng.gen_range(0..INTERESTING_U32.len())];
            input[at..at + 4].copy_from_slice(&value.to_le_bytes());
        }
        3 if len < INPUT_BYTES_MAX => {
            let at = rng.gen_range(0..=len);
            let n = rng.gen_range(1..=16);
            let bytes: Vec<u8> = (0..n).map(|_| rng.gen()).collect();
            input.splice(at..at, bytes);
        }
        4 if len > 0 => {
            let at = rng.gen_range(0..len);
            let n = rng.gen_range(1..=(len - at).min(64));
            input.drain(at..at + n);
        }
        5 if len > 0 && len < INPUT_BYTES_MAX => {
            let from = rng.gen_range(0..len);
            let n = rng.gen_range(1..=(len - from).min(256));
            let chunk = input[from..from + n].to_vec();
            let at = rng.gen_range(0..=len);
            input.splice(at..at, chunk);
        }
        6 if len > 0 => input.truncate(rng.gen_range(0..len)),
        _ => {
            let other = &corpus[rng.gen_range(0..corpus.len())];
            if !other.is_empty() && len > 0 {
                let at = rng.gen_range(0..len);
                let from = rng.gen_range(0..other.len());
                input.truncate(at);
                input.extend_from_slice(&other[from..other.len().min(from + INPUT_BYTES_MAX - at)]);
            }
        }
    }
}

/// The committed corpus of `target` (`fuzz/corpus/<target>/`).
pub fn corpus(target: &str) -> std::io::Result<Vec<Vec<u8>>> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus").join(target);
    let mut paths: Vec<_> = std::fs::read_dir(dir)?.filter_map(|e| e.ok().map(|e| e.path())).collect();
    paths.sort();
    paths.into_iter().map(std::fs::read).collect()
}
