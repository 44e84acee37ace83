//! Bounds on how deeply a statement nests, checked on the SQL text before the parser sees it
//! (a Query message's text, and a Parse message's through [`GuardedParser`]): parentheses and
//! brackets ([`SQL_NESTING_DEPTH_MAX`]) and, lower, function calls ([`SQL_CALL_NESTING_MAX`]).
//!
//! Why: the SQL parser (sqlparser, under DataFusion) backtracks over nested constructs, and
//! for some of them (function calls inside function calls, `CAST(CASE (`, parenthesised table
//! factors) it reparses the whole inner part at every level, so its time doubles or worse
//! with each level: `f(f(...(x)...))` 18 deep took 0.7 s here. Parsing runs inside one poll
//! of the connection's task, where neither a statement timeout nor a cancel request can stop
//! it, so one short statement could hold a server thread for hours (found by the `sql` fuzz
//! target). Upstream fixes these sites one at a time; bounds on the nesting cap every shape
//! found so far at once, though a shape that grows fast enough below them would still be slow.
//! PostgreSQL itself refuses a statement nested past its stack depth with the same SQLSTATE,
//! 54001 (statement_too_complex).
//!
//! The depth is counted lexically: string literals (with `''` and, in `E'...'`, backslash
//! escapes), quoted identifiers, dollar-quoted strings and comments (`--`, nested `/* */`) are
//! skipped, so their contents never count. An unterminated quote or comment runs to the end
//! of the text; the parser then refuses the statement on its own.

use datafusion_postgres::pgwire::api::portal::Format;
use datafusion_postgres::pgwire::api::results::FieldInfo;
use datafusion_postgres::pgwire::api::stmt::QueryParser;
use datafusion_postgres::pgwire::api::{ClientInfo, Type};
use datafusion_postgres::pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use std::sync::Arc;

/// The deepest nesting of parentheses and brackets a statement may have. Generated SQL from
/// BI tools stays under it; parenthesised table factors (`FROM ((((t))))`), whose parse time
/// doubles per level, take about 0.2 s at this depth.
pub const SQL_NESTING_DEPTH_MAX: usize = 16;

/// The deepest nesting of function calls (a parenthesis right after a name or keyword:
/// `f(`, `CAST(`, `IN (`). The parser's worst shapes found so far multiply its time by 3 to
/// 4 per call level (`substr` and prefix operators inside nested calls: 15 levels took 11 s),
/// so calls get a lower bound than plain parentheses; 10 levels of them stay under 0.1 s.
pub const SQL_CALL_NESTING_MAX: usize = 10;

/// SQLSTATE statement_too_complex.
const STATEMENT_TOO_COMPLEX: &str = "54001";

/// Refuses `sql` (54001) if its parentheses and brackets nest deeper than
/// [`SQL_NESTING_DEPTH_MAX`] or its function calls deeper than [`SQL_CALL_NESTING_MAX`].
pub fn check(sql: &str) -> PgWireResult<()> {
    let nesting = nesting(sql);
    let (what, depth, max) = if nesting.depth > SQL_NESTING_DEPTH_MAX {
        ("parentheses and brackets", nesting.depth, SQL_NESTING_DEPTH_MAX)
    } else if nesting.calls > SQL_CALL_NESTING_MAX {
        ("function calls", nesting.calls, SQL_CALL_NESTING_MAX)
    } else {
        return Ok(());
    };
    let message = format!("statement too complex: {what} nest {depth} deep, more than the {max} this server parses");
    Err(PgWireError::UserError(Box::new(ErrorInfo::new("ERROR".into(), STATEMENT_TOO_COMPLEX.into(), message))))
}

/// How deeply a statement nests, outside literals, quoted identifiers and comments.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Nesting {
    /// The deepest nesting of `(` and `[`.
    pub depth: usize,
    /// The deepest nesting of calls: `(` right after a name, keyword or quoted identifier.
    pub calls: usize,
}

