//! Model-based test: random sequences of appends (single and bursts), checkpoints and reopens
//! against an in-memory model of acknowledged records. After every reopen the replay must be
//! exactly the model's records above the checkpoint, and LSNs must continue densely.
#![allow(clippy::unwrap_used)] // tests panic with the error

mod common;

use std::sync::mpsc;

use common::*;
use lookback_wal::{IoMode, Lsn, Wal, WalOptions};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    /// Appends `sizes.len()` records back to back (one or a few groups), then waits for them.
    Append { sizes: Vec<usize> },
    /// Checkpoints `behind` records before the durable LSN.
    Checkpoint { behind: u64 },
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => prop::collection::vec(prop_oneof![0..64usize, 64..1900usize], 1..6).prop_map(|sizes| Op::Append { sizes }),
        2 => (0..8u64).prop_map(|behind| Op::Checkpoint { behind }),
        1 => Just(Op::Reopen),
    ]
}

struct Model {
    /// Acknowledged payloads; index i holds LSN i + 1.
    records: Vec<Vec<u8>>,
    checkpoint: Lsn,
}

fn reopen_and_check(options: &WalOptions, model: &Model) -> Wal {
    let opened = open(options, model.checkpoint);
    let expected: Vec<(Lsn, Vec<u8>)> = model
        .records
        .iter()
        .enumerate()
        .map(|(i, p)| (i as Lsn + 1, p.clone()))
        .filter(|(lsn, _)| *lsn > model.checkpoint)
        .collect();
    assert_eq!(opened.replayed, expected);
    assert_eq!(opened.report.last_lsn, (model.records.len() as Lsn).max(model.checkpoint));
    assert!(opened.report.truncated.is_none(), "clean shutdowns never truncate");
    opened.wal
}

fn append_burst(wal: &Wal, model: &mut Model, sizes: &[usize]) {
    let (tx, rx) = mpsc::channel();
    for size in sizes {
        let next = model.records.len() as Lsn + 1;
        let data = payload(next, *size);
        let tx = tx.clone();
        let lsn = wal.append(data.clone(), Box::new(move |r| tx.send(r).unwrap())).unwrap();
        assert_eq!(lsn, next, "lsns are dense and continue across reopens");
        model.records.push(data);
    }
    drop(tx);
    let results: Vec<Lsn> = rx.iter().map(|r| r.unwrap()).collect();
    assert_eq!(results.len(), sizes.len());
    assert!(results.windows(2).all(|w| w[1] == w[0] + 1), "callbacks in lsn order");
}

fn run(mode: IoMode, ops: &[Op]) {
    let tmp = tempfile::tempdir().unwrap();
    let options = options(tmp.path(), mode, 8 * 1024);
    let mut model = Model { records: Vec::new(), checkpoint: 0 };
    let mut wal = reopen_and_check(&options, &model);
    for op in ops {
        match op {
            Op::Append { sizes } => append_burst(&wal, &mut model, sizes),
            Op::Checkpoint { behind } => {
                let lsn = wal.durable_lsn().saturating_sub(*behind).max(model.checkpoint);
                wal.checkpoint(lsn).unwrap();
                model.checkpoint = lsn;
            }
            Op::Reopen => {
                drop(wal);
                wal = reopen_and_check(&options, &model);
            }
        }
    }
    drop(wal);
    reopen_and_check(&options, &model);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn wal_matches_the_model_of_acknowledged_records(ops in prop::collection::vec(op(), 1..40)) {
        for mode in backends() {
            run(mode, &ops);
        }
    }
}
