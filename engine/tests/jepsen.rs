//! The short mode of the fault-injection harness (`jepsen/`, `lookback-jepsen`): every fault
//! against the real binary, a few cycles each. The long mode is the `lookback-jepsen` binary
//! (docs/reliability.md). A failing run prints the harness's report: the checker's verdict
//! (lost, duplicated, changed, phantom events, stale reads) and every failed expectation.

use lookback_jepsen::{markdown_table, run, FaultReport, RunOptions};

fn run_short(fault: &str, cycles: usize, stride: usize) -> FaultReport {
    let dir = tempfile::tempdir().expect("temporary directory");
    let options = RunOptions {
        bin: env!("CARGO_BIN_EXE_lookback").into(),
        work_dir: dir.path().to_path_buf(),
        cycles,
        seed: 1,
        stride,
    };
    let report = run(fault, &options).unwrap_or_else(|e| panic!("{fault}: the harness could not run: {e:#}"));
    eprintln!("{}\nchecks: {:#?}", markdown_table(std::slice::from_ref(&report)), report.checks);
    assert!(report.cycles > 0, "{fault}: no fault was injected");
    report
}

fn assert_passes(fault: &str, cycles: usize, stride: usize) {
    let report = run_short(fault, cycles, stride);
    assert!(report.passed(), "{fault}: {report:#?}");
    assert!(report.verdict.acked > 0, "{fault}: nothing was acknowledged, so nothing was tested");
}

#[test]
fn sigkill_during_ingest_flush_and_compaction() {
    assert_passes("kill", 20, 1);
}

#[test]
fn sigstop_sigcont_pauses_with_fragmented_frames() {
    assert_passes("pause", 5, 1);
}

#[test]
fn power_loss_keeps_every_acknowledged_event() {
    assert_passes("power-loss", 8, 1);
}

#[test]
fn power_loss_with_fsync_disabled_loses_events_the_checker_sees() {
    let report = run_short("power-loss-no-fsync", 3, 1);
    assert!(report.verdict.lost > 0, "the negative control must lose acknowledged events: {report:#?}");
}

#[test]
fn torn_wal_tail_at_byte_offsets() {
    assert_passes("torn-wal", 1, 61);
}

#[test]
fn torn_segment_being_written() {
    assert_passes("torn-segment", 1, 1021);
}

#[test]
fn disk_full_at_each_step_then_space_freed() {
    assert_passes("enospc", 5, 1);
}

#[test]
fn eio_on_wal_fdatasync() {
    assert_passes("eio", 3, 1);
}

#[test]
fn bit_flips_in_segments_answer_xx001_or_the_right_rows() {
    assert_passes("bitflip-segment", 10, 1);
}

#[test]
fn bit_flips_in_the_manifest_stop_start_up() {
    assert_passes("bitflip-manifest", 5, 1);
}

#[test]
fn crash_at_every_step_of_a_flush() {
    assert_passes("crash-flush", 1, 8);
}

#[test]
fn crash_at_every_step_of_a_compaction() {
    assert_passes("crash-compaction", 1, 16);
}
