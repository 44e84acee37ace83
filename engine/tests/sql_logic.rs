//! sqllogictest files (`tests/slt/*.slt`) for Lookback's SQL surface, run over the Postgres
//! protocol against the real server with tokio-postgres (simple query protocol: every value
//! arrives as text, NULL as `NULL`, the empty string as `(empty)`). Errors are matched by
//! SQLSTATE (`statement error (42P01)`) or by message.

mod common;

use common::*;
use sqllogictest::{AsyncDB, DBOutput, DefaultColumnType, Runner};
use std::path::Path;
use tokio_postgres::{NoTls, SimpleQueryMessage};

struct Pg {
    client: tokio_postgres::Client,
}

#[derive(Debug)]
struct PgError(tokio_postgres::Error);

impl std::fmt::Display for PgError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0.as_db_error() {
            Some(db) => write!(f, "{}: {}", db.code().code(), db.message()),
            None => write!(f, "{}", self.0),
        }
    }
}

impl std::error::Error for PgError {}

#[async_trait::async_trait]
impl AsyncDB for Pg {
    type Error = PgError;
    type ColumnType = DefaultColumnType;

    async fn run(&mut self, sql: &str) -> Result<DBOutput<DefaultColumnType>, PgError> {
        let messages = self.client.simple_query(sql).await.map_err(PgError)?;
        let mut rows = Vec::new();
        let mut columns = None;
        let mut count = 0;
        for m in messages {
            match m {
                SimpleQueryMessage::RowDescription(d) => columns = Some(d.len()),
                SimpleQueryMessage::Row(row) => {
                    columns = Some(row.len());
                    rows.push(
                        (0..row.len())
                            .map(|i| match row.get(i) {
                                None => "NULL".to_string(),
                                Some("") => "(empty)".to_string(),
                                Some(v) => v.to_string(),
                            })
                            .collect(),
                    );
                }
                SimpleQueryMessage::CommandComplete(n) => count = n,
                _ => {}
            }
        }
        Ok(match columns {
            Some(n) => DBOutput::Rows { types: vec![DefaultColumnType::Any; n], rows },
            None => DBOutput::StatementComplete(count),
        })
    }

    async fn shutdown(&mut self) {}

    fn engine_name(&self) -> &str {
        "lookback"
    }

    fn error_sql_state(err: &PgError) -> Option<String> {
        err.0.as_db_error().map(|e| e.code().code().to_string())
    }
}

#[test]
fn sql_logic_files_pass() {
    let site = Site::new();
    let port = free_port();
    let pg_addr = format!("127.0.0.1:{port}");
    let server = site.start(&["--pg-addr", &pg_addr]);
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/slt");
    let mut files: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).filter(|p| p.extension().is_some_and(|e| e == "slt")).collect();
    files.sort();
    assert!(!files.is_empty(), "no .slt files in {}", dir.display());
    for file in files {
        let url = format!("host=127.0.0.1 port={port} user=lookback dbname=lookback");
        let mut runner = Runner::new(|| {
            let url = url.clone();
            async move {
                let (client, connection) = tokio_postgres::connect(&url, NoTls).await.map_err(PgError)?;
                tokio::spawn(connection);
                Ok(Pg { client })
            }
        });
        if let Err(e) = runtime.block_on(runner.run_file_async(&file)) {
            panic!("{}: {e}", file.display());
        }
    }
    server.terminate();
}
