//! SQL over the Postgres wire protocol, as psql meets it: the demo data, events acknowledged
//! by the ingest protocol visible to the next query, projections and filters, catalog queries.

mod common;

use common::*;
use lookback_wire::ingest::client::{Producer, ProducerOptions};
use rand::rngs::SmallRng;
use rand::SeedableRng;

fn query(pg_addr: &str, sql: &str) -> String {
    let (ok, out, err) = psql(pg_addr, &["-c", sql]);
    assert!(ok, "psql -c {sql:?} failed: {err}");
    out.trim().to_string()
}

#[test]
fn psql_reads_demo_and_ingested_events() {
    let site = Site::new();
    let pg_addr = format!("127.0.0.1:{}", free_port());
    let server = site.start(&["--demo", "--pg-addr", &pg_addr]);
    let (_, body) = http(&site.http_addr, "GET", "/admin/storage");
    let storage: serde_json::Value = serde_json::from_str(&body).unwrap();
    let stored_rows = storage["rows"].as_u64().expect("rows");
    // The demo: about a million events over the last 30 days, and campaign_costs.
    let demo_rows: u64 = query(&pg_addr, "SELECT count(*) FROM events").parse().unwrap();
    let costs: u64 = query(&pg_addr, "SELECT count(*) FROM campaign_costs").parse().unwrap();
    assert_eq!(demo_rows + costs, stored_rows);
    assert!((900_000..1_100_000).contains(&demo_rows), "{demo_rows} demo events");
    assert_eq!(costs, 30 * 4);
    let recent = "SELECT count(*) FROM events WHERE ts >= now() - interval '30 days'";
    assert_eq!(query(&pg_addr, recent), demo_rows.to_string());

    // Acknowledged events are visible to the next query (memtable, no flush).
    let mut rng = SmallRng::seed_from_u64(7);
    let rows: Vec<_> = (0..500).map(|_| random_event(&mut rng, 1)).collect();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let mut p = Producer::connect(&site.ingest_addr, ProducerOptions::new(1)).await.unwrap();
        p.send("events", &build(&rows)).await.unwrap();
        p.flush().await.unwrap();
    });
    assert_eq!(query(&pg_addr, "SELECT count(*) FROM events"), (demo_rows + 500).to_string());
    let purchases = rows.iter().filter(|r| r[3] == lookback_common::Value::Text("purchase".into())).count();
    let sql = "SELECT count(*), count(revenue) FROM events WHERE app_id = 'app1' AND event_type = 'purchase'";
    assert_eq!(query(&pg_addr, sql), format!("{purchases}|{purchases}"));

    // After a flush the same rows come from segments.
    let (status, _) = http(&site.http_addr, "POST", "/admin/flush");
    assert_eq!(status, 200);
    assert_eq!(query(&pg_addr, sql), format!("{purchases}|{purchases}"));
    let sql = "SELECT device_id, platform FROM events WHERE app_id = 'app1' ORDER BY ts LIMIT 1";
    let out = query(&pg_addr, sql);
    assert!(out.starts_with("device-") && out.ends_with("|android"), "{out}");

    // Errors carry PostgreSQL's SQLSTATEs, and the server survives them.
    let cases = [
        ("SELECT * FROM no_such_table", "42P01: relation \"no_such_table\" does not exist"),
        ("SELEC 1", "42601"),
        ("SELECT nocol FROM events", "42703: column \"nocol\" does not exist"),
        ("SELECT 'abc'::int", "22P02"),
        ("DELETE FROM events", "0A000"),
    ];
    for (sql, expected) in cases {
        let (ok, _, err) = psql(&pg_addr, &["-v", "VERBOSITY=verbose", "-c", sql]);
        assert!(!ok && err.contains(expected), "{sql}: expected {expected}, got {err}");
    }
    let (_, _, err) = psql(&pg_addr, &["-c", "DELETE FROM events"]);
    assert!(err.contains("append-only"), "DELETE hint: {err}");

    // Every column reads back, uuids as canonical text.
    let out = query(&pg_addr, "SELECT * FROM events WHERE app_id = 'app1' LIMIT 1");
    let fields: Vec<&str> = out.split('|').collect();
    assert_eq!(fields.len(), 14, "{out}");
    assert!(fields[0].len() == 36 && fields[0].matches('-').count() == 4, "event_id: {out}");
    assert_eq!(query(&pg_addr, "SELECT count(*) FROM events"), (demo_rows + 500).to_string());

    // INSERT goes through the WAL like ingested events, and is visible at once.
    let insert = "INSERT INTO events (event_id, app_id, ts, event_type) VALUES ('a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', 'app-sql', '2026-11-21T10:00:00Z', 'install')";
    let (ok, _, err) = psql(&pg_addr, &["-c", insert]);
    assert!(ok, "INSERT: {err}");
    assert_eq!(query(&pg_addr, "SELECT event_id FROM events WHERE app_id = 'app-sql'"), "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11");

    let bad_uuid = "INSERT INTO events (event_id, app_id, ts, event_type) VALUES ('nope', 'a', '2026-11-21T10:00:00Z', 'x')";
    let (ok, _, err) = psql(&pg_addr, &["-v", "VERBOSITY=verbose", "-c", bad_uuid]);
    assert!(!ok && err.contains("22P02") && err.contains("invalid input syntax for type uuid"), "{err}");
    let no_app = "INSERT INTO events (event_id, ts, event_type) VALUES ('a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a19', '2026-11-21T10:00:00Z', 'x')";
    let (ok, _, err) = psql(&pg_addr, &["-v", "VERBOSITY=verbose", "-c", no_app]);
    assert!(!ok && err.contains("23502"), "{err}");

    // Catalog queries psql's \dt runs.
    let (ok, out, err) = psql(&pg_addr, &["-c", "\\dt"]);
    assert!(ok && out.contains("events"), "\\dt: {out} {err}");
    server.terminate();
}

