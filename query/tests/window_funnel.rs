//! `window_funnel` answers what ClickHouse's `windowFunnel` (default mode) answers: ClickHouse's
//! documented example and the cases of its own tests (00632_aggregation_window_funnel,
//! 01646_fix_window_funnel_inconistency), over a plain DataFusion session with MemTables: the
//! inclusive window, rows in any order, equal timestamps, one row meeting several conditions,
//! several groups, NULLs, partial aggregation merged across partitions (checked against a
//! brute-force reference), running as a window function, other timestamp types, and the
//! planning errors.

use datafusion::arrow::array::{Array, ArrayRef, AsArray, BooleanArray, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray};
use datafusion::arrow::compute::kernels::cast_utils::string_to_timestamp_nanos;
use datafusion::arrow::datatypes::{DataType, Field, Int64Type, Schema, TimeUnit};
use datafusion::datasource::MemTable;
use datafusion::error::DataFusionError;
use datafusion::logical_expr::Accumulator;
use datafusion::physical_plan::displayable;
use datafusion::prelude::{SessionConfig, SessionContext};
use lookback_query::window_funnel::{
    funnel_level, window_funnel_udaf, FunnelEvent, WindowFunnelAccumulator, WINDOW_FUNNEL_CONDITIONS_MAX,
};
use std::sync::Arc;

const SECOND_US: i64 = 1_000_000;

/// One input row: `ts` in UTC microseconds (None: NULL), `event` (None: NULL).
#[derive(Clone, Debug)]
struct Row {
    user: i64,
    ts_us: Option<i64>,
    event: Option<String>,
}

fn row(user: i64, ts_us: i64, event: &str) -> Row {
    Row { user, ts_us: Some(ts_us), event: Some(event.to_string()) }
}

/// `text` (e.g. `2019-01-29 10:00:00`, read as UTC) in microseconds.
fn at(text: &str) -> i64 {
    string_to_timestamp_nanos(text).unwrap_or_else(|e| panic!("parse {text}: {e}")) / 1_000
}

/// A session with `window_funnel` registered that plans up to 4 partitions.
fn session() -> SessionContext {
    let ctx = SessionContext::new_with_config(SessionConfig::new().with_target_partitions(4));
    ctx.register_udaf(window_funnel_udaf());
    ctx
}

/// Registers `rows` as table `name` (user_id, ts as Lookback types it, event), dealt
/// round-robin into `partitions` partitions.
fn register(ctx: &SessionContext, name: &str, rows: &[Row], partitions: usize) {
    let schema = Arc::new(Schema::new(vec![
        Field::new("user_id", DataType::Int64, false),
        Field::new("ts", DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())), true),
        Field::new("event", DataType::Utf8, true),
    ]));
    let batches = (0..partitions)
        .map(|p| {
            let part: Vec<&Row> = rows.iter().skip(p).step_by(partitions).collect();
            let users: Int64Array = part.iter().map(|r| r.user).collect();
            let ts = TimestampMicrosecondArray::from(part.iter().map(|r| r.ts_us).collect::<Vec<_>>()).with_timezone("UTC");
            let events: StringArray = part.iter().map(|r| r.event.as_deref()).collect();
            let columns: Vec<ArrayRef> = vec![Arc::new(users), Arc::new(ts), Arc::new(events)];
            vec![RecordBatch::try_new(schema.clone(), columns).expect("batch")]
        })
        .collect();
    let table = MemTable::try_new(schema, batches).expect("memtable");
    ctx.register_table(name, Arc::new(table)).expect("register");
}

async fn try_collect(ctx: &SessionContext, sql: &str) -> Result<Vec<RecordBatch>, DataFusionError> {
    ctx.sql(sql).await?.collect().await
}

/// Every row of `sql`'s answer, each column read as Int64.
async fn rows(ctx: &SessionContext, sql: &str) -> Vec<Vec<i64>> {
    let batches = try_collect(ctx, sql).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
    let mut out = Vec::new();
    for batch in &batches {
        for r in 0..batch.num_rows() {
            let values = batch.columns().iter().map(|c| {
                assert!(c.is_valid(r), "{sql}: NULL in the answer");
                c.as_primitive::<Int64Type>().value(r)
            });
            out.push(values.collect());
        }
    }
    out
}

