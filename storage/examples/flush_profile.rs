//! Times a memtable flush (sort + segment write) of generated events, twice (the second run
//! sees warm memory): `cargo run --release -p lookback-storage --example flush_profile -- [events]`.

use lookback_bench::generator::{EventGenerator, GeneratorConfig};
use lookback_common::{Batch, Faults, Schema};
use lookback_storage::segment::{write_segment_sorting, SegmentInfo, SegmentWriteOptions};
use std::time::Instant;

fn main() {
    let events: usize = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(1_000_000);
    let schema = Schema::events();
    let generator = EventGenerator::new(42, GeneratorConfig::default());
    // As batches arrive from producers: repetitive text columns in dictionary form.
    let batches: Vec<Batch> = (0..events / 10_000)
        .map(|i| {
            let plain = generator.batch(i as u64, 10_000);
            let mut bytes = Vec::new();
            lookback_common::encode_batch_compact(&plain, &mut bytes);
            lookback_common::decode_batch(&bytes, &schema, &Default::default()).expect("decode")
        })
        .collect();
    let parts: Vec<&Batch> = batches.iter().collect();
    let dir = tempfile::tempdir().expect("temp dir");
    for (run, level) in [(0, 1), (1, 1), (2, 3), (3, 9)] {
        let path = dir.path().join(format!("seg{run}"));
        let options = SegmentWriteOptions { zstd_level: level, ..SegmentWriteOptions::default() };
        let info = SegmentInfo { segment_id: 1, min_lsn: 1, max_lsn: 1 };
        let t = Instant::now();
        let cpu = process_cpu_s();
        let summary = write_segment_sorting(&path, &schema, &parts, &info, &options, &Faults::none()).expect("write");
        let write = t.elapsed();
        let cpu = process_cpu_s() - cpu;
        println!(
            "zstd {level}: sort+write {write:?} ({:.2} µs/row wall, {:.2} µs/row CPU), {:.2} B/row",
            write.as_secs_f64() * 1e6 / events as f64,
            cpu * 1e6 / events as f64,
            summary.file_bytes as f64 / events as f64
        );
    }
}

fn process_cpu_s() -> f64 {
    let mut t = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: writes only the timespec passed.
    unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut t) };
    t.tv_sec as f64 + t.tv_nsec as f64 * 1e-9
}
