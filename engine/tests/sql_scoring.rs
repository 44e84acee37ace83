//! Model scoring over the Postgres protocol (docs/scoring.md): `load_model` from a server
//! path and from JSON text, `lookback_models`, `score(...)` in SELECT lists, WHERE and over
//! `attribute(...)` output, equal to xgboost's own predictions (the fixtures of
//! `scoring/tests/fixtures`, made by its `make_fixtures.py`), errors with their SQLSTATEs,
//! `SET` / `SHOW scoring_device`, and the registry surviving a restart.

mod common;

use common::*;
use std::path::PathBuf;
use tokio_postgres::types::Type;
use tokio_postgres::{Client, NoTls};

/// Relative tolerance against xgboost's predictions (f32 arithmetic on both sides).
const TOLERANCE_RELATIVE: f64 = 1e-6;
/// Features of every fixture model.
const FEATURES: usize = 8;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scoring/tests/fixtures")
}

fn model_path(name: &str) -> String {
    fixtures().join(format!("{name}.model.json")).to_str().unwrap().to_string()
}

/// The fixture rows: `FEATURES` values each, `None` where the CSV says nan (missing).
fn feature_rows() -> Vec<Vec<Option<f32>>> {
    let text = std::fs::read_to_string(fixtures().join("features.csv")).unwrap();
    text.lines()
        .map(|line| line.split(',').map(|v| if v == "nan" { None } else { Some(v.parse::<f32>().unwrap()) }).collect::<Vec<_>>())
        .inspect(|row| assert_eq!(row.len(), FEATURES))
        .collect()
}

fn expected(name: &str) -> Vec<f64> {
    let text = std::fs::read_to_string(fixtures().join(format!("{name}.expected.txt"))).unwrap();
    text.lines().map(|v| v.parse().unwrap()).collect()
}

fn close(got: f64, want: f64) -> bool {
    (got - want).abs() <= TOLERANCE_RELATIVE * want.abs().max(1e-3)
}

async fn connect(pg_addr: &str) -> Client {
    let (host, port) = pg_addr.split_once(':').unwrap();
    let url = format!("host={host} port={port} user=lookback dbname=lookback");
    let (client, connection) = tokio_postgres::connect(&url, NoTls).await.unwrap();
    tokio::spawn(connection);
    client
}

/// The SQLSTATE of a statement that must fail.
async fn sqlstate(client: &Client, sql: &str) -> String {
    match client.simple_query(sql).await {
        Ok(_) => panic!("{sql} succeeded"),
        Err(e) => e.as_db_error().unwrap_or_else(|| panic!("{sql}: {e}")).code().code().to_string(),
    }
}

async fn text(client: &Client, sql: &str) -> String {
    client.query_one(sql, &[]).await.unwrap_or_else(|e| panic!("{sql}: {e:?}")).get(0)
}

async fn count(client: &Client, sql: &str) -> i64 {
    client.query_one(sql, &[]).await.unwrap_or_else(|e| panic!("{sql}: {e:?}")).get(0)
}

/// Table `feats (id bigint, f0 real, ..., f7 real)` holding the fixture rows.
async fn create_features_table(client: &Client) {
    let columns: Vec<String> = (0..FEATURES).map(|i| format!("f{i} real")).collect();
    client.batch_execute(&format!("CREATE TABLE feats (id bigint NOT NULL, {})", columns.join(", "))).await.unwrap();
    let values: Vec<String> = feature_rows()
        .iter()
        .enumerate()
        .map(|(id, row)| {
            let cells: Vec<String> = row.iter().map(|v| v.map_or("NULL".into(), |v| format!("{v:?}"))).collect();
            format!("({id}, {})", cells.join(", "))
        })
        .collect();
    client.batch_execute(&format!("INSERT INTO feats VALUES {}", values.join(", "))).await.unwrap();
}

fn feature_list() -> String {
    (0..FEATURES).map(|i| format!("f{i}")).collect::<Vec<_>>().join(", ")
}

/// Every fixture row's score from the table equals xgboost's prediction.
async fn check_scores(client: &Client, model: &str, fixture: &str) {
    let sql = format!("SELECT id, score('{model}', {}) FROM feats ORDER BY id", feature_list());
    let rows = client.query(&sql, &[]).await.unwrap_or_else(|e| panic!("{sql}: {e:?}"));
    let want = expected(fixture);
    assert_eq!(rows.len(), want.len());
    for (row, want) in rows.iter().zip(want) {
        let (id, got): (i64, f64) = (row.get(0), row.get(1));
        assert!(close(got, want), "{model} row {id}: {got} vs xgboost {want}");
    }
}