/// The single value `sql` answers.
async fn level(ctx: &SessionContext, sql: &str) -> i64 {
    let answer = rows(ctx, sql).await;
    assert_eq!(answer.len(), 1, "{sql}: one row expected, got {answer:?}");
    assert_eq!(answer[0].len(), 1, "{sql}: one column expected");
    answer[0][0]
}

/// The planning error `sql` fails with; its message must contain `expected`.
/// The error `sql` fails with.
async fn error_of(ctx: &SessionContext, sql: &str) -> DataFusionError {
    match try_collect(ctx, sql).await {
        Ok(batches) => panic!("{sql}: expected an error, got {batches:?}"),
        Err(e) => e,
    }
}

async fn plan_error(ctx: &SessionContext, sql: &str, expected: &str) {
    let error = error_of(ctx, sql).await;
    let message = error.to_string();
    assert!(matches!(error.find_root(), DataFusionError::Plan(_)), "{sql}: not a planning error: {message}");
    assert!(message.contains(expected), "{sql}: error {message:?} does not say {expected:?}");
}

async fn bad_value(ctx: &SessionContext, sql: &str, expected: &str) {
    let error = error_of(ctx, sql).await;
    let found = lookback_query::SqlError::find(&error).map(|e| (e.code, e.message.clone()));
    let Some((code, message)) = found else { panic!("{sql}: not a SQL error with a SQLSTATE: {error}") };
    assert_eq!(code, "22023", "{sql}: {message}");
    assert!(message.contains(expected), "{sql}: error {message:?} does not say {expected:?}");
}

/// ClickHouse's documented example: one user's four events, rows not in time order.
fn doc_trend() -> Vec<Row> {
    vec![
        row(1, at("2019-01-29 10:00:00"), "1003"),
        row(1, at("2019-01-31 09:00:00"), "1007"),
        row(1, at("2019-01-30 08:00:00"), "1009"),
        row(1, at("2019-02-01 08:00:00"), "1010"),
    ]
}

#[tokio::test]
async fn clickhouse_documented_example() {
    let ctx = session();
    register(&ctx, "trend", &doc_trend(), 1);
    let funnel = |window: &str| {
        format!(
            "SELECT level, count(*) AS c FROM (
                SELECT user_id, window_funnel({window}, ts, event = '1003', event = '1009', event = '1007', event = '1010') AS level
                FROM trend GROUP BY user_id
             ) GROUP BY level ORDER BY level"
        )
    };
    // ClickHouse's own window (seconds; far past u64 microseconds, so it saturates).
    assert_eq!(rows(&ctx, &funnel("6048000000000000")).await, vec![vec![4, 1]]);
    assert_eq!(rows(&ctx, &funnel("INTERVAL '7 days'")).await, vec![vec![4, 1]]);
    // 1003 at 01-29 10:00 .. 1010 at 02-01 08:00 is 70 hours: two days reach 1007 (47 h) only.
    assert_eq!(rows(&ctx, &funnel("INTERVAL '2 days'")).await, vec![vec![3, 1]]);
    assert_eq!(rows(&ctx, &funnel("INTERVAL '70 hours'")).await, vec![vec![4, 1]]);
    assert_eq!(rows(&ctx, &funnel("INTERVAL '70 hours' - INTERVAL '1 microsecond'")).await, vec![vec![3, 1]]);
}

/// Events 1000 .. 1008 one second apart (ClickHouse's funnel_test), in the order given.
fn one_per_second(order: impl IntoIterator<Item = i64>) -> Vec<Row> {
    let base = at("2018-01-01 01:01:00");
    order.into_iter().map(|i| row(1, base + i * SECOND_US, &(1000 + i).to_string())).collect()
}

