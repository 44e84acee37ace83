//! The seeds built in code (`lookback_fuzz::seeds`) still get the answers they are listed
//! with: a seed that no longer parses or plans would leave its corpus testing only the
//! parser. Also checks the SQL entry point the `sql` target drives answers like the server.

use lookback_fuzz::fixture::Fixture;
use lookback_fuzz::pgwire::{self, backend};
use lookback_fuzz::seeds::{self, Expect};
use lookback_wire::pg::{LocalSession, Outcome};

#[test]
fn every_sql_seed_gets_its_listed_answer() {
    let fixture = Fixture::start();
    for (sql, expect) in seeds::SQL {
        let mut session = LocalSession::new(
            fixture.ctx.clone(),
            fixture.db.clone(),
            fixture.models.clone(),
            fixture.stats.clone(),
        );
        let outcomes = fixture.runtime.block_on(session.simple_query(sql, 100_000));
        let errors: Vec<_> = outcomes
            .iter()
            .filter_map(|o| {
                if let Outcome::Error(e) = o {
                    Some(e)
                } else {
                    None
                }
            })
            .collect();
        match expect {
            Expect::Ok => assert!(errors.is_empty(), "{sql}: {errors:?}"),
            Expect::Fails(code) => {
                assert_eq!(errors.len(), 1, "{sql}: {outcomes:?}");
                assert_eq!(errors[0].code, code, "{sql}: {}", errors[0].message);
            }
        }
        assert!(!outcomes.is_empty(), "{sql}: no outcome");
    }
}

#[test]
fn the_entry_point_reads_rows_and_commands_as_a_client_does() {
    let fixture = Fixture::start();
    let mut session = LocalSession::new(
        fixture.ctx.clone(),
        fixture.db.clone(),
        fixture.models.clone(),
        fixture.stats.clone(),
    );
    let outcomes = fixture.runtime.block_on(session.simple_query(
        "SELECT event_id FROM events; SET extra_float_digits = 3",
        10,
    ));
    assert!(
        matches!(outcomes.as_slice(), [Outcome::Rows(10), Outcome::Command(tag)] if tag == "SET"),
        "{outcomes:?}"
    );
    let outcomes = fixture
        .runtime
        .block_on(session.simple_query("SELECT count(*) FROM events", 10));
    assert!(
        matches!(outcomes.as_slice(), [Outcome::Rows(1)]),
        "{outcomes:?}"
    );
}

/// The SQLSTATEs of the ErrorResponses the server sent for a seed session, in order.
fn sqlstates(input: &[u8]) -> Vec<String> {
    let response = pgwire::replay(input);
    let messages = backend::split(&response).expect("a well framed response");
    let errors = messages
        .iter()
        .filter(|m| m.kind == backend::ERROR_RESPONSE);
    let code = |body: &[u8]| {
        let fields = backend::fields(body).expect("error fields");
        fields
            .iter()
            .find(|(c, _)| *c == b'C')
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
            .unwrap_or_default()
    };
    assert!(
        messages.iter().any(|m| m.kind == b'Z' || m.kind == b'E'),
        "no ReadyForQuery nor error in {response:?}"
    );
    errors.map(|m| code(m.body)).collect()
}

#[test]
fn every_pgwire_seed_session_gets_its_errors_and_no_others() {
    for (name, input) in seeds::pgwire_sessions() {
        let expected: &[&str] = match name {
            "error" => &["42P01", "42601", "26000", "22P02"],
            "copy" => &["57014"],
            "startup-too-long" | "hang-short-first-packet" => &["08P01"],
            "crash-parse-body-short" => &["XX000"],
            "bad-answer-nul-in-error" => &["22P02"],
            "cancel-request" => continue, // the server answers a cancel request with nothing
            name if name.starts_with("upstream-") => continue, // what the library makes of it
            _ => &[],
        };
        assert_eq!(sqlstates(&input), expected, "session {name}");
    }
}

/// The `sql` target reuses one session: what an input sets (configuration, prepared
/// statements) must not reach the next input, or a failing input would not replay alone.
#[test]
fn sql_target_inputs_do_not_see_each_others_settings() {
    let errors = |text: &str| -> Vec<String> {
        let (_, outcomes) = lookback_fuzz::sql::run(text.to_string());
        outcomes
            .into_iter()
            .filter_map(|o| match o {
                Outcome::Error(e) => Some(e.code),
                _ => None,
            })
            .collect()
    };
    let off = "SET datafusion.catalog.information_schema = false";
    let read = "SELECT count(*) FROM information_schema.tables";
    let prepare = "PREPARE p AS SELECT count(*) FROM events";
    // Within one input, each takes effect (so the check below can fail).
    assert!(!errors(&format!("{off}; {read}")).is_empty(), "information_schema turned off");
    assert!(errors(&format!("{prepare}; EXECUTE p")).is_empty());
    // Across inputs, none does.
    assert!(errors(off).is_empty());
    assert!(errors(read).is_empty(), "a SET of an earlier input reached the next");
    assert!(errors(prepare).is_empty());
    assert!(!errors("EXECUTE p").is_empty(), "a statement prepared by an earlier input");
}