/// The deepest nesting of `(` and `[` in `sql`, and of calls among them.
pub fn nesting(sql: &str) -> Nesting {
    let b = sql.as_bytes();
    let mut at = 0usize;
    let mut open: Vec<bool> = Vec::new(); // whether each open one is a call
    let (mut calls, mut deepest) = (0usize, Nesting::default());
    while at < b.len() {
        at = match b[at] {
            b'(' | b'[' => {
                let call = b[at] == b'(' && follows_a_name(b, at);
                open.push(call);
                calls += usize::from(call);
                deepest.depth = deepest.depth.max(open.len());
                deepest.calls = deepest.calls.max(calls);
                at + 1
            }
            b')' | b']' => {
                if open.pop() == Some(true) {
                    calls -= 1;
                }
                at + 1
            }
            b'\'' => quoted_end(b, at + 1, b'\'', backslash_escapes(b, at)),
            b'"' => quoted_end(b, at + 1, b'"', false),
            b'-' if b.get(at + 1) == Some(&b'-') => line_end(b, at + 2),
            b'/' if b.get(at + 1) == Some(&b'*') => block_comment_end(b, at + 2),
            b'$' => dollar_quoted_end(b, at),
            _ => at + 1,
        };
    }
    deepest
}

/// Whether the `(` at `at` comes right after (spaces aside) a name, a keyword or a quoted
/// identifier.
fn follows_a_name(b: &[u8], at: usize) -> bool {
    b[..at].iter().rev().find(|c| !c.is_ascii_whitespace()).is_some_and(|&c| is_identifier_byte(c) || c == b'"')
}

fn is_identifier_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || byte == b'_' || byte == b'$' || byte >= 0x80
}

/// Whether the quote at `at` opens an escape string (`E'...'`), where `\'` does not close it.
fn backslash_escapes(b: &[u8], at: usize) -> bool {
    at >= 1 && matches!(b[at - 1], b'E' | b'e') && (at < 2 || !is_identifier_byte(b[at - 2]))
}

/// Just past the `quote` that closes a quoted run starting at `from` (a doubled quote is
/// part of it), or the end of the text.
fn quoted_end(b: &[u8], from: usize, quote: u8, backslash: bool) -> usize {
    let mut at = from;
    while at < b.len() {
        match b[at] {
            b'\\' if backslash => at += 2,
            c if c == quote && b.get(at + 1) == Some(&quote) => at += 2,
            c if c == quote => return at + 1,
            _ => at += 1,
        }
    }
    b.len()
}

fn line_end(b: &[u8], from: usize) -> usize {
    b[from.min(b.len())..].iter().position(|&c| c == b'\n').map_or(b.len(), |p| from + p + 1)
}

/// Just past the `*/` closing a block comment whose `/*` ends at `from`; block comments nest,
/// as in PostgreSQL.
fn block_comment_end(b: &[u8], from: usize) -> usize {
    let (mut at, mut open) = (from, 1usize);
    while at + 1 < b.len() {
        match (b[at], b[at + 1]) {
            (b'/', b'*') => (open, at) = (open + 1, at + 2),
            (b'*', b'/') => {
                open -= 1;
                at += 2;
                if open == 0 {
                    return at;
                }
            }
            _ => at += 1,
        }
    }
    b.len()
}

/// Just past a dollar-quoted string (`$tag$ ... $tag$`) starting at `at`, or past the `$`
/// when it starts none (a parameter `$1`, a `$` inside an identifier).
fn dollar_quoted_end(b: &[u8], at: usize) -> usize {
    if at > 0 && is_identifier_byte(b[at - 1]) {
        return at + 1;
    }
    let tag_byte = |i: usize, c: u8| c.is_ascii_alphabetic() || c == b'_' || c >= 0x80 || (i > at + 1 && c.is_ascii_digit());
    let mut close = at + 1;
    while close < b.len() && tag_byte(close, b[close]) {
        close += 1;
    }
    if b.get(close) != Some(&b'$') {
        return at + 1;
    }
    let tag = &b[at..=close];
    let body = close + 1;
    b[body..].windows(tag.len()).position(|w| w == tag).map_or(b.len(), |p| body + p + tag.len())
}

/// A query parser that refuses, before parsing, what [`check`] refuses: the parser of Parse
/// messages.
pub struct GuardedParser<P> {
    inner: Arc<P>,
}

impl<P> GuardedParser<P> {
    pub fn new(inner: Arc<P>) -> GuardedParser<P> {
        GuardedParser { inner }
    }
}