#[tokio::test]
async fn window_is_inclusive() {
    let ctx = session();
    register(&ctx, "funnel", &one_per_second(0..9), 1);
    let steps = "event = '1003', event = '1004', event = '1005', event = '1006', event = '1007'";
    assert_eq!(level(&ctx, &format!("SELECT window_funnel(2, ts, {steps}) FROM funnel")).await, 3);
    assert_eq!(level(&ctx, &format!("SELECT window_funnel(3, ts, {steps}) FROM funnel")).await, 4);
    assert_eq!(level(&ctx, &format!("SELECT window_funnel(4, ts, {steps}) FROM funnel")).await, 5);
    assert_eq!(level(&ctx, &format!("SELECT window_funnel(INTERVAL '2 seconds', ts, {steps}) FROM funnel")).await, 3);
    assert_eq!(level(&ctx, &format!("SELECT window_funnel(INTERVAL '3999999 microseconds', ts, {steps}) FROM funnel")).await, 4);
    assert_eq!(level(&ctx, &format!("SELECT window_funnel(INTERVAL '4 seconds', ts, {steps}) FROM funnel")).await, 5);
    assert_eq!(level(&ctx, "SELECT window_funnel(1, ts, event = '1000') FROM funnel").await, 1);
    assert_eq!(level(&ctx, "SELECT window_funnel(0, ts, event = '1000', event = '1001') FROM funnel").await, 1);
    let sql = "SELECT window_funnel(10000, ts, event = '1000', event = '1001', event = '1002', event = '1008') FROM funnel";
    assert_eq!(level(&ctx, sql).await, 4);
    assert_eq!(level(&ctx, "SELECT window_funnel(10000, ts, event = '1008', event = '1001') FROM funnel").await, 1);
}

#[tokio::test]
async fn rows_in_any_order_and_partitioning_give_the_same_level() {
    let orders: [Vec<i64>; 3] = [(0..9).collect(), (0..9).rev().collect(), vec![4, 8, 0, 6, 2, 7, 1, 5, 3]];
    for order in orders {
        for partitions in [1, 3] {
            let ctx = session();
            register(&ctx, "funnel", &one_per_second(order.clone()), partitions);
            let steps = "event = '1003', event = '1004', event = '1005', event = '1006', event = '1007'";
            assert_eq!(level(&ctx, &format!("SELECT window_funnel(3, ts, {steps}) FROM funnel")).await, 4, "{order:?}");
            // Overlapping conditions (ClickHouse's funnel_test2).
            let sql = "SELECT window_funnel(4, ts, event <= '1007', event >= '1002', event <= '1006', event >= '1004') FROM funnel";
            assert_eq!(level(&ctx, sql).await, 4, "{order:?}");
        }
    }
    let ctx = session();
    register(&ctx, "trend", &doc_trend().into_iter().rev().collect::<Vec<_>>(), 2);
    let sql = "SELECT window_funnel(INTERVAL '7 days', ts, event = '1003', event = '1009', event = '1007', event = '1010') FROM trend";
    assert_eq!(level(&ctx, sql).await, 4);
}

#[tokio::test]
async fn runs_as_a_window_function() {
    let ctx = session();
    // Each frame's events arrive newest first, so they need sorting before every evaluation.
    register(&ctx, "funnel", &one_per_second((0..9).rev()), 1);
    // Frames grow newest first: 1008, then 1008 and 1007, ...; step 1 (1004) joins the fifth.
    let sql = "SELECT window_funnel(10, ts, event = '1004', event = '1005', event = '1006', event = '1007', event = '1008')
        OVER (ORDER BY event DESC ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) FROM funnel ORDER BY event DESC";
    let levels: Vec<i64> = rows(&ctx, sql).await.into_iter().map(|r| r[0]).collect();
    assert_eq!(levels, vec![0, 0, 0, 0, 5, 5, 5, 5, 5]);
}