/// CREATE TABLE, INSERT, COPY in and out (psql's `\copy`), DROP TABLE; tables and their rows
/// survive a restart.
#[test]
fn psql_creates_copies_and_drops_tables() {
    let site = Site::new();
    let pg_addr = format!("127.0.0.1:{}", free_port());
    let server = site.start(&["--pg-addr", &pg_addr]);
    let create = "CREATE TABLE campaign_costs (campaign text NOT NULL, day timestamptz, cost double precision, clicks bigint, active boolean, id uuid)";
    query(&pg_addr, create);
    let (ok, _, err) = psql(&pg_addr, &["-v", "VERBOSITY=verbose", "-c", create]);
    assert!(!ok && err.contains("42P07"), "second CREATE: {err}");
    query(&pg_addr, "CREATE TABLE IF NOT EXISTS campaign_costs (x int)");

    let csv = site.dir.path().join("costs.csv");
    std::fs::write(
        &csv,
        "campaign,day,cost,clicks,active,id\n\
         summer,2026-06-01T00:00:00Z,12.5,100,true,a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11\n\
         \"winter, \"\"big\"\"\",2026-12-01 00:00:00+01,,7,f,\n\
         \"multi\nline\",2026-01-01 00:00:00+00,1e3,0,t,A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A12\n",
    )
    .unwrap();
    let copy_in = format!("\\copy campaign_costs from '{}' with (format csv, header true)", csv.display());
    let (ok, out, err) = psql(&pg_addr, &["-c", &copy_in]);
    assert!(ok && out.contains("COPY 3"), "\\copy in: {out} {err}");
    query(&pg_addr, "INSERT INTO campaign_costs (campaign, cost) VALUES ('inserted', 2.25)");
    let sql = "SELECT campaign, cost, clicks, active, id FROM campaign_costs ORDER BY campaign";
    let expected = "inserted|2.25|||\n\
                    multi\nline|1000.0|0|t|a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a12\n\
                    summer|12.5|100|t|a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11\n\
                    winter, \"big\"||7|f|";
    assert_eq!(query(&pg_addr, sql), expected);
    assert_eq!(query(&pg_addr, "SELECT day FROM campaign_costs WHERE campaign LIKE 'winter%'"), "2026-11-30 23:00:00.000000+00");

    // Text format from stdin, with NULLs and escapes.
    let text = "text\t2026-02-01 00:00:00+00\t\\N\t5\tt\t\\N\nback\\\\slash\t\\N\t1.5\t\\N\tf\t\\N\n";
    let (ok, out, err) = psql_stdin(&pg_addr, &["-c", "COPY campaign_costs FROM STDIN"], text);
    assert!(ok && out.contains("COPY 2"), "COPY FROM STDIN: {out} {err}");
    assert_eq!(query(&pg_addr, "SELECT count(*), count(cost), count(clicks) FROM campaign_costs"), "6|4|4");
    assert_eq!(query(&pg_addr, "SELECT campaign FROM campaign_costs WHERE campaign LIKE 'back%'"), "back\\slash");

    // Bad input: a clear error with the line, and nothing of that COPY applied.
    let cases = [
        ("a,2026-01-01T00:00:00Z,x,1,t,\n", "22P02", "invalid input syntax for type double precision: \"x\""),
        ("a,2026-01-01T00:00:00Z,1\n", "22P04", "missing data for column \"clicks\""),
        (",2026-01-01T00:00:00Z,1,1,t,\n", "23502", "null value in column \"campaign\""),
        ("a,2026-01-01T00:00:00Z,1,1,t,,extra\n", "22P04", "extra data after last expected column"),
        ("a,2026-01-01T00:00:00Z,1,1,t,not-a-uuid\n", "22P02", "uuid"),
    ];
    for (data, code, message) in cases {
        let (ok, _, err) = psql_stdin(&pg_addr, &["-v", "VERBOSITY=verbose", "-c", "COPY campaign_costs FROM STDIN (FORMAT csv)"], data);
        assert!(!ok && err.contains(code) && err.contains(message), "{data:?}: expected {code} {message}, got {err}");
    }
    assert_eq!(query(&pg_addr, "SELECT count(*) FROM campaign_costs"), "6");

    // COPY out, as CSV with a header, and read back into a second table.
    let out_csv = site.dir.path().join("out.csv");
    let copy_out = format!("\\copy (SELECT * FROM campaign_costs ORDER BY campaign) to '{}' with (format csv, header)", out_csv.display());
    let (ok, out, err) = psql(&pg_addr, &["-c", &copy_out]);
    assert!(ok && out.contains("COPY 6"), "\\copy out: {out} {err}");
    let written = std::fs::read_to_string(&out_csv).unwrap();
    assert!(written.starts_with("campaign,day,cost,clicks,active,id\n"), "{written}");
    assert!(written.contains("\"winter, \"\"big\"\"\",2026-11-30 23:00:00+00,,7,f,\n"), "{written}");
    query(&pg_addr, "CREATE TABLE costs_copy AS SELECT * FROM campaign_costs WHERE false");
    let copy_back = format!("\\copy costs_copy from '{}' csv header", out_csv.display());
    let (ok, out, err) = psql(&pg_addr, &["-c", &copy_back]);
    assert!(ok && out.contains("COPY 6"), "\\copy back: {out} {err}");
    let all = "SELECT * FROM campaign_costs ORDER BY campaign";
    assert_eq!(query(&pg_addr, &all.replace("campaign_costs", "costs_copy")), query(&pg_addr, all));
    let (ok, out, _) = psql(&pg_addr, &["-c", "COPY (SELECT campaign, active FROM campaign_costs WHERE campaign = 'summer') TO STDOUT"]);
    assert!(ok && out == "summer\tt\n", "{out:?}");

    // DDL errors.
    let cases = [
        ("CREATE TABLE t (a numeric)", "0A000"),
        ("CREATE TABLE t (a frobnitz)", "42704"),
        ("CREATE TABLE t (a int PRIMARY KEY)", "0A000"),
        ("CREATE TABLE other.t (a int)", "3F000"),
        ("DROP TABLE nope", "42P01"),
        ("DROP TABLE events", "0A000"),
    ];
    for (sql, code) in cases {
        let (ok, _, err) = psql(&pg_addr, &["-v", "VERBOSITY=verbose", "-c", sql]);
        assert!(!ok && err.contains(code), "{sql}: expected {code}, got {err}");
    }
    query(&pg_addr, "DROP TABLE IF EXISTS nope");
    query(&pg_addr, "DROP TABLE costs_copy");
    let (ok, _, err) = psql(&pg_addr, &["-c", "SELECT * FROM costs_copy"]);
    assert!(!ok && err.contains("does not exist"), "{err}");

    // A restart keeps the table (its rows from the WAL) and the drop.
    server.terminate();
    let server = site.start(&["--pg-addr", &pg_addr]);
    assert_eq!(query(&pg_addr, "SELECT count(*) FROM campaign_costs"), "6");
    let (ok, out, err) = psql(&pg_addr, &["-c", "\\d campaign_costs"]);
    assert!(ok && out.contains("campaign") && out.contains("double"), "\\d: {out} {err}");
    let (ok, out, _) = psql(&pg_addr, &["-c", "\\dt"]);
    assert!(ok && out.contains("campaign_costs") && !out.contains("costs_copy"), "{out}");
    server.terminate();
}