#[async_trait::async_trait]
impl<P> QueryParser for GuardedParser<P>
where
    P: QueryParser + Send + Sync,
{
    type Statement = P::Statement;

    async fn parse_sql<C>(&self, client: &C, sql: &str, types: &[Option<Type>]) -> PgWireResult<Option<Self::Statement>>
    where
        C: ClientInfo + Unpin + Send + Sync,
    {
        check(sql)?;
        self.inner.parse_sql(client, sql, types).await
    }

    fn get_parameter_types(&self, statement: &Self::Statement) -> PgWireResult<Vec<Type>> {
        self.inner.get_parameter_types(statement)
    }

    fn get_result_schema(&self, statement: &Self::Statement, column_format: Option<&Format>) -> PgWireResult<Vec<FieldInfo>> {
        self.inner.get_result_schema(statement, column_format)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nesting_depth(sql: &str) -> usize {
        nesting(sql).depth
    }

    #[test]
    fn calls_are_parentheses_after_a_name() {
        let calls = |sql: &str| nesting(sql).calls;
        assert_eq!(calls("SELECT f(g(x), h(y))"), 2);
        assert_eq!(calls("SELECT f ( g (x))"), 2, "spaces before the parenthesis");
        assert_eq!(calls(r#"SELECT "F"(1)"#), 1, "a quoted name");
        assert_eq!(calls("SELECT 1 + ((f((1))))"), 1, "plain parentheses are not calls");
        assert_eq!(calls("SELECT 1 WHERE x IN (SELECT y FROM t WHERE z IN (1))"), 2);
        assert_eq!(calls("SELECT f(1), g(2), h(3)"), 1, "siblings do not add up");
        assert_eq!(calls("SELECT f(a[1](x))"), 1, "a bracket is not a call, nor what follows it");
    }

    #[test]
    fn depth_counts_parentheses_and_brackets() {
        assert_eq!(nesting_depth("SELECT 1"), 0);
        assert_eq!(nesting_depth("SELECT f(g(x), h(y))"), 2);
        assert_eq!(nesting_depth("SELECT a[1][2], (b[(3)])"), 3);
        assert_eq!(nesting_depth("SELECT ((("), 3, "unclosed ones count");
        assert_eq!(nesting_depth("SELECT ))) ((x))"), 2, "a stray close does not go below zero");
    }

    #[test]
    fn literals_identifiers_and_comments_do_not_count() {
        assert_eq!(nesting_depth("SELECT '((((' , 'it''s ((', (1)"), 1);
        assert_eq!(nesting_depth(r"SELECT E'\'((((', (1)"), 1, "a backslash escape in an E string");
        assert_eq!(nesting_depth(r"SELECT '\', (1)"), 1, "a backslash is plain in a standard string");
        assert_eq!(nesting_depth(r#"SELECT "a((""(" FROM t"#), 0);
        assert_eq!(nesting_depth("SELECT $$((($$, $tag$ $$ ((( $tag$, (1)"), 1);
        assert_eq!(nesting_depth("SELECT $1, f($2)"), 1, "parameters are not dollar quotes");
        assert_eq!(nesting_depth("SELECT a$b, ((1))"), 2, "a dollar inside an identifier");
        assert_eq!(nesting_depth("SELECT 1 -- (((((\n, (2)"), 1);
        assert_eq!(nesting_depth("SELECT /* ( /* ( */ ( */ (1)"), 1, "block comments nest");
        assert_eq!(nesting_depth("SELECT '(((( unterminated"), 0);
        assert_eq!(nesting_depth("SELECT /* ((((( unterminated"), 0);
    }

    #[test]
    fn a_statement_nested_past_a_limit_is_refused_with_54001() {
        let refused = |sql: &str| match check(sql) {
            Ok(()) => None,
            Err(PgWireError::UserError(info)) => {
                assert_eq!(info.code, "54001");
                Some(info.message)
            }
            Err(e) => panic!("not a user error: {e}"),
        };
        let calls = |depth: usize| format!("SELECT {}x{}", "f(".repeat(depth), ")".repeat(depth));
        let parens = |depth: usize| format!("SELECT {}x{}", "(".repeat(depth), ")".repeat(depth));
        assert_eq!(refused(&calls(SQL_CALL_NESTING_MAX)), None);
        let message = refused(&calls(SQL_CALL_NESTING_MAX + 1)).expect("one call deeper is refused");
        assert!(message.contains("function calls nest 11 deep"), "{message}");
        assert_eq!(refused(&parens(SQL_NESTING_DEPTH_MAX)), None);
        let message = refused(&parens(SQL_NESTING_DEPTH_MAX + 1)).expect("one level deeper is refused");
        assert!(message.contains("parentheses and brackets nest 17 deep"), "{message}");
    }
}