#[tokio::test]
async fn equal_timestamps_chain_in_condition_order() {
    let base = at("2020-01-01 00:00:00");
    // ClickHouse's funnel_test_strict_increase: three events at one second.
    let same_second = |order: [usize; 5]| -> Vec<Row> {
        let all = [(0, "1000"), (1, "1001"), (1, "1002"), (1, "1003"), (2, "1004")];
        order.iter().map(|&i| row(1, base + all[i].0 * SECOND_US, all[i].1)).collect()
    };
    for order in [[0, 1, 2, 3, 4], [4, 3, 2, 1, 0], [0, 3, 1, 4, 2]] {
        let ctx = session();
        register(&ctx, "events", &same_second(order), 1);
        let sql = "SELECT window_funnel(10000, ts, event = '1000', event = '1001', event = '1002', event = '1003', event = '1004') FROM events";
        assert_eq!(level(&ctx, sql).await, 5, "{order:?}");
        // Steps listed against the row order at the same instant still chain.
        let sql = "SELECT window_funnel(10000, ts, event = '1003', event = '1002', event = '1001', event = '1004') FROM events";
        assert_eq!(level(&ctx, sql).await, 4, "{order:?}");
        // But not backwards in time: 1004 (2 s) then 1000 (0 s).
        let sql = "SELECT window_funnel(10000, ts, event = '1004', event = '1000') FROM events";
        assert_eq!(level(&ctx, sql).await, 1, "{order:?}");
    }

    // ClickHouse's 01646_fix_window_funnel_inconistency: both row orders give 2.
    let day1 = at("2019-01-28 10:00:00");
    let day2 = at("2019-01-29 10:00:00");
    for rows_in_order in [
        vec![row(1, day2, "1004"), row(1, day2, "1003"), row(1, day1, "1002")],
        vec![row(1, day2, "1003"), row(1, day2, "1004"), row(1, day1, "1002")],
    ] {
        let ctx = session();
        register(&ctx, "trend", &rows_in_order, 1);
        let sql = "SELECT level, count(*) FROM (
            SELECT user_id, window_funnel(6048000000000000, ts, event = '1004', event = '1003', event = '1002') AS level
            FROM trend GROUP BY user_id) GROUP BY level";
        assert_eq!(rows(&ctx, sql).await, vec![vec![2, 1]]);
    }
}

#[tokio::test]
async fn one_row_may_fill_several_steps() {
    let base = at("2020-01-01 00:00:00");
    let ctx = session();
    register(&ctx, "events", &[row(1, base, "x"), row(1, base + 5 * SECOND_US, "y"), row(1, base + 9 * SECOND_US, "z")], 1);
    // ClickHouse: 3 = windowFunnel(10000)(timestamp, event = 1004, event = 1004, event = 1004).
    assert_eq!(level(&ctx, "SELECT window_funnel(10000, ts, event = 'z', event = 'z', event = 'z') FROM events").await, 3);
    // x, then y meets steps 2 and 3.
    let sql = "SELECT window_funnel(10, ts, event = 'x', event IN ('y', 'q'), event IN ('y', 'z'), event = 'x') FROM events";
    assert_eq!(level(&ctx, sql).await, 3);
    // x, y, z: z is 9 s after x.
    let sql = |window: i64| format!("SELECT window_funnel({window}, ts, event = 'x', event = 'y', event = 'z') FROM events");
    assert_eq!(level(&ctx, &sql(9)).await, 3);
    assert_eq!(level(&ctx, &sql(8)).await, 2);
    // Step 3 (anything but x) is met by y itself, 5 s after x.
    let sql = |window: i64| format!("SELECT window_funnel({window}, ts, event = 'x', event = 'y', event <> 'x') FROM events");
    assert_eq!(level(&ctx, &sql(5)).await, 3);
    assert_eq!(level(&ctx, &sql(4)).await, 1);
}

/// ClickHouse's funnel_test_strict_order users 1 to 6 (ts in seconds), and user 7 with no step.
fn strict_order_users() -> Vec<Row> {
    let data: [(i64, &[&str]); 7] = [
        (1, &["a", "b", "c"]),
        (2, &["a", "d", "b", "c"]),
        (3, &["a", "a", "b", "b", "c", "c"]),
        (4, &["a", "a", "a", "a", "b", "b", "c", "c"]),
        (5, &["a", "a", "b", "b", "d", "c", "c"]),
        (6, &["c", "c", "b", "b", "a", "a"]),
        (7, &["d", "e"]),
    ];
    let mut out = Vec::new();
    for (user, events) in data {
        for (i, event) in events.iter().enumerate() {
            out.push(row(user, (i as i64 + 1) * SECOND_US, event));
        }
    }
    out
}

