//! The seeds of the `sql` and `pgwire` corpora that are built in code rather than taken from
//! a data directory: SQL statements from the SQL tests (engine/tests/slt, query/tests,
//! docs/attribution.md, docs/sql.md) rewritten for the fixture's data ([`crate::fixture`]:
//! apps `fuzz.app` and `fuzz.other`, October 2026, `campaign_costs`), and Postgres message
//! streams of the sessions clients hold. `lookback-fuzz-corpus` writes them to
//! `fuzz/corpus/`; `fuzz/tests/seeds.rs` checks that each statement still gets the answer it
//! is listed with, so the corpus stays deep (a seed the parser refuses tests only the parser).

use crate::pgwire::frontend::{Messages, Target};

/// How a seed statement ends: every statement succeeds, or the last fails with this SQLSTATE.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expect {
    Ok,
    Fails(&'static str),
}

/// The `sql` seeds, with the answer each gets on a fresh fixture.
pub const SQL: [(&str, Expect); 66] = [
    // Scans, filters, aggregates (engine/tests/slt/queries.slt).
    ("SELECT count(*), count(DISTINCT device_id) FROM events WHERE app_id = 'fuzz.app'", Expect::Ok),
    ("SELECT event_type, count(*) FROM events GROUP BY 1 ORDER BY 2 DESC", Expect::Ok),
    ("SELECT date_trunc('day', ts) AS day, count(*) FROM events WHERE app_id = 'fuzz.app' GROUP BY 1 ORDER BY 1", Expect::Ok),
    ("SELECT date_bin(interval '12 hours', ts, TIMESTAMP '2026-10-01T00:00:00Z') AS bucket, count(*) FROM events GROUP BY 1 ORDER BY 1", Expect::Ok),
    ("SELECT extract(day FROM ts), extract(hour FROM ts) FROM events WHERE event_type = 'install' LIMIT 5", Expect::Ok),
    ("SELECT count(*) FROM events WHERE ts >= TIMESTAMP '2026-10-05T00:00:00Z' - interval '1 day' AND ts < now()", Expect::Ok),
    ("SELECT sum(revenue), round(avg(revenue), 2), min(revenue), max(revenue) FROM events WHERE app_id = 'fuzz.app'", Expect::Ok),
    ("SELECT approx_distinct(device_id) FROM events", Expect::Ok),
    ("SELECT median(revenue), approx_percentile_cont(0.5) WITHIN GROUP (ORDER BY revenue) FROM events", Expect::Ok),
    ("SELECT coalesce(channel, 'none'), count(*) FROM events WHERE event_type IN ('click', 'impression') GROUP BY 1", Expect::Ok),
    ("SELECT properties->>'os', count(*) FROM events WHERE properties IS NOT NULL GROUP BY 1", Expect::Ok),
    ("SELECT json_get_int(properties, 'step'), json_get_str(properties, 'os') FROM events WHERE event_type = 'install' LIMIT 3", Expect::Ok),
    ("SELECT count(*) FILTER (WHERE event_type = 'click'), count(*) FILTER (WHERE event_type = 'purchase') FROM events", Expect::Ok),
    ("SELECT device_id, ts, event_type FROM events WHERE device_id = 'd1' ORDER BY ts", Expect::Ok),
    ("SELECT platform, currency, sum(revenue) FROM events WHERE revenue > 10 AND user_agent LIKE 'App/1.%' GROUP BY ROLLUP (platform, currency)", Expect::Ok),
    ("SELECT event_id, ip FROM events WHERE device_id IS NULL ORDER BY event_id LIMIT 10 OFFSET 2", Expect::Ok),
    ("SELECT device_id, row_number() OVER (PARTITION BY device_id ORDER BY ts) AS step FROM events WHERE app_id = 'fuzz.other'", Expect::Ok),
    // Joins with the costs table (the demo's ROAS queries).
    (
        "SELECT campaign, cost, clicks, cost / clicks AS cost_per_click \
         FROM (SELECT campaign, sum(cost) AS cost FROM campaign_costs GROUP BY 1) c \
         JOIN (SELECT campaign, count(*) AS clicks FROM events WHERE event_type = 'click' GROUP BY 1) e USING (campaign) \
         ORDER BY cost_per_click",
        Expect::Ok,
    ),
    (
        "WITH clicks AS (SELECT device_id, campaign FROM events WHERE event_type = 'click'), \
         revenue AS (SELECT device_id, sum(revenue) AS revenue FROM events GROUP BY device_id) \
         SELECT k.campaign, round(r.revenue / c.cost, 3) AS roas \
         FROM clicks k JOIN revenue r USING (device_id) JOIN campaign_costs c ON c.campaign = k.campaign",
        Expect::Ok,
    ),
    ("SELECT c.channel, c.cost, count(e.event_id) FROM campaign_costs c LEFT JOIN events e ON e.campaign = c.campaign GROUP BY c.channel, c.cost", Expect::Ok),
    ("SELECT day, channel FROM campaign_costs WHERE day = (SELECT max(day) FROM campaign_costs) ORDER BY channel", Expect::Ok),
    // attribute(...) and attribute_channels(...) in the forms docs/attribution.md describes.
    ("SELECT device_id, channel, campaign, touch_type, match_type, confidence, credit, revenue FROM attribute(model => 'last_touch', app => 'fuzz.app') ORDER BY conversion_time", Expect::Ok),
    ("SELECT app_id, conversion_id, conversion_time, conversion_type, touch_id, touch_time FROM attribute(model => 'last_touch') WHERE device_id = 'd1'", Expect::Ok),
    ("SELECT channel, count(*), sum(credit) FROM attribute(model => 'first_touch') GROUP BY channel ORDER BY 2 DESC, 1", Expect::Ok),
    ("SELECT channel, campaign FROM attribute('first_touch', 'install', '7 days', INTERVAL '1 day', NULL, NULL, 'fuzz.app') WHERE match_type = 'device'", Expect::Ok),
    ("SELECT channel, campaign FROM attribute('first_touch', app => 'fuzz.app') WHERE match_type = 'device' ORDER BY channel", Expect::Ok),
    ("SELECT count(*) FROM ATTRIBUTE(MODEL => 'linear', App => 'fuzz.app')", Expect::Ok),
    ("SELECT device_id, channel FROM attribute(click_window => INTERVAL '8 days', view_window => '10 hours', app => 'fuzz.app')", Expect::Ok),
    ("SELECT channel, count(*) FROM attribute(click_window => '0 seconds') GROUP BY channel ORDER BY channel", Expect::Ok),
    ("SELECT device_id, channel FROM attribute(app => 'fuzz.app', since => '2026-10-03 00:00:00', until => TIMESTAMP '2026-10-08 00:00:00') ORDER BY conversion_time", Expect::Ok),
    ("SELECT count(*) FROM attribute(since => '2026-10-05T22:00:01+02:00')", Expect::Ok),
    ("SELECT conversion_type, channel, credit, revenue FROM attribute(model => 'linear', conversion => 'install, purchase') ORDER BY conversion_time, touch_time", Expect::Ok),
    ("SELECT channel, credit FROM attribute(model => 'position_based', app => 'fuzz.app') ORDER BY touch_time", Expect::Ok),
    ("SELECT channel, round(credit, 9) FROM attribute(model => 'time_decay', half_life => '23 hours') ORDER BY touch_time", Expect::Ok),
    ("SELECT match_type, count(*), avg(confidence) FROM attribute(probabilistic_window => '1 day', app => 'fuzz.app') GROUP BY 1", Expect::Ok),
    ("SELECT * FROM attribute_channels(model => 'linear', app => 'fuzz.app')", Expect::Ok),
    ("SELECT channel, round(conversions, 6), revenue FROM attribute_channels(model => 'markov', conversion => 'purchase')", Expect::Ok),
    ("SELECT channel, round(conversions, 6) FROM attribute_channels(model => 'markov', markov_order => 2)", Expect::Ok),
    ("SELECT channel, conversions, revenue FROM attribute_channels(model => 'shapley', conversion => 'purchase,install') ORDER BY revenue DESC, channel", Expect::Ok),
    (
        "SELECT c.channel, c.conversions / t.total AS share FROM attribute_channels(model => 'linear') c \
         CROSS JOIN (SELECT sum(conversions) AS total FROM attribute_channels(model => 'linear')) t ORDER BY 1",
        Expect::Ok,
    ),
    (
        "SELECT campaign, cost, revenue, revenue / cost AS roas \
         FROM (SELECT campaign, sum(cost) AS cost FROM campaign_costs GROUP BY 1) c \
         JOIN (SELECT campaign, sum(revenue) AS revenue FROM attribute(model => 'linear', conversion => 'purchase') GROUP BY 1) a USING (campaign) \
         ORDER BY roas DESC",
        Expect::Ok,
    ),
    ("SELECT device_id, window_funnel(INTERVAL '1 day', ts, event_type = 'click', event_type = 'install', event_type = 'purchase') AS level FROM events GROUP BY device_id ORDER BY device_id", Expect::Ok),
    ("SELECT window_funnel(172800, ts, event_type = 'impression', event_type = 'click') FROM events WHERE app_id = 'fuzz.other'", Expect::Ok),
    // What psql, drivers and BI tools send (engine/tests/slt/protocol_statements.slt).
    ("SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' ORDER BY 1", Expect::Ok),
    ("SELECT column_name, data_type FROM information_schema.columns WHERE table_name = 'events' ORDER BY ordinal_position", Expect::Ok),
    ("SELECT relname FROM pg_catalog.pg_class WHERE relname = 'events'", Expect::Ok),
    ("SELECT n.nspname, c.relname FROM pg_catalog.pg_class c LEFT JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind IN ('r', 'v') ORDER BY 1, 2", Expect::Ok),
    ("SELECT t.oid, t.typname FROM pg_catalog.pg_type t WHERE t.typname IN ('int8', 'text', 'timestamptz', 'uuid') ORDER BY 1", Expect::Ok),
    ("SELECT version(), current_database(), current_schema()", Expect::Ok),
    ("SET extra_float_digits = 3; SET application_name = 'fuzz'; SHOW transaction_isolation", Expect::Ok),
    ("BEGIN; SELECT 1; COMMIT", Expect::Ok),
    // Writes (engine/tests/slt/ddl_and_writes.slt) and the statements Lookback answers itself.
    (
        "INSERT INTO events (event_id, app_id, ts, event_type, device_id, channel, campaign, revenue, currency, properties) VALUES \
         ('00000000-0000-4000-8000-000000000001', 'fuzz.app', '2026-10-01T10:00:00Z', 'click', 'd1', 'meta', 'm1', NULL, NULL, NULL), \
         ('00000000-0000-4000-8000-000000000002', 'fuzz.app', '2026-10-01T12:00:00Z', 'purchase', 'd1', NULL, NULL, 9.99, 'USD', '{\"os\": \"ios\"}')",
        Expect::Ok,
    ),
    (
        "CREATE TABLE IF NOT EXISTS fuzz_t (b boolean, i bigint, f double precision, s text NOT NULL, ts timestamptz, u uuid); \
         INSERT INTO fuzz_t (b, i, f, s, ts, u) VALUES (true, 9007199254740993, 2.5, 'héllo', '2026-11-21 11:30:00+01', 'A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11'); \
         INSERT INTO fuzz_t (s, i) SELECT s || '-copy', i * 2 FROM fuzz_t; \
         SELECT s, sum(i) FROM fuzz_t GROUP BY s; DROP TABLE fuzz_t",
        Expect::Ok,
    ),
    ("PREPARE by_day (timestamptz) AS SELECT count(*) FROM events WHERE ts >= $1; EXECUTE by_day('2026-10-05T00:00:00Z'); DEALLOCATE by_day", Expect::Ok),
    ("COPY (SELECT channel, campaign, cost FROM campaign_costs ORDER BY day LIMIT 4) TO STDOUT WITH (FORMAT csv, HEADER)", Expect::Ok),
    ("SHOW scoring_device; SELECT name FROM lookback_models", Expect::Ok),
    (LARGE_FETCH, Expect::Ok),
    // Errors, each with the SQLSTATE the tests expect.
    ("SELEC 1", Expect::Fails("42601")),
    ("SELECT no_such_column FROM events", Expect::Fails("42703")),
    ("SELECT * FROM no_such_table", Expect::Fails("42P01")),
    ("SELECT 'abc'::bigint", Expect::Fails("22P02")),
    ("INSERT INTO campaign_costs (channel) VALUES ('x')", Expect::Fails("23502")),
    ("DELETE FROM events WHERE app_id = 'fuzz.app'", Expect::Fails("0A000")),
    // Inputs that once failed: `SHOW` alone panicked in the SET/SHOW hook; a model read from a
    // device never ended; a window past i64 microseconds overflowed (tests beside the fixes:
    // wire/tests/pg_hostile_clients.rs, query/src/scoring.rs, query/src/attribute_fn/args.rs).
    ("SHOW", Expect::Fails("42601")),
    ("SELECT load_model('m', '/dev/zero')", Expect::Fails("22023")),
    ("SELECT count(*) FROM attribute(click_window => '1000000 years')", Expect::Fails("22023")),
];