/// What the server did with a hostile connection: sent an ErrorResponse, closed it, or (for
/// input the protocol library reads as something valid) stayed in step: a query sent after the
/// bad bytes is answered.
fn refused(mut socket: std::net::TcpStream, bytes: &[u8]) -> Result<&'static str, String> {
    use std::io::{Read, Write};
    socket.set_read_timeout(Some(std::time::Duration::from_secs(10))).unwrap();
    let _ = socket.write_all(bytes);
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    let mut probed = false;
    loop {
        // Backend messages so far: type byte, then a length that counts itself.
        let mut types = Vec::new();
        let mut at = 0;
        while seen.len() >= at + 5 {
            let len = u32::from_be_bytes([seen[at + 1], seen[at + 2], seen[at + 3], seen[at + 4]]) as usize;
            if seen.len() < at + 1 + len {
                break;
            }
            types.push(seen[at]);
            at += 1 + len;
        }
        if types.contains(&b'E') {
            return Ok("error");
        }
        if probed && types.iter().filter(|&&t| t == b'D').count() > 0 {
            return Ok("stayed in step");
        }
        match socket.read(&mut buf) {
            Ok(0) => return Ok("closed"),
            Ok(n) => seen.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return Ok("reset"),
            Err(_) if !probed && types.contains(&b'Z') => {
                probed = true;
                let _ = socket.write_all(b"Q\0\0\0\x0dSELECT 1\0");
            }
            Err(e) => return Err(format!("neither an error nor a close after 10 s: {e}; got {seen:?}")),
        }
    }
}