#[tokio::test]
async fn group_by_user() {
    for partitions in [1, 4] {
        let ctx = session();
        register(&ctx, "events", &strict_order_users(), partitions);
        let sql = "SELECT user_id, window_funnel(86400, ts, event = 'a', event = 'b', event = 'c') FROM events GROUP BY user_id ORDER BY user_id";
        let expected = vec![vec![1, 3], vec![2, 3], vec![3, 3], vec![4, 3], vec![5, 3], vec![6, 1], vec![7, 0]];
        assert_eq!(rows(&ctx, sql).await, expected, "{partitions} partitions");
        // A FILTER removes rows before the funnel sees them.
        let sql = "SELECT user_id, window_funnel(86400, ts, event = 'a', event = 'b', event = 'c') FILTER (WHERE event <> 'b') FROM events GROUP BY user_id ORDER BY user_id";
        let expected = vec![vec![1, 1], vec![2, 1], vec![3, 1], vec![4, 1], vec![5, 1], vec![6, 1], vec![7, 0]];
        assert_eq!(rows(&ctx, sql).await, expected, "{partitions} partitions");
    }
}

#[tokio::test]
async fn nulls_are_ignored() {
    let ctx = session();
    // ClickHouse's funnel_test_non_null. A NULL condition is not met; ClickHouse (since 22.10)
    // would drop the whole row instead, so its test wraps each condition in COALESCE; these are
    // its answers with COALESCE, which this function gives without.
    let table = "(SELECT to_timestamp_seconds(dt) AS ts, u, a, b FROM (VALUES
        (1, 1, 'a1', 'b1'), (2, 1, 'a2', 'b2'),
        (1, 2, 'a1', NULL), (2, 2, 'a2', NULL),
        (1, 3, NULL, NULL),
        (1, 4, NULL, 'b1'), (2, 4, 'a2', NULL), (3, 4, NULL, 'b3')) AS v(dt, u, a, b)) t";
    let funnel = |conditions: &str| format!("SELECT u, window_funnel(86400, ts, {conditions}) FROM {table} GROUP BY u ORDER BY u");
    let expect = |levels: [i64; 4]| (1..=4).zip(levels).map(|(u, l)| vec![u, l]).collect::<Vec<_>>();
    assert_eq!(rows(&ctx, &funnel("a = 'a1', a = 'a2'")).await, expect([2, 2, 0, 0]));
    assert_eq!(rows(&ctx, &funnel("a = 'a1', b = 'b2'")).await, expect([2, 1, 0, 0]));
    assert_eq!(rows(&ctx, &funnel("a IS NULL AND b IS NULL")).await, expect([0, 0, 1, 0]));
    assert_eq!(rows(&ctx, &funnel("a IS NULL, b = 'b3'")).await, expect([0, 0, 1, 2]));
    assert_eq!(rows(&ctx, &funnel("a = 'a1', NULL")).await, expect([1, 1, 0, 0]));

    // A NULL timestamp drops the row: user 1's only first step, user 2's last.
    let rows_with_null_ts = [
        Row { user: 1, ts_us: None, event: Some("a".into()) },
        row(1, 2 * SECOND_US, "b"),
        row(2, SECOND_US, "a"),
        Row { user: 2, ts_us: None, event: Some("b".into()) },
        Row { user: 3, ts_us: Some(SECOND_US), event: None },
        row(3, 2 * SECOND_US, "a"),
        Row { user: 3, ts_us: Some(3 * SECOND_US), event: None },
        row(3, 4 * SECOND_US, "b"),
    ];
    let ctx = session();
    register(&ctx, "events", &rows_with_null_ts, 2);
    let sql = "SELECT user_id, window_funnel(60, ts, event = 'a', event = 'b') FROM events GROUP BY user_id ORDER BY user_id";
    assert_eq!(rows(&ctx, sql).await, vec![vec![1, 0], vec![2, 1], vec![3, 2]]);
}