/// The `pgwire` seeds: (file name, input). The first byte is the target's mode: b'1' asks
/// for a StartupMessage before the rest, b'0' sends the rest alone.
pub fn pgwire_sessions() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("simple-query", after_startup(simple_query())),
        ("extended-query", after_startup(extended_query())),
        ("error", after_startup(errors())),
        ("copy", after_startup(copy())),
        ("statements", after_startup(statements())),
        (
            "terminate",
            after_startup(Messages::new().terminate().clone()),
        ),
        (
            "ssl-request",
            raw(Messages::new()
                .ssl_request()
                .startup(&user())
                .query("SELECT 1")
                .terminate()
                .clone()),
        ),
        (
            "gssenc-then-ssl",
            raw(Messages::new()
                .gssenc_request()
                .ssl_request()
                .startup(&user())
                .query("SELECT 2")
                .terminate()
                .clone()),
        ),
        (
            "cancel-request",
            raw(Messages::new().cancel_request(1234, 5678).clone()),
        ),
        (
            "startup-raw",
            raw(Messages::new()
                .startup(&user())
                .query("SELECT count(*) FROM events")
                .sync()
                .terminate()
                .clone()),
        ),
        (
            "startup-too-long",
            raw_bytes(&[0, 0, 0x27, 0x11, 0, 3, 0, 0]),
        ),
        // Inputs that once failed (wire/tests/pg_hostile_clients.rs and wire/src/pg tests
        // reproduce each): a Parse whose body ends before its parameter count (a panic in
        // pgwire's decoder), an Execute and a FETCH of billions of rows (the server reserved
        // memory for all of them and aborted), a first packet of 2 bytes then end of stream
        // (its connection slot held for the 10 s startup timeout), a NUL quoted in an error.
        (
            "crash-parse-body-short",
            after_startup(Messages::new().raw(b"P\x00\x00\x00\x06\x00\x00").clone()),
        ),
        ("crash-execute-max-rows", after_startup(execute_max_rows())),
        (
            "crash-fetch-count",
            after_startup(Messages::new().query(LARGE_FETCH).terminate().clone()),
        ),
        ("hang-short-first-packet", raw_bytes(&[0, 0])),
        ("bad-answer-nul-in-error", after_startup(nul_in_copy())),
        // Not fixed here (pgwire 0.41.1 does not hold a message to its declared length): the
        // Query's string ends at its first NUL and the rest of its body is read as a CopyData
        // of 3 MB, which swallows the Terminate. The server must still close once the client
        // ends its side.
        (
            "upstream-query-string-ends-early",
            after_startup(
                Messages::new()
                    .raw(b"Q\x00\x00\x005COPYign_cos\xffs FROM STDIN WITH (FORMAT csv)\x00d\x00.25\nc\x00\x00\x00\x04X\x00\x00\x00\x04")
                    .clone(),
            ),
        ),
    ]
}

