//! Times the stages of a memtable flush on generated events:
//! `cargo run --release -p lookback-storage --example flush_profile -- [events]`.

use lookback_bench::generator::{EventGenerator, GeneratorConfig};
use lookback_common::{Batch, Schema};
use lookback_storage::segment::{write_segment, SegmentInfo, SegmentWriteOptions};
use lookback_storage::sort::sort_order;
use std::time::Instant;

fn main() {
    let events: usize = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(1_000_000);
    let schema = Schema::events();
    let generator = EventGenerator::new(42, GeneratorConfig::default());
    let batches: Vec<Batch> = (0..events / 10_000).map(|i| generator.batch(i as u64, 10_000)).collect();
    let refs: Vec<&Batch> = batches.iter().collect();
    let t = Instant::now();
    let all = Batch::concat(&schema, &refs);
    let concat = t.elapsed();
    let t = Instant::now();
    let order = sort_order(&schema, &all);
    let sort = t.elapsed();
    let t = Instant::now();
    let sorted = all.take(&order);
    let take = t.elapsed();
    let dir = tempfile::tempdir().expect("temp dir");
    for (level, block_rows) in [(1, 65_536), (3, 65_536), (9, 65_536), (3, 262_144), (3, 1 << 20)] {
        let path = dir.path().join(format!("seg{level}-{block_rows}"));
        let options = SegmentWriteOptions { zstd_level: level, block_rows, ..SegmentWriteOptions::default() };
        let info = SegmentInfo { segment_id: 1, min_lsn: 1, max_lsn: 1 };
        let t = Instant::now();
        let summary = write_segment(&path, &schema, &sorted, &info, &options, &Default::default()).expect("write");
        let write = t.elapsed();
        println!("level {level} block_rows {block_rows}: write {:?} ({:.2} M rows/s), {:.2} B/row", write, events as f64 / write.as_secs_f64() / 1e6, summary.file_bytes as f64 / events as f64);
    }
    println!("concat {concat:?}, sort_order {sort:?}, take {take:?} for {events} rows");
}
