//! Times the dedup window's batch inserts of random keys as admission does them (10,000-key
//! batches): `cargo run --release -p lookback-storage --example dedup_profile -- [keys]`.
//! With `PACE_US=N` it sleeps N µs after each batch (10,000 = 1 M keys/s, an admission's pace),
//! which leaves background population of the next table the time it has in a server.

use lookback_storage::dedup::DedupWindow;
use std::time::Instant;

fn main() {
    let keys: usize = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(10_000_000);
    let mut window = DedupWindow::new(24 * 3_600_000, 200_000_000);
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let batch_keys = 10_000;
    let mut batch = vec![0u128; batch_keys];
    let mut fresh = 0usize;
    let mut slowest = std::time::Duration::ZERO;
    let started = Instant::now();
    let cpu_started = thread_cpu_s();
    for _ in 0..keys / batch_keys {
        for k in batch.iter_mut() {
            *k = (u128::from(next()) << 64) | u128::from(next());
        }
        let t = Instant::now();
        window.insert_batch(&batch, 1_000, |_| fresh += 1);
        let took = t.elapsed();
        if let Some(pause) = std::env::var("PACE_US").ok().and_then(|s| s.parse::<u64>().ok()) {
            std::thread::sleep(std::time::Duration::from_micros(pause));
        }
        if took > std::time::Duration::from_millis(3) {
            println!("slow batch at {fresh} keys: {took:?}");
        }
        slowest = slowest.max(took);
    }
    let elapsed = started.elapsed();
    let cpu = thread_cpu_s() - cpu_started;
    let process_cpu = process_cpu_s();
    println!(
        "{fresh} keys in {elapsed:?}: {:.0} ns/key wall, {:.0} ns/key on this thread, {:.0} ns/key process CPU (incl. key generation), slowest batch {slowest:?}",
        elapsed.as_secs_f64() * 1e9 / keys as f64,
        cpu * 1e9 / keys as f64,
        process_cpu * 1e9 / keys as f64,
    );
    println!("{}", huge_pages_line());
}

fn huge_pages_line() -> String {
    std::fs::read_to_string("/proc/self/smaps_rollup")
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with("AnonHugePages") || l.starts_with("Rss"))
        .collect::<Vec<_>>()
        .join(" ")
}

fn thread_cpu_s() -> f64 {
    cpu_clock(libc::CLOCK_THREAD_CPUTIME_ID)
}

fn process_cpu_s() -> f64 {
    cpu_clock(libc::CLOCK_PROCESS_CPUTIME_ID)
}

fn cpu_clock(clock: libc::clockid_t) -> f64 {
    let mut t = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: writes only the timespec passed.
    unsafe { libc::clock_gettime(clock, &mut t) };
    t.tv_sec as f64 + t.tv_nsec as f64 * 1e-9
}