#[tokio::test]
async fn empty_input_is_level_zero() {
    let ctx = session();
    register(&ctx, "events", &strict_order_users(), 2);
    assert_eq!(level(&ctx, "SELECT window_funnel(60, ts, event = 'a') FROM events WHERE user_id < 0").await, 0);
    assert_eq!(level(&ctx, "SELECT window_funnel(60, ts, event = 'zz', event = 'a') FROM events").await, 0);
    let sql = "SELECT user_id, window_funnel(60, ts, event = 'a') FROM events WHERE user_id < 0 GROUP BY user_id";
    assert!(rows(&ctx, sql).await.is_empty());
}

#[tokio::test]
async fn result_is_a_non_null_int64_and_clickhouse_names_work() {
    let ctx = session();
    register(&ctx, "events", &strict_order_users(), 1);
    let frame = ctx.sql("SELECT window_funnel(60, ts, event = 'a') AS level FROM events").await.expect("plan");
    let field = frame.schema().field(0).clone();
    assert_eq!(field.data_type(), &DataType::Int64);
    assert!(!field.is_nullable());
    let sql = "SELECT windowFunnel(86400, ts, event = 'a', event = 'b', event = 'c') FROM events WHERE user_id = 2";
    assert_eq!(level(&ctx, sql).await, 3);
    let sql = "SELECT \"windowFunnel\"(86400, ts, event = 'a', event = 'b', event = 'c') FROM events WHERE user_id = 6";
    assert_eq!(level(&ctx, sql).await, 1);
}

#[tokio::test]
async fn other_timestamp_types_are_coerced() {
    let ctx = session();
    register(&ctx, "trend", &doc_trend(), 1);
    let steps = "event = '1003', event = '1009', event = '1007', event = '1010'";
    for ts in [
        "CAST(ts AS TIMESTAMP)",
        "arrow_cast(ts, 'Timestamp(Second, None)')",
        "arrow_cast(ts, 'Timestamp(Millisecond, Some(\"+05:30\"))')",
        "arrow_cast(ts, 'Timestamp(Nanosecond, Some(\"America/New_York\"))')",
    ] {
        let sql = format!("SELECT window_funnel(INTERVAL '2 days', {ts}, {steps}) FROM trend");
        assert_eq!(level(&ctx, &sql).await, 3, "{ts}");
    }
    // Dates are their midnights: 01-29 .. 02-01 is three days.
    let sql = format!("SELECT window_funnel(INTERVAL '3 days', CAST(ts AS DATE), {steps}) FROM trend");
    assert_eq!(level(&ctx, &sql).await, 4);
    let sql = format!("SELECT window_funnel(INTERVAL '2 days', CAST(ts AS DATE), {steps}) FROM trend");
    assert_eq!(level(&ctx, &sql).await, 3);
}