/// A cursor fetched with a count in the billions (a regression seed of both targets).
pub const LARGE_FETCH: &str = "DECLARE c CURSOR FOR SELECT * FROM events; FETCH 2000000000 FROM c";

/// A COPY field with NUL bytes, quoted in the 22P02 error: its NUL-terminated message field
/// ended early and the rest of the ErrorResponse read as garbage fields.
fn nul_in_copy() -> Messages {
    let mut m = Messages::new();
    m.query("COPY campaign_costs FROM STDIN WITH (FORMAT csv)")
        .copy_data(b"2026-10-02T00:\x00\x00:00Z,snap,s1,2.25\n")
        .copy_done()
        .terminate();
    m
}

/// The Execute of the 78 GB reservation: max_rows 1,970,496,882 ("user" as an i32).
fn execute_max_rows() -> Messages {
    let mut m = Messages::new();
    m.parse("", "SELECT channel FROM events", &[])
        .bind("", "", &[])
        .execute("", 1_970_496_882)
        .sync()
        .terminate();
    m
}

fn user() -> [(&'static str, &'static str); 2] {
    [("user", "lookback"), ("database", "lookback")]
}

fn after_startup(m: Messages) -> Vec<u8> {
    let mut out = vec![b'1'];
    out.extend_from_slice(&m.into_bytes());
    out
}