#[test]
fn models_load_score_list_drop_and_survive_restart() {
    let site = Site::new();
    let pg_addr = format!("127.0.0.1:{}", free_port());
    let server = site.start(&["--pg-addr", &pg_addr]);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let client = connect(&pg_addr).await;
        create_features_table(&client).await;
        for fixture in ["binary_logistic", "reg_squarederror", "count_poisson"] {
            let loaded = text(&client, &format!("SELECT load_model('{fixture}', '{}')", model_path(fixture))).await;
            assert!(loaded.starts_with(&format!("loaded {fixture}: xgboost_json ")), "{loaded}");
            check_scores(&client, fixture, fixture).await;
        }
        // The JSON text itself, as a bind parameter (and so no quoting).
        let json = std::fs::read_to_string(model_path("reg_logistic")).unwrap();
        let rows = client.query_typed("SELECT load_model($1, $2)", &[(&"fraud_v1", Type::TEXT), (&json, Type::TEXT)]).await.unwrap();
        let row = &rows[0];
        assert!(row.get::<_, String>(0).contains("reg:logistic"));
        check_scores(&client, "fraud_v1", "reg_logistic").await;
        // A deep model (depth 14: walked as written, not in the perfect layout).
        text(&client, &format!("SELECT load_model('deep', '{}')", model_path("deep_squarederror"))).await;
        check_scores(&client, "deep", "deep_squarederror").await;

        // Listing.
        let rows = client.query("SELECT name, format, objective, trees, features, depth, device FROM lookback_models ORDER BY name", &[]).await.unwrap();
        let names: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
        assert_eq!(names, ["binary_logistic", "count_poisson", "deep", "fraud_v1", "reg_squarederror"]);
        let first = &rows[0];
        assert_eq!(first.get::<_, String>(1), "xgboost_json");
        assert_eq!(first.get::<_, String>(2), "binary:logistic");
        assert!(first.get::<_, i64>(3) > 0);
        assert_eq!(first.get::<_, i64>(4), FEATURES as i64);
        assert!(["cpu", "cuda"].contains(&first.get::<_, String>(6).as_str()));

        check_where_and_expressions(&client).await;
        check_attribute_join(&client).await;
        check_errors(&client).await;
        check_scoring_device(&client).await;
        assert_eq!(text(&client, "SELECT CAST(drop_model('count_poisson') AS text)").await, "true");
    });
    server.terminate();

    // After a restart: the registry as it was left, scores unchanged.
    let server = site.start(&["--pg-addr", &pg_addr]);
    runtime.block_on(async {
        let client = connect(&pg_addr).await;
        let rows = client.query("SELECT name FROM lookback_models ORDER BY name", &[]).await.unwrap();
        let names: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
        assert_eq!(names, ["binary_logistic", "deep", "fraud_v1", "reg_squarederror"]);
        check_scores(&client, "fraud_v1", "reg_logistic").await;
        check_scores(&client, "binary_logistic", "binary_logistic").await;
        assert_eq!(sqlstate(&client, &format!("SELECT score('count_poisson', {}) FROM feats", feature_list())).await, "42704");
    });
    server.terminate();
    // Nothing half-written is left in the models directory.
    let left: Vec<_> = std::fs::read_dir(site.data_dir.join("models")).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    assert!(left.iter().all(|n| n.ends_with(".xgb.json")), "{left:?}");
}

