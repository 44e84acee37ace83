//! Times the per-batch CPU work of an admission outside the server: decoding a producer's
//! batch and encoding its WAL record: `cargo run --release -p lookback-storage --example admit_profile`.

use lookback_bench::generator::{EventGenerator, GeneratorConfig};
use lookback_common::{decode_batch, encode_batch_compact, Schema};
use std::time::Instant;

fn main() {
    let schema = Schema::events();
    let generator = EventGenerator::new(42, GeneratorConfig::default());
    let encoded: Vec<Vec<u8>> = (0..20)
        .map(|i| {
            let mut bytes = Vec::new();
            encode_batch_compact(&generator.batch(i, 10_000), &mut bytes);
            bytes
        })
        .collect();
    let rounds = 10;
    let t = Instant::now();
    let mut batches = Vec::new();
    for _ in 0..rounds {
        batches = encoded.iter().map(|b| decode_batch(b, &schema, &Default::default()).expect("decode")).collect();
    }
    let per_batch = t.elapsed() / (rounds * encoded.len()) as u32;
    println!("decode: {per_batch:?} per 10,000-event batch ({} B)", encoded[0].len());
    let t = Instant::now();
    let mut bytes = 0;
    for _ in 0..rounds {
        for b in &batches {
            bytes += lookback_storage::wal_record::encode("events", 1, 1, 1, b).len();
        }
    }
    let per_batch = t.elapsed() / (rounds * encoded.len()) as u32;
    println!("wal record encode: {per_batch:?} per batch ({} B)", bytes / (rounds * encoded.len()));
}
