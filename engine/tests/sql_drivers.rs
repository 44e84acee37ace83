//! Real Postgres drivers against the real server: psycopg 3 (Python), node-postgres (Node),
//! the PostgreSQL JDBC driver (Java), and pgbench with a read-only custom script. Each client
//! program lives in `tests/clients/` and exits non-zero on the first wrong value; `.ci/run`
//! installs what they need (psycopg from PyPI, `npm ci` for pg, Debian's
//! libpostgresql-jdbc-java, postgresql-client for pgbench).

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;

fn clients_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients")
}

/// Runs a client program and fails the test with its output unless it succeeds.
fn run_client(what: &str, command: &mut Command) {
    let output = command.output().unwrap_or_else(|e| panic!("{what}: could not run {command:?}: {e} (.ci/run installs it)"));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{what} failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains(": ok"), "{what} did not finish:\n{stdout}\n{stderr}");
}

fn jdbc_jar() -> PathBuf {
    let jar = PathBuf::from("/usr/share/java/postgresql.jar");
    assert!(jar.exists(), "{} is missing: apt-get install libpostgresql-jdbc-java (.ci/run does)", jar.display());
    jar
}

#[test]
fn drivers_connect_write_copy_and_read_every_type() {
    let site = Site::new();
    let port = free_port();
    let pg_addr = format!("127.0.0.1:{port}");
    let server = site.start(&["--pg-addr", &pg_addr]);
    let port = port.to_string();
    let dir = clients_dir();

    run_client("psycopg", Command::new("python3").arg(dir.join("psycopg_client.py")).arg(&port));
    let node = dir.join("node");
    assert!(node.join("node_modules/pg").exists(), "run `npm ci` in {} (.ci/run does)", node.display());
    run_client("node-postgres", Command::new("node").arg(node.join("pg_client.js")).arg(&port));
    run_client("jdbc", Command::new("java").arg("-cp").arg(jdbc_jar()).arg(dir.join("JdbcClient.java")).arg(&port));
    server.terminate();
}

#[test]
fn pgbench_runs_a_read_only_script_without_errors() {
    let site = Site::new();
    let port = free_port();
    let pg_addr = format!("127.0.0.1:{port}");
    let server = site.start(&["--demo", "--pg-addr", &pg_addr]);
    let script = site.dir.path().join("dashboard.sql");
    std::fs::write(
        &script,
        "\\set app random(0, 2)\n\
         SELECT count(*) FROM events WHERE app_id = 'com.demo.' || CASE :app WHEN 0 THEN 'puzzle' WHEN 1 THEN 'runner' ELSE 'shop' END AND event_type = 'install';\n\
         SELECT channel, count(*) FROM events WHERE ts >= now() - interval '7 days' GROUP BY channel;\n",
    )
    .unwrap();
    let output = Command::new("pgbench")
        .args(["-n", "-h", "127.0.0.1", "-p", &port.to_string(), "-U", "lookback", "-c", "2", "-t", "25", "-f"])
        .arg(&script)
        .arg("lookback")
        .output()
        .expect("run pgbench (postgresql-client)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "pgbench failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("number of transactions actually processed: 50/50"), "{stdout}");
    assert!(stdout.contains("number of failed transactions: 0"), "{stdout}");
    server.terminate();
}