/// A startup message: protocol 3.0, user and database `lookback`.
fn startup() -> Vec<u8> {
    startup_version(0x0003_0000)
}

fn startup_version(version: u32) -> Vec<u8> {
    let mut body = version.to_be_bytes().to_vec();
    for (k, v) in [("user", "lookback"), ("database", "lookback")] {
        body.extend_from_slice(k.as_bytes());
        body.push(0);
        body.extend_from_slice(v.as_bytes());
        body.push(0);
    }
    body.push(0);
    let mut out = ((body.len() + 4) as u32).to_be_bytes().to_vec();
    out.extend_from_slice(&body);
    out
}

/// Malformed protocol input (random bytes before and after startup, bad lengths, unknown
/// message types) gets an error or a closed connection, never a crash or a stuck server.
#[test]
fn malformed_protocol_messages_are_refused_and_the_server_keeps_serving() {
    use rand::Rng;
    let site = Site::new();
    let pg_addr = format!("127.0.0.1:{}", free_port());
    let server = site.start(&["--pg-addr", &pg_addr]);
    let connect = || std::net::TcpStream::connect(&pg_addr).expect("connect");
    let mut rng = SmallRng::seed_from_u64(11);
    let after_startup = |tail: &[u8]| [startup(), tail.to_vec()].concat();
    let mut cases: Vec<(String, Vec<u8>)> = vec![
        ("startup length 2^31-1".into(), 0x7fff_ffffu32.to_be_bytes().to_vec()),
        ("startup length 3".into(), [0, 0, 0, 3, 0, 0, 0, 0].to_vec()),
        ("unknown protocol version".into(), [0, 0, 0, 8, 0, 9, 0, 0].to_vec()),
        ("unknown message type".into(), after_startup(&[b'!', 0, 0, 0, 4])),
        ("query with length 2^31-1".into(), after_startup(&[b'Q', 0x7f, 0xff, 0xff, 0xff, b'x'])),
        ("query with length 2".into(), after_startup(&[b'Q', 0, 0, 0, 2])),
        ("query without its terminator".into(), after_startup(&[b'Q', 0, 0, 0, 6, b'a', b'b', b'X', 0, 0, 0, 4])),
        ("bind to no statement".into(), after_startup(&[b'B', 0, 0, 0, 12, b'p', 0, b'n', b'o', 0, 0, 0, 0, b'S', 0, 0, 0, 4])),
    ];
    for i in 0..12 {
        let noise: Vec<u8> = (0..rng.gen_range(1..300)).map(|_| rng.gen()).collect();
        cases.push((format!("random bytes {i} before startup"), noise.clone()));
        cases.push((format!("random bytes {i} after startup"), after_startup(&noise)));
    }
    for (what, bytes) in &cases {
        match refused(connect(), bytes) {
            Ok(_) => {}
            Err(e) => panic!("{what}: {e}"),
        }
        assert_eq!(query(&pg_addr, "SELECT 41 + 1"), "42", "the server still serves after {what}");
    }
    // Newer protocol versions: 3.2 is spoken, a later 3.x is negotiated down
    // (NegotiateProtocolVersion, 'v') instead of refused.
    for (version, negotiated) in [(0x0003_0002u32, false), (0x0003_0009, true)] {
        use std::io::{Read, Write};
        let mut s = connect();
        s.set_read_timeout(Some(std::time::Duration::from_secs(10))).unwrap();
        s.write_all(&startup_version(version)).unwrap();
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        while !seen.windows(6).any(|w| w == b"Z\0\0\0\x05I") {
            let n = s.read(&mut buf).expect("startup answer");
            assert!(n > 0, "closed during startup of version {version:#x}");
            seen.extend_from_slice(&buf[..n]);
        }
        assert_eq!(seen[0] == b'v', negotiated, "version {version:#x}: {seen:?}");
    }

    // A client that vanishes mid-query does not disturb the others.
    for _ in 0..5 {
        use std::io::Write;
        let mut s = connect();
        let _ = s.write_all(&after_startup(b"Q\0\0\0\x1dSELECT count(*) FROM events\0"));
        drop(s);
    }
    assert_eq!(query(&pg_addr, "SELECT count(*) FROM events"), "0");
    server.terminate();
}