#[tokio::test]
async fn planning_errors() {
    let ctx = session();
    register(&ctx, "events", &strict_order_users(), 2);
    plan_error(&ctx, "SELECT window_funnel(60, ts) FROM events", "at least one condition").await;
    plan_error(&ctx, "SELECT window_funnel(60) FROM events", "takes a window, a timestamp").await;
    let conditions = |n: usize| vec!["event = 'a'"; n].join(", ");
    let too_many = format!("SELECT window_funnel(60, ts, {}) FROM events", conditions(WINDOW_FUNNEL_CONDITIONS_MAX + 1));
    plan_error(&ctx, &too_many, "at most 32 conditions").await;
    let most = format!("SELECT window_funnel(60, ts, {}) FROM events WHERE user_id = 1", conditions(WINDOW_FUNNEL_CONDITIONS_MAX));
    assert_eq!(level(&ctx, &most).await, 32);
    plan_error(&ctx, "SELECT window_funnel(60, ts, event) FROM events", "condition 1 must be boolean").await;
    plan_error(&ctx, "SELECT window_funnel(60, ts, event = 'a', user_id) FROM events", "condition 2 must be boolean").await;
    plan_error(&ctx, "SELECT window_funnel(60, user_id, event = 'a') FROM events", "timestamp must be a timestamp").await;
    for window in ["'1 hour'", "1.5", "ts"] {
        let sql = format!("SELECT window_funnel({window}, ts, event = 'a') FROM events");
        plan_error(&ctx, &sql, "window must be an interval or an integer number of seconds").await;
    }
    // A window of the right type with an unusable value is invalid_parameter_value (22023),
    // not an internal error.
    bad_value(&ctx, "SELECT window_funnel(-1, ts, event = 'a') FROM events", "must not be negative").await;
    bad_value(&ctx, "SELECT window_funnel(INTERVAL '-1 second', ts, event = 'a') FROM events", "must not be negative").await;
    bad_value(&ctx, "SELECT window_funnel(INTERVAL '1 month', ts, event = 'a') FROM events", "months").await;
    plan_error(&ctx, "SELECT window_funnel(user_id, ts, event = 'a') FROM events", "must be a constant").await;
    bad_value(&ctx, "SELECT window_funnel(CAST(NULL AS BIGINT), ts, event = 'a') FROM events", "must not be NULL").await;
    // Checked while planning, not only when a group's accumulator is made.
    let sql = "SELECT user_id, window_funnel(-5, ts, event = 'a') FROM events WHERE user_id < 0 GROUP BY user_id";
    bad_value(&ctx, sql, "must not be negative").await;
}

/// A small deterministic generator (xorshift64*), so failures reproduce.
struct Random(u64);

impl Random {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
    }
}

/// The longest chain by brute force: for each event meeting step 1 (start s), take for each
/// next step the earliest event meeting it at or after the previous step's time and within
/// s + window (earliest is never worse); the best over all starts.
fn reference_level(events: &[(i64, u32)], conditions: usize, window_us: i64) -> usize {
    let mut best = 0;
    for &(start, mask) in events {
        if mask & 1 == 0 {
            continue;
        }
        let (mut level, mut previous) = (1, start);
        for step in 1..conditions {
            let next = events
                .iter()
                .filter(|&&(t, m)| m >> step & 1 == 1 && t >= previous && t - start <= window_us)
                .map(|&(t, _)| t)
                .min();
            match next {
                Some(t) => (level, previous) = (level + 1, t),
                None => break,
            }
        }
        best = best.max(level);
    }
    best
}

#[test]
fn funnel_level_matches_brute_force() {
    let mut random = Random(0x5eed_f00d);
    for case in 0..3_000 {
        let conditions = 1 + random.below(6) as usize;
        let window_us = random.below(8) as i64 * SECOND_US;
        let count = random.below(14) as usize;
        let mut events: Vec<(i64, u32)> = (0..count)
            .map(|_| (random.below(12) as i64 * SECOND_US - 5 * SECOND_US, 1 + random.below((1 << conditions) - 1) as u32))
            .collect();
        let expected = reference_level(&events, conditions, window_us);
        events.sort_by_key(|e| e.0);
        let sorted: Vec<FunnelEvent> = events.iter().map(|&(ts_us, conditions)| FunnelEvent { ts_us, conditions }).collect();
        let got = funnel_level(&sorted, conditions, window_us as u64);
        assert_eq!(got, expected, "case {case}: {events:?}, {conditions} conditions, window {window_us} µs");
    }
}