/// `score` in WHERE, over expressions and literals, with NULL features as missing.
async fn check_where_and_expressions(client: &Client) {
    let want = expected("binary_logistic");
    let above = want.iter().filter(|&&p| p > 0.5).count() as i64;
    let sql = format!("SELECT count(*) FROM feats WHERE score('binary_logistic', {}) > 0.5", feature_list());
    assert_eq!(count(client, &sql).await, above);
    // Integer and double expressions are cast to float; a literal NULL is a missing value.
    let row0 = &feature_rows()[0];
    let args: Vec<String> = row0.iter().map(|v| v.map_or("NULL".into(), |v| format!("CAST({v:?} AS double precision)"))).collect();
    let sql = format!("SELECT score('binary_logistic', {})", args.join(", "));
    let got: f64 = client.query_one(&sql, &[]).await.unwrap().get(0);
    assert!(close(got, want[0]), "{got} vs {}", want[0]);
    // Every feature missing follows the default directions: the same as NULL columns.
    let nulls = vec!["NULL"; FEATURES].join(", ");
    let literal: f64 = client.query_one(&format!("SELECT score('binary_logistic', {nulls})"), &[]).await.unwrap().get(0);
    let casts: Vec<String> = (0..FEATURES).map(|_| "CAST(NULL AS real)".to_string()).collect();
    let from_table: f64 = client
        .query_one(&format!("SELECT score('binary_logistic', {}) FROM feats WHERE id = 0", casts.join(", ")), &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(literal, from_table);
    // Booleans count as 0 / 1.
    let sql = "SELECT score('binary_logistic', true, false, 1, 0, 1.5, 2, 3, 4) = score('binary_logistic', 1, 0, 1, 0, 1.5, 2, 3, 4)";
    assert!(client.query_one(sql, &[]).await.unwrap().get::<_, bool>(0));
}

/// `score` over `attribute(...)` output: click-to-install seconds as a feature.
async fn check_attribute_join(client: &Client) {
    client
        .batch_execute(
            "INSERT INTO events (event_id, app_id, ts, event_type, device_id, channel, campaign) VALUES
              ('b0000000-0000-4000-8000-000000000001', 'score.app', '2026-10-01T10:00:00Z', 'click', 'sd1', 'meta', 'm1'),
              ('b0000000-0000-4000-8000-000000000002', 'score.app', '2026-10-01T10:00:30Z', 'install', 'sd1', NULL, NULL),
              ('b0000000-0000-4000-8000-000000000003', 'score.app', '2026-10-01T11:00:00Z', 'click', 'sd2', 'google', 'g1'),
              ('b0000000-0000-4000-8000-000000000004', 'score.app', '2026-10-02T11:00:00Z', 'install', 'sd2', NULL, NULL)",
        )
        .await
        .unwrap();
    let sql = "SELECT device_id, CAST(extract(epoch FROM conversion_time) - extract(epoch FROM touch_time) AS double precision), \
               score('binary_logistic', (extract(epoch FROM conversion_time) - extract(epoch FROM touch_time)) / 3600.0, credit, NULL, NULL, NULL, NULL, NULL, NULL) \
               FROM attribute(app => 'score.app') ORDER BY device_id";
    let rows = client.query(sql, &[]).await.unwrap_or_else(|e| panic!("{sql}: {e:?}"));
    assert_eq!(rows.len(), 2);
    for row in &rows {
        let seconds: f64 = row.get(1);
        let alone = format!("SELECT score('binary_logistic', {:?}, 1, NULL, NULL, NULL, NULL, NULL, NULL)", seconds / 3600.0);
        let want: f64 = client.query_one(&alone, &[]).await.unwrap().get(0);
        assert_eq!(row.get::<_, f64>(2), want, "device {}", row.get::<_, String>(0));
    }
    // In WHERE over the same output.
    let sql = "SELECT count(*) FROM attribute(app => 'score.app') \
               WHERE score('binary_logistic', (extract(epoch FROM conversion_time) - extract(epoch FROM touch_time)) / 3600.0, credit, NULL, NULL, NULL, NULL, NULL, NULL) >= 0";
    assert_eq!(count(client, sql).await, 2);
}

async fn check_errors(client: &Client) {
    let features = feature_list();
    let bad_json = fixtures().join("features.csv");
    let cases = [
        (format!("SELECT score('no_such_model', {features}) FROM feats"), "42704"),
        ("SELECT score('binary_logistic', f0, f1) FROM feats".to_string(), "22023"),
        (format!("SELECT score('binary_logistic', {features}, f0) FROM feats"), "22023"),
        ("SELECT score('binary_logistic', 'a', 1, 1, 1, 1, 1, 1, 1)".to_string(), "22023"),
        ("SELECT score(1, 2)".to_string(), "22023"),
        ("SELECT drop_model('no_such_model')".to_string(), "42704"),
        ("SELECT load_model('Bad-Name', '{}')".to_string(), "42602"),
        ("SELECT load_model('m', '{\"learner\": 1}')".to_string(), "22023"),
        ("SELECT load_model('m', '{\"learner\": ')".to_string(), "22023"),
        ("SELECT load_model('m', '/no/such/model.json')".to_string(), "58P01"),
        (format!("SELECT load_model('m', '{}')", bad_json.display()), "22023"),
        ("SELECT load_model('m', NULL)".to_string(), "22023"),
    ];
    for (sql, code) in cases {
        assert_eq!(sqlstate(client, &sql).await, code, "{sql}");
    }
    // A model truncated anywhere is refused whole; the name stays unregistered.
    let json = std::fs::read_to_string(model_path("reg_squarederror")).unwrap();
    for cut in [1, json.len() / 3, json.len() - 2] {
        let err = client.query_typed("SELECT load_model('cut', $1)", &[(&&json[..cut], Type::TEXT)]).await.unwrap_err();
        assert_eq!(err.as_db_error().unwrap().code().code(), "22023");
    }
    assert_eq!(count(client, "SELECT count(*) FROM lookback_models WHERE name = 'cut'").await, 0);
    // The server still answers.
    assert_eq!(count(client, "SELECT count(*) FROM feats").await, feature_rows().len() as i64);
}

async fn check_scoring_device(client: &Client) {
    assert_eq!(text(client, "SHOW scoring_device").await, "auto");
    client.batch_execute("SET scoring_device = 'cpu'").await.unwrap();
    assert_eq!(text(client, "SHOW scoring_device").await, "cpu");
    check_scores(client, "binary_logistic", "binary_logistic").await;
    assert_eq!(sqlstate(client, "SET scoring_device = 'tpu'").await, "22023");
    if lookback_scoring::cuda::available() {
        client.batch_execute("SET scoring_device = 'cuda'").await.unwrap();
        check_scores(client, "binary_logistic", "binary_logistic").await;
    } else {
        eprintln!("no usable CUDA GPU here: SET scoring_device = 'cuda' is checked to be refused");
        assert_eq!(sqlstate(client, "SET scoring_device = 'cuda'").await, "55000");
        assert_eq!(text(client, "SHOW scoring_device").await, "cpu");
    }
    client.batch_execute("SET scoring_device = auto").await.unwrap();
    assert_eq!(text(client, "SHOW scoring_device").await, "auto");
}