fn raw(m: Messages) -> Vec<u8> {
    raw_bytes(&m.into_bytes())
}

fn raw_bytes(bytes: &[u8]) -> Vec<u8> {
    let mut out = vec![b'0'];
    out.extend_from_slice(bytes);
    out
}

fn simple_query() -> Messages {
    let mut m = Messages::new();
    m.query("SELECT count(*) FROM events")
        .query("SELECT event_type, count(*) FROM events GROUP BY 1 ORDER BY 2 DESC; SELECT 2")
        .query("SELECT channel, count(*) FROM attribute(model => 'linear', app => 'fuzz.app') GROUP BY 1")
        .query("")
        .terminate();
    m
}

/// Parse/Describe/Bind/Execute/Sync as drivers send them: a named statement with a typed
/// parameter, bind parameters in attribute(...), a NULL, binary results, a row limit.
fn extended_query() -> Messages {
    const TEXT_OID: u32 = 25;
    const INT8_OID: u32 = 20;
    let mut m = Messages::new();
    m.parse(
        "s1",
        "SELECT channel, count(*) FROM events WHERE app_id = $1 GROUP BY 1",
        &[TEXT_OID],
    )
    .describe(Target::Statement, "s1")
    .bind("", "s1", &[Some("fuzz.app")])
    .describe(Target::Portal, "")
    .execute("", 0)
    .sync()
    .parse(
        "",
        "SELECT channel, credit FROM attribute(model => $1, app => $2, since => $3)",
        &[],
    )
    .bind("", "", &[Some("linear"), Some("fuzz.app"), None])
    .execute("", 2)
    .sync()
    .parse(
        "s2",
        "SELECT $1::bigint + 1, ts FROM events LIMIT 1",
        &[INT8_OID],
    )
    .bind_with_formats("p2", "s2", &[1], &[Some(&41i64.to_be_bytes())], &[1])
    .execute("p2", 0)
    .close(Target::Portal, "p2")
    .close(Target::Statement, "s2")
    .flush()
    .sync()
    .terminate();
    m
}

