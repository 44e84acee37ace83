//! `lookback-bench gen`: writes the events an `ingest` run with the same seed and batch size
//! would send, as CSV or TSV, for loading into other systems.

use anyhow::Context;
use lookback_bench::export::{self, ExportFormat};
use lookback_bench::{EventGenerator, GeneratorConfig, RunPlan};
use std::io::Write;
use std::path::Path;
use std::time::Instant;

/// Batches generated in parallel per round (bounds memory to a few batches per thread).
const BATCHES_PER_ROUND_PER_THREAD: usize = 2;

pub fn run(plan: RunPlan, seed: u64, format: ExportFormat, out_path: &Path) -> anyhow::Result<()> {
    let started = Instant::now();
    let generator = EventGenerator::new(seed, GeneratorConfig::default());
    let file = std::fs::File::create(out_path)
        .with_context(|| format!("create {}", out_path.display()))?;
    let mut out = std::io::BufWriter::with_capacity(1 << 20, file);
    let mut header = Vec::new();
    export::write_header(generator.schema(), format, &mut header);
    out.write_all(&header)
        .with_context(|| format!("write {}", out_path.display()))?;
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let round = (threads * BATCHES_PER_ROUND_PER_THREAD) as u64;
    let mut next = 0u64;
    while next < plan.batches() {
        let end = (next + round).min(plan.batches());
        for chunk in render_batches(&generator, &plan, format, next..end, threads) {
            out.write_all(&chunk)
                .with_context(|| format!("write {}", out_path.display()))?;
        }
        next = end;
    }
    out.flush()
        .with_context(|| format!("flush {}", out_path.display()))?;
    eprintln!(
        "gen: wrote {} events in {} batches to {} in {:.2} s",
        plan.events,
        plan.batches(),
        out_path.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Renders batches `range` to text on up to `threads` threads, returned in batch order.
fn render_batches(
    generator: &EventGenerator,
    plan: &RunPlan,
    format: ExportFormat,
    range: std::ops::Range<u64>,
    threads: usize,
) -> Vec<Vec<u8>> {
    let indices: Vec<u64> = range.collect();
    let mut rendered: Vec<Vec<u8>> = vec![Vec::new(); indices.len()];
    std::thread::scope(|scope| {
        let per_thread = indices.len().div_ceil(threads).max(1);
        for (slots, batch_indices) in rendered
            .chunks_mut(per_thread)
            .zip(indices.chunks(per_thread))
        {
            scope.spawn(move || {
                for (slot, &i) in slots.iter_mut().zip(batch_indices) {
                    let batch = generator.plan_batch(plan, i);
                    export::write_batch(&batch, format, slot);
                }
            });
        }
    });
    rendered
}
