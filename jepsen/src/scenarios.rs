//! The faults, one function each. Every run starts a fresh site (data directory, ports),
//! drives the real binary, injects its fault `cycles` times and returns a [`FaultReport`]:
//! the checker's verdict, recovery times, and any failed expectation. Nothing here panics on
//! a server misbehaving: that is a finding, reported.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crate::events::{build, event_id, expected_json, random_event, Row};
use crate::history::{History, Verdict};
use crate::node::Node;
use crate::workload::{pg_connect, probe_batch, query_value, Workload, WorkloadOptions};

/// Small memtables and segments: flushes and compactions happen between faults.
pub const BUSY_CONFIG: &str = "[storage]\nmemtable_bytes_max = 400000\nflush_interval_ms = 300\ncompaction_fan_in = 3\ncompaction_urgent_segments = 4\nwal_segment_bytes = 1048576\n[ingest]\nframe_bytes_max = 262144\n";
/// Nothing flushes or compacts unless asked: file operations are deterministic.
pub const QUIET_CONFIG: &str = "[storage]\nmemtable_bytes_max = 64000000\nflush_interval_ms = 3600000\ncompaction_fan_in = 64\ncompaction_urgent_segments = 64\nwal_segment_bytes = 1048576\n[ingest]\nframe_bytes_max = 262144\n";

#[derive(Clone, Debug)]
pub struct RunOptions {
    pub bin: PathBuf,
    /// Sites are created under it (one per run).
    pub work_dir: PathBuf,
    pub cycles: usize,
    pub seed: u64,
    /// Torn writes and crash points: test every `stride`th offset or write (1 = all).
    pub stride: usize,
}

#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct FaultReport {
    pub fault: String,
    pub cycles: usize,
    pub verdict: Verdict,
    pub recovery_ms: Vec<f64>,
    /// What else was checked and held, e.g. "ingest refused with disk_full".
    pub checks: Vec<String>,
    /// Expectations that did not hold.
    pub failures: Vec<String>,
    /// A negative control passes when it *does* see losses.
    pub expect_losses: bool,
}

impl FaultReport {
    fn new(fault: &str) -> FaultReport {
        FaultReport {
            fault: fault.to_string(),
            ..FaultReport::default()
        }
    }

    pub fn passed(&self) -> bool {
        if self.expect_losses {
            return self.verdict.lost > 0 || !self.failures.is_empty();
        }
        self.verdict.ok() && self.failures.is_empty()
    }

    pub fn recovery_percentile_ms(&self, p: f64) -> Option<f64> {
        if self.recovery_ms.is_empty() {
            return None;
        }
        let mut sorted = self.recovery_ms.clone();
        sorted.sort_by(f64::total_cmp);
        let index = ((sorted.len() - 1) as f64 * p).round() as usize;
        Some(sorted[index])
    }

    fn fail(&mut self, what: String) {
        self.failures.push(what);
    }

    fn check(&mut self, held: bool, what: impl Into<String>) {
        let what = what.into();
        if held {
            if !self.checks.contains(&what) {
                self.checks.push(what);
            }
        } else {
            self.failures.push(format!("expected: {what}"));
        }
    }
}

/// The names `run` accepts, in the order `all` runs them.
pub const FAULTS: [&str; 12] = [
    "kill",
    "pause",
    "power-loss",
    "power-loss-no-fsync",
    "torn-wal",
    "torn-segment",
    "enospc",
    "eio",
    "bitflip-segment",
    "bitflip-manifest",
    "crash-flush",
    "crash-compaction",
];

pub fn run(fault: &str, options: &RunOptions) -> Result<FaultReport> {
    match fault {
        "kill" => kill(options),
        "pause" => pause(options),
        "power-loss" => power_loss(options, false),
        "power-loss-no-fsync" => power_loss(options, true),
        "torn-wal" => torn_wal(options),
        "torn-segment" => torn_segment(options),
        "enospc" => enospc(options),
        "eio" => eio(options),
        "bitflip-segment" => bitflip_segment(options),
        "bitflip-manifest" => bitflip_manifest(options),
        "crash-flush" => crash_points(options, false),
        "crash-compaction" => crash_points(options, true),
        other => bail!("unknown fault {other:?} (one of {})", FAULTS.join(", ")),
    }
}