/// Errors in both protocols: the simple query's error, then an extended query failing at
/// Parse (the server skips to Sync), then a query that works again.
fn errors() -> Messages {
    let mut m = Messages::new();
    m.query("SELECT * FROM no_such_table")
        .parse("", "SELEC 1", &[])
        .bind("", "", &[])
        .execute("", 0)
        .sync()
        .bind("", "no_such_statement", &[])
        .sync()
        .query("SELECT 'abc'::bigint")
        .query("SELECT 1")
        .terminate();
    m
}

fn copy() -> Messages {
    let mut m = Messages::new();
    m.query("COPY campaign_costs FROM STDIN WITH (FORMAT csv)")
        .copy_data(b"2026-10-01T00:00:00Z,meta,m1,1.5\n2026-10-02T00:00:00Z,snap,s1,2.25\n")
        .copy_done()
        .query("COPY campaign_costs (channel, cost) FROM STDIN")
        .copy_data(b"meta\tnot-a-number\n")
        .copy_fail("client gave up")
        .query("COPY (SELECT channel, cost FROM campaign_costs ORDER BY day LIMIT 3) TO STDOUT")
        .terminate();
    m
}

fn statements() -> Messages {
    let mut m = Messages::new();
    m.query("SET extra_float_digits = 3")
        .query("SET TIME ZONE 'UTC'")
        .query("SHOW TIME ZONE")
        .query("BEGIN")
        .query("SELECT 1")
        .query("COMMIT")
        .query("PREPARE one (bigint) AS SELECT $1 + 1")
        .query("EXECUTE one(41)")
        .query("DEALLOCATE one")
        .query("SHOW scoring_device")
        .terminate();
    m
}