/// A segment block damaged on disk is reported as XX001 (data_corrupted) naming the file, the
/// query fails cleanly, and the server keeps serving.
#[test]
fn corrupt_segment_reads_answer_xx001() {
    let site = Site::new();
    let pg_addr = format!("127.0.0.1:{}", free_port());
    let server = site.start(&["--pg-addr", &pg_addr]);
    query(&pg_addr, "CREATE TABLE t (name text, n bigint)");
    query(&pg_addr, "INSERT INTO t SELECT 'name-' || (value % 10), value FROM generate_series(1, 5000)");
    let (status, body) = http(&site.http_addr, "POST", "/admin/flush");
    assert_eq!(status, 200, "{body}");
    server.terminate();

    // The first byte after each segment's 16-byte header: a dictionary or the first column
    // block, both covered by a crc32 that the scan checks before decoding.
    let mut damaged = 0;
    for entry in std::fs::read_dir(site.data_dir.join("segments")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "seg") {
            let mut bytes = std::fs::read(&path).unwrap();
            bytes[16] ^= 0x5a;
            std::fs::write(&path, bytes).unwrap();
            damaged += 1;
        }
    }
    assert!(damaged > 0, "the flush wrote a segment");

    let server = site.start(&["--pg-addr", &pg_addr]);
    let (ok, _, err) = psql(&pg_addr, &["-v", "VERBOSITY=verbose", "-c", "SELECT * FROM t"]);
    assert!(!ok && err.contains("XX001") && err.contains("corrupt") && err.contains(".seg"), "{err}");
    assert_eq!(query(&pg_addr, "SELECT 1"), "1");
    server.terminate();
}