fn site(options: &RunOptions, fault: &str) -> Result<PathBuf> {
    let dir = options.work_dir.join(format!("{fault}-{}", options.seed));
    if dir.exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Stops the workload against a running node, shuts the node down cleanly and checks.
fn finish(
    node: &mut Node,
    workload: Workload,
    rt: &tokio::runtime::Runtime,
    report: &mut FaultReport,
) -> Result<()> {
    std::thread::sleep(Duration::from_millis(300));
    let history = workload.stop(rt);
    let status = node.terminate()?;
    report.check(status.success(), "clean shutdown after the faults exits 0");
    report.verdict = node.check_dump(&history)?;
    report.check(report.verdict.acked > 0, "events were acknowledged");
    Ok(())
}

/// Waits until the acknowledged count passes `than` (ingest is flowing).
fn acks_resume(history: &History, than: u64, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if history.acked_count() > than {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// 1. SIGKILL at random moments while producers ingest, flushes and compactions run.
pub fn kill(options: &RunOptions) -> Result<FaultReport> {
    let mut report = FaultReport::new("kill");
    let mut node = Node::new(&options.bin, &site(options, "kill")?, BUSY_CONFIG)?;
    report.recovery_ms.push(ms(node.start(&[])?));
    let rt = runtime()?;
    let workload = Workload::start(
        &rt,
        &node.ingest_addr,
        &node.pg_addr,
        &WorkloadOptions {
            seed: options.seed,
            ..WorkloadOptions::default()
        },
    );
    let mut rng = SmallRng::seed_from_u64(options.seed);
    for _ in 0..options.cycles {
        std::thread::sleep(Duration::from_millis(rng.gen_range(100..1000)));
        node.kill9();
        report.recovery_ms.push(ms(node.start(&[])?));
        report.cycles += 1;
    }
    finish(&mut node, workload, &rt, &mut report)?;
    Ok(report)
}

/// 8. SIGSTOP / SIGCONT pauses, with a producer that writes its frames in small fragments.
pub fn pause(options: &RunOptions) -> Result<FaultReport> {
    let mut report = FaultReport::new("pause");
    let mut node = Node::new(&options.bin, &site(options, "pause")?, BUSY_CONFIG)?;
    node.start(&[])?;
    let rt = runtime()?;
    let workload_options = WorkloadOptions {
        seed: options.seed,
        slow_producers: 2,
        ..WorkloadOptions::default()
    };
    let workload = Workload::start(&rt, &node.ingest_addr, &node.pg_addr, &workload_options);
    let mut rng = SmallRng::seed_from_u64(options.seed);
    for _ in 0..options.cycles {
        std::thread::sleep(Duration::from_millis(rng.gen_range(100..600)));
        node.pause();
        std::thread::sleep(Duration::from_millis(rng.gen_range(50..2000)));
        let before = workload.history.acked_count();
        node.resume();
        let resumed = acks_resume(&workload.history, before, Duration::from_secs(20));
        report.check(resumed, "acknowledgements resume within 20 s of SIGCONT");
        report.cycles += 1;
    }
    finish(&mut node, workload, &rt, &mut report)?;
    Ok(report)
}

/// 2. Power loss: after each SIGKILL everything not fsynced is thrown away. With
/// `no_fsync`, WAL syncs count for nothing: the negative control, which must lose events.
pub fn power_loss(options: &RunOptions, no_fsync: bool) -> Result<FaultReport> {
    let name = if no_fsync {
        "power-loss-no-fsync"
    } else {
        "power-loss"
    };
    let mut report = FaultReport::new(name);
    report.expect_losses = no_fsync;
    let site = site(options, name)?;
    let journal = site.join("journal");
    let journal_text = journal.to_string_lossy().into_owned();
    let mut env = vec![("LOOKBACK_POWERLOSS_DIR", journal_text.as_str())];
    if no_fsync {
        env.push(("LOOKBACK_POWERLOSS_IGNORE_SYNC", ".log"));
    }
    let mut node = Node::new(&options.bin, &site, BUSY_CONFIG)?;
    node.start(&env)?;
    let rt = runtime()?;
    let workload = Workload::start(
        &rt,
        &node.ingest_addr,
        &node.pg_addr,
        &WorkloadOptions {
            seed: options.seed,
            ..WorkloadOptions::default()
        },
    );
    let mut rng = SmallRng::seed_from_u64(options.seed);
    let cut = |node: &mut Node, report: &mut FaultReport| -> Result<()> {
        node.kill9();
        let restored =
            lookback_common::powerloss::restore(&journal).context("restore the durable state")?;
        report.check(
            restored.dirs >= 2,
            "the journal holds the data and wal directories",
        );
        report.checks.push(format!(
            "power cut: {} unsynced bytes dropped, {} names undone",
            restored.bytes_dropped, restored.names_removed
        ));
        Ok(())
    };
    for _ in 0..options.cycles {
        std::thread::sleep(Duration::from_millis(rng.gen_range(200..1200)));
        cut(&mut node, &mut report)?;
        match node.start(&env) {
            Ok(took) => report.recovery_ms.push(ms(took)),
            Err(e) if no_fsync => {
                report.fail(format!(
                    "server refused to start after the power cut: {e:#}"
                ));
                let _ = workload.stop(&rt);
                return Ok(report);
            }
            Err(e) => return Err(e),
        }
        report.cycles += 1;
    }
    std::thread::sleep(Duration::from_millis(300));
    let history = workload.stop(&rt);
    // The final cut too: what a clean shutdown would have written is not counted on.
    cut(&mut node, &mut report)?;
    report.verdict = node.check_dump(&history)?;
    Ok(report)
}

/// Sends `batches` batches of `events` events one at a time, each acknowledged before the next.
fn ingest_acked(
    rt: &tokio::runtime::Runtime,
    node: &Node,
    history: &History,
    rng: &mut SmallRng,
    batches: usize,
    events: usize,
) -> Result<Vec<Vec<Row>>> {
    use lookback_wire::ingest::client::{Producer, ProducerOptions};
    rt.block_on(async {
        let mut client = Producer::connect(&node.ingest_addr, ProducerOptions::new(7)).await?;
        let mut sent = Vec::new();
        for _ in 0..batches {
            let rows: Vec<Row> = (0..events).map(|_| random_event(rng, 7)).collect();
            history.sent(rows.iter().map(|r| (event_id(r), expected_json(r))));
            client.send_and_wait("events", &build(&rows)).await?;
            history.acked(rows.iter().map(|r| event_id(r)));
            sent.push(rows);
        }
        Ok(sent)
    })
}

fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    if to.exists() {
        std::fs::remove_dir_all(to)?;
    }
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else if entry.file_name() != "LOCK" {
            std::fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}

fn wal_files(data_dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(data_dir.join("wal"))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    files.sort();
    Ok(files)
}

/// A fresh site with a quiet node (not started), a runtime, an empty history and the run's rng.
fn quiet_site(options: &RunOptions, name: &str) -> Result<(PathBuf, Node, tokio::runtime::Runtime, History, SmallRng)> {
    let site = site(options, name)?;
    let node = Node::new(&options.bin, &site, QUIET_CONFIG)?;
    Ok((site, node, runtime()?, History::default(), SmallRng::seed_from_u64(options.seed)))
}

/// 3a. Torn writes at every byte offset (every `stride`th) of the WAL's last record: the
/// record is written up to the offset and the rest is what was there before (zeros). Recovery
/// must keep every earlier record and drop the torn one whole.
pub fn torn_wal(options: &RunOptions) -> Result<FaultReport> {
    let mut report = FaultReport::new("torn-wal");
    let (site, mut node, rt, history, mut rng) = quiet_site(options, "torn-wal")?;
    node.start(&[])?;
    ingest_acked(&rt, &node, &history, &mut rng, 20, 20)?;
    node.kill9();
    let before = site.join("before");
    copy_dir(&node.data_dir, &before)?;
    node.start(&[])?;
    let last = ingest_acked(&rt, &node, &History::default(), &mut rng, 1, 20)?;
    node.kill9();
    let after = site.join("after");
    copy_dir(&node.data_dir, &after)?;
    // The segment the last record went to: the one that differs (the newest may be the
    // zeroed next segment, prepared ahead).
    let mut changed = None;
    for log in wal_files(&after)? {
        let name = log.file_name().context("wal file name")?.to_owned();
        let Ok(old) = std::fs::read(before.join("wal").join(&name)) else {
            continue;
        };
        let new = std::fs::read(&log)?;
        let differs: Vec<usize> = (0..new.len().min(old.len()))
            .filter(|i| old[*i] != new[*i])
            .collect();
        if let (Some(&start), Some(&end)) = (differs.first(), differs.last()) {
            changed = Some((name, old, new, start, end));
        }
    }
    let (name, old, new, start, end) =
        changed.context("the last batch changed no wal segment that existed before")?;
    report.checks.push(format!(
        "last record spans bytes {start}..={end} of {}",
        name.to_string_lossy()
    ));
    let last_ids: std::collections::HashSet<String> = last[0].iter().map(|r| event_id(r)).collect();
    for offset in (start..=end).step_by(options.stride.max(1)) {
        copy_dir(&after, &node.data_dir)?;
        let mut torn = new.clone();
        torn[offset..=end].copy_from_slice(&old[offset..=end]);
        std::fs::write(node.data_dir.join("wal").join(&name), &torn)?;
        let rows = node.dump()?;
        let verdict = history.check(&rows);
        let torn_present = rows
            .iter()
            .filter(|r| {
                r.get("event_id")
                    .and_then(|v| v.as_str())
                    .is_some_and(|id| last_ids.contains(id))
            })
            .count();
        if !verdict.ok() || torn_present != 0 {
            report.fail(format!("torn at byte {offset}: {} of the torn record's events present, verdict {verdict:?}", torn_present));
        }
        report.verdict = verdict;
        report.cycles += 1;
    }
    report.check(
        true,
        "every earlier record recovered and the torn record dropped whole, at every offset tried",
    );
    Ok(report)
}

/// 3b. A segment being written, torn at every (`stride`th) offset: the server crashes after
/// the segment is written but before the manifest names it; the file is then cut short.
/// Recovery must discard it and serve its rows from the WAL.
pub fn torn_segment(options: &RunOptions) -> Result<FaultReport> {
    let mut report = FaultReport::new("torn-segment");
    let (site, mut node, rt, history, mut rng) = quiet_site(options, "torn-segment")?;
    node.start(&[("LOOKBACK_FAULTS", "")])?;
    ingest_acked(&rt, &node, &history, &mut rng, TORN_SEGMENT_BATCHES, TORN_SEGMENT_BATCH_EVENTS)?;
    node.set_faults("rename:MANIFEST:crash:once")?;
    let _ = node.http("POST", "/admin/flush", "");
    report.check(
        node.wait_exit(Duration::from_secs(30))?.is_some(),
        "the server crashed before the manifest swap",
    );
    let template = site.join("template");
    copy_dir(&node.data_dir, &template)?;
    let segment = std::fs::read_dir(template.join("segments"))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|e| e == "seg"))
        .context("the flush wrote no segment before crashing")?;
    let bytes = std::fs::read(&segment)?;
    let relative = segment.strip_prefix(&template)?.to_path_buf();
    for cut in (0..bytes.len()).step_by(options.stride.max(1)) {
        copy_dir(&template, &node.data_dir)?;
        std::fs::write(node.data_dir.join(&relative), &bytes[..cut])?;
        let verdict = node.check_dump(&history)?;
        if !verdict.ok() {
            report.fail(format!(
                "segment cut at {cut} of {} bytes: {verdict:?}",
                bytes.len()
            ));
        }
        report.verdict = verdict;
        report.cycles += 1;
    }
    report.check(
        true,
        format!(
            "a {}-byte segment cut at every offset tried: discarded, rows served from the WAL",
            bytes.len()
        ),
    );
    Ok(report)
}

/// What the torn segment holds: few events, so that cutting it at every one of its offsets
/// (a restart and a dump each) fits the long mode; its layout (every column's blocks, the
/// bitmaps, the fingerprint index, the footer) is that of any segment.
const TORN_SEGMENT_BATCHES: usize = 2;
const TORN_SEGMENT_BATCH_EVENTS: usize = 20;

/// The steps of the write path a full disk is injected at, as `LOOKBACK_FAULTS` specs.
const ENOSPC_STEPS: [(&str, &str); 5] = [
    ("wal append", "create:/wal/:enospc;write:recycle-:enospc"),
    ("segment flush", "create:.seg:enospc"),
    ("index build", "write:.seg:enospc:skip=3"),
    ("compaction", "create:.seg:enospc"),
    ("manifest swap", "create:MANIFEST:enospc"),
];

/// 4. Disk full at each step: writes fail with a clear error (53100 / disk_full), reads keep
/// working, nothing partial becomes visible, and ingest resumes once space is freed.
pub fn enospc(options: &RunOptions) -> Result<FaultReport> {
    let mut report = FaultReport::new("enospc");
    let mut node = Node::new(&options.bin, &site(options, "enospc")?, BUSY_CONFIG)?;
    let fault_mode = [("LOOKBACK_FAULTS", "")];
    node.start(&fault_mode)?;
    let rt = runtime()?;
    let sql = rt.block_on(pg_connect(&node.pg_addr))?;
    rt.block_on(sql.simple_query("CREATE TABLE notes (id bigint, note text)"))?;
    let workload = Workload::start(
        &rt,
        &node.ingest_addr,
        &node.pg_addr,
        &WorkloadOptions {
            seed: options.seed,
            producers: 2,
            ..WorkloadOptions::default()
        },
    );
    let mut rng = SmallRng::seed_from_u64(options.seed);
    for cycle in 0..options.cycles {
        let (step, spec) = ENOSPC_STEPS[cycle % ENOSPC_STEPS.len()];
        std::thread::sleep(Duration::from_millis(rng.gen_range(200..800)));
        node.set_faults(spec)?;
        std::thread::sleep(Duration::from_millis(300));
        let count = rt.block_on(query_value(&sql, "SELECT count(*) FROM events"));
        report.check(
            count.is_ok(),
            format!("reads work while the disk is full ({step})"),
        );
        if step == "wal append" {
            let rows: Vec<Row> = (0..5).map(|_| random_event(&mut rng, 900)).collect();
            let answer = rt.block_on(probe_batch(&node.ingest_addr, 0, &rows))?;
            let code = lookback_wire::ingest::ErrorCode::DiskFull.as_u16();
            report.check(
                matches!(&answer, Err((c, _)) if *c == code),
                "ingest is refused with error code 11 (disk_full)",
            );
            let insert =
                rt.block_on(sql.simple_query("INSERT INTO notes VALUES (1, 'while full')"));
            let state = insert
                .as_ref()
                .err()
                .and_then(|e| e.code())
                .map(|c| c.code().to_string());
            report.check(
                state.as_deref() == Some("53100"),
                "INSERT answers SQLSTATE 53100",
            );
        } else {
            let action = if step == "compaction" {
                "/admin/compact"
            } else {
                "/admin/flush"
            };
            let (status, body) = node.http("POST", action, "")?;
            report.check(
                status == 500 && body.contains("No space left"),
                format!("{action} fails with ENOSPC at {step}"),
            );
        }
        let before = workload.history.acked_count();
        node.set_faults("")?;
        report.check(
            acks_resume(&workload.history, before, Duration::from_secs(20)),
            "ingest resumes without a restart once space is freed",
        );
        let (status, body) = node.http("POST", "/admin/flush", "")?;
        report.check(
            status == 200,
            format!("a flush succeeds after space is freed ({body})"),
        );
        report.cycles += 1;
    }
    let inserted = rt.block_on(sql.simple_query("INSERT INTO notes VALUES (2, 'after')"));
    report.check(inserted.is_ok(), "INSERT works once space is freed");
    drop(sql);
    finish(&mut node, workload, &rt, &mut report)?;
    // After a restart the segment files on disk are exactly those the manifest lists. (With
    // compaction off: a running one has an output file not listed yet.)
    std::fs::write(&node.config, QUIET_CONFIG)?;
    node.start(&[])?;
    let (_, storage) = node.http("GET", "/admin/storage", "")?;
    let listed = serde_json::from_str::<serde_json::Value>(&storage)?["segments"]
        .as_u64()
        .unwrap_or(u64::MAX);
    let files = std::fs::read_dir(node.data_dir.join("segments"))?
        .filter_map(|e| e.ok())
        .filter(|e| e.path().extension().is_some_and(|x| x == "seg"))
        .count();
    report.check(
        listed == files as u64,
        format!("no partial segment left behind ({files} files, {listed} in the manifest)"),
    );
    node.terminate()?;
    Ok(report)
}

/// 5. EIO on the WAL's fdatasync: poisoned, nothing acknowledged after it, restart recovers.
pub fn eio(options: &RunOptions) -> Result<FaultReport> {
    let mut report = FaultReport::new("eio");
    let mut node = Node::new(&options.bin, &site(options, "eio")?, BUSY_CONFIG)?;
    node.start(&[])?;
    let rt = runtime()?;
    let workload = Workload::start(
        &rt,
        &node.ingest_addr,
        &node.pg_addr,
        &WorkloadOptions {
            seed: options.seed,
            ..WorkloadOptions::default()
        },
    );
    let mut rng = SmallRng::seed_from_u64(options.seed);
    for _ in 0..options.cycles {
        node.kill9();
        let spec = format!("sync:.log:eio:skip={}:once", rng.gen_range(5..60));
        node.start(&[("LOOKBACK_FAULTS", spec.as_str())])?;
        let deadline = Instant::now() + Duration::from_secs(30);
        let poisoned = loop {
            let (status, _) = node.http("GET", "/health", "")?;
            if status == 503 || Instant::now() > deadline {
                break status == 503;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        report.check(
            poisoned,
            "the failed fdatasync poisons the WAL (/health 503)",
        );
        std::thread::sleep(Duration::from_millis(200)); // acks sent before the failure arrive
        let at_poison = workload.history.acked_count();
        std::thread::sleep(Duration::from_millis(1000));
        report.check(
            workload.history.acked_count() == at_poison,
            "nothing is acknowledged after the failed fdatasync",
        );
        node.kill9();
        report.recovery_ms.push(ms(node.start(&[])?));
        report.check(
            acks_resume(&workload.history, at_poison, Duration::from_secs(20)),
            "a restart recovers and ingest resumes",
        );
        report.cycles += 1;
    }
    finish(&mut node, workload, &rt, &mut report)?;
    Ok(report)
}

/// Every column of every event, ordered: a query that reads every block.
const FULL_SCAN: &str = "SELECT event_id, app_id, ts, event_type, device_id, user_id, ip, user_agent, platform, channel, campaign, revenue, currency, properties FROM events ORDER BY event_id";

fn full_scan(
    rt: &tokio::runtime::Runtime,
    node: &Node,
) -> Result<std::result::Result<Vec<Vec<Option<String>>>, String>> {
    rt.block_on(async {
        let client = pg_connect(&node.pg_addr).await?;
        match client.simple_query(FULL_SCAN).await {
            Ok(messages) => Ok(Ok(messages
                .into_iter()
                .filter_map(|m| match m {
                    tokio_postgres::SimpleQueryMessage::Row(row) => Some(
                        (0..row.len())
                            .map(|i| row.get(i).map(str::to_string))
                            .collect(),
                    ),
                    _ => None,
                })
                .collect())),
            Err(e) => Ok(Err(e.code().map_or_else(
                || format!("no sqlstate: {e}"),
                |c| c.code().to_string(),
            ))),
        }
    })
}

/// Segments with flushed, acknowledged data, the server stopped cleanly.
fn flushed_site(
    options: &RunOptions,
    name: &str,
    rt: &tokio::runtime::Runtime,
) -> Result<(Node, History)> {
    let mut node = Node::new(&options.bin, &site(options, name)?, QUIET_CONFIG)?;
    let history = History::default();
    let mut rng = SmallRng::seed_from_u64(options.seed);
    node.start(&[])?;
    for _ in 0..3 {
        ingest_acked(rt, &node, &history, &mut rng, 5, 200)?;
        node.http("POST", "/admin/flush", "")?;
    }
    node.terminate()?;
    Ok((node, history))
}

fn flip_bit(path: &Path, offset: usize, bit: u8) -> Result<()> {
    let mut bytes = std::fs::read(path)?;
    bytes[offset] ^= 1 << bit;
    std::fs::write(path, bytes)?;
    Ok(())
}

/// 6a. Bit flips in segment files: every query answers the right rows or XX001, never a
/// wrong result.
pub fn bitflip_segment(options: &RunOptions) -> Result<FaultReport> {
    let mut report = FaultReport::new("bitflip-segment");
    let rt = runtime()?;
    let (mut node, history) = flushed_site(options, "bitflip-segment", &rt)?;
    node.start(&[])?;
    let baseline =
        full_scan(&rt, &node)?.map_err(|code| anyhow::anyhow!("baseline scan failed: {code}"))?;
    node.terminate()?;
    let segments: Vec<PathBuf> = std::fs::read_dir(node.data_dir.join("segments"))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    let mut rng = SmallRng::seed_from_u64(options.seed);
    let (mut detected, mut unaffected) = (0, 0);
    for _ in 0..options.cycles {
        let segment = &segments[rng.gen_range(0..segments.len())];
        let len = std::fs::metadata(segment)?.len() as usize;
        let (offset, bit) = (rng.gen_range(0..len), rng.gen_range(0..8u8));
        flip_bit(segment, offset, bit)?;
        match node.start(&[]) {
            // Damage anywhere in a segment, its footer included, quarantines its table only.
            Err(e) => {
                report.fail(format!("flipped byte {offset} of {}: the server refused to start: {e:#}", segment.display()));
                flip_bit(segment, offset, bit)?;
                break;
            }
            Ok(_) => {
                match full_scan(&rt, &node)? {
                    Ok(rows) if rows == baseline => unaffected += 1,
                    Ok(_) => report.fail(format!(
                        "WRONG RESULT after flipping bit {bit} of byte {offset} of {}",
                        segment.display()
                    )),
                    Err(code) if code == "XX001" => detected += 1,
                    Err(code) => report.fail(format!(
                        "flipped byte {offset}: SQLSTATE {code}, expected XX001"
                    )),
                }
                node.terminate()?;
            }
        }
        flip_bit(segment, offset, bit)?;
        report.cycles += 1;
    }
    report.checks.push(format!("the server started after every flip; {detected} scans answered XX001, {unaffected} answered correctly (flip outside what the scan reads)"));
    report.verdict = node.check_dump(&history)?;
    Ok(report)
}

/// 6b. Bit flips in the manifest: the server refuses to start, naming the file; with the
/// byte restored it starts and every event is there.
pub fn bitflip_manifest(options: &RunOptions) -> Result<FaultReport> {
    let mut report = FaultReport::new("bitflip-manifest");
    let rt = runtime()?;
    let (mut node, history) = flushed_site(options, "bitflip-manifest", &rt)?;
    let manifest = node.data_dir.join("MANIFEST");
    let len = std::fs::metadata(&manifest)?.len() as usize;
    let mut rng = SmallRng::seed_from_u64(options.seed);
    for _ in 0..options.cycles {
        let (offset, bit) = (rng.gen_range(0..len), rng.gen_range(0..8u8));
        flip_bit(&manifest, offset, bit)?;
        let (status, log) = node.start_expecting_failure(&[], Duration::from_secs(60))?;
        report.check(
            !status.success() && log.contains("MANIFEST"),
            "a damaged manifest stops start-up with an error naming it",
        );
        flip_bit(&manifest, offset, bit)?;
        report.cycles += 1;
    }
    report.recovery_ms.push(ms(node.start(&[])?));
    node.terminate()?;
    report.verdict = node.check_dump(&history)?;
    Ok(report)
}

/// Operations of the flush and compaction protocols (besides data writes, enumerated with
/// `stride`), each a crash point.
const CRASH_OPS: [&str; 6] = ["create", "sync", "syncdir", "rename", "remove", "write"];

/// 7. A crash after every file operation of a flush (or a compaction): for each operation
/// kind and each k, crash at its k-th occurrence; the restarted server must hold every event
/// exactly once. Ends for a kind when the protocol completes without reaching occurrence k.
pub fn crash_points(options: &RunOptions, compaction: bool) -> Result<FaultReport> {
    let name = if compaction {
        "crash-compaction"
    } else {
        "crash-flush"
    };
    let mut report = FaultReport::new(name);
    let (site, mut node, rt, history, mut rng) = quiet_site(options, name)?;
    let fault_mode = [("LOOKBACK_FAULTS", "")];
    node.start(&fault_mode)?;
    let groups = if compaction { 3 } else { 1 };
    for _ in 0..groups {
        ingest_acked(&rt, &node, &history, &mut rng, 4, 250)?;
        if compaction {
            node.http("POST", "/admin/flush", "")?;
        }
    }
    node.kill9(); // the WAL (and, for compaction, the segments) hold everything
    let template = site.join("template");
    copy_dir(&node.data_dir, &template)?;
    let action = if compaction {
        "/admin/compact"
    } else {
        "/admin/flush"
    };
    for op in CRASH_OPS {
        let step = if op == "write" {
            options.stride.max(1)
        } else {
            1
        };
        let (mut k, mut crashes) = (0, 0);
        loop {
            copy_dir(&template, &node.data_dir)?;
            node.start(&fault_mode)?;
            node.set_faults(&format!("{op}::crash:skip={k}:once"))?;
            let answer = node.http("POST", action, "");
            let crashed = node.wait_exit(Duration::from_secs(10))?.is_some();
            if !crashed {
                report.check(
                    matches!(answer, Ok((200, _))),
                    format!("{action} completes when no crash point is reached"),
                );
                node.kill9();
                break;
            }
            report.recovery_ms.push(ms(node.start(&[])?));
            node.terminate()?;
            let verdict = node.check_dump(&history)?;
            if !verdict.ok() {
                report.fail(format!("crash at {op} #{k}: {verdict:?}"));
            }
            report.verdict = verdict;
            report.cycles += 1;
            crashes += 1;
            k += step;
        }
        let every = if step == 1 {
            String::new()
        } else {
            format!(" (every {step}th of {k})")
        };
        report
            .checks
            .push(format!("{op}: crashed at {crashes} points{every}"));
    }
    Ok(report)
}