#[test]
fn state_round_trips_through_merge() {
    let ts = |v: Vec<Option<i64>>| -> ArrayRef { Arc::new(TimestampMicrosecondArray::from(v).with_timezone("UTC")) };
    let conditions = |v: Vec<Option<bool>>| -> ArrayRef { Arc::new(BooleanArray::from(v)) };
    let window: ArrayRef = Arc::new(Int64Array::from(vec![0i64; 3]));
    // Step 2 and 3 in one partial state, step 1 (and a NULL) in the other.
    let mut late = WindowFunnelAccumulator::new(10 * SECOND_US as u64, 3);
    let late_input = [
        window.clone(),
        ts(vec![Some(5 * SECOND_US), Some(9 * SECOND_US), Some(20 * SECOND_US)]),
        conditions(vec![Some(false), None, Some(false)]),
        conditions(vec![Some(true), Some(false), Some(false)]),
        conditions(vec![Some(false), Some(true), Some(true)]),
    ];
    late.update_batch(&late_input).expect("update");
    let mut early = WindowFunnelAccumulator::new(10 * SECOND_US as u64, 3);
    let early_input = [
        window,
        ts(vec![Some(SECOND_US), None, Some(2 * SECOND_US)]),
        conditions(vec![Some(true), Some(true), None]),
        conditions(vec![Some(false), Some(false), Some(false)]),
        conditions(vec![Some(false), Some(false), Some(false)]),
    ];
    early.update_batch(&early_input).expect("update");
    assert_eq!(late.evaluate().expect("evaluate").to_string(), "0");
    let state: Vec<ArrayRef> = late.state().expect("state").iter().map(|s| s.to_array().expect("array")).collect();
    early.merge_batch(&state).expect("merge");
    // 1 s (step 1), 5 s (step 2), 9 s (step 3): within 10 s.
    assert_eq!(early.evaluate().expect("evaluate").to_string(), "3");
    assert!(early.size() >= 3 * size_of::<FunnelEvent>());
}

#[tokio::test]
async fn partial_aggregates_merged_across_partitions_match_brute_force() {
    let mut random = Random(0xf0_0d);
    let base = at("2024-03-01 00:00:00");
    let names = ["a", "b", "c", "d"];
    let mut input = Vec::new();
    for user in 0..300 {
        for _ in 0..random.below(16) {
            let ts_us = (random.below(20) != 0).then(|| base + random.below(60) as i64 * SECOND_US / 2);
            let event = (random.below(10) != 0).then(|| names[random.below(4) as usize].to_string());
            input.push(Row { user, ts_us, event });
        }
    }
    // The conditions below, evaluated here: a NULL event meets none.
    let mask = |event: &Option<String>| -> u32 {
        let Some(e) = event.as_deref() else { return 0 };
        u32::from(e == "a") | u32::from(e == "b" || e == "c") << 1 | u32::from(e == "c") << 2 | u32::from(e != "a") << 3
    };
    let window_us = 5 * SECOND_US;
    let mut expected = Vec::new();
    for user in 0..300 {
        let events: Vec<(i64, u32)> = input
            .iter()
            .filter(|r| r.user == user)
            .filter_map(|r| Some((r.ts_us?, mask(&r.event))))
            .filter(|e| e.1 != 0)
            .collect();
        if input.iter().any(|r| r.user == user) {
            expected.push(vec![user, reference_level(&events, 4, window_us) as i64]);
        }
    }

    let ctx = session();
    register(&ctx, "events", &input, 4);
    let funnel = "window_funnel(INTERVAL '5 seconds', ts, event = 'a', event IN ('b', 'c'), event = 'c', event <> 'a')";
    let sql = format!("SELECT user_id, {funnel} FROM events GROUP BY user_id ORDER BY user_id");
    let plan = ctx.sql(&sql).await.expect("plan").create_physical_plan().await.expect("physical plan");
    let plan = displayable(plan.as_ref()).indent(true).to_string();
    assert!(plan.contains("mode=Partial") && plan.contains("mode=Final"), "no partial aggregation to merge:\n{plan}");
    assert_eq!(rows(&ctx, &sql).await, expected);

    // Without GROUP BY: every partition's partial state merged into one.
    let sql = format!("SELECT {funnel} FROM events WHERE user_id = 7");
    assert_eq!(level(&ctx, &sql).await, expected.iter().find(|r| r[0] == 7).map_or(0, |r| r[1]));
    let sql = format!("SELECT max(level), sum(level) FROM (SELECT user_id, {funnel} AS level FROM events GROUP BY user_id)");
    let max = expected.iter().map(|r| r[1]).max().unwrap_or(0);
    let sum = expected.iter().map(|r| r[1]).sum::<i64>();
    assert_eq!(rows(&ctx, &sql).await, vec![vec![max, sum]]);
    assert!(max >= 3, "the random data should reach deep steps, got max {max}");
}