/// `attribute(...)` as the source of a COPY TO STDOUT (text and CSV), over journeys split
/// between a segment (the touches, flushed) and the memtable (the installs): the same rows
/// before and after the installs are flushed too.
#[test]
fn psql_copies_attribution_out() {
    let site = Site::new();
    let pg_addr = format!("127.0.0.1:{}", free_port());
    let server = site.start(&["--pg-addr", &pg_addr]);
    // d1: meta then google clicks, install; d2: a google click, install; d3: install only.
    query(
        &pg_addr,
        "INSERT INTO events (event_id, app_id, ts, event_type, device_id, channel, campaign) VALUES
          ('b0000000-0000-4000-8000-000000000001', 'copy.app', '2026-10-01T10:00:00Z', 'click', 'd1', 'meta', 'm1'),
          ('b0000000-0000-4000-8000-000000000002', 'copy.app', '2026-10-02T10:00:00Z', 'click', 'd1', 'google', 'g1'),
          ('b0000000-0000-4000-8000-000000000004', 'copy.app', '2026-10-03T10:00:00Z', 'click', 'd2', 'google', 'g2')",
    );
    let (status, body) = http(&site.http_addr, "POST", "/admin/flush");
    assert_eq!(status, 200, "{body}");
    query(
        &pg_addr,
        "INSERT INTO events (event_id, app_id, ts, event_type, device_id) VALUES
          ('b0000000-0000-4000-8000-000000000003', 'copy.app', '2026-10-03T10:00:00Z', 'install', 'd1'),
          ('b0000000-0000-4000-8000-000000000005', 'copy.app', '2026-10-04T10:00:00Z', 'install', 'd2'),
          ('b0000000-0000-4000-8000-000000000006', 'copy.app', '2026-10-04T10:00:00Z', 'install', 'd3')",
    );
    let text = "COPY (SELECT channel, credit FROM attribute(model => 'linear') ORDER BY 1,2) TO STDOUT";
    let csv = "COPY (SELECT device_id, channel, campaign, touch_time, credit FROM attribute(model => 'linear') \
               ORDER BY conversion_time, touch_time) TO STDOUT WITH (FORMAT csv, HEADER)";
    // Linear: d1's install splits 0.5/0.5 over meta and google, d2's goes to google, d3 is
    // organic (campaign and touch_time NULL).
    let text_expected = "google\t0.5\ngoogle\t1.0\nmeta\t0.5\norganic\t1.0\n";
    let csv_expected = "device_id,channel,campaign,touch_time,credit\n\
                        d1,meta,m1,2026-10-01 10:00:00+00,0.5\n\
                        d1,google,g1,2026-10-02 10:00:00+00,0.5\n\
                        d2,google,g2,2026-10-03 10:00:00+00,1.0\n\
                        d3,organic,,,1.0\n";
    for round in ["touches flushed", "all flushed"] {
        let (ok, out, err) = psql(&pg_addr, &["-c", text]);
        assert!(ok && out == text_expected, "{round}: {out:?} {err}");
        let (ok, out, err) = psql(&pg_addr, &["-c", csv]);
        assert!(ok && out == csv_expected, "{round}: {out:?} {err}");
        let (status, body) = http(&site.http_addr, "POST", "/admin/flush");
        assert_eq!(status, 200, "{body}");
    }
    server.terminate();
}
